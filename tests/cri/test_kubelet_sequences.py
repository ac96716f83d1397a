"""What kubelet does through containerd beyond the happy path, and that nothing is left behind.

Each test plays the kubelet against the session's containerd (``tests.cri.runtime``), whose CRI plugin
runs the installed ``multus-shim``: StopPodSandbox repeated (again after a daemon restart),
RemovePodSandbox without a Stop, a RunPodSandbox whose ADD fails part-way (containerd DELs the
sandbox), the daemon killed with SIGKILL in a delegate's ADD or DEL, kubelet giving up a
RunPodSandbox during a slow delegate (containerd kills the shim and DELs; the daemon finishes the ADD
first, then serves the DEL), containerd killed while its sandbox's pause
process dies, the daemon's ``00-multus.conf`` rewritten in containerd's own conf dir while containerd
reloads it, containerd's ``portMappings`` and ``bandwidth`` capabilities and a dual-stack pod IP.
"Nothing leaked" is: no sandbox or attachment in the checkpoint, no host-local lease, no veth on a
test bridge, no ``cni-*`` netns of ours, no iptables rule or qdisc of the pod's.

Slow delegates are a shell plugin ``gated`` in the daemon's ``binDir`` (fixture ``gate``) that holds
one CNI command until the test creates a file, then executes ``bridge``: the test waits on files and
processes, never on time.
containerd 1.6 (Debian 12's) sends no CNI STATUS or GC: libcni 1.1 has neither.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.cri._criapi import runtime_v1_pb2 as cri
from tests.cri.conftest import (
    NETWORK_STATUS,
    NETWORKS,
    Gate,
    assert_nothing_left,
    checkpoint_counts,
    daemon_wrapper,
    in_background,
    netns_paths,
    sandbox_config,
    shims_running,
)
from tests.cri.runtime import Containerd, sandbox_netns
from tests.e2e.conftest import Cluster, KubeApiProcess, netns_interfaces

pytestmark = [
    pytest.mark.slow,  # starts containerd, daemon and emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is test_containerd's, not these tests'
]


def _loads(containerd: Containerd, marker: str) -> Callable[[], bool]:
    """Whether the CNI configuration containerd has loaded holds ``marker``, as a condition."""
    return lambda: marker in containerd.cri.loaded_cni_config()


def test_stop_pod_sandbox_repeated_and_after_a_daemon_restart_then_remove(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    netns_before = netns_paths()
    sandbox = containerd.cri.run_pod_sandbox(
        sandbox_config(kube, containerd, "twice", {NETWORKS: "bridge-net"})
    )
    assert set(netns_interfaces(sandbox_netns(containerd.cri.pod_sandbox_status(sandbox)))) == {
        "lo",
        "eth0",
        "net1",
    }

    containerd.cri.stop_pod_sandbox(sandbox)
    assert checkpoint_counts(node) == (0, 0)
    containerd.cri.stop_pod_sandbox(sandbox)  # DEL again, the netns gone now
    node.stop_daemon()
    node.start_daemon()
    containerd.cri.stop_pod_sandbox(sandbox)
    containerd.cri.remove_pod_sandbox(sandbox)

    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)


def test_remove_pod_sandbox_without_a_stop(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    netns_before = netns_paths()
    annotations = {NETWORKS: "bridge-net, macvlan-net"}
    sandbox = containerd.cri.run_pod_sandbox(sandbox_config(kube, containerd, "unstopped", annotations))

    containerd.cri.remove_pod_sandbox(sandbox)

    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)


def test_an_add_failing_part_way_is_rolled_back_and_containerd_s_del_answered(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    netns_before = netns_paths()
    ipam = {"type": "host-local", "dataDir": str(node.ipam_dir), "ranges": [[{"subnet": "10.84.0.0/24"}]]}
    kube.create_nad(
        "default", "broken-net", {"cniVersion": "1.0.0", "type": "macvlan", "master": "mpnone0", "ipam": ipam}
    )
    config = sandbox_config(kube, containerd, "broken", {NETWORKS: "bridge-net, broken-net"})

    with pytest.raises(grpc.RpcError) as failed:
        containerd.cri.run_pod_sandbox(config)

    assert 'adding container to network "default/broken-net" as net2' in str(failed.value.details())
    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)
    assert not node.spool_dir.exists() or list(node.spool_dir.iterdir()) == [], (
        "containerd's DEL was answered"
    )


def test_daemon_killed_in_an_add_then_restarted(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, gate: Callable[[str], Gate]
) -> None:
    netns_before = netns_paths()
    held = gate("ADD")
    config = sandbox_config(kube, containerd, "crashed-add", {NETWORKS: "bridge-net, gated-net"})
    running, errors = in_background(lambda: containerd.cri.run_pod_sandbox(config))
    containerd.wait_for(held.entered.exists, "the gated ADD running")

    node.stop_daemon(signal.SIGKILL)
    node.daemon = None
    running.join()
    held.open()  # the orphaned plugin may go on; recovery kills it first
    node.start_daemon()

    assert len(errors) == 1
    assert "closed the connection without answering" in str(errors[0].details())
    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)


def test_daemon_killed_in_a_del_then_stop_and_remove_again(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, gate: Callable[[str], Gate]
) -> None:
    netns_before = netns_paths()
    held = gate("DEL")
    config = sandbox_config(kube, containerd, "crashed-del", {NETWORKS: "bridge-net, gated-net"})
    sandbox = containerd.cri.run_pod_sandbox(config)
    stopping, errors = in_background(lambda: containerd.cri.stop_pod_sandbox(sandbox))
    containerd.wait_for(held.entered.exists, "the gated DEL running")

    node.stop_daemon(signal.SIGKILL)
    node.daemon = None
    stopping.join()
    assert errors == [], "the shim spooled the DEL it could not finish and answered success"
    containerd.cri.stop_pod_sandbox(sandbox)
    containerd.cri.remove_pod_sandbox(sandbox)
    held.open()
    node.start_daemon()  # recovery finishes the DEL begun, the spool replays the DELs taken meanwhile

    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)
    assert list(node.spool_dir.iterdir()) == []


def test_runpodsandbox_given_up_by_kubelet_during_a_slow_delegate(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, gate: Callable[[str], Gate]
) -> None:
    """kubelet's deadline passing mid-ADD is a cancelled CRI call (here cancelled at a known
    moment, not timed): containerd's context ends, it kills the shim, then DELs the sandbox."""
    netns_before = netns_paths()
    held = gate("ADD")
    request = cri.RunPodSandboxRequest(
        config=sandbox_config(kube, containerd, "slow", {NETWORKS: "gated-net"})
    )
    assert containerd.channel is not None
    stub = containerd.channel.unary_unary(
        "/runtime.v1.RuntimeService/RunPodSandbox",
        request_serializer=cri.RunPodSandboxRequest.SerializeToString,
        response_deserializer=cri.RunPodSandboxResponse.FromString,
    )
    running = stub.future(request, timeout=60)
    containerd.wait_for(held.entered.exists, "the gated ADD running")

    assert running.cancel()  # type: ignore[no-untyped-call]
    # the ADD runs on to its end (the daemon never leaves one half-recorded); containerd's DEL,
    # sent once it has killed the shim of the ADD, waits for it
    containerd.wait_for(lambda: shims_running("DEL") and not shims_running("ADD"), "containerd's DEL")
    held.open()
    containerd.wait_for(lambda: checkpoint_counts(node) == (0, 0), "the ADD undone")

    containerd.wait_for(lambda: netns_paths() <= netns_before, "containerd's cleanup of the sandbox")
    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)


