"""A PCI device (an SR-IOV VF) recorded for one sandbox is never handed to another one's delegate.

Whatever names it (a NAD's ``deviceID``/``pciBusID``, which a ``resourceName`` injects; the
``runtimeConfig.deviceID`` a selection's ``deviceID`` or the runtime's runtimeConfig sets; a
hot-plug's), an ADD or hot-plug handing a delegate a device another sandbox's attachment records is
refused with a CNI error naming the field and the address, before any delegate runs, with nothing
recorded (invariant 13). Unchecked, a pod annotation could name another pod's VF and have the plugin
take it, or share it (a DPDK VF has no netdev to move). The sandbox's own records never refuse it.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``), and the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from app.attach.engine import AttachEngine
from app.attach.netconf import MultusNetConf
from app.attach.networks import DelegatePlan
from app.cni.types import CniError, ErrorCode, IfName
from tests.core import vf_support
from tests.core.support import Command, Node, new_container_id, pending, request_lines
from tests.core.vf_support import fake_vf, vf_network

PCI = "0000:00:05.1"


@pytest.fixture
def sysfs(node: Node) -> Path:
    """A fake sysfs holding one VF, ``PCI``, whose netdev is a veth in the host namespace."""
    return fake_vf(node, PCI).sysfs


def adds_of(node: Node, container: str) -> list[str]:
    """The interfaces the recorder was asked to ADD for ``container``."""
    return [
        entry["env"]["CNI_IFNAME"]
        for entry in node.recorder_entries("ADD")
        if entry["env"]["CNI_CONTAINERID"] == container
    ]


async def refused_add(engine: AttachEngine, node: Node, conf: MultusNetConf, container: str) -> CniError:
    with pytest.raises(CniError) as refused:
        await engine.add(
            node.request(Command.ADD, container, node.new_netns(), conf, pod="pod-b", uid="uid-b")
        )
    return refused.value


async def test_an_add_handed_a_vf_another_sandbox_holds_is_refused_before_any_delegate_runs(
    node: Node, sysfs: Path
) -> None:
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=sysfs)
    first, second = new_container_id(), new_container_id()
    netns = node.new_netns()
    await engine.add(node.request(Command.ADD, first, netns, conf))

    error = await refused_add(engine, node, conf, second)

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in error.msg
    assert "deviceID" in error.msg
    assert first in error.details
    assert node.checkpoint(second) is None, "nothing recorded"
    assert adds_of(node, second) == [], "no delegate ran, not even the cluster network's"
    assert [line.outcome for line in request_lines(node.history(second), "ADD")] == ["error"]
    assert pending(node.checkpoint(first)) == ["eth0", "net1"], "the holder is untouched"
    # once the holder is gone, the same ADD succeeds: the refusal ends with the other sandbox
    await engine.delete(node.request(Command.DEL, first, netns, conf))
    await engine.add(node.request(Command.ADD, second, node.new_netns(), conf, pod="pod-b", uid="uid-b"))
    assert adds_of(node, second) == ["eth0", "net1"]


async def test_an_add_handed_a_vf_by_runtime_config_device_id_another_sandbox_holds_is_refused(
    node: Node, sysfs: Path
) -> None:
    """runtimeConfig.deviceID: what a selection's ``deviceID`` (or the runtime) hands a plugin
    declaring the capability; host-device and sriov-cni take the device it names."""
    vf = vf_network(node, PCI, capabilities={"deviceID": True})
    conf = replace(node.conf(vf), runtime_config={"deviceID": PCI})
    engine = node.engine(sysfs_root=sysfs)
    first, second = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, first, node.new_netns(), conf))

    error = await refused_add(engine, node, conf, second)

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in error.msg
    assert "runtimeConfig.deviceID" in error.msg
    assert node.checkpoint(second) is None
    assert adds_of(node, second) == []


async def test_two_adds_racing_for_one_vf_get_it_once(node: Node, sysfs: Path) -> None:
    """The check runs in the commit of the intents, one unit at a time: no window between them."""
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=sysfs)
    containers = [new_container_id(), new_container_id()]
    requests = [
        node.request(Command.ADD, container, node.new_netns(), conf, pod=f"pod-{i}", uid=f"uid-{i}")
        for i, container in enumerate(containers)
    ]

    outcomes = await asyncio.gather(*(engine.add(request) for request in requests), return_exceptions=True)

    refused = [outcome for outcome in outcomes if isinstance(outcome, CniError)]
    assert len(refused) == 1, outcomes
    assert PCI in refused[0].msg
    recorded = [container for container in containers if node.checkpoint(container) is not None]
    assert len(recorded) == 1


def hotplug_plan(node: Node, ifname: str) -> DelegatePlan:
    return vf_support.hotplug_plan(node, PCI, ifname)


async def test_a_hot_plug_handed_a_vf_another_sandbox_holds_is_refused_and_its_own_is_not(
    node: Node, sysfs: Path
) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine(sysfs_root=sysfs)
    holder, other = new_container_id(), new_container_id()
    holder_netns = node.new_netns()
    await engine.add(node.request(Command.ADD, holder, holder_netns, conf))
    await engine.add(node.request(Command.ADD, other, node.new_netns(), conf, pod="pod-b", uid="uid-b"))
    holder_request = replace(node.request(Command.ADD, holder, holder_netns, conf), ifname=IfName("net1"))
    await engine.attach_delegate(holder_request, hotplug_plan(node, "net1"))

    other_request = node.request(Command.ADD, other, None, conf, pod="pod-b", uid="uid-b")
    with pytest.raises(CniError) as refused:
        await engine.attach_delegate(
            replace(other_request, ifname=IfName("net1")), hotplug_plan(node, "net1")
        )

    assert refused.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in refused.value.msg
    assert "runtimeConfig.deviceID" in refused.value.msg
    assert pending(node.checkpoint(other)) == ["eth0"], "nothing recorded"
    assert adds_of(node, other) == ["eth0"]
    # the holder's own records do not count against it (here: the same device under another name)
    await engine.attach_delegate(replace(holder_request, ifname=IfName("net2")), hotplug_plan(node, "net2"))
    assert pending(node.checkpoint(holder)) == ["eth0", "net1", "net2"]


async def test_an_add_handing_one_vf_to_two_of_its_delegates_is_refused_before_any_runs(
    node: Node, sysfs: Path
) -> None:
    """Two networks of one pod naming the same device (a NAD listed twice, or two NADs of one
    resource given the same ID): the second plugin would find the VF gone into the pod already."""
    conf = node.conf(
        node.recorder_network("cluster"), vf_network(node, PCI), vf_network(node, PCI.upper(), name="sriov-b")
    )
    engine = node.engine(sysfs_root=sysfs)
    container = new_container_id()

    error = await refused_add(engine, node, conf, container)

    assert error.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "two delegates" in error.msg
    assert "'sriov-net' as net1" in error.msg
    assert "'sriov-b' as net2" in error.msg
    assert node.checkpoint(container) is None, "nothing recorded"
    assert adds_of(node, container) == [], "no delegate ran"
