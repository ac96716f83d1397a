"""A daemon stopped (SIGTERM) and started again while a burst of ADDs and DELs runs through the shim.

Every ADD the runtime heard succeed is recorded with its interface present; every ADD it heard fail
leaves nothing once the next daemon has recovered; every DEL ends removed (served, or spooled and
replayed); once every pod is DELed no lease, veth, checkpoint row, spool entry or plugin is left.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.sandbox.processes import ProcessError, wait_until
from tests.conftest import CNI_PLUGIN_DIR
from tests.e2e.conftest import Cluster, Netns, ShimResult, new_container_id

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


def _wait_for(condition: Callable[[], bool], what: str, cluster: Cluster, timeout: float = 60.0) -> None:
    try:
        wait_until(condition, what=what, timeout=timeout, daemon=cluster.process)
    except ProcessError as failed:
        raise AssertionError(str(failed)) from None


def _gated_network(cluster: Cluster) -> Path:
    gate = cluster.root / "gate"
    plugin = cluster.bin_dir / "gated-bridge"
    plugin.write_text(
        GATED_BRIDGE.format(prefix=STUCK_PREFIX, gate=gate, bridge=Path(CNI_PLUGIN_DIR) / "bridge")
    )
    plugin.chmod(0o755)
    conf = cluster.bridge_conflist("primary", "10.240.0.0/24")
    conf["plugins"][0]["type"] = "gated-bridge"
    cluster.write_network(cluster.net_d, "10-primary.conflist", conf)
    cluster.daemon_config["clusterNetwork"] = str(cluster.net_d / "10-primary.conflist")
    return gate


def _recorded(cluster: Cluster) -> set[str]:
    with sqlite3.connect(f"file:{cluster.state_db}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute("SELECT container_id FROM sandboxes")}


def _plugins_running(cluster: Cluster) -> list[str]:
    found = subprocess.run(["pgrep", "-af", str(cluster.bin_dir)], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "gated-bridge" in line or "/bridge" in line]


def test_sigterm_during_a_burst_of_adds_and_dels_loses_nothing_and_leaks_nothing(cluster: Cluster) -> None:
    gate = _gated_network(cluster)
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
        _wait_for(lambda: len(list(gates.glob("gate.running.*"))) == len(stuck), "the stuck ADDs", cluster)
        burst = [threading.Thread(target=call, args=("ADD", *pod)) for pod in quick]
        burst += [threading.Thread(target=call, args=("DEL", *pod)) for pod in earlier]
        for thread in burst:
            thread.start()
        cluster.daemon.send_signal(signal.SIGTERM)
        assert cluster.daemon.wait(timeout=60) == 0
        cluster.daemon = None
        cluster.start_daemon()
        for thread in runtime + burst:
            thread.join(timeout=180)
        assert len(outcomes) == len(stuck) + len(quick) + len(earlier)
        recorded = _recorded(cluster)
        for netns, container_id in stuck + quick:
            added = outcomes[f"ADD {container_id}"]
            if added.returncode == 0:
                assert container_id in recorded, added
                assert "eth0" in netns.interfaces(), container_id
            else:
                assert added.json()["code"] == 11, added
                assert container_id not in recorded, added
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
