"""Fixtures for the device-id tests: a scripted kubelet over a real unix-socket gRPC server.

The socket lives in a short pytest temporary directory (a unix socket path must fit in 108 bytes,
which a directory named after a long test would not). Every fixture stops what it started; an
autouse fixture fails a test that leaves tasks running once the others are torn down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.asyncio_hygiene import no_tasks_left_on_the_loop  # noqa: F401 - autouse here
from tests.podresources.support import FakeKubelet


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")


@pytest.fixture
async def kubelet(socket_path: str) -> AsyncIterator[FakeKubelet]:
    """A kubelet not yet started: the test scripts it, then awaits ``start()``; teardown stops it."""
    fake = FakeKubelet(socket_path)
    yield fake
    await fake.stop()
