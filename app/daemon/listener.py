"""The daemon's ``multus.sock``, bound before anything heavy is imported, and the restart marker.

``app.daemon.main`` calls ``claim`` (the lock below, then ``bind``) right after reading the
settings, so the socket accepts within milliseconds of ``exec``: a shim that connects while the
rest of the daemon is still importing and opening the store waits in the listen backlog and is
served once the HTTP server takes the socket over (``app.daemon.server.start``). Standard library
only, and it must stay so: this runs before aiohttp, the store or kubernetes_asyncio are imported.

The restart marker ``<socketDir>/multus.restarting`` (JSON ``{"pid": int, "until": float Unix
time}``) is written atomically by a daemon stopping gracefully, before it stops accepting, and
removed by the next daemon once its socket accepts; the shim waits for a new daemon up to
``until`` while it exists (a crashed daemon leaves none, so the shim fails fast). A daemon killed
while it wrote the marker leaves its temporary (``.multus.restarting.*``): the next daemon removes
such leftovers once it holds the lock below (only the lock's holder writes a marker, so none of
them is still being written).

One daemon per socket directory: ``claim`` takes an exclusive ``flock`` on
``<socketDir>/multus.sock.lock`` before it looks at the socket, and the daemon holds it until its
process ends (after its store is closed), so two daemons started at once cannot both find the
socket stale and replace each other's (one would then serve nothing while both ran recovery and
GC). The lock file stays in place (removing it would let a waiter lock a file nobody else sees).
A daemon that finds the lock held waits only for one that is stopping gracefully (a DaemonSet's
rolling restart may start the new pod while the old one drains), until that daemon's restart
marker expires, and at most ``claim``'s ``longest_stop`` (what a stop announces, ``restart_wait``:
the entry point passes its own ``shutdownGraceSeconds``'s; 30 s by default), counted from when it first
saw the marker: an ``until`` absurdly far ahead, from a buggy predecessor or a clock that stepped,
is not waited out. Otherwise, or after that, it refuses, naming the lock. A socket directory of
another user, or a lock that is a link or not the daemon's own regular file, is refused before
anything is written there: its owner could swap the socket for a listener of theirs, and a linked
lock would have the daemon truncate and write its pid into whatever file the link names.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_MARKER = "multus.restarting"
RESTART_WAIT_SECONDS = 30.0
"""How long after a graceful stop the shim may wait for the next daemon, at the least."""
STOP_CLOSING_SECONDS = 10.0
"""What a graceful stop may take besides its two ``shutdownGraceSeconds`` (the stragglers'
cancellation, the socket's closing, the store's close): ``restart_wait`` adds it."""
MARKER_TEMPORARY_PREFIX = f".{RESTART_MARKER}."
"""How the temporary ``write_restart_marker`` renames into place is named (``mkstemp`` adds to it)."""
MAX_MARKER_BYTES = 4096
"""Most of the restart marker read (it holds a few dozen bytes; the shim reads as much)."""
LOCK_SUFFIX = ".lock"
LOCK_POLL_SECONDS = 0.05
"""Between two attempts to take the lock of a daemon that is stopping."""
PROBE_TIMEOUT_SECONDS = 2.0
"""Bound on the stale-socket probe's connect (a unix connect does not wait for an accept; only a
full backlog could block it, and that is reported at once on a socket with a timeout)."""


class SocketInUseError(RuntimeError):
    """Another daemon answers on the socket path, or holds its directory's lock."""


class UnsafeSocketDirError(PermissionError):
    """The socket directory belongs to another user, or its lock is no file of this daemon's own:
    whoever placed it could swap ``multus.sock`` for a listener of theirs, or have the daemon write
    its pid through a link into any file (an ``OSError``: the entry point's refusal to listen)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The socket directory's lock (a descriptor, not inheritable) and the socket bound under it."""

    lock_fd: int
    sock: socket.socket

    def release(self) -> None:
        """Close the socket and drop the lock (a daemon's end does both; tests call this)."""
        self.sock.close()
        os.close(self.lock_fd)


