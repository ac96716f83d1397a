"""A VF bound to a user-space (DPDK) driver has no netdev in any namespace: nothing to get back.

sriov-cni tells a DPDK VF by its driver (``vfio-pci``, ``uio_pci_generic``, ``igb_uio``): such a VF
has no netdev at all, so it is never missing from the host namespace. A VF handed over as a DPDK
device attaches and detaches without a warning about a missing netdev, and a kernel VF whose DEL
waits for its netdev to come back is released once it is rebound to such a driver (its netdev was
destroyed with the unbind, wherever it was): its DEL no longer stays pending for ever (invariant 5b).

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``), its driver a symlink there as in ``/sys``; the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.attach.errors import MultusCode
from app.cni.types import CniError
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.vf_support import bind, fake_vf, vf_network

PCI = "0000:00:07.3"


def device_dir(root: Path) -> Path:
    return root / "bus" / "pci" / "devices" / PCI


@pytest.mark.parametrize("driver", ["vfio-pci", "uio_pci_generic", "igb_uio"])
async def test_a_vf_rebound_to_a_userspace_driver_while_its_del_waits_for_it_is_released(
    node: Node, driver: str
) -> None:
    vf = fake_vf(node, PCI)
    sysfs, name = vf.sysfs, vf.name
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=sysfs)
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    recorded = node.checkpoint(container)
    assert recorded is not None
    [device] = [a.device for a in recorded.attachments if a.ifname == "net1"]
    assert device is not None
    assert device["ifname"] == name
    (device_dir(sysfs) / "net" / name).rmdir()  # inside the pod's namespace: not listed in the host
    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert pending(node.checkpoint(container)) == ["net1"]
    # the operator rebinds the VF for DPDK: its netdev, in the pod or not, is destroyed with the unbind
    (device_dir(sysfs) / "net").rmdir()
    bind(sysfs, PCI, driver)  # what driver_override + drivers_probe leave in sysfs

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None, "nothing of it can be in a namespace any more"


async def test_a_dpdk_vf_attaches_and_detaches_without_a_missing_netdev_warning(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    sysfs = node.root / "sys"
    device_dir(sysfs).mkdir(parents=True)
    bind(sysfs, PCI, "vfio-pci")
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=sysfs)
    container, netns = new_container_id(), node.new_netns()
    caplog.set_level(logging.DEBUG, logger="app.attach.vfs")

    await engine.add(node.request(Command.ADD, container, netns, conf))
    recorded = node.checkpoint(container)
    assert recorded is not None
    [device] = [a.device for a in recorded.attachments if a.ifname == "net1"]
    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert device == {"pci": PCI, "ifname": "", "mac": ""}, "the PCI address is still recorded (8b)"
    assert node.checkpoint(container) is None
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "app.attach.vfs" and r.levelno >= logging.WARNING
    ]
    assert warnings == [], "a DPDK VF has no netdev by design"
