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
