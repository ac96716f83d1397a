"""A daemon stopped (SIGTERM) and started again while a burst of ADDs and DELs runs through the shim.

Every ADD the runtime heard succeed is recorded with its interface present; every ADD it heard fail
leaves nothing once the next daemon has recovered; every DEL ends removed (served, or spooled and
replayed); once every pod is DELed no lease, veth, checkpoint row, spool entry or plugin is left.
A stop that comes during the daemon's start-up recovery ends within its restart marker's ``until``.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, Netns, ShimResult, new_container_id
from tests.e2e.gated import gated_network, stop_within_the_restart_marker, wait_for

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

STUCK_PREFIX = "stuck-"
GATED_BRIDGE = """#!/bin/sh
# the bridge plugin; the ADD of a container whose ID starts with {prefix} waits for the gate first
case "$CNI_COMMAND/$CNI_CONTAINERID" in
ADD/{prefix}*)
    touch "{gate}.running.$CNI_CONTAINERID"
    while [ ! -e "{gate}.open" ]; do sleep 0.02; done ;;
esac
exec {bridge}
"""


def _recorded(cluster: Cluster) -> set[str]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute("SELECT container_id FROM sandboxes")}


def _plugins_running(cluster: Cluster) -> list[str]:
    found = subprocess.run(["pgrep", "-af", str(cluster.bin_dir)], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "gated-bridge" in line or "/bridge" in line]


@pytest.mark.parametrize("then", ["exit", "sigkill-while-draining"])
def test_sigterm_during_a_burst_of_adds_and_dels_loses_nothing_and_leaks_nothing(
    cluster: Cluster, then: str
) -> None:
    gate = gated_network(cluster, GATED_BRIDGE, prefix=STUCK_PREFIX)
    cluster.daemon_config.update(multusConfigFile="none", shutdownGraceSeconds=1, maxConcurrentDelegates=64)
    cluster.start_daemon()
    assert cluster.daemon is not None
    try:
        earlier = [(cluster.new_netns(), new_container_id()) for _ in range(8)]
        for netns, container_id in earlier:
            assert cluster.run_shim("ADD", container_id=container_id, netns=netns).returncode == 0
        quick = [(cluster.new_netns(), new_container_id()) for _ in range(8)]
        stuck = [(cluster.new_netns(), STUCK_PREFIX + new_container_id()[:40]) for _ in range(4)]
        outcomes: dict[str, ShimResult] = {}

        def call(command: str, netns: Netns, container_id: str) -> None:
            outcomes[f"{command} {container_id}"] = cluster.run_shim(
                command, container_id=container_id, netns=netns, timeout=120
            )

        runtime = [threading.Thread(target=call, args=("ADD", *pod)) for pod in stuck]
        for thread in runtime:
            thread.start()
        gates = cluster.root
        wait_for(lambda: len(list(gates.glob("gate.running.*"))) == len(stuck), "the stuck ADDs", cluster)
        burst = [threading.Thread(target=call, args=("ADD", *pod)) for pod in quick]
        burst += [threading.Thread(target=call, args=("DEL", *pod)) for pod in earlier]
        burst.append(threading.Thread(target=call, args=("DEL", *stuck[0])))  # behind its stuck ADD
        for thread in burst:
            thread.start()
        cluster.daemon.send_signal(signal.SIGTERM)
        if then == "exit":
            assert cluster.daemon.wait(timeout=60) == 0
        else:
            wait_for(lambda: "operations in flight" in cluster.daemon_log.read_text(), "the drain", cluster)
            cluster.daemon.kill()
            assert cluster.daemon.wait(timeout=60) == -signal.SIGKILL
        cluster.daemon = None
        cluster.start_daemon()
        for thread in runtime + burst:
            thread.join(timeout=180)
        assert len(outcomes) == len(stuck) + len(quick) + len(earlier) + 1
        assert outcomes[f"DEL {stuck[0][1]}"].returncode == 0, outcomes[f"DEL {stuck[0][1]}"]
        recorded = _recorded(cluster)
        for netns, container_id in stuck + quick:
            added = outcomes[f"ADD {container_id}"]
            if added.returncode == 0:
                assert container_id in recorded, added
                assert "eth0" in netns.interfaces(), container_id
            else:
                assert added.json()["code"] == 11, added
                if container_id in recorded:  # its final commit landed before the daemon died, its
                    # answer did not: as after any crash in that window, the runtime's DEL (below)
                    # removes it, and nothing may be left of it then
                    assert "eth0" in netns.interfaces(), container_id
                else:  # rolled back by the next daemon's recovery
                    assert netns.links() == {"lo"}, container_id
        for _netns, container_id in earlier:
            assert outcomes[f"DEL {container_id}"].returncode == 0, outcomes[f"DEL {container_id}"]
        Path(f"{gate}.open").touch()
        cluster.post("/gc")  # the DELs the shim spooled, if any, replayed now
        for netns, container_id in earlier:
            assert container_id not in _recorded(cluster)
            assert netns.links() == {"lo"}, container_id

        for netns, container_id in stuck + quick:
            assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
        assert _recorded(cluster) == set()
        assert cluster.leases() == []
        assert cluster.leftover_host_veths() == set()
        assert list(cluster.spool_dir.glob("del-*")) == []
        assert _plugins_running(cluster) == []
        assert cluster.stop_daemon() == 0
    finally:
        Path(f"{gate}.open").touch()  # a plugin a failed run left waiting must not loop on


GATED_DEL = """#!/bin/sh
# the bridge plugin; its DEL waits for the gate first
if [ "$CNI_COMMAND" = DEL ]; then
    touch "{gate}.running"
    while [ ! -e "{gate}.open" ]; do sleep 0.02; done
