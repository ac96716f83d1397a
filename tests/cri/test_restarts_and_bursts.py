"""kubelet through containerd across daemon restarts, a pod recreated under its name, and a burst.

Each test plays the kubelet against the session's containerd (``tests.cri.runtime``), whose CRI
plugin runs the installed ``multus-shim``: a RunPodSandbox whose ADD is in the daemon when it is
stopped gracefully (SIGTERM) and one arriving while it drains (the shim waits on the restart marker
for the next daemon, started meanwhile as a rolling restart starts it); a StopPodSandbox while the
daemon is down (killed: spooled, then replayed by the next daemon; stopped gracefully: waited for
and served by the next daemon); a pod deleted and recreated under its name (a new uid) while its
old sandbox still runs, as a forced deletion lets kubelet do; a pod's sandbox recreated by kubelet
(attempt 1) after its pause process died; and a burst of RunPodSandbox calls, then every sandbox
stopped and removed at once. "Nothing left" is ``assert_nothing_left`` plus no spool entry, no
``multus-shim`` and no plugin process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cri._criapi import runtime_v1_pb2 as cri
from tests.cri.conftest import (
    NETWORK_STATUS,
    NETWORKS,
    Gate,
    assert_nothing_left,
    checkpoint_counts,
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

BURST = 32


def _interfaces(containerd: Containerd, sandbox: str) -> set[str]:
    return set(netns_interfaces(sandbox_netns(containerd.cri.pod_sandbox_status(sandbox))))


def _network_status(kube: KubeApiProcess, name: str) -> list[tuple[str, str]]:
    """(network name, interface) of each entry of pod ``default/<name>``'s network-status."""
    annotations = kube.get_pod("default", name)["metadata"]["annotations"]
    return [(entry["name"], entry["interface"]) for entry in json.loads(annotations[NETWORK_STATUS])]


def _spooled(node: Cluster) -> list[str]:
    return sorted(path.name for path in node.spool_dir.glob("*")) if node.spool_dir.exists() else []


def _del_triggers(node: Cluster, sandbox: str) -> set[str]:
    """Who asked for the DEL steps the history holds of ``sandbox``: the runtime, or the spool."""
    with sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True) as connection:
        query = 'SELECT DISTINCT "trigger" FROM history WHERE command = ? AND container_id = ?'
        return {row[0] for row in connection.execute(query, ("DEL", sandbox))}


def _plugins_running(node: Cluster) -> list[str]:
    """Processes run from the node's binDir (delegates), by their command lines."""
    found = subprocess.run(["pgrep", "-af", str(node.bin_dir)], capture_output=True, text=True)
    return found.stdout.splitlines()


def _stop_and_remove(containerd: Containerd, sandbox: str) -> None:
    containerd.cri.stop_pod_sandbox(sandbox)
    containerd.cri.remove_pod_sandbox(sandbox)


def test_runpodsandboxes_across_a_graceful_daemon_restart_get_their_networks(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, gate: Callable[[str], Gate]
) -> None:
    """The ADD in flight at SIGTERM is drained to its end and answered; the RunPodSandbox that comes
    while the daemon drains is held by the shim (503, then no socket, the marker live) until the
    next daemon, started as the old one drains and waiting for its lock, serves it."""
    netns_before = netns_paths()
    held = gate("ADD")
    draining = sandbox_config(kube, containerd, "draining", {NETWORKS: "gated-net"})
    arriving = sandbox_config(kube, containerd, "arriving", {NETWORKS: "bridge-net"})
    sandboxes: dict[str, str] = {}
    first, first_errors = in_background(
        lambda: sandboxes.__setitem__("draining", containerd.cri.run_pod_sandbox(draining))
    )
    containerd.wait_for(held.entered.exists, "the gated ADD running")
    old = node.daemon
    assert old is not None
    old.send_signal(signal.SIGTERM)
    containerd.wait_for((node.socket_dir / "multus.restarting").exists, "the restart marker")
    second, second_errors = in_background(
        lambda: sandboxes.__setitem__("arriving", containerd.cri.run_pod_sandbox(arriving))
    )
    containerd.wait_for(lambda: shims_running("ADD") == 2, "the arriving pod's shim")

    node.start_daemon(wait=False)  # a rolling restart's successor: it waits for the old one's lock
    held.open()
    assert old.wait(timeout=60) == 0
    node.wait_ready(timeout=60)
    first.join()
    second.join()

    assert first_errors == []
    assert second_errors == []
    assert _interfaces(containerd, sandboxes["draining"]) == {"lo", "eth0", "net1"}
    assert _interfaces(containerd, sandboxes["arriving"]) == {"lo", "eth0", "net1"}
    assert _network_status(kube, "draining") == [("primary", "eth0"), ("default/gated-net", "net1")]
    assert _network_status(kube, "arriving") == [("primary", "eth0"), ("default/bridge-net", "net1")]
    for sandbox in sandboxes.values():
        _stop_and_remove(containerd, sandbox)
    assert_nothing_left(node, netns_before)
    assert _spooled(node) == []


