"""A host-device delegate's DEL after a kill -9 that left its device in the host: it terminates.

The reference host-device plugin (1.1.1) is not idempotent at DEL: given a namespace that does not
hold ``CNI_IFNAME``, it fails ("failed to find "net1": Link not found", code 999) for ever. A daemon
killed after host-device's DEL moved the device back but before that DEL was committed
(``del-after-exec``), or during an ADD before host-device moved the device in
(``add-after-intent``), leaves such an attachment: its DEL, replayed in the namespace, could never
succeed, and the runtime retries it for ever (invariant 5b). Found by ``bench.chaos``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from app.attach.crashpoints import Point
from app.gc.recovery import recover
from tests.conftest import CNI_PLUGIN_DIR
from tests.core.support import Command, CrashAt, Crashed, Node, new_container_id
from tests.core.vf_support import fake_vf


def host_device_network(node: Node) -> tuple[str, str]:
    """A network whose real host-device plugin moves a veth of the host (removed with ``node``)."""
    (node.bin_dir / "host-device").symlink_to(Path(CNI_PLUGIN_DIR) / "host-device")
    name = f"mphd{os.urandom(3).hex()}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
    node.host_links.extend([name, f"{name}p"])
    node.write_network(
        "host-dev", {"cniVersion": "1.0.0", "name": "host-dev", "type": "host-device", "device": name}
    )
    return "host-dev", name


def in_host(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


async def test_a_del_killed_after_host_device_moved_its_device_back_is_finished(node: Node) -> None:
    network, device = host_device_network(node)
    conf = node.conf(node.recorder_network("cluster"), network)
    netns, container = node.new_netns(), new_container_id()
    await node.engine().add(node.request(Command.ADD, container, netns, conf))
    assert "net1" in netns.links()
    assert not in_host(device)
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.DEL_AFTER_EXEC, 1)).delete(
            node.request(Command.DEL, container, netns, conf)
        )
    assert in_host(device)  # host-device's DEL ran: the device is back, its DEL not recorded
    node.restart()

    await node.engine().delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
    assert in_host(device)
    assert netns.links() == {"lo"}


async def test_an_add_killed_before_host_device_ran_is_rolled_back_by_recovery(node: Node) -> None:
    network, device = host_device_network(node)
    conf = node.conf(node.recorder_network("cluster"), network)
    netns, container = node.new_netns(), new_container_id()
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT, 2)).add(
            node.request(Command.ADD, container, netns, conf)
        )
    assert in_host(device)  # host-device never ran
    node.restart()

    report = await recover(engine=node.engine(), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert in_host(device)


async def test_an_add_killed_before_the_vf_was_looked_at_is_rolled_back_by_recovery(node: Node) -> None:
    """A plugin handed a VF (host-device under another type name, standing in for sriov-cni as in
    ``bench.chaos``) whose ADD was killed before the VF's host name was recorded: the VF has a
    netdev in the host, so the plugin's "Link not found" at DEL can never pass."""
    pci = "0000:c1:00.3"
    vf = fake_vf(node, pci)
    (node.bin_dir / "sriov").symlink_to(Path(CNI_PLUGIN_DIR) / "host-device")
    node.write_network(
        "vf", {"cniVersion": "1.0.0", "name": "vf", "type": "sriov", "deviceID": pci, "device": vf.name}
    )
    conf = node.conf(node.recorder_network("cluster"), "vf")
    netns, container = node.new_netns(), new_container_id()
    (vf.names / vf.name).rmdir()  # not seen in the host when the ADD looks: its name is not recorded
    with pytest.raises(Crashed):
        await node.engine(crash=CrashAt(Point.ADD_AFTER_INTENT, 2), sysfs_root=vf.sysfs).add(
            node.request(Command.ADD, container, netns, conf)
        )
    record = node.checkpoint(container)
    assert record is not None
    assert [a.device for a in record.attachments if a.ifname == "net1"] == [
        {"pci": pci, "ifname": "", "mac": ""}
    ]
    (vf.names / vf.name).mkdir()  # the VF's netdev is in the host
    node.restart()

    report = await recover(engine=node.engine(sysfs_root=vf.sysfs), db=node.db)

    assert report.failed == []
    assert node.checkpoint(container) is None
    assert in_host(vf.name)
