"""Fixtures shared by every test: root check, asyncio hygiene.

Integration tests need root (netns, veth, bridges) and the reference plugins in /usr/lib/cni;
CI runs as root. Each area of tests keeps its own fixtures in its own conftest.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

CNI_PLUGIN_DIR = "/usr/lib/cni"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONASYNCIODEBUG", "1")


@pytest.fixture(autouse=True)
def _no_leftover_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves asyncio tasks running on its loop."""
    yield
    if "event_loop" in request.fixturenames:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done() and task is not asyncio.current_task()]
    assert not leftovers, f"tasks left running: {leftovers}"