def restart_wait(shutdown_grace: float) -> float:
    """How long the restart marker of a stop with this ``shutdownGraceSeconds`` tells shims (and a
    successor) to wait for the next daemon: at least ``RESTART_WAIT_SECONDS``, and as long as the
    stop may take (the drain, then the background tasks, each up to the grace, and
    ``STOP_CLOSING_SECONDS``). Also the longest a starting daemon waits for a stopping one."""
    return max(RESTART_WAIT_SECONDS, 2 * shutdown_grace + STOP_CLOSING_SECONDS)


def claim(socket_path: Path, *, longest_stop: float = RESTART_WAIT_SECONDS) -> Claim:
    """Lock ``socket_path``'s directory for this process (``lock_socket_dir``, waiting at most
    ``longest_stop`` for a predecessor that is stopping), remove the restart marker's temporaries a
    daemon killed while it wrote one left, then ``bind``. The lock is held for as long as the
    descriptor stays open: the daemon never closes it, its process ends with it. Raises
    ``SocketInUseError`` or ``OSError`` as those two do."""
    lock_fd = lock_socket_dir(socket_path, longest_stop=longest_stop)
    try:
        remove_marker_temporaries(socket_path.parent)
        sock = bind(socket_path)
    except BaseException:
        os.close(lock_fd)
        raise
    return Claim(lock_fd=lock_fd, sock=sock)


def lock_path_of(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + LOCK_SUFFIX)


