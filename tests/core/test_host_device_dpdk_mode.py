"""host-device in DPDK mode hands the pod its PCI device, whatever netdev its configuration names.

The reference host-device plugin (``loadConf``) replaces its ``pciBusID`` with a
``runtimeConfig.deviceID`` it is handed, then looks at that PCI device's driver: bound to a
user-space driver (``vfio-pci``, ``uio_pci_generic``, ``igb_uio``), it runs in DPDK mode, moving no
netdev at all, even when its ``device``, ``hwaddr`` or ``kernelpath`` names one: the pod is handed
the PCI device. Such a device was neither claimed nor recorded (a netdev field was taken to mean the
PCI device is not the one taken): another sandbox handed the same VF was let through, both pods
driving it. Now the claim asks the device's driver, and only for a host-device naming both a netdev
and a PCI device: an ADD without one reads nothing more of sysfs.

No SR-IOV hardware here, and the real plugin reads the real ``/sys`` (where no device is bound to
a user-space driver): the PCI device is registered in a fake sysfs tree (``sysfsRoot``) with its
``driver`` link to ``vfio-pci``, and the recorder plugin, installed as ``host-device``, stands in
for the plugin in DPDK mode (it moves nothing and answers no interface, as the plugin then does).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.attach import vfs
from app.cni.conf import load_network_list
from app.cni.types import CniError, ErrorCode, IfName
from tests.core.support import Command, Node, new_container_id
from tests.core.vf_support import bind, hotplug_plan, refused_for_another_pod, vf_network

PCI, OTHER = "0000:00:0b.1", "0000:00:0b.2"
NETDEV_FIELDS = {"device": "eth9", "hwaddr": "02:00:00:00:00:09", "kernelpath": "/sys/devices/pci0000:00/x"}


def dpdk_device(node: Node, pci: str = PCI) -> Path:
    """A PCI device bound to vfio-pci (so with no netdev) in the node's fake sysfs; its root."""
    sysfs = node.root / "sys"
    (sysfs / "bus" / "pci" / "devices" / pci).mkdir(parents=True)
    bind(sysfs, pci, "vfio-pci")
    return sysfs


def dpdk_host_device_network(node: Node, **fields: Any) -> str:
    """A host-device network naming a netdev (``device``) and ``fields``, run by the recorder."""
    (node.bin_dir / "host-device").symlink_to(node.bin_dir / "recorder")
    node.write_network(
        "dpdk-hd",
        {
            "cniVersion": "1.0.0",
            "name": "dpdk-hd",
            "type": "host-device",
            "device": NETDEV_FIELDS["device"],
            "recorder": {"log": str(node.recorder_log)},
            **fields,
        },
    )
    return "dpdk-hd"


HANDED: dict[str, tuple[dict[str, Any], dict[str, str] | None]] = {
    "pciBusID": ({"pciBusID": PCI}, None),
    "runtimeConfig.deviceID": ({"pciBusID": OTHER, "capabilities": {"deviceID": True}}, {"deviceID": PCI}),
}


@pytest.mark.parametrize("handed", list(HANDED))
async def test_a_host_device_in_dpdk_mode_holds_its_pci_device_against_other_sandboxes(
    node: Node, handed: str
) -> None:
    fields, runtime_config = HANDED[handed]
    sysfs = dpdk_device(node)
    conf = node.conf(node.recorder_network("cluster"), dpdk_host_device_network(node, **fields))
    if runtime_config is not None:
        conf = replace(conf, runtime_config=runtime_config)
    engine = node.engine(sysfs_root=sysfs)
    holder, holder_netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, holder, holder_netns, conf))
    recorded = node.checkpoint(holder)
    assert recorded is not None
    [attachment] = [a for a in recorded.attachments if a.ifname == "net1"]
    assert attachment.device == {"pci": PCI, "ifname": "", "mac": ""}
    assert PCI in attachment.facts.device_ids
    assert OTHER not in attachment.facts.device_ids, "the pciBusID a runtimeConfig deviceID replaces"

    refused = await refused_for_another_pod(
        node, engine, node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    )
    assert refused.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in refused.msg
    assert holder in refused.details

    await engine.delete(node.request(Command.DEL, holder, holder_netns, conf))
    assert node.checkpoint(holder) is None, "a DPDK device has no netdev to wait for"


