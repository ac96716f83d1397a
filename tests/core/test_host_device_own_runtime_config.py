"""host-device reads the ``runtimeConfig`` of its own configuration when no capability is supplied.

libcni (``buildOneConfig``, ``app.cni.conf.plugin_stdin``) replaces a plugin's ``runtimeConfig``
only when a capability it declares is supplied; otherwise the ``runtimeConfig`` its configuration
writes reaches it as written. The reference host-device plugin takes that ``runtimeConfig.deviceID``
in place of its ``pciBusID``: the device it names was neither claimed nor recorded (the
``pciBusID`` it replaces was, instead), so another sandbox handed that VF was let through while the
pod held it, and DEL waited for a device the plugin never touched.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``); the recorder, installed as ``host-device``, stands in for the plugin (the real one
reads the real ``/sys``) and for sriov-cni.
"""

from __future__ import annotations

import json
from typing import Any

from app.attach import vfs
from app.cni.conf import load_network_list
from app.cni.types import ErrorCode
from tests.core.support import Command, Node, new_container_id
from tests.core.vf_support import fake_vf, refused_for_another_pod, vf_network

PCI, OTHER, SUPPLIED = "0000:00:0c.1", "0000:00:0c.2", "0000:00:0c.3"


async def test_the_vf_a_host_device_s_own_runtime_config_names_is_held_against_other_sandboxes(
    node: Node,
) -> None:
    vf = fake_vf(node, PCI)
    (node.bin_dir / "host-device").symlink_to(node.bin_dir / "recorder")
    node.write_network(
        "own-rc",
        {
            "cniVersion": "1.0.0",
            "name": "own-rc",
            "type": "host-device",
            "pciBusID": OTHER,
            "runtimeConfig": {"deviceID": PCI},
            "recorder": {"log": str(node.recorder_log)},
        },
    )
    engine = node.engine(sysfs_root=vf.sysfs)
    holder = new_container_id()
    await engine.add(
        node.request(
            Command.ADD, holder, node.new_netns(), node.conf(node.recorder_network("cluster"), "own-rc")
        )
    )
    [stdin] = [e["stdin"] for e in node.recorder_entries("ADD") if e["env"]["CNI_IFNAME"] == "net1"]
    assert stdin["runtimeConfig"] == {"deviceID": PCI}, "what the plugin reads"
    recorded = node.checkpoint(holder)
    assert recorded is not None
    [attachment] = [a for a in recorded.attachments if a.ifname == "net1"]
    assert attachment.device == {"pci": PCI, "ifname": vf.name, "mac": vf.mac}
    assert OTHER not in attachment.facts.device_ids

    refused = await refused_for_another_pod(
        node, engine, node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    )
    assert refused.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert PCI in refused.msg


def host_device(**fields: Any) -> Any:
    raw = {"cniVersion": "1.0.0", "name": "n", "type": "host-device", "pciBusID": OTHER, **fields}
    return load_network_list(json.dumps(raw).encode(), source="test")


def test_host_device_reads_its_own_runtime_config_unless_a_capability_it_declares_is_supplied() -> None:
    own = {"runtimeConfig": {"deviceID": PCI}}
    taken = ("runtimeConfig.deviceID", PCI)

    assert vfs.pci_addresses(host_device(**own)) == [taken]
    assert vfs.pci_addresses(host_device(**own), {"deviceID": SUPPLIED}) == [taken], "not declared"
    declaring = {"capabilities": {"deviceID": True}}
    assert vfs.pci_addresses(host_device(**own, **declaring)) == [taken], "declared, not supplied"
    assert vfs.pci_addresses(host_device(**own, **declaring), {"deviceID": SUPPLIED}) == [
        ("runtimeConfig.deviceID", SUPPLIED)
    ]
    # another capability supplied replaces its runtimeConfig whole: its pciBusID is taken
    assert vfs.pci_addresses(
        host_device(**own, capabilities={"deviceID": True, "mac": True}), {"mac": "02:00:00:00:00:01"}
    ) == [("pciBusID", OTHER)]
