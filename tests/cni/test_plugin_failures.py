"""How plugin failures reach the caller: codes kept, context added, hung plugins killed, bad types refused.

Plugins here are real executables: the recorder, or small shell scripts for exec-level behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from app.cni import api, invoke
from app.cni.types import (
    CniError,
    ContainerId,
    ErrorCode,
    IfName,
    JsonObject,
    NetworkConfigList,
    NotExecutedError,
    RuntimeConf,
)
from tests.cni.support import RecorderLog, descriptors_exhausted, script, wait_until

RT = RuntimeConf(container_id=ContainerId("ctr-1"), netns="/var/run/netns/none", ifname=IfName("eth0"))


def recorder(log: RecorderLog, **behaviour: Any) -> JsonObject:
    return {"type": "recorder", "recorder": {"log": str(log.path), **behaviour}}


def network(*plugins: JsonObject, version: str = "1.0.0") -> NetworkConfigList:
    return NetworkConfigList(name="failnet", cni_version=version, plugins=plugins, raw=b"{}")


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as gone: it holds no resources)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# --- errors printed by plugins --------------------------------------------------------------------


async def test_plugin_error_code_msg_and_details_pass_through_with_plugin_context(
    cni: api.CniConfig, recorder_log: RecorderLog
) -> None:
    net = network(
        recorder(recorder_log, fail={"code": 11, "msg": "lease db busy", "details": "locked by 42"})
    )

    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=cni, net=net, rt=RT)

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert caught.value.transient
    assert caught.value.msg == 'plugin type="recorder" name="failnet" failed (add): lease db busy'
    assert caught.value.details == "locked by 42"


async def test_add_stops_at_the_first_failing_plugin(cni: api.CniConfig, recorder_log: RecorderLog) -> None:
    net = network(recorder(recorder_log, fail={"code": 7, "msg": "no"}), recorder(recorder_log))

    with pytest.raises(CniError):
        await api.add_network_list(cni=cni, net=net, rt=RT)

    assert recorder_log.commands() == ["ADD"]


async def test_garbage_on_stdout_after_success_is_a_decoding_failure_naming_the_plugin(
    cni: api.CniConfig, recorder_log: RecorderLog
) -> None:
    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=cni, net=network(recorder(recorder_log, garbage=True)), rt=RT)

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg.startswith('plugin type="recorder" name="failnet" failed (add): ')
    assert 'plugin "recorder" printed output that is not valid JSON' in caught.value.msg
    assert caught.value.details == "this is { not JSON"


async def test_failure_without_an_error_object_is_internal_and_names_plugin_status_and_stderr(
    cni: api.CniConfig, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    net = network(recorder(recorder_log, garbage=True, exit=3, stderr="boom: no such device"))

    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=cni, net=net, rt=RT)

    assert caught.value.code == ErrorCode.INTERNAL
    assert f"plugin {bin_dir / 'recorder'} failed (exit status 3)" in caught.value.msg
    assert caught.value.details == "boom: no such device"


async def test_result_of_the_wrong_shape_names_the_field_and_plugin(
    cni: api.CniConfig, recorder_log: RecorderLog
) -> None:
    bad = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5"}]}

    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=cni, net=network(recorder(recorder_log, result=bad)), rt=RT)

    assert caught.value.code == ErrorCode.DECODING_FAILURE
    assert caught.value.msg.endswith(
        'printed an invalid result: ips[0].address: "10.1.0.5" is not a CIDR (address/prefix)'
    )
    assert 'plugin "recorder"' in caught.value.msg


# --- timeouts and cancellation ----------------------------------------------------------------------


async def test_hanging_plugin_times_out_and_its_whole_process_group_is_killed(
    cni: api.CniConfig, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    impatient = dataclasses.replace(cni, timeout=1.0)

    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=impatient, net=network(recorder(recorder_log, hang=True)), rt=RT)

    assert caught.value.code == ErrorCode.INTERNAL
    assert f"plugin {bin_dir / 'recorder'} timed out after 1s" in caught.value.msg
    [entry] = recorder_log.entries()
    assert entry["pgid"] == entry["pid"]  # the plugin leads its own group
    await wait_until(lambda: process_gone(entry["pid"]) and process_gone(entry["child"]))


async def test_cancelling_an_invocation_kills_the_plugin_and_its_children(
    cni: api.CniConfig, recorder_log: RecorderLog
) -> None:
    task = asyncio.create_task(
        api.add_network_list(cni=cni, net=network(recorder(recorder_log, hang=True)), rt=RT),
        name="hanging-add",
    )
    await wait_until(lambda: bool(recorder_log.entries()))

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [entry] = recorder_log.entries()
    await wait_until(lambda: process_gone(entry["pid"]) and process_gone(entry["child"]))


# --- refusing plugin types before anything runs ---------------------------------------------------------


@pytest.mark.parametrize(
    "plugin_type", ["../x", "a/b", "/usr/lib/cni/bridge", "..", ".", "", "no-such-plugin"]
)
async def test_bad_or_missing_plugin_type_anywhere_refuses_the_whole_list_up_front(
    cni: api.CniConfig, recorder_log: RecorderLog, plugin_type: str
) -> None:
    net = network(recorder(recorder_log), {"type": plugin_type})

    with pytest.raises(CniError) as add_error:
        await api.add_network_list(cni=cni, net=net, rt=RT)
    with pytest.raises(ExceptionGroup) as del_error:
        await api.del_network_list(cni=cni, net=net, rt=RT, prev_result=None)

    assert add_error.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert add_error.value.msg.startswith(f'plugin type="{plugin_type}" name="failnet" failed (add): ')
    [refusal] = del_error.value.exceptions
    assert isinstance(refusal, CniError)
    assert refusal.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert recorder_log.entries() == []


async def test_missing_plugin_message_names_the_search_path(cni: api.CniConfig, bin_dir: Path) -> None:
    with pytest.raises(CniError) as caught:
        await api.version(cni=dataclasses.replace(cni, path=(str(bin_dir), "/nowhere")), plugin_type="nope")

    assert caught.value.msg == f'failed to find plugin "nope" in path [{bin_dir} /nowhere]'


# --- exec-level behaviour -----------------------------------------------------------------------------


async def test_exec_retries_while_the_plugin_binary_is_still_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    writer = path.open("w")
    writer.write("#!/bin/sh\necho '{\"ok\": true}'\n")
    writer.flush()
    path.chmod(0o755)
    asyncio.get_running_loop().call_later(0.1, writer.close)

    stdout = await invoke.SubprocessExec().exec_plugin(plugin_path=str(path), stdin=b"", env={}, timeout=10)

    assert stdout == b'{"ok": true}\n'


async def test_exec_gives_up_on_text_file_busy_after_its_retries(tmp_path: Path) -> None:
    path = tmp_path / "busy"
    with path.open("w") as writer:
        writer.write("#!/bin/sh\n")
        writer.flush()
        path.chmod(0o755)
        with pytest.raises(CniError) as caught:
            await invoke.SubprocessExec(busy_retries=1, busy_delay=0.01).exec_plugin(
                plugin_path=str(path), stdin=b"", env={}, timeout=10
            )

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER  # a file being written: it passes
    assert caught.value.msg == f"failed to execute plugin {path}: Text file busy"


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("#!/bin/sh\nexit 0\n", 0o644, "Permission denied"),  # the execute bit gone since the lookup
        ("not a program, no #! line\n", 0o755, "Exec format error"),
        ("#!/nonexistent/interpreter\n", 0o755, "No such file or directory"),
    ],
    ids=["no-execute-bit", "not-a-program", "interpreter-missing"],
)
async def test_a_plugin_file_that_cannot_be_executed_as_it_is_is_an_invalid_config_naming_it(
    tmp_path: Path, content: str, mode: int, reason: str
) -> None:
    """What the lookup refuses as code 7 (a file that is not executable), found at the exec: the same
    code, not 999, and nothing ran."""
    path = tmp_path / "broken"
    path.write_text(content)
    path.chmod(mode)

    with pytest.raises(NotExecutedError) as caught:
        await invoke.SubprocessExec().exec_plugin(plugin_path=str(path), stdin=b"", env={}, timeout=10)

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg == f"failed to execute plugin {path}: {reason}"


async def test_a_plugin_the_daemon_has_no_descriptors_to_start_is_try_again_later_and_runs_next_time(
    tmp_path: Path,
) -> None:
    """A burst of sandboxes can take every descriptor of a daemon under a low ``RLIMIT_NOFILE``: the
    plugin's memory files cannot be made and nothing runs. That shortage passes, so the runtime is
    told to try again (code 11), not handed an internal error (999, as before)."""
    path = script(tmp_path, "fine", "echo '{\"ok\": true}'")
    executor = invoke.SubprocessExec()

    with descriptors_exhausted(), pytest.raises(NotExecutedError) as caught:
        await executor.exec_plugin(plugin_path=str(path), stdin=b"{}", env={}, timeout=10)
    stdout = await executor.exec_plugin(plugin_path=str(path), stdin=b"{}", env={}, timeout=10)

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert caught.value.msg == (
        f"failed to execute plugin {path}: Too many open files: the daemon is short of descriptors, "
        "memory or processes for now"
    )
    assert stdout == b'{"ok": true}\n'


async def test_a_plugin_held_for_its_input_without_descriptors_to_start_is_try_again_later(
    tmp_path: Path,
) -> None:
    """The same when the plugin would be started before it may have its input (``ready``): its
    input pipe cannot be made either."""
    path = script(tmp_path, "fine", "echo '{\"ok\": true}'")
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    with descriptors_exhausted(), pytest.raises(NotExecutedError) as caught:
        await invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"{}", env={}, timeout=10, ready=ready
        )

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert not ready.done()  # refused before it waited for anything


async def test_plugin_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    path = script(tmp_path, "suicide", "kill -9 $$")

    with pytest.raises(CniError) as caught:
        await invoke.SubprocessExec().exec_plugin(plugin_path=str(path), stdin=b"", env={}, timeout=10)

    assert "(killed by SIGKILL)" in caught.value.msg


async def test_plugin_that_ignores_stdin_and_fails_still_reports_its_error(tmp_path: Path) -> None:
    path = script(tmp_path, "early", """echo '{"code": 4, "msg": "missing CNI_COMMAND"}'; exit 1""")

    with pytest.raises(CniError) as caught:
        await invoke.SubprocessExec().exec_plugin(
            plugin_path=str(path), stdin=b"x" * 1_000_000, env={}, timeout=10
        )

    assert (caught.value.code, caught.value.msg) == (4, "missing CNI_COMMAND")


async def test_plugin_gets_exactly_the_environment_it_is_given(tmp_path: Path) -> None:
    path = script(tmp_path, "env", "env")

    stdout = await invoke.SubprocessExec().exec_plugin(
        plugin_path=str(path), stdin=b"", env={"CNI_COMMAND": "ADD", "ONLY": "this"}, timeout=10
    )

    variables = dict(line.split("=", 1) for line in stdout.decode().splitlines())
    shell_own = {"PWD", "OLDPWD", "SHLVL", "_"}
    assert {key: value for key, value in variables.items() if key not in shell_own} == {
        "CNI_COMMAND": "ADD",
        "ONLY": "this",
    }


async def test_a_plugin_whose_pipeline_reader_quits_early_is_not_left_writing_forever(tmp_path: Path) -> None:
    # The daemon (Python) ignores SIGPIPE; a plugin must not inherit that: the writer of a pipeline
    # whose reader has quit is ended by SIGPIPE, as when any Go runtime (or a shell) runs it.
    path = script(tmp_path, "pipeline", "while :; do echo y; done | head -n1")

    stdout = await invoke.SubprocessExec().exec_plugin(plugin_path=str(path), stdin=b"", env={}, timeout=5)

    assert stdout == b"y\n"
