"""Fixtures for the device-id tests: a scripted kubelet over a real unix-socket gRPC server.

The socket lives in a short pytest temporary directory (a unix socket path must fit in 108 bytes,
which a directory named after a long test would not). Every fixture stops what it started; the
suite-wide leftover-task check fails a test that leaves tasks running once they are torn down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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
