"""CHECK never looks into another sandbox's namespace: the one at the recorded path must be the one
recorded at ADD (``netns_id``), of today's boot.

A path can come to hold another namespace (a ``/proc/<pid>/ns/net`` of a reused pid, a bind mount
made again under the same name), and after a reboot every path that holds a namespace holds another
sandbox's, whatever its identity. CHECK listed that namespace's interfaces and ran the delegates'
CHECK in it, and passed when its interfaces happened to match.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from app.attach.errors import MultusCode, SandboxNotRunningError
from app.attach.requests import Trigger
from app.cni.types import CniError, ErrorCode, IfName
from tests.core import vf_support
from tests.core.support import Command, Netns, Node, new_container_id, pending, request_lines


def _network_naming_no_interface(node: Node) -> str:
    """A cluster network whose result names no interface: any namespace has what it names."""
    return node.recorder_network("cluster", result={"cniVersion": "1.0.0"})


def _replace_namespace(netns: Netns) -> None:
    """The same path, another namespace."""
    subprocess.run(["ip", "netns", "del", netns.name], check=True)
    subprocess.run(["ip", "netns", "add", netns.name], check=True)


async def test_check_fails_when_the_netns_path_holds_another_namespace_now(node: Node) -> None:
    conf = node.conf(_network_naming_no_interface(node))
    container, netns = new_container_id(), node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await engine.check(node.request(Command.CHECK, container, netns, conf))  # its own namespace: passes
    checks_before = len(node.recorder_entries("CHECK"))
    _replace_namespace(netns)

    with pytest.raises(CniError) as failed:
        await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert failed.value.code == MultusCode.NETNS_GONE
    assert "another network namespace" in failed.value.details
    assert len(node.recorder_entries("CHECK")) == checks_before  # no delegate CHECK ran in it


async def test_check_of_a_sandbox_of_an_earlier_boot_fails_whatever_its_path_holds(node: Node) -> None:
    conf = node.conf(_network_naming_no_interface(node))
    container, netns = new_container_id(), node.new_netns()  # same identity: stands for a reused one
    await node.engine(boot_id="boot-0").add(node.request(Command.ADD, container, netns, conf))

    with pytest.raises(CniError) as failed:
        await node.engine(boot_id="boot-1").check(node.request(Command.CHECK, container, netns, conf))

    assert failed.value.code == MultusCode.NETNS_GONE
    assert "earlier boot" in failed.value.details
    assert node.recorder_entries("CHECK") == []


async def test_a_hot_plug_into_a_sandbox_whose_netns_path_holds_another_namespace_is_refused(
    node: Node,
) -> None:
    """Hot-plug, like CHECK, lists the sandbox's interfaces before its delegate runs there: into
    the namespace that path holds now, the delegate would have added an interface to another
    sandbox (or to a namespace nobody will ever DEL from)."""
    conf = node.conf(_network_naming_no_interface(node))
    container, netns = new_container_id(), node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    _replace_namespace(netns)
    request = replace(node.request(Command.ADD, container, netns, conf), ifname=IfName("net1"))
    plan = vf_support.hotplug_plan(node, "0000:00:09.1", "net1")

    with pytest.raises(CniError) as refused:
        await engine.attach_delegate(request, plan)

    assert refused.value.code == MultusCode.NETNS_GONE
    assert "another network namespace" in refused.value.details
    assert [entry["env"]["CNI_IFNAME"] for entry in node.recorder_entries("ADD")] == ["eth0"], (
        "no hot-plug ran"
    )
    assert pending(node.checkpoint(container)) == ["eth0"], "nothing recorded for it"


@pytest.mark.parametrize("trigger", [Trigger.DELEGATE, Trigger.HOTPLUG])
async def test_a_hot_plug_into_a_sandbox_the_runtime_deled_is_recorded_only_for_its_caller_delegate(
    node: Node, trigger: Trigger
) -> None:
    """``POST /delegate``'s caller hears code 3 and the history keeps its refusal; native hot-plug
    gives that hot-plug up (``hotplug.HotplugReconciler``): no line, nothing was tried."""
    conf = node.conf(_network_naming_no_interface(node))
    container, netns = new_container_id(), node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    request = replace(
        node.request(Command.ADD, container, netns, conf, trigger=trigger), ifname=IfName("net1")
    )

    with pytest.raises(SandboxNotRunningError) as refused:
        await engine.attach_delegate(request, vf_support.hotplug_plan(node, "0000:00:09.1", "net1"))

    assert refused.value.code == ErrorCode.UNKNOWN_CONTAINER
    refusals = [(e.trigger, e.outcome, e.ifname) for e in request_lines(node.history(container), "ADD")][1:]
    assert refusals == ([(trigger, "error", "net1")] if trigger is Trigger.DELEGATE else [])
