"""Fixtures of the container-runtime test: one containerd for the session, a host root per test.

``containerd`` is Debian's containerd started on a config of its own under ``/tmp/mpc-*`` (root,
state, socket, CNI dirs; see ``tests.cri.runtime``); its CNI bin dir holds ``multus-shim`` installed
by ``multus-install`` (as the DaemonSet's init container does) and the reference ``loopback``, which
containerd's CRI plugin runs for every sandbox's ``lo``. Its CNI conf dir is empty until a test
hands it the daemon's conf (``Containerd.use_cni_conf``). Teardown removes any sandbox a failed test
left, stops containerd and removes its directory.

``host_root`` is an empty directory that ``tests/cri/hostroot.py`` fills with bind mounts inside the
daemon's own mount namespace (``cluster.daemon_wrapper``); the host never sees those mounts, so
teardown only removes empty directories and symlinks, and refuses to touch a mount point.
``node`` is a test's node on that containerd: NADs ``bridge-net`` and ``macvlan-net``, the daemon
chrooted to ``host_root``, containerd on the daemon's ``00-multus.conf``. Re-exports the e2e fixtures
``cluster``, ``kube``, ``started`` and ``premigrated_state``: ``test_kubelet_sequences`` starts its
nodes on an already migrated database; ``test_containerd``'s node keeps a daemon's first start (the
migration child of a daemon in its host-root namespace).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CNI_PLUGIN_DIR, child_environment
from tests.cri._criapi import runtime_v1_pb2 as cri
from tests.cri.runtime import Containerd
from tests.e2e.conftest import (
    Cluster,
    KubeApiProcess,
    cluster,
    installed_shim,
    kube,
    premigrated_state,
    started,
    state_template,
)

__all__ = [
    "cluster",
    "installed_shim",
    "kube",
    "premigrated_state",
    "started",
    "state_template",
]  # re-exported fixtures

HOSTROOT_SCRIPT = Path(__file__).with_name("hostroot.py")
NODE = "node-a"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (apt-get install containerd runc; ./dev.sh installs them)")
    return path


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    for program in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare"):
        _require(program)
    runtime = Containerd(Path(tempfile.mkdtemp(prefix="mpc-", dir="/tmp")))
    try:
        runtime.cni_bin_dir.mkdir(parents=True)
        installed = subprocess.run(
            [sys.executable, "-m", "app.cli.install", "install", "--cni-bin-dir", str(runtime.cni_bin_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_environment(),
        )
        assert installed.returncode == 0, installed.stderr
        (runtime.cni_bin_dir / "loopback").symlink_to(Path(CNI_PLUGIN_DIR) / "loopback")
        runtime.start()
        yield runtime
    finally:
        runtime.stop()
        runtime.remove()


def daemon_wrapper(root: Path, *directories: Path) -> list[str]:
    """The command the daemon runs under: a mount namespace of its own where ``root`` is a host root
    that also shows ``directories`` (the test's own) at their paths."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "slave",
        sys.executable,
        str(HOSTROOT_SCRIPT),
        str(root),
        *map(str, directories),
        "--",
    ]


@pytest.fixture
def host_root() -> Iterator[Path]:
    """An empty directory for ``hostroot.py`` to fill (in the daemon's mount namespace only)."""
    root = Path(tempfile.mkdtemp(prefix="mph-", dir="/tmp"))
    try:
        yield root
    finally:
        with open("/proc/self/mountinfo") as mountinfo:
            mounted = [line.split()[4] for line in mountinfo if line.split()[4].startswith(f"{root}/")]
        assert not mounted, f"mounted in the test's own namespace, left in place: {mounted}"
        for directory, subdirectories, files in os.walk(root, topdown=False):
            for name in files:  # only ever the symlinks hostroot.py made
                assert Path(directory, name).is_symlink(), f"{directory}/{name} in the host root"
                Path(directory, name).unlink()
            for name in subdirectories:
                entry = Path(directory, name)
                if entry.is_symlink():
                    entry.unlink()
                else:
                    entry.rmdir()  # an empty mount point: fails rather than empty a directory
        root.rmdir()


def bridge_nad(cluster: Cluster, subnet: str) -> dict[str, Any]:
    """A bridge of its own (removed with the cluster) with host-local IPAM on ``subnet``."""
    bridge = f"{cluster.bridge}b"
    cluster.host_links.append(bridge)
    return {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": str(cluster.ipam_dir), "ranges": [[{"subnet": subnet}]]},
    }


def macvlan_nad(cluster: Cluster, subnet: str) -> dict[str, Any]:
    """macvlan on one end of a veth pair the test creates (the node's "physical" uplink)."""
    parent = cluster.veth_uplink()
    return {
        "cniVersion": "1.0.0",
        "type": "macvlan",
        "master": parent,
        "mode": "bridge",
        "ipam": {"type": "host-local", "dataDir": str(cluster.ipam_dir), "ranges": [[{"subnet": subnet}]]},
    }


def checkpoint_counts(cluster: Cluster) -> tuple[int, int]:
    """(sandboxes, attachments) in the daemon's checkpoint."""
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
        attachments = connection.execute("SELECT count(*) FROM attachments").fetchone()[0]
    return int(sandboxes), int(attachments)


def sandbox_config(
    kube: KubeApiProcess, containerd: Containerd, name: str, annotations: dict[str, str]
) -> cri.PodSandboxConfig:
    """What kubelet sends for a new pod ``default/<name>``, created in the API with ``annotations``."""
    pod = kube.create_pod("default", name, node=NODE, annotations=annotations)
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=pod["metadata"]["uid"]),
        hostname=name,
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=containerd.cgroup_parent),
    )


@pytest.fixture
def node(
    host_root: Path, cluster: Cluster, kube: KubeApiProcess, started: Any, containerd: Containerd
) -> Iterator[Cluster]:
    """NADs ``bridge-net`` and ``macvlan-net``, the daemon in its host-root namespace with
    ``chrootDir``, and containerd on the daemon's generated ``00-multus.conf``. Teardown removes the
    sandboxes a failed test left while this test's daemon still serves their DELs."""
    kube.create_nad("default", "bridge-net", bridge_nad(cluster, "10.81.0.0/24"))
    kube.create_nad("default", "macvlan-net", macvlan_nad(cluster, "10.82.0.0/24"))
    cluster.daemon_wrapper = daemon_wrapper(host_root, cluster.root)
    started(chrootDir=str(host_root), gcIntervalSeconds=3600)
    generated = cluster.net_d / "00-multus.conf"
    containerd.wait_for(generated.exists, f"{generated} written by the daemon", timeout=15)
    containerd.use_cni_conf("00-multus.conf", generated.read_bytes(), marker=str(cluster.socket_dir))
    try:
        yield cluster
    finally:
        containerd.remove_sandboxes()
