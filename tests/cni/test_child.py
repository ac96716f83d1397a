"""The plugin process runner: output collected whole, every child reaped, every descriptor closed.

The children are real processes (small shell scripts); exits are watched with pidfds, and once
through the fallback that waits in a thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cni import child
from tests.cni.support import (
    blocked_reading_stdin,
    descriptors_exhausted,
    open_descriptors,
    script,
    wait_until,
)

ENV = {"PATH": "/usr/bin:/bin"}


def reaped(pid: int) -> bool:
    """True once ``pid`` is gone from /proc: exited and waited for (an unreaped child stays a zombie)."""
    return not Path(f"/proc/{pid}").exists()


async def test_stdout_stderr_and_exit_code_come_back_whole(tmp_path: Path) -> None:
    program = str(script(tmp_path, "echo", 'cat; echo "to stderr" >&2; exit 3\n'))
    before = open_descriptors()

    finished = await child.spawn(program, env=ENV, stdin=b'{"cniVersion": "1.0.0"}').communicate()

    assert finished == child.Finished(3, b'{"cniVersion": "1.0.0"}', b"to stderr\n")
    assert open_descriptors() == before


async def test_input_and_output_larger_than_a_pipe_buffer_pass_through(tmp_path: Path) -> None:
    program = str(script(tmp_path, "copy", "cat; cat /dev/null >&2\n"))
    data = os.urandom(3 * 1024 * 1024)

    finished = await child.spawn(program, env=ENV, stdin=data).communicate()

    assert finished.returncode == 0
    assert finished.stdout == data


async def test_a_child_that_never_reads_its_stdin_is_still_answered(tmp_path: Path) -> None:
    program = str(script(tmp_path, "deaf", "echo done\n"))

    finished = await child.spawn(program, env=ENV, stdin=b"x" * (1024 * 1024)).communicate()

    assert (finished.returncode, finished.stdout) == (0, b"done\n")


async def test_the_child_gets_exactly_the_environment_it_is_given(tmp_path: Path) -> None:
    program = str(script(tmp_path, "env", "env\n"))

    finished = await child.spawn(program, env=ENV | {"CNI_COMMAND": "ADD"}).communicate()

    assert sorted(finished.stdout.decode().split()) == [
        "CNI_COMMAND=ADD",
        "PATH=/usr/bin:/bin",
        "PWD=" + os.getcwd(),
    ]


async def test_the_child_leads_a_session_of_its_own(tmp_path: Path) -> None:
    program = str(script(tmp_path, "session", "ps -o sid= -p $$\n"))

    process = child.spawn(program, env=ENV)
    finished = await process.communicate()

    assert int(finished.stdout) == process.pid


async def test_a_missing_program_raises_oserror_and_leaves_no_descriptor(tmp_path: Path) -> None:
    before = open_descriptors()

    with pytest.raises(FileNotFoundError):
        child.spawn(str(tmp_path / "absent"), env=ENV)

    assert open_descriptors() == before


async def test_a_child_killed_by_a_signal_reports_it_negative(tmp_path: Path) -> None:
    program = str(script(tmp_path, "self-kill", "kill -TERM $$\n"))

    finished = await child.spawn(program, env=ENV).communicate()

    assert finished.returncode == -signal.SIGTERM


async def test_a_process_left_behind_holding_the_output_does_not_hold_up_the_answer(tmp_path: Path) -> None:
    # A daemon the plugin starts (in a session of its own, so outside the plugin's group) keeps the
    # plugin's stdout and stderr open; with pipes, waiting for their end would wait for it too.
    holder = tmp_path / "holder.pid"
    left_behind = f"setsid sh -c 'echo $$ > {holder}; exec sleep 30' &"
    program = str(script(tmp_path, "forker", f"{left_behind}\necho answer; echo note >&2\n"))
    before = open_descriptors()
    process = child.spawn(program, env=ENV)

    finished = await asyncio.wait_for(process.communicate(), 10)

    assert finished == child.Finished(0, b"answer\n", b"note\n")
    await wait_until(lambda: holder.exists() and holder.read_text().strip())
    os.kill(int(holder.read_text()), signal.SIGKILL)
    await wait_until(lambda: reaped(process.pid))
    assert open_descriptors() == before


async def test_a_child_that_outlives_the_grace_is_reported_and_reaped_when_it_exits(tmp_path: Path) -> None:
    program = str(script(tmp_path, "stubborn", "trap '' TERM; sleep 1\n"))
    before = open_descriptors()
    process = child.spawn(program, env=ENV)
    await asyncio.sleep(0.1)  # the trap is set

    process.kill_group(signal.SIGTERM)  # ignored

    assert not await process.reap(0.2)
    assert len(open_descriptors() - before) <= 1  # only the exit watch stays, until the exit
    await wait_until(lambda: reaped(process.pid))
    await wait_until(lambda: open_descriptors() == before)


async def test_communicate_gives_up_at_its_deadline_and_leaves_the_child_to_its_caller(
    tmp_path: Path,
) -> None:
    program = str(script(tmp_path, "sleeper", "sleep 30\n"))
    before = open_descriptors()
    process = child.spawn(program, env=ENV)
    loop = asyncio.get_running_loop()

    with pytest.raises(TimeoutError):
        await process.communicate(deadline=loop.time() + 0.1)

    assert not reaped(process.pid)  # still running: the deadline interrupts only the call
    process.kill_group(signal.SIGKILL)
    assert await process.reap(5.0)
    await wait_until(lambda: reaped(process.pid))
    await wait_until(lambda: open_descriptors() == before)


async def test_an_abandoned_child_is_reaped_when_it_exits(tmp_path: Path) -> None:
    program = str(script(tmp_path, "sleeper", "sleep 30\n"))
    before = open_descriptors()
    process = child.spawn(program, env=ENV)
    communicating = asyncio.ensure_future(process.communicate())
    await asyncio.sleep(0.05)
    communicating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await communicating

    process.kill_group(signal.SIGKILL)
    process.abandon()

    await wait_until(lambda: reaped(process.pid))
    await wait_until(lambda: open_descriptors() == before)


async def test_without_pidfds_exits_are_awaited_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "USE_PIDFD", False)
    program = str(script(tmp_path, "plain", "cat; exit 5\n"))
    before = open_descriptors()

    process = child.spawn(program, env=ENV, stdin=b"abc")
    finished = await process.communicate()

    assert finished == child.Finished(5, b"abc", b"")
    assert process._pidfd is None
    assert reaped(process.pid)
    assert open_descriptors() == before


async def test_where_memfd_create_is_refused_the_stdio_goes_through_unlinked_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> int:
        raise OSError(1, "Operation not permitted")  # a seccomp profile without memfd_create

    monkeypatch.setattr(child, "_USE_MEMFD", True)
    monkeypatch.setattr(os, "memfd_create", refuse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "bin").mkdir()
    program = str(script(tmp_path / "bin", "echo", "cat; echo err >&2\n"))
    before = open_descriptors()

    finished = await child.spawn(program, env=ENV, stdin=b"in").communicate()

    assert finished == child.Finished(0, b"in", b"err\n")
    assert child._USE_MEMFD is False
    assert open_descriptors() == before
    assert os.listdir(tmp_path) == ["bin"]  # unlinked at once


async def test_a_spawn_out_of_descriptors_fails_alone_and_the_next_one_still_gets_memory_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon briefly at its descriptor limit (a burst of sandboxes) must not give up memory files
    for good: an earlier version took EMFILE from ``memfd_create`` for a kernel without memfds and
    sent every later plugin's output through temporary files on disk (unsealable)."""
    monkeypatch.setattr(child, "_USE_MEMFD", child._USE_MEMFD)  # whatever this test does to it
    program = str(script(tmp_path, "echo", "cat\n"))
    before = open_descriptors()

    with descriptors_exhausted(), pytest.raises(OSError, match="Too many open files") as refused:
        child.spawn(program, env=ENV, stdin=b"first")
    process = child.spawn(program, env=ENV, stdin=b"second")
    outputs = process._outputs
    assert outputs is not None
    stdio = [os.readlink(f"/proc/self/fd/{fd}") for fd in outputs]
    finished = await process.communicate()

    assert refused.value.errno == errno.EMFILE
    assert stdio == ["/memfd:plugin-stdout (deleted)", "/memfd:plugin-stderr (deleted)"]
    assert finished == child.Finished(0, b"second", b"")
    assert open_descriptors() == before


