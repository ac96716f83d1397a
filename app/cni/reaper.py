"""Plugin processes an earlier run of the daemon started and never reaped: found, killed, waited for.

Called by start-up recovery (``app.gc.recovery``) with the attachments it is about to tear down,
before any DEL: recovery never DELs a delegate whose process may still be running (invariant 9).
A process is ours only if its environment carries ``MULTUS_PY_DELEGATE`` naming one of those
attachments: ``app.cni.invoke`` sets it in every ADD/DEL/CHECK plugin's environment at exec (so from
the instant the plugin runs, with nothing to commit first), and the plugin's children (IPAM,
iptables) inherit it. A plugin leads its own process group, so members of a group whose leader is
ours are killed with it.

Every signal goes through a pidfd that was opened and then re-verified against what the scan saw
(start time and marker; for a member without the marker, its group and a leader still running), so
a PID reused by another process is never signalled. Never signals anything else, never touches the
store; reads ``/proc`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from app.cni.invoke import DELEGATE_MARKER

log = logging.getLogger(__name__)

_MARKER_PREFIX = DELEGATE_MARKER.encode() + b"="
_COMMAND_PREFIX = b"CNI_COMMAND="


class ReapError(RuntimeError):
    """Some orphaned plugin processes were still running when the deadline passed."""

    def __init__(self, survivors: list[Orphan]) -> None:
        pids = ", ".join(f"{orphan.pid} ({orphan.marker})" for orphan in survivors)
        super().__init__(f"orphaned plugin processes still running after SIGKILL: {pids}")
        self.survivors = survivors


@dataclass(frozen=True, slots=True)
class Orphan:
    """A plugin process (or a member of its process group) found running for a recorded attachment."""

    pid: int
    start_time: int
    """Clock ticks after boot when it started (``/proc/<pid>/stat`` field 22): with ``pid``, its identity."""
    pgid: int
    marker: str
    """``<containerID>/<ifname>`` of its attachment (for a member without it: its leader's)."""
    command: str
    """Its ``CNI_COMMAND`` (ADD, DEL, CHECK), "" if unknown."""
    marked: bool = True
    """Whether it carries the marker itself (else it is a member of a marked leader's group)."""

    @property
    def container_id(self) -> str:
        return self.marker.rsplit("/", 1)[0]


@dataclass(frozen=True, slots=True)
class _Stat:
    state: str
    pgid: int
    start_time: int


def find(markers: Collection[str], *, proc: str = "/proc") -> list[Orphan]:
    """Every live process whose ``MULTUS_PY_DELEGATE`` is one of ``markers``, plus the members of
    the process groups those lead; zombies (already dead) are left out."""
    wanted = {marker.encode() for marker in markers}
    if not wanted:
        return []
    found: list[Orphan] = []
    stats: dict[int, _Stat] = {}
    for pid in _pids(proc):
        stat = _read_stat(proc, pid)
        if stat is None or stat.state == "Z":
            continue
        stats[pid] = stat
        marker, command = _read_marker(proc, pid)
        if marker in wanted:
            found.append(Orphan(pid, stat.start_time, stat.pgid, marker.decode(), command))
    leaders = {orphan.pid: orphan for orphan in found if orphan.pgid == orphan.pid}
    ours = {orphan.pid for orphan in found}
    for pid, stat in stats.items():
        leader = leaders.get(stat.pgid)
        if leader is not None and pid not in ours:
            found.append(Orphan(pid, stat.start_time, stat.pgid, leader.marker, "", marked=False))
    return found


_outlived: set[tuple[str, int, int]] = set()
"""(proc, pid, start time) of the processes a ``reap`` gave up on: still running after its deadline."""


async def reap(markers: Collection[str], *, proc: str = "/proc", timeout: float = 30.0) -> list[Orphan]:  # noqa: ASYNC109
    """SIGKILL every process ``find`` reports and wait until each has exited; return them.

    Scans again after each round, until a scan finds nothing (a member forked meanwhile is caught
    by the next round). Raises ``ReapError`` if processes are still running after ``timeout``.

    A process that outlived one deadline (stuck in the kernel, its SIGKILL pending) is not waited
    for again: a later call whose scan finds nothing else signals it once more and raises
    ``ReapError`` at once. So a daemon's start-up waits for it once (recovery), not again for the
    spooled DEL of its sandbox, a runtime DEL or each GC pass; each still leaves the sandbox
    recorded until a scan finds the process gone.
    """
    deadline = time.monotonic() + timeout
    reaped: list[Orphan] = []
    while True:
        found = await asyncio.to_thread(find, markers, proc=proc)
        _forget_gone(proc)
        if not found:
            return reaped
        known = all((proc, orphan.pid, orphan.start_time) in _outlived for orphan in found)
        if known or time.monotonic() > deadline:
            if known:
                with contextlib.ExitStack() as stack:
                    _kill_verified(found, proc, stack)
            _outlived.update((proc, orphan.pid, orphan.start_time) for orphan in found)
            raise ReapError(found)
        with contextlib.ExitStack() as stack:
            killed = _kill_verified(found, proc, stack)
            reaped.extend(orphan for orphan, _ in killed)
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(_wait_exited, [fd for _, fd in killed], remaining)


def _forget_gone(proc: str) -> None:
    """Forget the outliving processes that have exited at last (a few ``stat`` reads: only stuck
    processes are remembered)."""
    for entry in [entry for entry in _outlived if entry[0] == proc]:
        _, pid, start_time = entry
        stat = _read_stat(proc, pid)
        if stat is None or stat.state == "Z" or stat.start_time != start_time:
            _outlived.discard(entry)


def _kill_verified(found: list[Orphan], proc: str, stack: contextlib.ExitStack) -> list[tuple[Orphan, int]]:
    """Open a pidfd for each orphan, check it is still the process the scan saw, SIGKILL it through
    the pidfd; the (orphan, pidfd) pairs signalled. The pidfds are closed by ``stack``."""
    opened: dict[int, tuple[Orphan, int]] = {}
    for orphan in found:
        fd = _pidfd(orphan.pid)
        if fd is None:
            continue
        stack.callback(os.close, fd)
        if _still(orphan, proc):
            opened[orphan.pid] = (orphan, fd)
    # A member without the marker is ours only while its group's leader (ours) is still running:
    # until that leader exits, its PID, and so the group ID, cannot name another group.
    verified = [
        (orphan, fd)
        for orphan, fd in opened.values()
        if orphan.marked or (orphan.pgid in opened and not _exited(opened[orphan.pgid][1]))
    ]
    killed: list[tuple[Orphan, int]] = []
    for orphan, fd in verified:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            continue
        log.warning(
            "killed orphaned plugin process %d (CNI_COMMAND=%s, attachment %s, process group %d)",
            orphan.pid,
            orphan.command or "?",
            orphan.marker if orphan.marked else f"{orphan.marker} (a member of its group)",
            orphan.pgid,
        )
        killed.append((orphan, fd))
    return killed


def _still(orphan: Orphan, proc: str) -> bool:
    """Is ``orphan.pid`` still the process the scan saw (same start, marker and group, not dead)?"""
    stat = _read_stat(proc, orphan.pid)
    if stat is None or stat.state == "Z" or stat.start_time != orphan.start_time or stat.pgid != orphan.pgid:
        return False
    marker, _ = _read_marker(proc, orphan.pid)
    return marker.decode() == orphan.marker if orphan.marked else True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _exited(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _wait_exited(fds: list[int], timeout: float) -> None:
    """Block until every pidfd reports its process exited, or ``timeout`` seconds passed."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    pending = set(fds)
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for fd, _ in poller.poll(left * 1000):
            pending.discard(fd)
            poller.unregister(fd)


def _pids(proc: str) -> Iterator[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _read_stat(proc: str, pid: int) -> _Stat | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = data[data.rindex(b")") + 2 :].split()
    return _Stat(state=fields[0].decode(), pgid=int(fields[2]), start_time=int(fields[19]))


def _read_marker(proc: str, pid: int) -> tuple[bytes, str]:
    """(``MULTUS_PY_DELEGATE`` value, ``CNI_COMMAND``) from the process's environment; b"" if absent."""
    try:
        with open(f"{proc}/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return b"", ""
    if _MARKER_PREFIX not in environ:
        return b"", ""
    marker, command = b"", ""
    for item in environ.split(b"\0"):
        if item.startswith(_MARKER_PREFIX):
            marker = item[len(_MARKER_PREFIX) :]
        elif item.startswith(_COMMAND_PREFIX):
            command = item[len(_COMMAND_PREFIX) :].decode("ascii", "replace")
    return marker, command
