"""Order, version and injection rules of the list verbs, observed through the recording test plugin.

The recorder is a real executable (tests/plugins/recorder.py) run through the real SubprocessExec:
each test reads back the environment and stdin every plugin received, in the order it ran.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from app.cni import api, invoke
from app.cni.types import (
    Attachment,
    CniError,
    ContainerId,
    ErrorCode,
    IfName,
    JsonObject,
    NetworkConfigList,
    PluginExitError,
    RefusedAlikeError,
    RuntimeConf,
)
from tests.cni.support import RecorderLog

RESULT_1_0 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"}],
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
}


def recorder(log: RecorderLog, marker: str, **behaviour: Any) -> JsonObject:
    return {"type": "recorder", "marker": marker, "recorder": {"log": str(log.path), **behaviour}}


def network(*plugins: JsonObject, version: str = "1.0.0", **flags: bool) -> NetworkConfigList:
    return NetworkConfigList(name="recnet", cni_version=version, plugins=plugins, raw=b"{}", **flags)


def markers(log: RecorderLog, command: str) -> list[str]:
    return [entry["stdin"]["marker"] for entry in log.entries() if entry["command"] == command]


@pytest.fixture
def rt() -> RuntimeConf:
    return RuntimeConf(
        container_id=ContainerId("ctr-1"),
        netns="/var/run/netns/ctr-1",
        ifname=IfName("net1"),
        args=(("IgnoreUnknown", "true"), ("K8S_POD_NAME", "pod-a")),
        capability_args={
            "portMappings": [{"hostPort": 80, "containerPort": 8080}],
            "mac": "02:00:00:00:00:01",
        },
    )


# --- ADD ------------------------------------------------------------------------------------------


async def test_add_threads_prev_result_through_a_chain(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    second = {**RESULT_1_0, "ips": [{"address": "10.1.0.6/24"}]}
    net = network(
        recorder(recorder_log, "a", result=RESULT_1_0),
        recorder(recorder_log, "b"),
        recorder(recorder_log, "c", result=second),
    )

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    first, echo, last = recorder_log.entries()
    assert "prevResult" not in first["stdin"]
    assert echo["stdin"]["prevResult"] == RESULT_1_0
    assert last["stdin"]["prevResult"] == RESULT_1_0  # the echo passed it on unchanged
    assert result == second


async def test_add_converts_each_result_to_the_list_version_before_passing_it_on(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    old = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/24"}]}
    net = network(recorder(recorder_log, "a", result=old), recorder(recorder_log, "b"))

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    assert recorder_log.entries()[1]["stdin"]["prevResult"] == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.5/24"}],
    }
    assert result["cniVersion"] == "1.0.0"


async def test_add_fills_in_a_result_version_the_plugin_left_out(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(recorder(recorder_log, "a", result={"ips": [{"address": "10.1.0.5/24"}]}), version="0.3.1")

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    assert result == {"cniVersion": "0.3.1", "ips": [{"address": "10.1.0.5/24", "version": "4"}]}


async def test_plugin_environment_names_the_attachment_and_nothing_else_of_ours(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    polluted = dataclasses.replace(cni, base_env={"PATH": "/usr/bin:/bin", "CNI_ARGS": "DAEMON=own"})

    await api.add_network_list(cni=polluted, net=network(recorder(recorder_log, "a")), rt=rt)

    assert recorder_log.entries()[0]["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr-1",
        "CNI_NETNS": "/var/run/netns/ctr-1",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAME=pod-a",
        "CNI_PATH": str(bin_dir),
    }


async def test_stdin_injects_list_name_and_version_with_sorted_keys(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    plugin = {
        "type": "recorder",
        "zeta": 1,
        "name": "own-name",
        "cniVersion": "0.1.0",
        **recorder(recorder_log, "a"),
    }

    await api.add_network_list(cni=cni, net=network(plugin), rt=rt)

    stdin = recorder_log.entries()[0]["stdin"]
    assert stdin["name"] == "recnet"
    assert stdin["cniVersion"] == "1.0.0"
    assert stdin["zeta"] == 1
    assert list(stdin) == sorted(stdin)


async def test_runtime_config_carries_only_capabilities_the_plugin_declares(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    capable = {
        **recorder(recorder_log, "a"),
        "capabilities": {"portMappings": True, "mac": False, "bandwidth": True},
    }
    net = network(capable, recorder(recorder_log, "b"))

    await api.add_network_list(cni=cni, net=net, rt=rt)

    first, second = recorder_log.entries()
    assert first["stdin"]["runtimeConfig"] == {"portMappings": [{"hostPort": 80, "containerPort": 8080}]}
    assert first["stdin"]["capabilities"] == capable["capabilities"]  # libcni leaves it in
    assert "runtimeConfig" not in second["stdin"]


@pytest.mark.parametrize(
    ("container_id", "ifname", "code"),
    [
        ("", "eth0", ErrorCode.UNKNOWN_CONTAINER),
        ("bad id", "eth0", ErrorCode.INVALID_ENVIRONMENT),
        ("ctr-1", "this-is-too-long0", ErrorCode.INVALID_ENVIRONMENT),
        ("ctr-1", "a/b", ErrorCode.INVALID_ENVIRONMENT),
    ],
)
async def test_add_refuses_a_bad_runtime_identity_before_running_anything(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog, container_id: str, ifname: str, code: int
) -> None:
    bad = dataclasses.replace(rt, container_id=ContainerId(container_id), ifname=IfName(ifname))

    with pytest.raises(CniError) as caught:
        await api.add_network_list(cni=cni, net=network(recorder(recorder_log, "a")), rt=bad)

    assert caught.value.code == code
    assert recorder_log.entries() == []


# --- DEL ------------------------------------------------------------------------------------------


async def test_del_runs_plugins_in_reverse_with_the_add_result(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(*(recorder(recorder_log, marker) for marker in "abc"))

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=RESULT_1_0)

    assert markers(recorder_log, "DEL") == ["c", "b", "a"]
    assert all(entry["stdin"]["prevResult"] == RESULT_1_0 for entry in recorder_log.entries())
    assert all(entry["env"]["CNI_COMMAND"] == "DEL" for entry in recorder_log.entries())


async def test_del_converts_prev_result_to_the_list_version(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    await api.del_network_list(
        cni=cni, net=network(recorder(recorder_log, "a"), version="0.4.0"), rt=rt, prev_result=RESULT_1_0
    )

    assert recorder_log.entries()[0]["stdin"]["prevResult"]["ips"][0]["version"] == "4"


@pytest.mark.parametrize(("version", "prev_result"), [("0.3.1", RESULT_1_0), ("1.0.0", None)])
async def test_del_omits_prev_result_before_0_4_0_or_when_there_is_none(
    cni: api.CniConfig,
    rt: RuntimeConf,
    recorder_log: RecorderLog,
    version: str,
    prev_result: JsonObject | None,
) -> None:
    net = network(recorder(recorder_log, "a"), version=version)

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=prev_result)

    assert "prevResult" not in recorder_log.entries()[0]["stdin"]


async def test_del_tries_every_plugin_and_groups_the_failures(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(
        recorder(recorder_log, "a", fail={"code": 11, "msg": "try later"}),
        recorder(recorder_log, "b"),
        recorder(recorder_log, "c", fail={"code": 7, "msg": "bad", "details": "why"}),
    )

    with pytest.raises(ExceptionGroup) as caught:
        await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=None)

    assert markers(recorder_log, "DEL") == ["c", "b", "a"]
    errors = [error for error in caught.value.exceptions if isinstance(error, CniError)]
    assert len(errors) == len(caught.value.exceptions)
    assert [(error.code, str(error)) for error in errors] == [
        (7, 'plugin type="recorder" name="recnet" failed (delete): bad; why'),
        (11, 'plugin type="recorder" name="recnet" failed (delete): try later'),
    ]


async def test_del_with_a_single_failure_raises_a_group_of_one(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(recorder(recorder_log, "a", fail={"code": 5, "msg": "disk"}))

    with pytest.raises(ExceptionGroup) as caught:
        await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=None)

    [error] = caught.value.exceptions
    assert isinstance(error, CniError)
    assert error.code == ErrorCode.IO_FAILURE


async def _add_failure(cni: api.CniConfig, rt: RuntimeConf, net: NetworkConfigList) -> api.AddFailure | None:
    with pytest.raises(api.ListAddError) as caught:
        await api.add_network_list(cni=cni, net=net, rt=rt)
    return caught.value.failure


async def test_a_plugin_exiting_with_its_own_error_at_add_is_named_as_refusing(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    refused = {"code": 999, "msg": "failed to load netconf", "details": "mtu"}
    net = network(
        recorder(recorder_log, "a"), recorder(recorder_log, "b", fail=refused), recorder(recorder_log, "c")
    )

    failure = await _add_failure(cni, rt, net)

    assert failure is not None
    assert failure.plugin == 1, "the list's second plugin refused; the third never ran"
    assert failure.refused
    assert (failure.code, failure.msg, failure.details) == (999, "failed to load netconf", "mtu"), (
        "the plugin's own object, without the list's context"
    )
    assert api.AddFailure.from_json(json.loads(json.dumps(failure.to_json()))) == failure
    assert markers(recorder_log, "ADD") == ["a", "b"]


async def test_a_plugin_asking_for_a_retry_at_add_has_not_refused(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(recorder(recorder_log, "a", fail={"code": 11, "msg": "busy"}))

    failure = await _add_failure(cni, rt, net)

    assert failure is not None
    assert not failure.refused


@pytest.mark.parametrize(
    ("returncode", "exited_by_itself"), [(1, True), (2, True), (-9, False), (None, False)]
)
def test_only_a_plugin_that_exited_by_itself_can_have_refused(
    returncode: int | None, exited_by_itself: bool
) -> None:
    """A plugin killed (the OOM killer, a signal of anyone's) or timed out (the daemon's own error)
    may have been anywhere in its work: such a failure is never taken as a refusal."""
    error = invoke.failure_error(
        plugin_path="/opt/cni/bin/p", returncode=returncode, stdout=b'{"code": 999, "msg": "x"}', stderr=b""
    )

    assert isinstance(error, PluginExitError) is exited_by_itself
    assert api.AddFailure.of(0, error).refused is exited_by_itself


async def test_del_excuses_the_refusing_plugin_failing_alike_and_those_after_it_and_dels_every_plugin(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(
        recorder(recorder_log, "a"),
        recorder(recorder_log, "b", fail={"code": 999, "msg": "failed to load netconf"}),
        recorder(recorder_log, "c", fail={"code": 1, "msg": "incompatible CNI versions"}),
    )
    failure = api.AddFailure(1, 999, "failed to load netconf", refused=True)

    with pytest.raises(ExceptionGroup) as caught:
        await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=None, add_failure=failure)

    assert markers(recorder_log, "DEL") == ["c", "b", "a"], "every plugin DELed, as always"
    c_never_ran, b_refused = caught.value.exceptions
    assert isinstance(c_never_ran, RefusedAlikeError)
    assert "never ran" in str(c_never_ran)
    assert isinstance(b_refused, RefusedAlikeError)
    assert "refused this config at ADD alike" in str(b_refused)


@pytest.mark.parametrize(
    ("plugin", "error", "refused"),
    [
        (0, {"code": 999, "msg": "failed to load netconf"}, True),
        (1, {"code": 999, "msg": "another error"}, True),
        (1, {"code": 999, "msg": "failed to load netconf"}, False),
    ],
    ids=["a-plugin-before-it", "another-error", "it-had-not-refused"],
)
async def test_a_del_failure_the_add_does_not_excuse_is_a_failure(
    cni: api.CniConfig,
    rt: RuntimeConf,
    recorder_log: RecorderLog,
    plugin: int,
    error: JsonObject,
    refused: bool,
) -> None:
    behaviours: list[dict[str, Any]] = [{}, {}]
    behaviours[plugin] = {"fail": error}
    net = network(*(recorder(recorder_log, marker, **b) for marker, b in zip("ab", behaviours, strict=True)))
    failure = api.AddFailure(1, 999, "failed to load netconf", refused=refused)

    with pytest.raises(ExceptionGroup) as caught:
        await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=None, add_failure=failure)

    [failed] = caught.value.exceptions
    assert not isinstance(failed, RefusedAlikeError)


async def test_del_refuses_an_unconvertible_prev_result_before_running_anything(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(recorder(recorder_log, "a"), version="0.4.0")

    with pytest.raises(ExceptionGroup) as caught:
        await api.del_network_list(
            cni=cni, net=net, rt=rt, prev_result={"cniVersion": "1.0.0", "ips": "nope"}
        )

    [error] = caught.value.exceptions
    assert isinstance(error, CniError)
    assert error.code == ErrorCode.DECODING_FAILURE
    assert error.msg.startswith('network "recnet": prevResult: invalid result: ips: ')
    assert recorder_log.entries() == []


# --- CHECK ----------------------------------------------------------------------------------------


async def test_check_runs_in_order_with_prev_result_and_stops_at_the_first_failure(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(
        recorder(recorder_log, "a"),
        recorder(recorder_log, "b", fail={"code": 101, "msg": "eth0 missing"}),
        recorder(recorder_log, "c"),
    )

    with pytest.raises(CniError) as caught:
        await api.check_network_list(cni=cni, net=net, rt=rt, prev_result=RESULT_1_0)

    assert markers(recorder_log, "CHECK") == ["a", "b"]
    assert recorder_log.entries()[0]["stdin"]["prevResult"] == RESULT_1_0
    assert caught.value.code == 101
    assert caught.value.msg == 'plugin type="recorder" name="recnet" failed (check): eth0 missing'


async def test_check_is_refused_before_0_4_0(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    with pytest.raises(CniError) as caught:
        await api.check_network_list(
            cni=cni, net=network(recorder(recorder_log, "a"), version="0.3.1"), rt=rt, prev_result=RESULT_1_0
        )

    assert caught.value.code == ErrorCode.INCOMPATIBLE_VERSION
    assert caught.value.msg == 'configuration version "0.3.1" does not support the CHECK command'
    assert recorder_log.entries() == []


async def test_check_does_nothing_when_the_list_disables_it(
    cni: api.CniConfig, rt: RuntimeConf, recorder_log: RecorderLog
) -> None:
    net = network(recorder(recorder_log, "a"), disable_check=True)

    await api.check_network_list(cni=cni, net=net, rt=rt, prev_result=RESULT_1_0)

    assert recorder_log.entries() == []


# --- GC and STATUS --------------------------------------------------------------------------------


async def test_gc_tells_every_plugin_the_valid_attachments_and_collects_errors(
    cni: api.CniConfig, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    net = network(
        recorder(recorder_log, "a", fail={"code": 11, "msg": "busy"}),
        recorder(recorder_log, "b"),
        version="1.1.0",
    )
    valid = [
        Attachment(ContainerId("ctr-1"), IfName("eth0")),
        Attachment(ContainerId("ctr-2"), IfName("net1")),
    ]

    with pytest.raises(ExceptionGroup) as caught:
        await api.gc_network_list(cni=cni, net=net, valid_attachments=valid)

    assert markers(recorder_log, "GC") == ["a", "b"]
    expected = [{"containerID": "ctr-1", "ifname": "eth0"}, {"containerID": "ctr-2", "ifname": "net1"}]
    for entry in recorder_log.entries():
        assert entry["stdin"]["cni.dev/valid-attachments"] == expected
        assert entry["stdin"]["cni.dev/attachments"] == expected
        assert entry["env"] == {"CNI_COMMAND": "GC", "CNI_PATH": str(bin_dir)}
    [error] = caught.value.exceptions
    assert isinstance(error, CniError)
    assert error.code == ErrorCode.TRY_AGAIN_LATER
    assert error.msg == 'plugin type="recorder" name="recnet" failed (gc): busy'


@pytest.mark.parametrize(("version", "disable_gc"), [("1.0.0", False), ("1.1.0", True)])
async def test_gc_does_nothing_before_1_1_0_or_when_disabled(
    cni: api.CniConfig, recorder_log: RecorderLog, version: str, disable_gc: bool
) -> None:
    net = network(recorder(recorder_log, "a"), version=version, disable_gc=disable_gc)

    await api.gc_network_list(cni=cni, net=net, valid_attachments=[])

    assert recorder_log.entries() == []


async def test_status_stops_at_the_first_error_and_keeps_its_code(
    cni: api.CniConfig, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    net = network(
        recorder(recorder_log, "a"),
        recorder(recorder_log, "b", fail={"code": 50, "msg": "no leases"}),
        recorder(recorder_log, "c"),
        version="1.1.0",
    )

    with pytest.raises(CniError) as caught:
        await api.status_network_list(cni=cni, net=net)

    assert markers(recorder_log, "STATUS") == ["a", "b"]
    assert recorder_log.entries()[0]["env"] == {"CNI_COMMAND": "STATUS", "CNI_PATH": str(bin_dir)}
    assert caught.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    assert caught.value.msg == 'plugin type="recorder" name="recnet" failed (status): no leases'


async def test_status_succeeds_without_asking_before_1_1_0(
    cni: api.CniConfig, recorder_log: RecorderLog
) -> None:
    await api.status_network_list(cni=cni, net=network(recorder(recorder_log, "a", fail={"code": 50})))

    assert recorder_log.entries() == []


# --- VERSION --------------------------------------------------------------------------------------


async def test_version_asks_the_plugin_with_only_command_and_path(
    cni: api.CniConfig, recorder_log: RecorderLog, bin_dir: Path
) -> None:
    logged = dataclasses.replace(cni, base_env={"RECORDER_LOG": str(recorder_log.path)})

    info = await api.version(cni=logged, plugin_type="recorder", cni_version="1.0.0")

    assert info["cniVersion"] == "1.0.0"
    assert "1.1.0" in info["supportedVersions"]
    [entry] = recorder_log.entries()
    assert entry["env"] == {"CNI_COMMAND": "VERSION", "CNI_PATH": str(bin_dir)}
    assert entry["stdin"] == {"cniVersion": "1.0.0"}


async def test_version_of_a_reference_plugin(cni: api.CniConfig) -> None:
    info = await api.version(cni=cni, plugin_type="bridge")

    assert "1.0.0" in info["supportedVersions"]
