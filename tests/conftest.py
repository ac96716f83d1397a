"""Fixtures and settings shared by every test.

Integration tests need root (netns, veth, bridges) and the reference plugins in /usr/lib/cni;
CI runs as root. The async tests' event loops (pytest-asyncio's) run in asyncio debug mode (slow
callbacks and never-awaited coroutines reported, loop calls from other threads refused): its
``asyncio_debug`` option, which overrides PYTHONASYNCIODEBUG, is turned on here. Loops a test makes
itself (``asyncio.run``) follow PYTHONASYNCIODEBUG, set here too; daemon processes started by tests
never inherit it. Every async test
gets the leftover-task check (``tests/asyncio_hygiene.py``). Test modules that start daemon or
emulator processes are marked ``slow``: ``pytest -m "not slow"`` is the inner loop. Each area of
tests keeps its other fixtures in its own conftest.py; process plumbing is ``app.sandbox.processes``.
A test that hangs fails after pytest-timeout's ``timeout`` (``pyproject.toml``); what its signal
cannot end, the backstop's hooks (``tests/hang_backstop.py``) end with the whole run.
"""

from __future__ import annotations

import asyncio.constants
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from app.sandbox.processes import ASYNCIO_DEBUG_ENV, child_environment
from tests.asyncio_hygiene import no_tasks_left_on_the_loop, require_for_async_tests
from tests.hang_backstop import (
    pytest_addoption,
    pytest_enter_pdb,
    pytest_timeout_cancel_timer,
    pytest_timeout_set_timer,
)

if TYPE_CHECKING:
    from app.store.database import Database

# the fixture, requested for every async test; the environment for a process a test starts
__all__ = ["child_environment", "no_tasks_left_on_the_loop"]
# the hang backstop, registered as this conftest's hooks
__all__ += ["pytest_addoption", "pytest_enter_pdb", "pytest_timeout_cancel_timer", "pytest_timeout_set_timer"]

# The suite runs on small, shared machines: a slow draw is load, not a broken strategy.
settings.register_profile("multus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("multus")

CNI_PLUGIN_DIR = "/usr/lib/cni"


ASYNCIO_DEBUG_STACK_DEPTH = 1
"""Frames asyncio's debug mode keeps of where each callback, future, task and coroutine was made
(its own default is 10). Those captures were most of debug mode's cost: the in-process tests of
``tests/watch`` took 90 s with 10, 78 with 1 and 76 without debug mode. One frame is what a task's or
handle's repr shows ("created at file:line"), and it is where a never-awaited coroutine was made;
the checks themselves (slow callbacks, loop calls from other threads) are unchanged."""


def pytest_configure(config: pytest.Config) -> None:
    asyncio.constants.DEBUG_STACK_DEPTH = ASYNCIO_DEBUG_STACK_DEPTH  # type: ignore[misc]  # typeshed: Final
    os.environ.setdefault(ASYNCIO_DEBUG_ENV, "1")
    if config.getoption("asyncio_debug") is None:  # pytest-asyncio's loops ignore the variable
        config.option.asyncio_debug = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require_for_async_tests(items)


@pytest.fixture(scope="session")
def empty_state_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty state database at this release's schema, migrated in this process as
    ``Database.open`` migrates a new file, then closed: a file to copy, never opened again.

    Migrating a new file costs about 50 ms; a copy of this one opens in 4 (its ``Database.open`` finds
    the schema current and migrates nothing). For the in-process tests whose subject is not the first
    open: ``open_empty_state`` gives them the database a fresh ``Database.open`` would have."""
    from app.store.database import Database  # imported by the runs that use it, not at collection

    path = tmp_path_factory.mktemp("empty-state") / "state.db"
    Database.open(path).close()
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name not in {"state.db", "state.db.lock"})
    assert leftovers == [], f"the closed database left {leftovers}: a copy of state.db alone would be torn"
    return path


def open_empty_state(template: Path, path: Path) -> Database:
    """``Database.open(path)`` for a ``path`` that does not exist yet, on a copy of ``template``
    (``empty_state_template``): the same empty, migrated, locked database, opened without migrating.
    ``Database.open`` makes the copy private (``0600``) as it makes a new file."""
    from app.store.database import Database

    assert not path.exists(), f"{path} exists: open_empty_state stands for the first open of a new file"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(template, path)
    return Database.open(path)
