"""A VF named by a PCI address in upper-case hex is the VF sysfs lists in lower case.

PCI addresses are hex: ``0000:3B:02.1`` and ``0000:3b:02.1`` are one device, and the check that
no other sandbox holds it compares them so (invariant 8b). sysfs names devices in lower case only,
and a VF named in upper case used to be looked up as written: found nowhere, it was recorded with
no netdev (a warning at ADD), so its DEL never checked it was back and released it while it was
still inside a namespace. The address is looked up in lower case now; one with a trailing newline
names no device at all.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``); the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import json

import pytest

from app.attach import vfs
from app.attach.errors import MultusCode
from app.cni.conf import load_network_list
from app.cni.types import CniError
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.vf_support import fake_vf, vf_network

PCI = "0000:3b:02.1"


async def test_a_vf_named_in_upper_case_is_recorded_and_waited_for_until_it_is_back(node: Node) -> None:
    vf = fake_vf(node, PCI)
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI.upper()))
    engine = node.engine(sysfs_root=vf.sysfs)
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    recorded = node.checkpoint(container)
    assert recorded is not None
    [device] = [a.device for a in recorded.attachments if a.ifname == "net1"]
    assert device == {"pci": PCI.upper(), "ifname": vf.name, "mac": vf.mac}
    hidden = node.root / "hidden-vf"
    (vf.names / vf.name).rename(hidden)  # inside the pod's namespace: not listed in the host

    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert pending(node.checkpoint(container)) == ["net1"]
    hidden.rename(vf.names / vf.name)  # back in the host
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert node.checkpoint(container) is None


def test_a_pci_address_with_a_trailing_newline_names_no_device() -> None:
    net = load_network_list(
        json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "recorder", "deviceID": PCI + "\n"}).encode(),
        source="test",
    )

    assert vfs.pci_addresses(net) == []