def test_containerd_killed_while_its_pause_process_dies(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    netns_before = netns_paths()
    sandbox = containerd.cri.run_pod_sandbox(
        sandbox_config(kube, containerd, "orphan", {NETWORKS: "bridge-net"})
    )
    pause = int(json.loads(containerd.cri.pod_sandbox_status(sandbox).info["info"])["pid"])
    assert containerd.process is not None

    containerd.process.kill()
    containerd.process.wait()
    os.kill(pause, signal.SIGKILL)
    containerd.start()
    containerd.wait_for(lambda: str(node.socket_dir) in containerd.cri.loaded_cni_config(), "CNI conf loaded")

    assert containerd.cri.pod_sandbox_status(sandbox).status.state == cri.SANDBOX_NOTREADY
    assert checkpoint_counts(node) == (1, 2), "nothing DELs a sandbox containerd finds dead at start"
    containerd.cri.stop_pod_sandbox(sandbox)
    containerd.cri.remove_pod_sandbox(sandbox)
    assert_nothing_left(node, netns_before)


def test_pods_run_while_the_daemon_rewrites_00_multus_conf_in_containerd_s_conf_dir(
    cluster: Cluster, kube: KubeApiProcess, containerd: Containerd, host_root: Path
) -> None:
    """A real node's layout: the primary and ``00-multus.conf`` in the runtime's own conf dir. Every
    rewrite the primary's changes cause is a rename there: containerd, reloading on each event, never
    loads a missing, half-written or temporary file (a sandbox run then would fail)."""
    for old in containerd.cni_conf_dir.iterdir():
        old.unlink()
    primary = containerd.cni_conf_dir / "10-primary.conflist"
    conflist = cluster.bridge_conflist("primary", "10.240.0.0/24")
    primary.write_text(json.dumps(conflist))
    conf_dir = str(containerd.cni_conf_dir)
    cluster.daemon_config.update(
        cniConfigDir=conf_dir, multusAutoconfigDir=conf_dir, chrootDir=str(host_root)
    )
    cluster.daemon_config.update(gcIntervalSeconds=3600, autoconfIntervalSeconds=0.02)
    cluster.daemon_wrapper = daemon_wrapper(host_root, cluster.root, containerd.root)
    cluster.start_daemon()
    netns_before = netns_paths()
    try:
        for index in range(8):
            capability = f"test-reload-{index}"  # copied into 00-multus.conf; containerd ignores it
            conflist["plugins"][0]["capabilities"] = {capability: True}
            staged = primary.with_name(".staged")
            staged.write_text(json.dumps(conflist))
            staged.rename(primary)
            containerd.wait_for(_loads(containerd, capability), f"00-multus.conf with {capability} loaded")
            sandbox = containerd.cri.run_pod_sandbox(sandbox_config(kube, containerd, f"reload{index}", {}))
            containerd.cri.stop_pod_sandbox(sandbox)
            containerd.cri.remove_pod_sandbox(sandbox)
        assert sorted(path.name for path in containerd.cni_conf_dir.iterdir()) == [
            "00-multus.conf",
            "10-primary.conflist",
        ]
        assert_nothing_left(cluster, netns_before)
    finally:
        containerd.remove_sandboxes()


def _port_mapping(container_port: int, host_port: int) -> bytes:
    """``PodSandboxConfig.port_mappings`` (field 5) holding one TCP ``PortMapping`` (container_port
    = 2, host_port = 3), encoded by hand: our trimmed ``runtime_v1.proto`` leaves the message out,
    and protobuf keeps and sends unknown fields merged into a message."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        return bytes([*out, value])

    mapping = b"\x10" + varint(container_port) + b"\x18" + varint(host_port)
    return b"\x2a" + varint(len(mapping)) + mapping


def test_containerd_s_port_mappings_bandwidth_and_dual_stack_ips_reach_the_cluster_network(
    cluster: Cluster, kube: KubeApiProcess, containerd: Containerd, host_root: Path
) -> None:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    bandwidth = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    conflist = cluster.bridge_conflist("primary", "10.240.0.0/24", plugins_after=[portmap, bandwidth])
    conflist["plugins"][0]["ipam"]["ranges"].append([{"subnet": "fd00:240::/64"}])
    cluster.write_network(cluster.net_d, "10-primary.conflist", conflist)
    cluster.daemon_config.update(chrootDir=str(host_root), gcIntervalSeconds=3600)
    cluster.daemon_wrapper = daemon_wrapper(host_root, cluster.root)
    cluster.start_daemon()
    generated = cluster.net_d / "00-multus.conf"
    containerd.wait_for(generated.exists, f"{generated} written by the daemon")
    containerd.use_cni_conf("00-multus.conf", generated.read_bytes(), marker=str(cluster.socket_dir))
    config = sandbox_config(kube, containerd, "ported", {})
    config.annotations["kubernetes.io/ingress-bandwidth"] = "1M"
    config.MergeFromString(_port_mapping(80, 18080))
    netns_before = netns_paths()
    try:
        sandbox = containerd.cri.run_pod_sandbox(config)
        status = containerd.cri.pod_sandbox_status(sandbox).status
        nat = subprocess.run(
            ["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True
        ).stdout
        qdiscs = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True, check=True).stdout

        assert (status.network.ip, [ip.ip for ip in status.network.additional_ips]) == (
            "10.240.0.2",
            ["fd00:240::2"],
        )
        assert "--dport 18080 -j DNAT --to-destination 10.240.0.2:80" in nat
        assert "tbf" in qdiscs
        entries = json.loads(kube.get_pod("default", "ported")["metadata"]["annotations"][NETWORK_STATUS])
        assert [entry["ips"] for entry in entries] == [["10.240.0.2", "fd00:240::2"]]

        containerd.cri.stop_pod_sandbox(sandbox)
        containerd.cri.remove_pod_sandbox(sandbox)

        nat = subprocess.run(
            ["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True
        ).stdout
        assert "18080" not in nat
        assert sandbox not in nat, "the portmap chains of the sandbox removed"
        assert_nothing_left(cluster, netns_before)
    finally:
        containerd.remove_sandboxes()
