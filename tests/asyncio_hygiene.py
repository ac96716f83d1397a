"""The leftover-task check, applied to every async test of the suite by ``tests/conftest.py``.

``no_tasks_left_on_the_loop`` is requested first by every test that runs on an event loop, so it is
torn down last: a test that leaves tasks running on its loop once its fixtures are gone fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

FIXTURE = "no_tasks_left_on_the_loop"


@pytest.fixture
async def no_tasks_left_on_the_loop() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running once its fixtures are torn down (this one goes last)."""
    yield
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for _ in range(10):  # cancelled tasks need a few loop turns to finish
        if not leftovers:
            break
        await asyncio.sleep(0)
        leftovers = [task for task in leftovers if not task.done()]
    assert not leftovers, f"tasks left running: {leftovers}"


def require_for_async_tests(items: list[pytest.Item]) -> None:
    """Put the check first among the fixtures of every async test (set up first, torn down last)."""
    for item in items:
        if pytest_asyncio.is_async_test(item) and FIXTURE not in item.fixturenames:
            item.fixturenames.insert(0, FIXTURE)
