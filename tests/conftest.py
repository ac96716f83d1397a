"""Fixtures and settings shared by every test.

Integration tests need root (netns, veth, bridges) and the reference plugins in /usr/lib/cni;
CI runs as root. In-process asyncio code runs in debug mode (slow callbacks and never-awaited
coroutines get reported); daemon processes started by tests do not inherit it. Each area of
tests keeps its own fixtures, including its leftover-task check, in its own conftest.py.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The suite runs on small, shared machines: a slow draw is load, not a broken strategy.
settings.register_profile("multus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("multus")

CNI_PLUGIN_DIR = "/usr/lib/cni"
ASYNCIO_DEBUG_ENV = "PYTHONASYNCIODEBUG"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(ASYNCIO_DEBUG_ENV, "1")


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a process a test starts: ours, without the asyncio debug switch."""
    env = {key: value for key, value in os.environ.items() if key != ASYNCIO_DEBUG_ENV}
    env.update(extra)
    return env