async def test_a_hot_plugged_host_device_in_dpdk_mode_is_refused_a_vf_another_sandbox_holds(
    node: Node,
) -> None:
    sysfs = dpdk_device(node)
    engine = node.engine(sysfs_root=sysfs)
    holder = new_container_id()
    await engine.add(
        node.request(
            Command.ADD,
            holder,
            node.new_netns(),
            node.conf(node.recorder_network("cluster"), vf_network(node, PCI)),
        )
    )
    (node.bin_dir / "host-device").symlink_to(node.bin_dir / "recorder")
    raw = {
        "cniVersion": "1.0.0",
        "name": "hot-vf",
        "type": "host-device",
        "device": NETDEV_FIELDS["device"],
        "capabilities": {"deviceID": True},
        "recorder": {"log": str(node.recorder_log)},
    }
    plan = replace(hotplug_plan(node, PCI), net=load_network_list(json.dumps(raw).encode(), source="test"))
    conf = node.conf(node.recorder_network("cluster"))
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf, pod="pod-b", uid="uid-b"))

    with pytest.raises(CniError) as refused:
        await engine.attach_delegate(
            replace(
                node.request(Command.ADD, container, netns, conf, pod="pod-b", uid="uid-b"),
                ifname=IfName("net1"),
            ),
            plan,
        )

    assert refused.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in refused.value.msg
    recorded = node.checkpoint(container)
    assert recorded is not None
    assert [a.ifname for a in recorded.attachments] == ["eth0"]


def host_device(**fields: Any) -> Any:
    raw = {"cniVersion": "1.0.0", "name": "n", "type": "host-device", **fields}
    return load_network_list(json.dumps(raw).encode(), source="test")


class Drivers:
    """A ``userspace`` probe answering from a set of user-space-bound addresses, noting each ask."""

    def __init__(self, *bound: str) -> None:
        self.bound = set(bound)
        self.asked: list[str] = []

    def __call__(self, pci: str) -> bool:
        self.asked.append(pci)
        return pci in self.bound


@pytest.mark.parametrize("netdev_field", list(NETDEV_FIELDS))
def test_a_netdev_field_yields_to_a_pci_device_bound_to_a_userspace_driver(netdev_field: str) -> None:
    named = {netdev_field: NETDEV_FIELDS[netdev_field]}
    declaring = {"capabilities": {"deviceID": True}}

    assert vfs.pci_addresses(host_device(pciBusID=PCI, **named), None, Drivers(PCI)) == [("pciBusID", PCI)]
    assert vfs.pci_addresses(host_device(pciBusID=PCI, **named), None, Drivers()) == []
    drivers = Drivers(OTHER)
    assert vfs.pci_addresses(
        host_device(pciBusID=PCI, **named, **declaring), {"deviceID": OTHER}, drivers
    ) == [("runtimeConfig.deviceID", OTHER)]
    assert drivers.asked == [OTHER], "the device taken is the runtimeConfig's, not the pciBusID it replaces"
    # never its configuration's deviceID, bound to a user-space driver or not
    assert vfs.pci_addresses(host_device(deviceID=PCI, **named), None, Drivers(PCI)) == []


@pytest.mark.parametrize(
    "net",
    [
        host_device(pciBusID=PCI),  # takes its PCI device whatever its driver
        host_device(device="eth9"),  # names no PCI device
        host_device(device="eth9", deviceID=PCI),  # a deviceID it never reads
        load_network_list(
            json.dumps({"cniVersion": "1.0.0", "name": "s", "type": "sriov", "deviceID": PCI}).encode(),
            source="test",
        ),
        load_network_list(
            json.dumps({"cniVersion": "1.0.0", "name": "b", "type": "bridge"}).encode(), source="test"
        ),
    ],
)
def test_the_driver_is_asked_only_for_a_host_device_naming_a_netdev_and_a_pci_device(net: Any) -> None:
    drivers = Drivers(PCI)
    vfs.pci_addresses(net, {"deviceID": OTHER}, drivers)
    assert drivers.asked == []


def test_sriov_cni_takes_its_device_id_whether_bound_to_a_userspace_driver_or_not() -> None:
    raw = {"cniVersion": "1.0.0", "name": "s", "type": "sriov", "deviceID": PCI, "pciBusID": PCI}
    net = load_network_list(json.dumps(raw).encode(), source="test")
    assert vfs.pci_addresses(net, None, Drivers(PCI)) == [("deviceID", PCI)]
    assert vfs.pci_addresses(net, None, Drivers()) == [("deviceID", PCI)]


def test_one_probe_reads_each_device_s_driver_once(node: Node) -> None:
    sysfs = dpdk_device(node)
    probe = vfs.HostDevices(sysfs).userspace_probe()
    assert probe(PCI)
    bind(sysfs, PCI, "iavf")  # rebound while the ADD runs: its claims, intents and snapshot agree
    assert probe(PCI)
    assert not vfs.HostDevices(sysfs).userspace_probe()(PCI)
