"""A plugin started before it may act (``exec_plugin(ready=...)``): it gets its input only once ready.

The plugins are real processes (shell scripts); whether one sits in its first read of stdin is read
from ``/proc/PID/syscall``, and plugins are found by the marker in their environment, as the reaper
finds them.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from app.cni import child, invoke, reaper
from app.cni.types import CniError, NotExecutedError
from tests.cni.support import blocked_reading_stdin, open_descriptors, script, wait_until

MARKER = "0123456789abcdef/net1"
ENV = {"PATH": "/usr/bin:/bin", invoke.DELEGATE_MARKER: MARKER}


def plugin_pids() -> list[int]:
    return [orphan.pid for orphan in reaper.find([MARKER])]


def leaders() -> list[int]:
    """The plugin processes themselves (each leads its process group), not what they started."""
    return [orphan.pid for orphan in reaper.find([MARKER]) if orphan.pid == orphan.pgid]


async def test_a_plugin_is_started_at_once_and_reads_its_input_only_once_ready(tmp_path: Path) -> None:
    path = script(tmp_path, "copy", "exec cat")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    before = open_descriptors()

    running = asyncio.ensure_future(
        invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b'{"cniVersion": "1.1.0"}', env=ENV, timeout=10, ready=ready
        )
    )
    await wait_until(lambda: len(plugin_pids()) == 1 and blocked_reading_stdin(plugin_pids()[0]))
    await asyncio.sleep(0.1)
    assert not running.done()
    ready.set_result(None)

    assert await running == b'{"cniVersion": "1.1.0"}'
    assert open_descriptors() == before


async def test_a_plugin_whose_ready_fails_is_killed_unread_and_not_executed(tmp_path: Path) -> None:
    witness = tmp_path / "read"
    path = script(tmp_path, "copy", f"cat >/dev/null; touch {witness}")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    before = open_descriptors()

    running = asyncio.ensure_future(
        invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"{}", env=ENV, timeout=10, ready=ready
        )
    )
    await wait_until(lambda: bool(leaders()))
    [pid] = leaders()  # the shell (its ``cat`` may be there too)
    ready.set_exception(OSError(errno.EIO, os.strerror(errno.EIO)))

    with pytest.raises(NotExecutedError) as caught:
        await running
    assert caught.value.msg.startswith(f"plugin {path} was not given its input")
    assert "Input/output error" in caught.value.msg
    await wait_until(lambda: not Path(f"/proc/{pid}").exists())  # killed and reaped
    assert not witness.exists()
    assert open_descriptors() == before


async def test_a_plugin_whose_input_no_pipe_holds_is_started_only_once_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pipe_holds_it(size: int) -> tuple[int, int]:
        raise child.InputTooLargeError(f"no pipe takes {size} bytes here")

    monkeypatch.setattr(child, "_input_pipe", no_pipe_holds_it)
    spawned: list[bool] = []
    spawn = child.spawn

    def recording_spawn(*args: Any, **kwargs: Any) -> child.Child:
        spawned.append(kwargs["hold_input"])
        return spawn(*args, **kwargs)

    monkeypatch.setattr(child, "spawn", recording_spawn)
    path = script(tmp_path, "copy", "exec cat")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    running = asyncio.ensure_future(
        invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"input", env=ENV, timeout=10, ready=ready
        )
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert spawned == [True]  # the attempt to hold it, refused before anything started
    assert not plugin_pids()
    ready.set_result(None)

    assert await running == b"input"
    assert spawned == [True, False]


async def test_a_plugin_waiting_for_ready_past_its_timeout_is_killed(tmp_path: Path) -> None:
    path = script(tmp_path, "copy", "exec cat")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    with pytest.raises(CniError, match=r"timed out after 0\.3s"):
        await invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"{}", env=ENV, timeout=0.3, ready=ready
        )
    await wait_until(lambda: not plugin_pids())


async def test_a_plugin_whose_ready_is_given_up_is_killed_unread_and_not_executed(tmp_path: Path) -> None:
    path = script(tmp_path, "copy", "exec cat")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    running = asyncio.ensure_future(
        invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"{}", env=ENV, timeout=10, ready=ready
        )
    )
    await wait_until(lambda: bool(leaders()))
    [pid] = leaders()
    ready.cancel()

    with pytest.raises(NotExecutedError, match="what it waited for was given up"):
        await running
    await wait_until(lambda: not Path(f"/proc/{pid}").exists())


async def test_a_call_cancelled_as_its_ready_is_given_up_is_cancelled_not_failed(tmp_path: Path) -> None:
    # A caller giving up both at once (a shutdown) cancelled the call, yet it raised NotExecutedError:
    # the cancellation was swallowed, the task ran on as if a plugin had failed (its caller's
    # TaskGroup or timeout saw a failure, not a cancellation).
    path = script(tmp_path, "copy", "exec cat")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    running = asyncio.ensure_future(
        invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"{}", env=ENV, timeout=10, ready=ready
        )
    )
    await wait_until(lambda: bool(leaders()))
    [pid] = leaders()
    ready.cancel()
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_until(lambda: not Path(f"/proc/{pid}").exists())  # killed, and reaped
