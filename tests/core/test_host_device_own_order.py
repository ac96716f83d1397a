"""host-device takes the netdev its configuration names before any PCI device it is handed.

The reference host-device plugin picks its device by ``device``, then ``hwaddr``, then
``kernelpath``, and only then ``pciBusID`` (which a ``runtimeConfig.deviceID`` replaces, an
auxiliary device's name too); it never reads a configuration's ``deviceID``. A host-device delegate
naming its netdev and handed a VF as well (a selection's ``deviceID``, a ``resourceName``'s
injection) takes the named netdev: the VF was claimed for it all the same, so another pod handed
that VF was refused with code 7, and the DEL waited for and restored a device it never moved.

The first pod runs the real host-device plugin, naming a veth by ``device``: its runtimeConfig
``deviceID`` is a PCI device of this machine (the plugin looks at its driver in the real sysfs, and
moves nothing of it); the fake sysfs tree (``sysfsRoot``) registers a fake VF (a veth) under that
address, which the second pod's plugin (the recorder standing in for sriov-cni) is handed.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.attach import vfs
from app.cni.conf import load_network_list
from tests.conftest import CNI_PLUGIN_DIR
from tests.core.support import Command, Node, new_container_id
from tests.core.vf_support import fake_vf, vf_network

REAL_PCI_DEVICES = Path("/sys/bus/pci/devices")


def real_pci_with_a_netdev_driver() -> str:
    """A PCI device of this machine bound to a kernel driver (host-device refuses one bound to none)."""
    for address in sorted(os.listdir(REAL_PCI_DEVICES)):
        try:
            driver = os.path.basename(os.readlink(REAL_PCI_DEVICES / address / "driver"))
        except OSError:
            continue
        if driver not in vfs.USERSPACE_DRIVERS and vfs.PCI_ADDRESS.fullmatch(address):
            return address
    pytest.skip("no PCI device bound to a kernel driver on this machine")


def host_veth(node: Node) -> str:
    """A veth in the host namespace, removed with ``node``: the netdev host-device is told to take."""
    name = f"mphd{os.urandom(3).hex()}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
    node.host_links.extend([name, f"{name}p"])
    return name


async def test_a_host_device_naming_its_netdev_does_not_claim_the_vf_it_is_handed(node: Node) -> None:
    pci = real_pci_with_a_netdev_driver()
    (node.bin_dir / "host-device").symlink_to(Path(CNI_PLUGIN_DIR) / "host-device")
    vf = fake_vf(node, pci)
    named = host_veth(node)
    node.write_network(
        "host-dev",
        {
            "cniVersion": "1.0.0",
            "name": "host-dev",
            "type": "host-device",
            "device": named,
            "capabilities": {"deviceID": True},
        },
    )
    first_conf = replace(
        node.conf(node.recorder_network("cluster"), "host-dev"), runtime_config={"deviceID": pci}
    )
    engine = node.engine(sysfs_root=vf.sysfs)
    first, first_netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, first, first_netns, first_conf))
    assert "net1" in first_netns.links()  # the named veth, moved by the real plugin
    recorded = node.checkpoint(first)
    assert recorded is not None
    [attachment] = [a for a in recorded.attachments if a.ifname == "net1"]
    assert attachment.device is None
    assert pci not in attachment.facts.device_ids

    second_conf = node.conf(node.recorder_network("cluster"), vf_network(node, pci))
    second = new_container_id()
    await engine.add(
        node.request(Command.ADD, second, node.new_netns(), second_conf, pod="pod-b", uid="uid-b")
    )

    held = node.checkpoint(second)
    assert held is not None
    assert [a.device for a in held.attachments if a.ifname == "net1"] == [
        {"pci": pci, "ifname": vf.name, "mac": vf.mac}
    ]
    (vf.names / vf.name).rmdir()  # the VF inside the second pod: the first pod's DEL waits for nothing
    await engine.delete(node.request(Command.DEL, first, first_netns, first_conf))
    assert node.checkpoint(first) is None
    assert "net1" not in first_netns.links()


def host_device(**fields: Any) -> Any:
    raw = {"cniVersion": "1.0.0", "name": "n", "type": "host-device", **fields}
    return load_network_list(json.dumps(raw).encode(), source="test")


PCI, OTHER = "0000:3b:02.1", "0000:3b:02.2"


@pytest.mark.parametrize(
    "fields",
    [
        {"device": "eth5", "pciBusID": PCI, "deviceID": PCI},  # a resourceName's injection
        {"hwaddr": "02:00:00:00:00:01", "pciBusID": PCI},
        {"kernelpath": "/sys/devices/pci0000:00/0000:00:1f.6", "pciBusID": PCI},
    ],
)
def test_a_netdev_named_before_the_pci_bus_id_leaves_the_pci_device_unclaimed(fields: dict[str, str]) -> None:
    assert vfs.pci_addresses(host_device(**fields)) == []


def test_host_device_takes_its_runtime_device_id_in_place_of_its_pci_bus_id_never_its_device_id() -> None:
    declaring = {"capabilities": {"deviceID": True}}

    assert vfs.pci_addresses(host_device(pciBusID=PCI, deviceID=OTHER)) == [("pciBusID", PCI)]
    assert vfs.pci_addresses(host_device(pciBusID=PCI, **declaring), {"deviceID": OTHER}) == [
        ("runtimeConfig.deviceID", OTHER)
    ]
    # an auxiliary device (a subfunction) replaces it too: no PCI device is taken
    assert vfs.pci_addresses(host_device(pciBusID=PCI, **declaring), {"deviceID": "mlx5_core.sf.4"}) == []
    # not declaring the capability, it is not handed one
    assert vfs.pci_addresses(host_device(pciBusID=PCI), {"deviceID": OTHER}) == [("pciBusID", PCI)]
