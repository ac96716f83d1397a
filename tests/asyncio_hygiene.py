"""The leftover-task check shared by the test packages whose tests run on an event loop.

A conftest imports ``no_tasks_left_on_the_loop`` to make it autouse in its package: any test that
leaves tasks running on its loop, once its fixtures are torn down, fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
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
