"""Fixtures for the shim tests: an installed launcher, a short socket directory, a stub daemon."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.shim.install import install_shim
from tests.shim.helpers import StubDaemon


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim as the runtime executes it: a launcher installed with this interpreter."""
    return install_shim(str(tmp_path_factory.mktemp("cni-bin")), interpreter=sys.executable)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory for the daemon socket, short enough for AF_UNIX's 108-byte path limit."""
    path = Path(tempfile.mkdtemp(prefix="mshim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(socket_dir: Path) -> Iterator[StubDaemon]:
    """A running stub daemon answering 200 with an empty body until a test scripts its replies."""
    stub = StubDaemon(socket_dir)
    stub.start()
    yield stub
    stub.stop()