def test_an_add_cut_off_at_the_end_of_the_grace_fails_and_containerd_s_del_waits_for_the_next_daemon(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, gate: Callable[[str], Gate]
) -> None:
    """The ADD outlives ``shutdownGraceSeconds``: its plugins are killed and its connection closed
    unanswered, so RunPodSandbox fails (code 11); containerd's DEL of the sandbox, sent before it
    answers, waits on the restart marker until the next daemon has rolled the ADD back and serves
    it. Nothing is left, nothing spooled."""
    node.stop_daemon()
    node.daemon_config["shutdownGraceSeconds"] = 1
    node.start_daemon()
    netns_before = netns_paths()
    held = gate("ADD")
    config = sandbox_config(kube, containerd, "cut", {NETWORKS: "bridge-net, gated-net"})
    running, errors = in_background(lambda: containerd.cri.run_pod_sandbox(config))
    containerd.wait_for(held.entered.exists, "the gated ADD running")

    assert node.stop_daemon() == 0
    containerd.wait_for(lambda: shims_running("DEL") == 1, "containerd's DEL waiting for a daemon")
    held.open()
    node.start_daemon()
    running.join()

    assert len(errors) == 1
    assert "closed the connection without answering" in str(errors[0].details())
    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)
    assert _spooled(node) == []
    assert _plugins_running(node) == []


@pytest.mark.parametrize("down", ["killed", "stopped gracefully"])
def test_stop_pod_sandbox_while_the_daemon_is_down(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd, down: str
) -> None:
    """Killed (no restart marker): the shim spools the DEL and answers success at once, containerd
    removes the netns, and the next daemon replays the entry before it is ready. Stopped gracefully
    (the marker live): the shim waits, and the next daemon serves the DEL itself."""
    netns_before = netns_paths()
    annotations = {NETWORKS: "bridge-net, macvlan-net"}
    sandbox = containerd.cri.run_pod_sandbox(sandbox_config(kube, containerd, "downtime", annotations))
    netns = sandbox_netns(containerd.cri.pod_sandbox_status(sandbox))

    if down == "killed":
        node.stop_daemon(signal.SIGKILL)
        containerd.cri.stop_pod_sandbox(sandbox)
        assert len(_spooled(node)) == 1, "the DEL spooled"
        assert not os.path.exists(netns), "containerd went on once the shim answered success"
        containerd.cri.remove_pod_sandbox(sandbox)
        assert checkpoint_counts(node) == (1, 3), "nothing ran the DEL yet"
        node.start_daemon()
    else:
        assert node.stop_daemon() == 0
        stopping, errors = in_background(lambda: _stop_and_remove(containerd, sandbox))
        containerd.wait_for(lambda: shims_running("DEL") == 1, "the shim of the DEL waiting")
        node.start_daemon()
        stopping.join()
        assert errors == []

    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)
    assert _spooled(node) == []
    assert _del_triggers(node, sandbox) == {"spool" if down == "killed" else "runtime"}


