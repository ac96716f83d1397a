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

Helpers the kubelet-sequence modules share: ``gate`` (a NAD ``gated-net`` whose plugin holds one CNI
command until the test opens it), ``shims_running`` (the shims containerd runs now, by command),
``in_background`` (a CRI call in a thread), ``netns_paths`` and ``assert_nothing_left`` (no row,
lease, veth or sandbox netns left).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
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


def netns_paths() -> set[str]:
    """The sandbox namespaces containerd made (``cni-<uuid>``), not those of other work on the host."""
    if not os.path.isdir("/run/netns"):
        return set()
    return {f"/run/netns/{name}" for name in os.listdir("/run/netns") if name.startswith("cni-")}


def assert_nothing_left(node: Cluster, netns_before: set[str]) -> None:
    """No sandbox or attachment in the checkpoint, no host-local lease, no veth on a test bridge, no
    sandbox netns made since ``netns_before``."""
    assert checkpoint_counts(node) == (0, 0)
    assert node.leases() == []
    assert node.leftover_host_veths() == set()
    assert netns_paths() - netns_before == set(), "a sandbox netns left behind"


@dataclass
class Gate:
    """A bridge NAD ``gated-net`` whose plugin holds one CNI command until ``opened`` exists."""

    opened: Path
    entered: Path
    """Exists once a held call has begun."""

    def open(self) -> None:
        self.opened.touch()


@pytest.fixture
def gate(node: Cluster, kube: KubeApiProcess) -> Iterator[Callable[[str], Gate]]:
    """``gate(command)`` makes ``gated-net`` hold ``command``; teardown opens the gate, so a failed
    test leaves no plugin waiting for ever behind a daemon gone."""
    made: list[Gate] = []

    def hold(command: str) -> Gate:
        held = Gate(opened=node.root / "gate-open", entered=node.root / "gate-entered")
        plugin = node.bin_dir / "gated"
        plugin.write_text(
            "#!/bin/sh\n"
            f'if [ "$CNI_COMMAND" = {command} ]; then\n'
            f"  touch {held.entered}\n"
            f"  while [ ! -e {held.opened} ]; do sleep 0.02; done\n"
            "fi\n"
            f"exec {node.bin_dir}/bridge\n"
        )
        plugin.chmod(0o755)
        bridge = f"{node.bridge}g"
        node.host_links.append(bridge)
        ipam = {"type": "host-local", "dataDir": str(node.ipam_dir), "ranges": [[{"subnet": "10.83.0.0/24"}]]}
        kube.create_nad(
            "default", "gated-net", {"cniVersion": "1.0.0", "type": "gated", "bridge": bridge, "ipam": ipam}
        )
        made.append(held)
        return held

    try:
        yield hold
    finally:
        for held in made:
            held.open()


def shims_running(command: str) -> int:
    """How many ``multus-shim`` processes run a CNI ``command`` (read from their environment)."""
    wanted = f"CNI_COMMAND={command}".encode()
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            shim = any(arg.endswith(b"/multus-shim") for arg in argv[:3])  # a launcher's interpreter first
            if shim and wanted in (proc / "environ").read_bytes().split(b"\0"):
                count += 1
        except OSError:
            continue
    return count


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, list[grpc.RpcError]]:
    """Run ``call`` (a CRI call) in a thread: the thread, and the list its RPC error lands in."""
    errors: list[grpc.RpcError] = []

    def run() -> None:
        try:
            call()
        except grpc.RpcError as failed:
            errors.append(failed)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors
