"""A ``/delegate`` CHECK (``hotplug.serve_delegate``) checks the one attachment its CNI_IFNAME
names, from the recorded call with the recorded ADD result as prevResult, as the ``/cni`` CHECK
checks each; the sandbox's other attachments are not looked at. An interface with no completed ADD
recorded is code 3, its delegate's CHECK not run; another pod's sandbox is refused (code 4). A
``/delegate`` DEL of an interface not recorded succeeds, whatever pod its CNI_ARGS name."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from app.attach.engine import AttachEngine
from app.attach.errors import MultusCode
from app.attach.hotplug import DelegateCall, serve_delegate
from app.attach.requests import Trigger
from app.cni.types import CniError, ErrorCode, IfName, JsonObject
from tests.core.support import Command, Netns, Node, hot_recorder_plan, new_container_id

HOT_MAC = "0a:58:0a:0b:00:07"
HOT_RESULT: JsonObject = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "net1", "mac": HOT_MAC, "sandbox": "x"}],
    "ips": [{"address": "10.11.0.7/24", "interface": 0}],
}


async def _ip(netns: Netns, *arguments: str) -> None:
    ip = await asyncio.create_subprocess_exec("ip", "-n", netns.name, *arguments)
    assert await ip.wait() == 0


async def _sandbox_with_net1(node: Node, *, cluster_healthy: bool) -> tuple[AttachEngine, str, Netns]:
    """A running sandbox with ``net1`` hot-plugged and present as recorded; its cluster network's
    interface ``if-cluster`` is missing unless ``cluster_healthy`` (then its result names none)."""
    cluster = node.recorder_network(
        "cluster", **({"result": {"cniVersion": "1.0.0"}} if cluster_healthy else {})
    )
    conf = node.conf(cluster)
    engine, container, netns = node.engine(), new_container_id(), node.new_netns()
    request = node.request(Command.ADD, container, netns, conf)
    await engine.add(request)
    plan = hot_recorder_plan(node, result=HOT_RESULT)
    await engine.attach_delegate(replace(request, ifname=IfName("net1"), trigger=Trigger.DELEGATE), plan)
    await _ip(netns, "link", "add", "net1", "address", HOT_MAC, "type", "veth")
    return engine, container, netns


def _delegate_check(
    node: Node, container: str, netns: Netns, ifname: str, *, pod: str = "pod-a"
) -> DelegateCall:
    request = node.request(
        Command.CHECK, container, netns, node.conf("cluster"), pod=pod, trigger=Trigger.DELEGATE
    )
    return DelegateCall(request=replace(request, ifname=IfName(ifname)), net=None)


def _checks(node: Node) -> list[tuple[str, str, str]]:
    return [call for call in node.calls() if call[0] == "CHECK"]


async def test_a_delegate_check_checks_its_interface_alone_with_its_recorded_result(node: Node) -> None:
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=False)
    with pytest.raises(CniError) as whole:  # the sandbox's CHECK: eth0's if-cluster is missing
        await engine.check(node.request(Command.CHECK, container, netns, node.conf("cluster")))
    assert whole.value.code == MultusCode.INTERFACE_MISSING

    assert await serve_delegate(engine, _delegate_check(node, container, netns, "net1")) is None

    assert _checks(node) == [("CHECK", "hot", "net1")]
    [entry] = node.recorder_entries("CHECK")
    assert entry["stdin"]["prevResult"]["interfaces"] == HOT_RESULT["interfaces"]
    assert entry["env"]["CNI_NETNS"] == netns.path


async def test_a_delegate_check_fails_when_its_interface_is_gone(node: Node) -> None:
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=True)
    await _ip(netns, "link", "del", "net1")

    with pytest.raises(CniError) as failed:
        await serve_delegate(engine, _delegate_check(node, container, netns, "net1"))

    assert failed.value.code == MultusCode.INTERFACE_MISSING
    assert '"net1"' in failed.value.msg
    assert _checks(node) == []


async def test_a_delegate_check_of_an_interface_never_attached_is_code_3(node: Node) -> None:
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=True)
    await engine.check(node.request(Command.CHECK, container, netns, node.conf("cluster")))  # healthy
    checked_before = _checks(node)

    with pytest.raises(CniError) as failed:
        await serve_delegate(engine, _delegate_check(node, container, netns, "net7"))

    assert failed.value.code == ErrorCode.UNKNOWN_CONTAINER
    assert '"net7"' in failed.value.msg
    assert _checks(node) == checked_before, "no delegate's CHECK ran"
    [*_, line] = node.history(container)
    assert (line.command, line.ifname, line.outcome) == ("CHECK", "net7", "error")


async def test_a_delegate_check_of_a_hot_plug_that_left_no_result_is_code_3(node: Node) -> None:
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=True)
    request = node.request(Command.ADD, container, netns, node.conf("cluster"), trigger=Trigger.DELEGATE)
    failing = hot_recorder_plan(node, fail={"code": 11, "msg": "hot"}, failOn=["ADD", "DEL"])
    with pytest.raises(CniError):
        await engine.attach_delegate(
            replace(request, ifname=IfName("net2")), replace(failing, ifname=IfName("net2"))
        )
    record = node.checkpoint(container)
    assert record is not None
    attachment = record.attachment("net2")
    assert attachment is not None
    assert attachment.state == "intent"  # its rollback DEL failed too

    with pytest.raises(CniError) as failed:
        await serve_delegate(engine, _delegate_check(node, container, netns, "net2"))

    assert failed.value.code == ErrorCode.UNKNOWN_CONTAINER
    assert "'intent'" in failed.value.details
    assert _checks(node) == []


async def test_a_delegate_check_naming_another_pod_is_refused(node: Node) -> None:
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=True)

    with pytest.raises(CniError) as failed:
        await serve_delegate(engine, _delegate_check(node, container, netns, "net1", pod="pod-b"))

    assert failed.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "K8S_POD_NAME=pod-b" in failed.value.msg
    assert _checks(node) == []


async def test_a_delegate_del_of_an_interface_not_recorded_succeeds_whatever_pod_it_names(node: Node) -> None:
    """Refused (code 4) only while the interface is there (docs/protocol.md): the pod was compared
    first, so a DEL naming another pod failed for an interface that is not there, until the runtime
    DELed the sandbox."""
    engine, container, netns = await _sandbox_with_net1(node, cluster_healthy=True)
    request = replace(
        _delegate_check(node, container, netns, "net7", pod="pod-b").request, command=Command.DEL
    )

    await serve_delegate(engine, DelegateCall(request=request, net=None))

    with pytest.raises(CniError) as refused:  # the interface is there: another pod's is refused
        await serve_delegate(engine, DelegateCall(request=replace(request, ifname=IfName("net1")), net=None))
    assert refused.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert [call[0] for call in node.calls()].count("DEL") == 0
