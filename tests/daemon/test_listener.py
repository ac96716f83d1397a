"""The socket bound before the heavy imports, the socket-in-use check, and the restart marker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.daemon import listener


def test_a_connection_made_before_anything_serves_waits_in_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "run" / "multus.sock"
    sock = listener.bind(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            sock.setblocking(True)
            accepted, _ = sock.accept()  # what the HTTP server does once it takes the socket over
            with accepted:
                assert accepted.recv(64).startswith(b"GET /healthz")
    finally:
        sock.close()


def test_a_live_socket_is_refused_and_a_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "multus.sock"
    live = listener.bind(path)
    try:
        with pytest.raises(listener.SocketInUseError, match="another daemon"):
            listener.bind(path)
    finally:
        live.close()
    assert path.exists()  # stale now: nobody listens
    listener.bind(path).close()


def test_the_restart_marker_says_who_stopped_and_until_when(tmp_path: Path) -> None:
    before = time.time()
    marker = listener.write_restart_marker(tmp_path)
    assert marker == tmp_path / "multus.restarting"
    content = json.loads(marker.read_text())
    assert content["pid"] == os.getpid()
    assert before + listener.RESTART_WAIT_SECONDS <= content["until"] <= time.time() + 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multus.restarting"]  # no temp file left
    assert listener.remove_restart_marker(tmp_path)
    assert not listener.remove_restart_marker(tmp_path)


def test_the_entry_point_binds_before_importing_any_third_party_package() -> None:
    """What runs before the socket is bound (main, settings, logging, listener) is stdlib only."""
    probe = (
        "import sys\n"
        "import app.daemon.main\n"
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in "
        "('aiohttp', 'sqlalchemy', 'alembic', 'kubernetes_asyncio', 'prometheus_client', 'grpc', 'yarl'))\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
