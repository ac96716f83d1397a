"""A plugin's output is held in the daemon's memory only up to a capacity, while it runs too, and a
shell plugin that reopens its stdout or stderr by name still works as it does with pipes.

The plugins are real shell scripts. Every flood has a bound of its own (``head -c 64M /dev/zero``),
so a regression cannot let a writer fill the machine's memory. What an output file held is read
from the kernel (``st_size`` and ``st_blocks`` of the file through ``/proc``), never assumed; no
assertion rests on how fast anything runs: a writer that must be looked at while it runs waits in a
fifo nobody writes, or in ``sleep``, until it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from app.cni import child, invoke, results
from app.cni.types import CniError, ErrorCode
from tests.cni.support import open_descriptors, script, wait_until

ENV = {"PATH": "/usr/bin:/bin"}
FLOOD = "head -c 67108864 /dev/zero"
"""64 MiB, far past either capacity, and never more."""
RESULT = '{"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}'
MIB = 1024 * 1024
STDOUT_LIMIT = 4 * MIB
STDERR_LIMIT = 1 * MIB
STDERR_TAIL = 2048
"""The limits the docs state (``docs/invariants.md``, 14), and the part of a stderr past its limit
that is read at the exit."""


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not reaped yet runs nothing and holds no file)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill_if_running(pid_file: Path) -> None:
    """Clean up after a failing run: a process left behind must not outlive the test."""
    if pid_file.exists() and pid_file.read_text().strip():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def held(pid: int, fd: int) -> tuple[int, int]:
    """The size and the memory (``st_blocks`` in bytes) of the file ``pid`` has open as ``fd``."""
    status = os.stat(f"/proc/{pid}/fd/{fd}")
    return status.st_size, status.st_blocks * 512


# ---- shell plugins reopening their stdio by name ----------------------------------------------

REOPENING_PLUGIN = f"""set -e
cat > /dev/null
echo "first note" > /dev/stderr
echo "second note" >> /dev/stderr
ls /nonexistent-{os.getpid()} 2>> /dev/stderr || true
true 2>/dev/stdout
echo '{RESULT}' > /dev/stdout
echo "done" >> /dev/stderr
"""
"""A ``set -e`` script writing its result with ``> /dev/stdout`` and logging with ``> /dev/stderr``
and ``>> /dev/stderr``, as shell plugins do: every write goes through a file it opened itself."""


async def test_a_shell_plugin_reopening_its_stdout_and_stderr_by_name_is_answered_as_with_pipes(
    tmp_path: Path,
) -> None:
    program = str(script(tmp_path, "reopener", REOPENING_PLUGIN))
    before = open_descriptors()

    finished = await asyncio.wait_for(child.spawn(program, env=ENV, stdin=b"{}").communicate(), 30)

    assert finished.returncode == 0, finished.stderr  # no write refused, under set -e
    assert finished.stdout == f"{RESULT}\n".encode()
    lines = finished.stderr.decode().splitlines()
    assert lines[:2] == ["first note", "second note"]
    assert "nonexistent" in lines[2]  # ls's complaint, appended
    assert lines[3:] == ["done"]
    assert open_descriptors() == before


async def test_a_shell_plugin_reopening_its_stdout_by_name_gives_its_result_to_the_call(
    tmp_path: Path,
) -> None:
    path = script(tmp_path, "reopener", REOPENING_PLUGIN)

    stdout = await invoke.SubprocessExec().exec_plugin(
        plugin_path=str(path), stdin=b"{}", env=ENV, timeout=30
    )

    assert json.loads(stdout) == json.loads(RESULT)


# ---- while the plugin runs ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_a_plugin_flooding_an_output_while_it_runs_fails_with_a_decoding_error_naming_it(
    tmp_path: Path, stream: str
) -> None:
    # The flood ends and the plugin sleeps past no deadline of the test's: only a look at the
    # size while it runs can end it (the call's own timeout, 60 s, would fail it with code 999).
    pid_file = tmp_path / "plugin.pid"
    redirect = "" if stream == "stdout" else " >&2"
    path = script(tmp_path, "flood", f"echo $$ > {pid_file}\n{FLOOD}{redirect}\nexec sleep 60\n")
    runner = invoke.SubprocessExec(max_running=2)
    capacity = STDOUT_LIMIT if stream == "stdout" else STDERR_LIMIT
    before = open_descriptors()
    try:
        with pytest.raises(CniError) as caught:
            await runner.exec_plugin(plugin_path=str(path), stdin=b"{}", env=ENV, timeout=60)

        assert caught.value.code == ErrorCode.DECODING_FAILURE
        assert caught.value.msg == (
            f"plugin {path} wrote more than {capacity} bytes to {stream}, over the daemon's limit on"
            f" a plugin's {stream} ({capacity // MIB} MiB); its process group was killed"
        )
        assert gone(int(pid_file.read_text()))  # killed and reaped before the call failed
        assert runner.slots.running == 0
        assert open_descriptors() == before  # the memory file is released with its last descriptor
    finally:
        kill_if_running(pid_file)


async def test_a_running_plugin_past_its_stdout_capacity_holds_no_more_than_it_wrote_until_the_look(
    tmp_path: Path,
) -> None:
    # The plugin writes 5 MiB (past the capacity by 1 MiB), then waits in a fifo nobody opens for
    # writing before it would write 64 MiB more: the look finds it while it waits, and what its
    # stdout holds then (size and memory) is what it wrote before the look, and no more.
    never = tmp_path / "never"
    os.mkfifo(never)
    body = f"head -c {5 * MIB} /dev/zero\nread line < {never}\n{FLOOD}\n"
    process = child.spawn(str(script(tmp_path, "paced", body)), env=ENV)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(child.OutputOverflowError) as caught:
            await process.communicate(deadline=loop.time() + 60)

        assert (caught.value.stream, caught.value.running) == ("stdout", True)
        size, memory = held(process.pid, 1)
        assert size == 5 * MIB
        assert memory <= 5 * MIB + 2 * MIB  # at most a huge page more, where shmem uses them
        assert not gone(process.pid)  # left to its caller, as at a timeout
    finally:
        process.kill_group(signal.SIGKILL)
    assert await process.reap(30)


async def test_a_plugin_writing_past_its_capacity_through_a_reopened_stdout_is_found_while_it_runs(
    tmp_path: Path,
) -> None:
    # "> /dev/stdout" opens the file anew: the plugin's writes move no offset the parent shares.
    body = f"head -c {5 * MIB} /dev/zero > /dev/stdout\nexec sleep 60\n"
    process = child.spawn(str(script(tmp_path, "reopened", body)), env=ENV)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(child.OutputOverflowError) as caught:
            await process.communicate(deadline=loop.time() + 60)

        assert (caught.value.stream, caught.value.running) == ("stdout", True)
    finally:
        process.kill_group(signal.SIGKILL)
    assert await process.reap(30)


# ---- at the exit and after it -------------------------------------------------------------------


@pytest.fixture
def no_look_while_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """No look before the exit (a run is looked at only past the interval): what is found, is
    found at the exit, however fast the machine runs the plugin."""
    monkeypatch.setattr(child, "OUTPUT_CHECK_INTERVAL", 3600.0, raising=False)


@pytest.mark.usefixtures("no_look_while_running")
async def test_a_plugin_that_exits_with_a_stdout_past_its_capacity_fails_none_of_it_read(
    tmp_path: Path,
) -> None:
    path = script(tmp_path, "flood", f"{FLOOD}\n")
    before = open_descriptors()

    with pytest.raises(CniError) as caught:
        await invoke.SubprocessExec().exec_plugin(plugin_path=str(path), stdin=b"{}", env=ENV, timeout=60)

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg == (
        f"plugin {path} wrote more than {STDOUT_LIMIT} bytes to stdout, over the daemon's"
        " limit on a plugin's stdout (4 MiB), none of it read"
    )
    assert open_descriptors() == before


@pytest.mark.usefixtures("no_look_while_running")
async def test_of_a_stderr_past_its_capacity_at_the_exit_only_the_tail_is_read(tmp_path: Path) -> None:
    body = f"{FLOOD} >&2\necho 'the last words' >&2\necho '{RESULT}'\n"

    finished = await asyncio.wait_for(
        child.spawn(str(script(tmp_path, "chatty", body)), env=ENV).communicate(), 30
    )

    assert finished.returncode == 0
    assert finished.stdout == f"{RESULT}\n".encode()
    assert len(finished.stderr) == STDERR_TAIL
    assert finished.stderr.endswith(b"\0the last words\n")


async def test_a_process_left_behind_flooding_the_output_after_the_exit_adds_nothing(tmp_path: Path) -> None:
    # The plugin leaves behind a writer (in a session of its own: no kill of the plugin's group
    # reaches it) that floods stdout and stderr once the answer has been read.
    go, report, writer_pid = tmp_path / "go", tmp_path / "report", tmp_path / "writer.pid"
    os.mkfifo(go)
    writer = (
        f"echo $$ > {writer_pid}; exec 5>&1 6>&2; read line < {go}; {FLOOD}; {FLOOD} >&2; "
        f"stat -L -c %s,%b /proc/self/fd/5 /proc/self/fd/6 > {report}.tmp; mv {report}.tmp {report}"
    )
    body = f"setsid sh -c '{writer}' &\necho '{RESULT}'\necho note >&2\n"
    try:
        finished = await asyncio.wait_for(
            child.spawn(str(script(tmp_path, "leaver", body)), env=ENV).communicate(), 30
        )
        await asyncio.to_thread(go.write_text, "go\n")
        await wait_until(report.exists, within=30)

        assert finished == child.Finished(0, f"{RESULT}\n".encode(), b"note\n")
        (stdout_size, stdout_blocks), (stderr_size, stderr_blocks) = (
            map(int, line.split(",")) for line in report.read_text().splitlines()
        )
        assert (stdout_size, stderr_size) == (len(RESULT) + 1, len("note\n"))  # sealed at the exit
        assert stdout_blocks * 512 <= 2 * MIB  # a page (a huge page at most): nothing was added
        assert stderr_blocks * 512 <= 2 * MIB
    finally:
        kill_if_running(writer_pid)


# ---- what an unparsable answer keeps -------------------------------------------------------------


def test_an_unparsable_answer_keeps_only_its_last_512_bytes_in_the_error_details() -> None:
    output = b"x" * (STDOUT_LIMIT - 600) + b"y" * 512

    with pytest.raises(CniError) as caught:
        results.decode_result(output, version="1.0.0", plugin="chatty")

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.details == "y" * 512
