"""A VF handed in runtimeConfig to a plugin whose configuration names a ``pciBusID`` is the VF taken.

host-device takes the ``runtimeConfig.deviceID`` it is handed (it declares the ``deviceID``
capability; a selection's ``deviceID`` sets it) in place of its configuration's ``pciBusID``: a
NAD's ``pciBusID`` is then a default the selection replaces. The device recorded was the
configuration's all the same: its name and MAC were what DEL waited for, so the VF really taken
was released while still inside a namespace, and every other pod of that NAD was refused with
code 7, the default device being recorded for the first one.

No SR-IOV hardware here: each VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``); the recorder plugin stands in for host-device.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.attach.errors import MultusCode
from app.cni.types import CniError
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.vf_support import fake_vf, vf_network

DEFAULT_PCI = "0000:00:08.0"
"""The NAD's ``pciBusID``, replaced by every pod's selection."""
FIRST_PCI, SECOND_PCI = "0000:00:08.1", "0000:00:08.2"


async def test_the_vf_a_selection_hands_over_is_recorded_and_waited_for_not_the_nads_pci_bus_id(
    node: Node,
) -> None:
    fake_vf(node, DEFAULT_PCI)
    first_vf, second_vf = fake_vf(node, FIRST_PCI), fake_vf(node, SECOND_PCI)
    network = vf_network(node, DEFAULT_PCI, "host-dev", pciBusID=DEFAULT_PCI, capabilities={"deviceID": True})
    base = node.conf(node.recorder_network("cluster"), network)
    engine = node.engine(sysfs_root=first_vf.sysfs)
    first, second = new_container_id(), new_container_id()
    netns = node.new_netns()
    await engine.add(
        node.request(Command.ADD, first, netns, replace(base, runtime_config={"deviceID": FIRST_PCI}))
    )

    await engine.add(
        node.request(
            Command.ADD,
            second,
            node.new_netns(),
            replace(base, runtime_config={"deviceID": SECOND_PCI}),
            pod="pod-b",
            uid="uid-b",
        )
    )

    for container, vf in ((first, first_vf), (second, second_vf)):
        recorded = node.checkpoint(container)
        assert recorded is not None
        [device] = [a.device for a in recorded.attachments if a.ifname == "net1"]
        assert device == {"pci": vf.pci, "ifname": vf.name, "mac": vf.mac}
    (first_vf.names / first_vf.name).rmdir()  # inside the pod's namespace: not listed in the host
    conf = replace(base, runtime_config={"deviceID": FIRST_PCI})
    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, first, netns, conf))
    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert FIRST_PCI in waiting.value.msg
    assert pending(node.checkpoint(first)) == ["net1"]
