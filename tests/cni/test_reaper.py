"""The orphan reaper: finds plugin processes by their MULTUS_PY_DELEGATE marker, kills them and their
process group through verified pidfds, waits until they are gone, and touches nothing else."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from app.cni import reaper
from app.cni.invoke import DELEGATE_MARKER
from tests.cni.support import unique

# A "plugin" that starts a child without the marker (its own environment, same process group), then blocks.
PLUGIN = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], env={})\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    """Running (not a zombie, not gone)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:  # each leads its own session: its unmarked child goes with its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _plugin(started: list[subprocess.Popen[bytes]], marker: str | None) -> tuple[int, int]:
    """Start a plugin-like process in its own session; (its pid, its unmarked child's pid)."""
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD"}
    if marker is not None:
        env[DELEGATE_MARKER] = marker
    process = subprocess.Popen(
        [sys.executable, "-c", PLUGIN], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    started.append(process)
    assert process.stdout is not None
    child = int(process.stdout.readline())
    return process.pid, child


async def test_a_marked_plugin_and_its_group_are_killed_and_gone_and_nothing_else_is(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    ours, other = f"{unique('cid')}/net1", f"{unique('cid')}/net1"
    leader, member = _plugin(processes, ours)
    other_leader, other_member = _plugin(processes, other)
    plain_leader, plain_member = _plugin(processes, None)

    found = reaper.find([ours])
    killed = await reaper.reap([ours])

    assert {(o.pid, o.marker, o.marked, o.command) for o in found} == {
        (leader, ours, True, "ADD"),
        (member, ours, False, ""),
    }
    assert {o.pid for o in killed} == {leader, member}
    assert not _alive(leader)
    assert not _alive(member)
    assert all(_alive(pid) for pid in (other_leader, other_member, plain_leader, plain_member))
    assert reaper.find([ours]) == []
    assert await reaper.reap([ours]) == []


async def test_a_process_that_is_no_longer_the_one_scanned_is_never_signalled(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    marker = f"{unique('cid')}/eth0"
    leader, _ = _plugin(processes, marker)
    [seen] = [o for o in reaper.find([marker]) if o.pid == leader]
    # the same PID with another start time: what a reused PID looks like to the reaper
    reused = reaper.Orphan(seen.pid, seen.start_time + 1, seen.pgid, seen.marker, seen.command)

    with ExitStack() as stack:
        assert reaper._kill_verified([reused], "/proc", stack) == []

    assert _alive(leader)


async def test_a_process_that_outlived_a_deadline_is_signalled_again_but_not_waited_for_again(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """A process still running after one ``reap``'s deadline (stuck in the kernel) makes the next
    ``reap`` of its marker give up at once, after one more SIGKILL, instead of waiting its deadline
    again. Here the first reaper's deadline has passed at once, so the process is never signalled
    by it and the second one's SIGKILL does kill it; had that reaper waited, it would have returned
    the process as killed rather than raised."""
    marker = f"{unique('cid')}/net1"
    leader, member = _plugin(processes, marker)
    with pytest.raises(reaper.ReapError):
        await reaper.reap([marker], timeout=0)
    assert _alive(leader)

    with pytest.raises(reaper.ReapError) as given_up:
        await reaper.reap([marker])

    assert {orphan.pid for orphan in given_up.value.survivors} == {leader, member}
    processes[0].wait()  # the second SIGKILL was sent, to the group too:
    with contextlib.suppress(ProcessLookupError):
        member_fd = os.pidfd_open(member)
        try:
            select.select([member_fd], [], [], 30)
        finally:
            os.close(member_fd)
    assert not _alive(member)
    assert await reaper.reap([marker]) == []  # gone, and forgotten: nothing left to give up on
