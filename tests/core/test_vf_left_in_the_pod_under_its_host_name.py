"""A VF a kill -9 left inside its pod's namespace under its host name is taken back by its DEL.

The reference host-device moves a device in two steps: its ADD moves it into the pod, then renames
it to ``CNI_IFNAME``; its DEL renames it back to its host name, then moves it out. A kill -9 of the
daemon's whole tree between the two leaves the VF in the pod under its host name (``net1`` is not
there), so host-device's DEL fails ("failed to find "net1"") for ever, and on real hardware sysfs
lists no netdev for the VF in the host: the attachment stayed pending for ever (invariant 5b), the
VF claimed. Found by ``bench.chaos`` (seeds 200, 300, 301). The fake VF here follows its veth as
real sysfs follows a VF (``fake_vf(follows=True)``); host-device runs under the type ``sriov`` (as
in ``bench.chaos``), so that its ``deviceID`` is recorded and the VF's host name and MAC with it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.attach.crashpoints import Point
from app.attach.netns import SandboxLink
from app.attach.vfs import HostDevices, is_the_device
from app.cni.types import CniError
from app.gc.recovery import recover
from tests.conftest import CNI_PLUGIN_DIR
from tests.core.support import Command, CrashAt, Crashed, Netns, Node, new_container_id, pending
from tests.core.vf_support import FakeVf, fake_vf

PCI = "0000:c7:00.2"


@pytest.fixture
def vf(node: Node) -> FakeVf:
    """A fake VF that follows its veth, moved by the real host-device under the type ``sriov``."""
    made = fake_vf(node, PCI, follows=True)
    (node.bin_dir / "sriov").symlink_to(Path(CNI_PLUGIN_DIR) / "host-device")
    node.write_network(
        "vf", {"cniVersion": "1.0.0", "name": "vf", "type": "sriov", "deviceID": PCI, "device": made.name}
    )
    return made


def host_mac(name: str) -> str:
    """The MAC of the host link ``name``, "" when the host has none of that name."""
    shown = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return str(json.loads(shown.stdout)[0]["address"]) if shown.returncode == 0 else ""


def ip(*command: str) -> None:
    subprocess.run(["ip", *command], check=True, capture_output=True)


async def test_a_del_killed_between_host_devices_rename_and_move_gives_the_vf_back(
    node: Node, vf: FakeVf
) -> None:
    conf = node.conf(node.recorder_network("cluster"), "vf")
    netns, container = node.new_netns(), new_container_id()
    await node.engine(sysfs_root=vf.sysfs).add(node.request(Command.ADD, container, netns, conf))
    assert "net1" in netns.links()
    assert HostDevices(vf.sysfs).netdev_names(PCI) == []  # in the pod: sysfs lists it no more
    # host-device's DEL renamed net1 back to its host name, and was killed before moving it out
    ip("-n", netns.name, "link", "set", "net1", "down")
    ip("-n", netns.name, "link", "set", "net1", "name", vf.name)
    node.restart()

    await node.engine(sysfs_root=vf.sysfs).delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
    assert host_mac(vf.name) == vf.mac
    assert HostDevices(vf.sysfs).netdev_names(PCI) == [vf.name]
    assert netns.links() == {"lo"}


async def test_an_add_killed_between_host_devices_move_and_rename_is_rolled_back(
    node: Node, vf: FakeVf
) -> None:
    conf = node.conf(node.recorder_network("cluster"), "vf")
    netns, container = node.new_netns(), new_container_id()
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT, 2), sysfs_root=vf.sysfs).add(
            node.request(Command.ADD, container, netns, conf)
        )
    record = node.checkpoint(container)
    assert record is not None
    assert [a.device for a in record.attachments if a.ifname == "net1"] == [
        {"pci": PCI, "ifname": vf.name, "mac": vf.mac}
    ]
    ip("link", "set", vf.name, "netns", netns.name)  # host-device's first step, killed before its rename
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert host_mac(vf.name) == vf.mac
    assert netns.links() == {"lo"}


async def test_a_link_of_the_vfs_host_name_but_not_its_mac_is_never_taken(node: Node, vf: FakeVf) -> None:
    """The VF went elsewhere (into another namespace); a link in the pod has its host name, not its
    MAC: it is not the VF, so it stays where it is, and the DEL stays pending."""
    conf = node.conf(node.recorder_network("cluster"), "vf")
    netns, container = node.new_netns(), new_container_id()
    await node.engine(sysfs_root=vf.sysfs).add(node.request(Command.ADD, container, netns, conf))
    elsewhere: Netns = node.new_netns()
    ip("-n", netns.name, "link", "set", "net1", "netns", elsewhere.name)
    ip("-n", netns.name, "link", "add", vf.name, "type", "veth", "peer", "name", "other")
    node.restart()

    with pytest.raises(CniError):
        await node.engine(sysfs_root=vf.sysfs).delete(node.request(Command.DEL, container, netns, conf))

    assert pending(node.checkpoint(container)) == ["net1"]
    assert netns.links() == {"lo", vf.name, "other"}
    assert host_mac(vf.name) == ""


RECORDED = {"pci": PCI, "ifname": "ens1f0v2", "mac": "0a:00:00:00:00:02"}


@pytest.mark.parametrize(
    ("link", "taken"),
    [
        (SandboxLink("net1", "0a:00:00:00:00:09", parent=PCI, parent_bus="pci"), True),
        (SandboxLink("net1", "0a:00:00:00:00:09", parent=PCI.upper(), parent_bus="pci"), True),
        (SandboxLink("ens1f0v2", "0A:00:00:00:00:02", parent="", parent_bus=""), True),
        (SandboxLink("ens1f0v2", "0a:00:00:00:00:02", parent="0000:c7:00.3", parent_bus="pci"), False),
        (SandboxLink("ens1f0v2", "0a:00:00:00:00:02", parent="netdevsim1", parent_bus="netdevsim"), False),
        (SandboxLink("ens1f0v2", "0a:00:00:00:00:03", parent="", parent_bus=""), False),
        (SandboxLink("ens1f0v9", "0a:00:00:00:00:02", parent="", parent_bus=""), False),
    ],
)
def test_only_a_link_that_is_provably_the_recorded_device_is_taken(link: SandboxLink, taken: bool) -> None:
    assert is_the_device(link, RECORDED) is taken
    assert is_the_device(link, {**RECORDED, "mac": ""}) is (taken and bool(link.parent))
