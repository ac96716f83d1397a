"""Every PCI device a delegate is handed is recorded as its own, not only the first.

A network whose plugins name two devices (one plugin's ``deviceID``, another's ``pciBusID``) was
checked against both at ADD (no other sandbox may record either), but only the first was recorded:
the second was then free for another sandbox's ADD while this one may hold it.

No SR-IOV hardware here: each VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``); the recorder plugin stands in for sriov-cni and host-device.
"""

from __future__ import annotations

from app.cni.types import ErrorCode
from tests.core.support import Command, Node, new_container_id
from tests.core.vf_support import fake_vf, refused_for_another_pod, vf_network

FIRST_PCI, SECOND_PCI = "0000:00:09.1", "0000:00:09.2"


async def test_a_device_the_second_plugin_of_a_network_names_is_refused_to_another_sandbox(
    node: Node,
) -> None:
    first_vf = fake_vf(node, FIRST_PCI)
    fake_vf(node, SECOND_PCI)
    recorder = {"type": "recorder", "recorder": {"log": str(node.recorder_log)}}
    node.write_network(
        "two-devices",
        {
            "cniVersion": "1.0.0",
            "name": "two-devices",
            "plugins": [{**recorder, "deviceID": FIRST_PCI}, {**recorder, "pciBusID": SECOND_PCI}],
        },
    )
    second_only = vf_network(node, SECOND_PCI, "second-only", pciBusID=SECOND_PCI)
    engine = node.engine(sysfs_root=first_vf.sysfs)
    holder = new_container_id()
    await engine.add(
        node.request(
            Command.ADD, holder, node.new_netns(), node.conf(node.recorder_network("cluster"), "two-devices")
        )
    )
    recorded = node.checkpoint(holder)
    assert recorded is not None
    [attachment] = [a for a in recorded.attachments if a.ifname == "net1"]
    assert {FIRST_PCI, SECOND_PCI} <= set(attachment.facts.device_ids)

    refused = await refused_for_another_pod(
        node, engine, node.conf(node.recorder_network("cluster"), second_only)
    )

    assert refused.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert SECOND_PCI in refused.msg
    assert holder in refused.details