def test_a_pod_deleted_and_recreated_under_its_name_while_its_old_sandbox_runs(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    """A forced deletion: kubelet runs the new pod's sandbox (same name, new uid) before it stops the
    old pod's. The new pod's network-status is its own sandbox's, and stays so through the old
    sandbox's DEL and a daemon restart (which resumes the status writes a sandbox left unwritten)."""
    netns_before = netns_paths()
    old = containerd.cri.run_pod_sandbox(sandbox_config(kube, containerd, "web", {NETWORKS: "bridge-net"}))
    kube.delete_pod("default", "web")
    new_config = sandbox_config(kube, containerd, "web", {NETWORKS: "macvlan-net"})
    new = containerd.cri.run_pod_sandbox(new_config)
    new_status = [("primary", "eth0"), ("default/macvlan-net", "net1")]
    assert _network_status(kube, "web") == new_status
    assert _interfaces(containerd, old) == _interfaces(containerd, new) == {"lo", "eth0", "net1"}

    _stop_and_remove(containerd, old)
    node.stop_daemon()
    node.start_daemon()

    assert _network_status(kube, "web") == new_status
    assert checkpoint_counts(node) == (1, 2)
    new_netns = sandbox_netns(containerd.cri.pod_sandbox_status(new))
    assert netns_interfaces(new_netns)["net1"]["kind"] == "macvlan"
    _stop_and_remove(containerd, new)
    assert_nothing_left(node, netns_before)


def _status_unwritten(node: Cluster) -> list[int]:
    with sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT status_unwritten FROM sandboxes")]


def test_a_status_left_unwritten_across_a_restart_never_lands_on_the_pod_recreated_under_its_name(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    """The API refuses the network-status PATCH of a RunPodSandbox (it succeeds, its status marked
    unwritten in the checkpoint); the daemon restarts, and meanwhile the pod is deleted and
    recreated under its name. The next daemon's resume finds the mark moot (the name is another
    pod's now) and clears it; the new pod gets its own sandbox's status, never the old one's."""
    node.stop_daemon()
    node.daemon_config["watch"] = {"statusDeadline": 0.5}
    node.start_daemon()
    netns_before = netns_paths()
    kube.fault(action="fail", status=503, method="PATCH", path="/pods/web/status", count=100_000)
    old = containerd.cri.run_pod_sandbox(sandbox_config(kube, containerd, "web", {NETWORKS: "bridge-net"}))
    assert NETWORK_STATUS not in kube.get_pod("default", "web")["metadata"]["annotations"]
    assert _status_unwritten(node) == [1]

    node.stop_daemon()
    kube.delete_pod("default", "web")
    new_config = sandbox_config(kube, containerd, "web", {NETWORKS: "macvlan-net"})
    kube.fault(action="clear")
    node.start_daemon()
    containerd.wait_for(lambda: _status_unwritten(node) == [0], "the old sandbox's mark found moot")

    assert NETWORK_STATUS not in kube.get_pod("default", "web")["metadata"]["annotations"]
    new = containerd.cri.run_pod_sandbox(new_config)
    assert _network_status(kube, "web") == [("primary", "eth0"), ("default/macvlan-net", "net1")]
    _stop_and_remove(containerd, old)
    _stop_and_remove(containerd, new)
    assert_nothing_left(node, netns_before)


def test_kubelet_recreates_a_sandbox_whose_pause_process_died(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    """The pause process dies: the sandbox turns NOTREADY, kubelet stops it (its DEL, the netns
    still mounted) and runs attempt 1 of the same pod, which gets the same networks."""
    netns_before = netns_paths()
    config = sandbox_config(kube, containerd, "phoenix", {NETWORKS: "bridge-net"})
    first = containerd.cri.run_pod_sandbox(config)
    pause = int(json.loads(containerd.cri.pod_sandbox_status(first).info["info"])["pid"])
    os.kill(pause, signal.SIGKILL)
    containerd.wait_for(
        lambda: containerd.cri.pod_sandbox_status(first).status.state == cri.SANDBOX_NOTREADY,
        "the sandbox not ready",
    )

    containerd.cri.stop_pod_sandbox(first)
    config.metadata.attempt = 1
    second = containerd.cri.run_pod_sandbox(config)

    assert checkpoint_counts(node) == (1, 2)
    assert _interfaces(containerd, second) == {"lo", "eth0", "net1"}
    assert _network_status(kube, "phoenix") == [("primary", "eth0"), ("default/bridge-net", "net1")]
    containerd.cri.remove_pod_sandbox(first)
    _stop_and_remove(containerd, second)
    assert_nothing_left(node, netns_before)


def test_a_burst_of_pods_then_all_stopped_and_removed_leaves_nothing(
    node: Cluster, kube: KubeApiProcess, containerd: Containerd
) -> None:
    netns_before = netns_paths()
    configs = [
        sandbox_config(kube, containerd, f"burst{index}", {NETWORKS: "bridge-net"}) for index in range(BURST)
    ]

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        sandboxes = list(pool.map(containerd.cri.run_pod_sandbox, configs))
        statuses = [containerd.cri.pod_sandbox_status(sandbox).status for sandbox in sandboxes]
        assert {status.state for status in statuses} == {cri.SANDBOX_READY}
        assert len({status.network.ip for status in statuses}) == BURST
        assert checkpoint_counts(node) == (BURST, 2 * BURST)
        for index in range(BURST):
            assert _network_status(kube, f"burst{index}") == [
                ("primary", "eth0"),
                ("default/bridge-net", "net1"),
            ]
        list(pool.map(lambda sandbox: _stop_and_remove(containerd, sandbox), sandboxes))

    assert containerd.cri.list_pod_sandboxes() == []
    assert_nothing_left(node, netns_before)
    assert _spooled(node) == []
    assert shims_running("ADD") == shims_running("DEL") == 0
    assert _plugins_running(node) == []
