"""The daemon's ``multus.sock``, bound before anything heavy is imported, and the restart marker.

``app.daemon.main`` calls ``bind`` right after reading the settings, so the socket accepts within
milliseconds of ``exec``: a shim that connects while the rest of the daemon is still importing
and opening the store waits in the listen backlog and is served once the HTTP server takes the
socket over (``app.daemon.server.start``). Standard library only, and it must stay so: this runs
before aiohttp, SQLAlchemy or kubernetes_asyncio are imported.

The restart marker ``<socketDir>/multus.restarting`` (JSON ``{"pid": int, "until": float Unix
time}``) is written atomically by a daemon stopping gracefully, before it stops accepting, and
removed by the next daemon once its socket accepts; the shim waits for a new daemon up to
``until`` while it exists (a crashed daemon leaves none, so the shim fails fast).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_MARKER = "multus.restarting"
RESTART_WAIT_SECONDS = 30.0
"""How long after a graceful stop the shim may wait for the next daemon."""


class SocketInUseError(RuntimeError):
    """Another daemon answers on the socket path."""


def prepare_socket(socket_path: Path) -> None:
    """Create the socket directory (0700) and clear a stale socket; refuse if one is answering."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(socket_path.parent, 0o700)
    if not socket_path.exists() and not socket_path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(socket_path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise
        socket_path.unlink(missing_ok=True)
        log.info("removed stale socket %s", socket_path)
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another daemon is serving on {socket_path}")


def bind(socket_path: Path) -> socket.socket:
    """A listening, non-blocking unix socket at ``socket_path`` (mode 0600). Raises
    ``SocketInUseError`` when another daemon answers there, ``OSError`` when it cannot be bound."""
    prepare_socket(socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def write_restart_marker(socket_dir: Path, *, wait: float = RESTART_WAIT_SECONDS) -> Path:
    """Write ``multus.restarting`` atomically (this pid, ``until`` = now + ``wait``); return its path."""
    import tempfile  # only when stopping: kept off the path to the first accept

    target = socket_dir / RESTART_MARKER
    content = json.dumps({"pid": os.getpid(), "until": time.time() + wait}).encode()
    fd, temp_name = tempfile.mkstemp(prefix=f".{RESTART_MARKER}.", dir=socket_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def remove_restart_marker(socket_dir: Path) -> bool:
    """Remove ``multus.restarting`` (this daemon accepts now); True if there was one."""
    try:
        (socket_dir / RESTART_MARKER).unlink()
    except FileNotFoundError:
        return False
    return True
