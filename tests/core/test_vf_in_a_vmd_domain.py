"""A VF whose PCI domain needs five hex digits (behind Intel VMD: ``10000:00:02.0``) is a VF.

The kernel names a PCI device ``%04x:%02x:%02x.%d``: four hex digits of domain at least, more when
the domain needs them, as the domains VMD creates (from 0x10000) do. sriov-cni and host-device take
any address sysfs lists. Only four digits were recognised: such a VF was neither claimed against
other sandboxes (a second pod was handed it) nor recorded, so its DEL never waited for it to be
back in the host (invariants 5 and 8b).

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``); the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import json

import pytest

from app.attach import vfs
from app.attach.errors import MultusCode
from app.cni.conf import load_network_list
from app.cni.types import CniError, ErrorCode
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.vf_support import fake_vf, refused_for_another_pod, vf_network

PCI = "10000:00:02.0"


async def test_a_vf_in_a_vmd_domain_is_claimed_and_waited_for_until_it_is_back(node: Node) -> None:
    vf = fake_vf(node, PCI)
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=vf.sysfs)
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    recorded = node.checkpoint(container)
    assert recorded is not None
    [device] = [a.device for a in recorded.attachments if a.ifname == "net1"]
    assert device == {"pci": PCI, "ifname": vf.name, "mac": vf.mac}
    refused = await refused_for_another_pod(node, engine, conf)
    assert refused.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in refused.msg
    hidden = node.root / "hidden-vf"
    (vf.names / vf.name).rename(hidden)  # inside the pod's namespace: not listed in the host

    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert pending(node.checkpoint(container)) == ["net1"]
    hidden.rename(vf.names / vf.name)  # back in the host
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert node.checkpoint(container) is None


@pytest.mark.parametrize("address", ["00000:00:02.0", "100000000:00:02.0", "000:00:02.0", "10000:00:02.8"])
def test_a_domain_sysfs_never_names_is_no_pci_address(address: str) -> None:
    net = load_network_list(
        json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "recorder", "deviceID": address}).encode(),
        source="test",
    )

    assert vfs.pci_addresses(net) == []