def zombie(pid: int) -> bool:
    """Exited and not waited for yet (state ``Z`` in ``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "Z"


async def test_a_child_whose_exit_was_read_is_reaped_at_the_next_childs_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "LATE_REAP_SECONDS", 60.0)  # not the timer: the next exit
    program = str(script(tmp_path, "quick", "exit 4\n"))

    first = child.spawn(program, env=ENV)
    finished = await first.communicate()

    assert finished.returncode == 4
    assert zombie(first.pid)  # its status read through the pidfd, left for later
    assert (await child.spawn(program, env=ENV).communicate()).returncode == 4
    assert reaped(first.pid)


def test_a_child_a_closed_loop_left_unreaped_is_reaped_by_the_next_exit_in_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "LATE_REAP_SECONDS", 60.0)  # the first loop's timer never fires
    program = str(script(tmp_path, "quick", "exit 0\n"))

    async def run_one() -> int:
        process = child.spawn(program, env=ENV)
        await process.communicate()
        return process.pid

    first = asyncio.run(run_one())
    assert zombie(first)
    asyncio.run(run_one())
    assert reaped(first)
    child.reap_exited()


async def test_a_child_no_other_exit_follows_is_reaped_on_the_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child, "LATE_REAP_SECONDS", 0.01)
    program = str(script(tmp_path, "last", "exit 0\n"))

    process = child.spawn(program, env=ENV)
    await process.communicate()

    await wait_until(lambda: reaped(process.pid))


async def test_a_killed_childs_code_is_minus_its_signal_read_without_reaping_it(tmp_path: Path) -> None:
    program = str(script(tmp_path, "killed", "kill -KILL $$\n"))

    process = child.spawn(program, env=ENV)
    finished = await process.communicate()

    assert finished.returncode == -signal.SIGKILL
    child.reap_exited()
    assert reaped(process.pid)


async def test_every_child_whose_exit_was_read_is_reaped(tmp_path: Path) -> None:
    program = str(script(tmp_path, "many", "cat\n"))
    before = open_descriptors()
    processes = [child.spawn(program, env=ENV, stdin=b"x") for _ in range(5)]

    finished = await asyncio.gather(*(process.communicate() for process in processes))
    child.reap_exited()

    assert [item.returncode for item in finished] == [0] * 5
    assert all(reaped(process.pid) for process in processes)
    assert open_descriptors() == before


def watched_descriptors(watch: int) -> list[int]:
    """The descriptors an epoll set holds, as the kernel lists them (``tfd:`` lines of its fdinfo)."""
    lines = Path(f"/proc/self/fdinfo/{watch}").read_text().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("tfd:")]


async def test_children_running_at_once_share_the_loops_one_exit_watch_and_leave_it_empty(
    tmp_path: Path,
) -> None:
    program = str(script(tmp_path, "codes", 'sleep 0.2; exit "$CODE"\n'))
    loop = asyncio.get_running_loop()
    processes = [child.spawn(program, env=ENV | {"CODE": str(code)}) for code in range(8)]
    watch = child.exit_watch(loop).fileno()
    assert child.exit_watch_descriptors() >= {watch}
    assert len(watched_descriptors(watch)) == 8  # one pidfd each, in one set

    finished = await asyncio.gather(*(process.communicate() for process in processes))

    assert [item.returncode for item in finished] == list(range(8))
    assert watched_descriptors(watch) == []
    later = child.spawn(program, env=ENV | {"CODE": "9"})
    assert watched_descriptors(watch) == [later._pidfd]  # the same set serves the loop's next child
    assert (await later.communicate()).returncode == 9
    assert watched_descriptors(watch) == []


def pipe_max_size() -> int:
    return int(Path("/proc/sys/fs/pipe-max-size").read_text())


async def test_a_child_holding_its_input_waits_in_its_first_read_until_it_is_released(
    tmp_path: Path,
) -> None:
    program = str(script(tmp_path, "copy", "exec cat\n"))
    data = os.urandom(256 * 1024)  # over a pipe's default 64 KiB: the pipe is grown to take it whole
    before = open_descriptors()

    process = child.spawn(program, env=ENV, stdin=data, hold_input=True)
    await wait_until(lambda: blocked_reading_stdin(process.pid))
    await asyncio.sleep(0.1)
    assert blocked_reading_stdin(process.pid)  # still nothing to read
    process.release_input()
    finished = await process.communicate()

    assert (finished.returncode, finished.stdout) == (0, data)
    assert open_descriptors() == before


async def test_a_held_child_given_up_reads_end_of_file_and_leaves_no_descriptor(tmp_path: Path) -> None:
    program = str(script(tmp_path, "count", "exec wc -c\n"))
    before = open_descriptors()

    process = child.spawn(program, env=ENV, stdin=b"never sent", hold_input=True)
    process.abandon()

    await wait_until(lambda: reaped(process.pid))
    assert open_descriptors() == before


async def test_an_input_no_pipe_can_hold_starts_nothing(tmp_path: Path) -> None:
    program = script(tmp_path, "sink", "cat >/dev/null\n")
    limit = pipe_max_size()
    before = open_descriptors()

    try:
        process = child.spawn(str(program), env=ENV, stdin=b"x" * (limit + 1), hold_input=True)
    except child.InputTooLargeError:
        assert open_descriptors() == before
        return
    # Only a process allowed past fs.pipe-max-size (CAP_SYS_RESOURCE) gets here: the pipe took it all.
    process.release_input()
    assert (await process.communicate()).returncode == 0


@pytest.mark.parametrize("preexec", [None, lambda: None], ids=["spawned", "forked"])
async def test_the_child_starts_with_the_signals_python_ignores_back_at_their_default(
    tmp_path: Path, preexec: Callable[[], None] | None
) -> None:
    program = str(script(tmp_path, "ignored", "sed -n 's/^SigIgn:\\t*//p' /proc/$$/status\n"))

    finished = await child.spawn(program, env=ENV, preexec=preexec).communicate()

    ignored = int(finished.stdout, 16)
    assert ignored & (1 << (signal.SIGPIPE - 1)) == 0
    assert ignored & (1 << (signal.SIGXFSZ - 1)) == 0


async def test_a_process_left_behind_cannot_grow_the_output_once_the_child_has_exited(tmp_path: Path) -> None:
    # A daemon the plugin starts without redirecting its stdio keeps writing to it after the
    # plugin's answer was read. Nobody reads those files again: written into them, its output
    # would pile up in memory for as long as it runs (with pipes, its writes would fail).
    go, report = tmp_path / "go", tmp_path / "report"
    os.mkfifo(go)
    left_behind = (
        f"exec 5>&1 6>&2; read line < {go}; head -c 65536 /dev/zero; head -c 65536 /dev/zero >&2; "
        f"stat -L -c %s /proc/self/fd/5 /proc/self/fd/6 > {report}.tmp; mv {report}.tmp {report}"
    )
    program = str(script(tmp_path, "forker", f"setsid sh -c '{left_behind}' &\necho answer; echo note >&2\n"))

    finished = await asyncio.wait_for(child.spawn(program, env=ENV).communicate(), 10)
    await asyncio.to_thread(go.write_text, "go\n")
    await wait_until(report.exists)

    assert finished == child.Finished(0, b"answer\n", b"note\n")
    assert report.read_text().split() == ["7", "5"]  # what the child had written when it exited


async def test_a_child_whose_exit_cannot_be_watched_is_killed_reaped_and_leaves_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a pidfd (EMFILE) and without a thread to wait in (the process limit), building the
    ``Child`` failed after the spawn: the plugin ran on unwatched, stayed a zombie once it exited,
    and its two output files stayed open in the daemon."""
    program = str(script(tmp_path, "sleeper", "sleep 30\n"))
    monkeypatch.setattr(child, "USE_PIDFD", False)

    def no_thread(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    before = open_descriptors()
    started: list[int] = []
    real_start = child._start

    def remembered(*args: object, **kwargs: object) -> int:
        started.append(real_start(*args, **kwargs))  # type: ignore[arg-type]
        return started[-1]

    monkeypatch.setattr(child, "_start", remembered)

    with pytest.raises(RuntimeError, match="can't start new thread"):
        child.spawn(program, env=ENV)

    [pid] = started
    assert open_descriptors() == before
    await wait_until(lambda: reaped(pid))