fi
exec {bridge}
"""


def test_a_stop_during_start_up_recovery_ends_within_the_restart_marker(cluster: Cluster) -> None:
    """A daemon SIGTERM'd while its start-up recovery waited on a plugin (a rollback's DEL that does
    not return) stopped only once recovery was over, up to the plugin's timeout per sandbox: past
    its restart marker's ``until``, so a successor waiting for it gave up (exit 3). The recovery is
    now given the grace, then cancelled (its plugins killed); what it left recorded, the next
    daemon's recovery settles."""
    gate = gated_network(cluster, GATED_DEL)
    cluster.daemon_config.update(
        multusConfigFile="none",
        shutdownGraceSeconds=1,
        delegateTimeoutSeconds=300,
    )
    try:
        cluster.start_daemon(env={"MULTUS_PY_CRASH_AT": "add-after-exec"})
        netns, container_id = cluster.new_netns(), new_container_id()
        added = cluster.run_shim("ADD", container_id=container_id, netns=netns)
        assert added.returncode == 1, added  # the daemon died after the plugin's ADD
        assert cluster.daemon is not None
        assert cluster.daemon.wait(timeout=60) == -signal.SIGKILL
        cluster.daemon = None

        cluster.start_daemon(wait=False)  # its recovery rolls the ADD back: the DEL waits at the gate
        assert cluster.daemon is not None
        wait_for(Path(f"{gate}.running").exists, "the recovery's DEL running", cluster)
        code = stop_within_the_restart_marker(cluster)
        cluster.daemon = None
        assert code == 0
        assert _plugins_running(cluster) == []  # the recovery's plugin was killed with it

        Path(f"{gate}.open").touch()
        cluster.start_daemon()  # this recovery's DEL passes the gate
        assert container_id not in _recorded(cluster)
        assert "eth0" not in netns.interfaces()
        assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
        assert cluster.stop_daemon() == 0
        assert cluster.leases() == []
        assert cluster.leftover_host_veths() == set()
    finally:
        Path(f"{gate}.open").touch()


@pytest.mark.parametrize(
    "signals", [("SIGTERM",), ("SIGINT", "SIGTERM")], ids=["sigterm", "sigint-then-sigterm"]
)
def test_a_spooled_del_cut_short_by_a_stop_during_its_replay_stays_spooled_for_the_next_daemon(
    cluster: Cluster, signals: tuple[str, ...]
) -> None:
    """A stop during the start-up replay of the spool cancels the DEL it is running once the grace
    is over (its plugin killed): the entry stays spooled (invariant 7, no DEL lost) and the next
    daemon replays it; a second signal changes nothing. (A guard: passes on main.)"""
    gate = gated_network(cluster, GATED_DEL)
    cluster.daemon_config.update(multusConfigFile="none", shutdownGraceSeconds=1, delegateTimeoutSeconds=300)
    try:
        cluster.start_daemon()
        netns, container_id = cluster.new_netns(), new_container_id()
        assert cluster.run_shim("ADD", container_id=container_id, netns=netns).returncode == 0
        assert cluster.daemon is not None
        cluster.daemon.kill()  # no restart marker: the shim spools at once rather than wait for a daemon
        assert cluster.daemon.wait(timeout=60) == -signal.SIGKILL
        cluster.daemon = None
        spooled = cluster.run_shim("DEL", container_id=container_id, netns=netns)
        assert spooled.returncode == 0, spooled  # no daemon: the shim spooled it
        (entry,) = cluster.spool_dir.glob("del-*.json")

        cluster.start_daemon(wait=False)  # its replay of the entry waits at the gate
        assert cluster.daemon is not None
        wait_for(Path(f"{gate}.running").exists, "the spooled DEL's plugin running", cluster)
        for name in signals[:-1]:
            cluster.daemon.send_signal(getattr(signal, name))
        code = stop_within_the_restart_marker(cluster)
        cluster.daemon = None
        assert code == 0
        assert "start-up recovery still running" in cluster.daemon_log.read_text()
        assert _plugins_running(cluster) == []  # the replay's plugin was killed with it
        assert entry.exists(), "the spooled DEL cut short was dropped"
        assert container_id in _recorded(cluster)

        Path(f"{gate}.open").touch()
        cluster.start_daemon()  # its replay passes the gate
        assert not entry.exists()
        assert list(cluster.spool_dir.glob("del-*")) == []
        assert container_id not in _recorded(cluster)
        assert netns.links() == {"lo"}
        assert cluster.stop_daemon() == 0
        assert cluster.leases() == []
        assert cluster.leftover_host_veths() == set()
    finally:
        Path(f"{gate}.open").touch()
