"""A VF bound to no driver has no netdev in any namespace: a DEL waiting for it waits no more.

A VF's netdev exists only while a netdev driver (iavf, mlx5_core) is bound to it: unbinding the
VF (its driver unloaded for an upgrade, or the VF on its way to another driver) destroys the
netdev in whichever namespace it was. A DEL waiting for that netdev to come back used to stay
pending for as long as the VF stayed unbound, for ever if nobody bound it again (invariant 5b);
it is released now, as one rebound to a user-space driver is.

No SR-IOV hardware here: the VF is a veth registered under its PCI address in a fake sysfs tree
(``sysfsRoot``), its driver a symlink there as in ``/sys``; the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import logging

import pytest

from app.attach.errors import MultusCode
from app.cni.types import CniError
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.vf_support import fake_vf, vf_network

PCI = "0000:00:07.4"


async def test_a_vf_unbound_from_its_driver_while_its_del_waits_for_it_is_released(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    vf = fake_vf(node, PCI)
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=vf.sysfs)
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    (vf.names / vf.name).rmdir()  # inside the pod's namespace: not listed in the host
    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert pending(node.checkpoint(container)) == ["net1"]
    # the VF is unbound from iavf: its netdev, in the pod or not, is destroyed with the unbind
    vf.names.rmdir()
    (vf.device_dir / "driver").unlink()
    caplog.set_level(logging.WARNING, logger="app.attach.vfs")

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None, "nothing of it can be in a namespace any more"
    assert any(PCI in r.getMessage() and "no driver" in r.getMessage() for r in caplog.records)


async def test_a_vf_bound_to_its_netdev_driver_keeps_its_del_waiting_for_its_netdev(node: Node) -> None:
    """The driver bound, its netdev is somewhere (inside a namespace): the DEL waits for it."""
    vf = fake_vf(node, PCI)
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=vf.sysfs)
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    (vf.names / vf.name).rmdir()
    vf.names.rmdir()  # no net/ listed at all, as for an unbound VF: only the driver tells them apart

    with pytest.raises(CniError) as waiting:
        await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert waiting.value.code == MultusCode.DEVICE_NOT_RETURNED
    assert pending(node.checkpoint(container)) == ["net1"]
