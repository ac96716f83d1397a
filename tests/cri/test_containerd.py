"""A real container runtime in front of multus-py: containerd creates and removes a pod sandbox.

containerd's CRI plugin executes the installed ``multus-shim`` as its CNI plugin, exactly as on a
node; the test plays the kubelet (CRI ``runtime.v1`` over gRPC) and the API server (the emulator).
The daemon runs with ``chrootDir`` set to a host root made of bind mounts in its own mount
namespace, like upstream's DaemonSet with the node's ``/`` at ``/hostroot``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.cri._criapi import runtime_v1_pb2 as cri
from tests.cri.conftest import NETWORK_STATUS, NETWORKS, NODE, checkpoint_counts
from tests.cri.runtime import Containerd, sandbox_netns
from tests.e2e.conftest import Cluster, KubeApiProcess, netns_interfaces

pytestmark = pytest.mark.slow  # starts containerd, daemon and emulator processes


def _mount_points(pid: int | str) -> set[str]:
    with open(f"/proc/{pid}/mountinfo") as mountinfo:
        return {line.split()[4] for line in mountinfo}


def _daemon_sees_host_root(cluster: Cluster, host_root: Path) -> bool:
    """The daemon has a mount namespace of its own where ``host_root`` holds the host's /usr; ours
    does not (nothing leaked to the host's mount table)."""
    assert cluster.daemon is not None
    pid = cluster.daemon.pid
    own = os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    usr = str(host_root / "usr")
    return own and usr in _mount_points(pid) and usr not in _mount_points("self")


def _in_host_root(cluster: Cluster, host_root: Path, *command: str, **env: str) -> str:
    """What ``command`` prints when run as a delegate chrooted to ``host_root`` by the daemon would be:
    in the daemon's mount namespace, under ``chroot``, with ``env`` added to ours."""
    assert cluster.daemon is not None
    enter = ["nsenter", f"--target={cluster.daemon.pid}", "--mount", "chroot", str(host_root)]
    done = subprocess.run(
        [*enter, *command], capture_output=True, text=True, timeout=10, env={**os.environ, **env}
    )
    return done.stdout.strip() or done.stderr


def _recorded_roots(cluster: Cluster) -> list[str]:
    """The root each recorded delegate ran in (``chrootDir`` at its ADD)."""
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT root FROM attachments ORDER BY position")]


def _recorded_pod_uids(cluster: Cluster) -> list[str]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT pod_uid FROM sandboxes")]


def test_containerd_gives_a_pod_every_network_and_takes_them_back_across_a_daemon_restart(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, host_root: Path
) -> None:
    pod = kube.create_pod("default", "web", node=NODE, annotations={NETWORKS: "bridge-net, macvlan-net"})
    (node.root / "pod-logs").mkdir()
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="web", namespace="default", uid=pod["metadata"]["uid"]),
        hostname="web",
        log_directory=str(node.root / "pod-logs"),
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=containerd.cgroup_parent),
    )

    sandbox = containerd.cri.run_pod_sandbox(config)

    status = containerd.cri.pod_sandbox_status(sandbox)
    assert status.status.state == cri.SANDBOX_READY
    netns = sandbox_netns(status)
    interfaces = netns_interfaces(netns)
    assert set(interfaces) == {"lo", "eth0", "net1", "net2"}
    assert interfaces["eth0"]["addresses"] == ["10.240.0.2/24"]
    assert interfaces["net1"]["addresses"] == ["10.81.0.2/24"]
    assert interfaces["net2"]["addresses"] == ["10.82.0.2/24"]
    assert interfaces["net2"]["kind"] == "macvlan"
    assert status.status.network.ip == "10.240.0.2", "containerd reads the pod IP from multus' result"
    entries = json.loads(kube.get_pod("default", "web")["metadata"]["annotations"][NETWORK_STATUS])
    assert [(e["name"], e["interface"], e.get("default", False), e["ips"]) for e in entries] == [
        ("primary", "eth0", True, ["10.240.0.2"]),
        ("default/bridge-net", "net1", False, ["10.81.0.2"]),
        ("default/macvlan-net", "net2", False, ["10.82.0.2"]),
    ]
    assert [e["mac"] for e in entries] == [interfaces[name]["mac"] for name in ("eth0", "net1", "net2")]
    assert _recorded_pod_uids(node) == [pod["metadata"]["uid"]]
    assert _recorded_roots(node) == [str(host_root)] * 3, "every delegate ran chrooted to the host root"
    assert len(node.leases()) == 3
    assert _daemon_sees_host_root(node, host_root)
    # what a delegate run with chrootDir needs: the sandbox's netns (mounted by containerd after the
    # daemon's namespace was made) and the daemon's binDir, at the same paths inside the host root
    assert _in_host_root(node, host_root, "stat", "--file-system", "--format=%T", netns) == "nsfs"
    version = _in_host_root(node, host_root, str(node.bin_dir / "macvlan"), CNI_COMMAND="VERSION")
    assert "1.0.0" in json.loads(version)["supportedVersions"]

    node.stop_daemon()
    node.start_daemon()

    assert _daemon_sees_host_root(node, host_root)
    assert set(netns_interfaces(netns)) == {"lo", "eth0", "net1", "net2"}, "recovery left a live pod alone"
    containerd.cri.stop_pod_sandbox(sandbox)
    containerd.cri.remove_pod_sandbox(sandbox)

    assert not os.path.exists(netns)
    assert node.leftover_host_veths() == set()
    assert node.leases() == []
    assert checkpoint_counts(node) == (0, 0)
    assert containerd.cri.list_pod_sandboxes() == []
