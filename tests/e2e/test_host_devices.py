"""Host devices taken by a sandbox (SR-IOV VFs) and namespaces reused under a recorded path.

There is no SR-IOV hardware here: a VF is a veth whose PCI address exists only in a fake sysfs
tree (``sysfsRoot``), the one seam. Moving, renaming and re-addressing links is real netlink.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

PCI = "0000:00:05.1"


def _link(name: str) -> dict[str, Any] | None:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def _fake_vf(cluster: Cluster, name: str) -> tuple[Path, str]:
    """A veth standing for a VF bound to iavf, registered in a fake sysfs under PCI; returns (sysfs
    root, its MAC)."""
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    cluster.host_links.extend([name, name + "p"])
    root = cluster.root / "sys"
    (root / "bus" / "pci" / "devices" / PCI / "net" / name).mkdir(parents=True)
    (root / "bus" / "pci" / "drivers" / "iavf").mkdir(parents=True)
    (root / "bus" / "pci" / "devices" / PCI / "driver").symlink_to(Path("..", "..", "drivers", "iavf"))
    link = _link(name)
    assert link is not None
    return root, str(link["address"])


def _sysfs_names(root: Path) -> Path:
    return root / "bus" / "pci" / "devices" / PCI / "net"


def _vf_network(cluster: Cluster) -> None:
    """A network whose plugin takes PCI device PCI (the recorder stands in for sriov-cni)."""
    cluster.write_network(
        cluster.conf_dir,
        "40-sriov.conflist",
        {"cniVersion": "1.0.0", "name": "sriov-net", "plugins": [{"type": "recorder", "deviceID": PCI}]},
    )


def test_a_vf_that_came_back_renamed_is_restored_before_its_attachment_is_forgotten(
    cluster: Cluster, started: Any
) -> None:
    sysfs, original_mac = _fake_vf(cluster, f"mpvf{cluster.tag}")
    vf = f"mpvf{cluster.tag}"
    _vf_network(cluster)
    started(defaultNetworks=["sriov-net"], sysfsRoot=str(sysfs))
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    # what the kernel does to a VF whose pod namespace vanished: back in the host, under its pod name
    subprocess.run(["ip", "link", "set", vf, "name", "mpdev7", "address", "02:11:22:33:44:55"], check=True)
    cluster.host_links.append("mpdev7")
    (_sysfs_names(sysfs) / vf).rename(_sysfs_names(sysfs) / "mpdev7")

    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    restored = _link(vf)
    assert restored is not None, "the VF is back under its original name"
    assert restored["address"] == original_mac
    assert _link("mpdev7") is None


def test_a_vf_still_inside_a_namespace_keeps_its_attachment_pending_until_it_is_back(
    cluster: Cluster, started: Any
) -> None:
    sysfs, _ = _fake_vf(cluster, f"mpvf{cluster.tag}")
    vf = f"mpvf{cluster.tag}"
    _vf_network(cluster)
    started(defaultNetworks=["sriov-net"], sysfsRoot=str(sysfs), gcIntervalSeconds=3600)
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    hidden = cluster.root / "hidden"
    (_sysfs_names(sysfs) / vf).rename(hidden)  # sysfs shows no netdev: it is in some namespace

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 1
    assert deleted.json()["code"] == 102
    assert PCI in deleted.json()["msg"]
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        pending = connection.execute("SELECT network_name, state, last_error FROM attachments").fetchall()
    assert [(network, state) for network, state, _ in pending] == [("sriov-net", "deleting")]
    assert PCI in pending[0][2], "the pending attachment says why"

    hidden.rename(_sysfs_names(sysfs) / vf)  # the VF comes back
    report = json.loads(cluster.post("/gc")[1])

    assert report["collected"] == [container]
    assert cluster.leases() == []


def test_del_does_not_touch_a_new_namespace_at_the_recorded_path(started: Any) -> None:
    cluster: Cluster = started()
    netns = cluster.new_netns()
    container = new_container_id()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    netns.delete()
    subprocess.run(["ip", "netns", "add", netns.name], check=True)  # a new sandbox reuses the path
    subprocess.run(
        ["ip", "-n", netns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"], check=True
    )

    deleted = cluster.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0
    assert {"eth0", "peer0"} <= netns.links(), "the newcomer's eth0 is not ours to delete"
    assert cluster.leases() == [], "the lease is released all the same"
    assert "holds another network namespace now" in cluster.daemon_log.read_text()