def lock_socket_dir(socket_path: Path, *, longest_stop: float = RESTART_WAIT_SECONDS) -> int:
    """Take the exclusive lock beside ``socket_path`` (created 0600) and write this pid into it;
    return its descriptor. While another process holds it: wait if that daemon is stopping
    gracefully (its restart marker is there and not expired), until it lets go, the marker
    expires, or ``longest_stop`` seconds have passed since the marker was first seen; else raise
    ``SocketInUseError`` naming the lock at once. A socket directory of another user, or a lock
    that is a link or no regular file of this daemon's user, is refused (``UnsafeSocketDirError``)
    before anything is written there. (Upstream removes the whole
    directory and makes it anew; a lock file must outlive its holder, so this one refuses instead.)"""
    socket_dir = socket_path.parent
    socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = socket_dir.stat().st_uid
    if owner != os.geteuid():
        raise UnsafeSocketDirError(
            f"socketDir {socket_dir} belongs to uid {owner}, not to this daemon's user (uid {os.geteuid()}): "
            "its owner could replace multus.sock or its lock; remove it or give it to this user"
        )
    os.chmod(socket_dir, 0o700)  # before the lock is opened: nobody else may add entries from now on
    lock_path = lock_path_of(socket_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafeSocketDirError(f"{lock_path} is a symbolic link, not this daemon's lock file") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or found.st_nlink != 1:
            raise UnsafeSocketDirError(
                f"{lock_path} is not a regular file of this daemon's user with one link "
                f"(mode {found.st_mode:o}, uid {found.st_uid}, {found.st_nlink} links): not its lock file"
            )
        _wait_for_lock(fd, lock_path, marker=socket_dir / RESTART_MARKER, longest_stop=longest_stop)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _wait_for_lock(fd: int, lock_path: Path, *, marker: Path, longest_stop: float) -> None:
    """Return once ``fd`` holds the lock; raise ``SocketInUseError`` unless its holder is stopping,
    and once it has been stopping past its marker's ``until`` or for ``longest_stop`` seconds since
    the marker was first seen (no stop announces longer: an ``until`` further ahead is not waited out)."""
    waiting_since: float | None = None
    while not _try_lock(fd):
        until = _stopping_until(marker)
        holder = _holder(fd)
        if until is None:
            raise SocketInUseError(
                f"another daemon ({holder}) holds {lock_path}: it serves on this socketDir"
            )
        if time.time() >= until:
            raise SocketInUseError(
                f"another daemon ({holder}) holds {lock_path}: it is still stopping after its restart "
                f"marker {marker} expired"
            )
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.warning(
                "waiting for the daemon stopping on %s (%s holds %s) to exit, at most until its restart "
                "marker expires in %.0fs",
                lock_path.parent,
                holder,
                lock_path,
                min(until - time.time(), longest_stop),
            )
        elif time.monotonic() - waiting_since >= longest_stop:
            raise SocketInUseError(
                f"another daemon ({holder}) holds {lock_path}: it is still stopping {longest_stop:g}s "
                f"after its restart marker {marker} was first seen, the longest a stop announces (the "
                f"marker's until is {until - time.time():.0f}s ahead)"
            )
        time.sleep(LOCK_POLL_SECONDS)
    if waiting_since is not None:
        log.info("the daemon stopping on %s has exited: taking over", lock_path.parent)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held: by a daemon that serves, or by one that is stopping
        return False
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, as it wrote itself down (a pid in the holder's own pid namespace)."""
    content = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"pid {content}" if content.isdigit() else "pid unknown"


def _stopping_until(marker: Path) -> float | None:
    """The restart marker's ``until`` (a daemon is stopping gracefully), None when there is none.
    A marker that cannot be read or parsed counts as none, as the shim takes it: the caller then
    refuses to start rather than wait on something it cannot interpret. So does one whose ``until``
    is no time (inf, NaN, a number no float holds), which would have it wait for ever; the read
    is bounded and never waits (a FIFO there has no writer)."""
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("unreadable restart marker %s: %s", marker, exc)
        return None
    try:
        content = json.loads(os.read(fd, MAX_MARKER_BYTES))
        until = content["until"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable restart marker %s: %s", marker, exc)
        return None
    finally:
        os.close(fd)
    if isinstance(until, bool) or not isinstance(until, int | float):
        log.warning("restart marker %s has no numeric until", marker)
        return None
    try:
        seconds = float(until)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        log.warning("restart marker %s has an until that is no time: %r", marker, until)
        return None
    return seconds


def prepare_socket(socket_path: Path) -> None:
    """Create the socket directory (0700) and clear a stale socket; refuse if one is answering.
    Only safe under the directory's lock (``claim``): two callers at once could each find the same
    socket stale and the second remove the one the first has just bound."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(socket_path.parent, 0o700)
    if not socket_path.exists() and not socket_path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_SECONDS)
    try:
        probe.connect(str(socket_path))
    except (BlockingIOError, TimeoutError) as exc:  # a listener whose backlog is full: alive, or hung
        raise SocketInUseError(
            f"a process listens on {socket_path} but accepts nothing (its backlog is full)"
        ) from exc
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
    ``SocketInUseError`` when another daemon answers there, ``OSError`` when it cannot be bound.
    The daemon calls it through ``claim``, under the socket directory's lock."""
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
    fd, temp_name = tempfile.mkstemp(prefix=MARKER_TEMPORARY_PREFIX, dir=socket_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def remove_marker_temporaries(socket_dir: Path) -> list[str]:
    """Remove the temporaries ``write_restart_marker`` left in ``socket_dir`` (its process killed
    between creating one and renaming it into place); return their names. Only under the socket
    directory's lock: the lock's holder is the one daemon that writes a marker there, so no other
    daemon is writing one now. One that cannot be removed is logged and left."""
    removed: list[str] = []
    try:
        names = os.listdir(socket_dir)
    except OSError as exc:
        log.warning("cannot list %s for restart marker leftovers: %s", socket_dir, exc)
        return removed
    for name in names:
        if not name.startswith(MARKER_TEMPORARY_PREFIX):
            continue
        try:
            os.unlink(socket_dir / name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the restart marker leftover %s: %s", socket_dir / name, exc)
            continue
        log.info("removed %s, a restart marker a daemon killed while writing it left", socket_dir / name)
        removed.append(name)
    return removed


def remove_restart_marker(socket_dir: Path) -> bool:
    """Remove ``multus.restarting`` (this daemon accepts now); True if there was one. One that
    cannot be removed (a directory in its place) is logged, never a reason not to serve: shims
    and successors take what they cannot read there as no marker."""
    marker = socket_dir / RESTART_MARKER
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.error("cannot remove the restart marker %s: %s", marker, exc)
        return False
    return True
