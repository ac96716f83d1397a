"""Fixtures for the device-id tests: a scripted kubelet over a real unix-socket gRPC server.

The socket lives in a short pytest temporary directory (a unix socket path must fit in 108 bytes,
which a directory named after a long test would not). Every fixture stops what it started; an
autouse fixture fails a test that leaves tasks running once the others are torn down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.podresources.support import FakeKubelet


@pytest.fixture(autouse=True)
async def _no_tasks_left_on_the_loop() -> AsyncIterator[None]:
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


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")


@pytest.fixture
async def kubelet(socket_path: str) -> AsyncIterator[FakeKubelet]:
    """A kubelet not yet started: the test scripts it, then awaits ``start()``; teardown stops it."""
    fake = FakeKubelet(socket_path)
    yield fake
    await fake.stop()
