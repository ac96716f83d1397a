"""CHECK of a sandbox holding an SR-IOV VF handed over as a DPDK device (bound to ``vfio-pci``,
``uio_pci_generic`` or ``igb_uio``): sriov-cni names the pod's interface in its result (name and
sandbox, no MAC), but a VF bound so has no netdev anywhere, and its own CHECK checks nothing.
CHECK took that interface for missing and failed every such pod (code 100) with all of it there.
A VF that had a netdev at ADD and lost it (rebound since) is still missing.

No SR-IOV hardware here: the VF is a fake sysfs entry (``tests.core.vf_support``), the recorder
plugin stands in for sriov-cni, answering its DPDK result.
"""

from __future__ import annotations

import pytest

from app.attach.errors import MultusCode
from app.cni.types import CniError
from tests.core.support import Command, Netns, Node, new_container_id
from tests.core.vf_support import bind, fake_vf

PCI = "0000:00:07.4"


def _sriov_network(node: Node, netns: Netns) -> str:
    """sriov-cni's result in DPDK mode (and a kernel VF's, but for its MAC): the pod's interface."""
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": netns.path}]}
    node.write_network(
        "sriov-net",
        {
            "cniVersion": "1.0.0",
            "name": "sriov-net",
            "type": "recorder",
            "deviceID": PCI,
            "recorder": {"log": str(node.recorder_log), "result": result},
        },
    )
    return "sriov-net"


@pytest.mark.parametrize("driver", ["vfio-pci", "uio_pci_generic", "igb_uio"])
async def test_check_passes_for_a_vf_handed_over_as_a_dpdk_device(node: Node, driver: str) -> None:
    sysfs = node.root / "sys"
    (sysfs / "bus" / "pci" / "devices" / PCI).mkdir(parents=True)
    bind(sysfs, PCI, driver)
    container, netns = new_container_id(), node.new_netns()
    conf = node.conf(
        node.recorder_network("cluster", result={"cniVersion": "1.0.0"}), _sriov_network(node, netns)
    )
    engine = node.engine(sysfs_root=sysfs)
    await engine.add(node.request(Command.ADD, container, netns, conf))

    await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert [entry["stdin"]["name"] for entry in node.recorder_entries("CHECK")] == ["cluster", "sriov-net"]


async def test_check_fails_for_a_kernel_vf_whose_netdev_went_with_a_rebind_to_a_dpdk_driver(
    node: Node,
) -> None:
    vf = fake_vf(node, PCI)  # a kernel VF: recorded with its netdev's name
    container, netns = new_container_id(), node.new_netns()
    conf = node.conf(
        node.recorder_network("cluster", result={"cniVersion": "1.0.0"}), _sriov_network(node, netns)
    )
    engine = node.engine(sysfs_root=vf.sysfs)
    await engine.add(node.request(Command.ADD, container, netns, conf))
    (vf.names / vf.name).rmdir()
    vf.names.rmdir()
    bind(vf.sysfs, PCI, "vfio-pci")  # its netdev destroyed with the unbind: net1 is gone from the pod

    with pytest.raises(CniError) as failed:
        await engine.check(node.request(Command.CHECK, container, netns, conf))

    assert failed.value.code == MultusCode.INTERFACE_MISSING
    assert '"net1"' in failed.value.msg
