"""A cluster network whose plugin waits at a gate file, so that a test can hold an operation in
flight while it stops or restarts the daemon; a wait on the daemon's progress that fails with the
daemon's own exit when it died instead; a graceful stop held to its restart marker's ``until``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from app.sandbox.processes import ProcessError, wait_until
from tests.conftest import CNI_PLUGIN_DIR
from tests.e2e.conftest import Cluster


def wait_for(condition: Callable[[], bool], what: str, cluster: Cluster, timeout: float = 60.0) -> None:
    try:
        wait_until(condition, what=what, timeout=timeout, daemon=cluster.process)
    except ProcessError as failed:
        raise AssertionError(str(failed)) from None


def gated_network(cluster: Cluster, script: str, **fields: object) -> Path:
    """The cluster network, run by ``script`` (a shell wrapper of the bridge plugin, formatted with
    ``gate``, ``bridge`` and ``fields``) as plugin ``gated-bridge``; returns the gate's path."""
    gate = cluster.root / "gate"
    plugin = cluster.bin_dir / "gated-bridge"
    plugin.write_text(script.format(gate=gate, bridge=Path(CNI_PLUGIN_DIR) / "bridge", **fields))
    plugin.chmod(0o755)
    conf = cluster.bridge_conflist("primary", "10.240.0.0/24")
    conf["plugins"][0]["type"] = "gated-bridge"
    cluster.write_network(cluster.net_d, "10-primary.conflist", conf)
    cluster.daemon_config["clusterNetwork"] = str(cluster.net_d / "10-primary.conflist")
    return gate


def stop_within_the_restart_marker(cluster: Cluster) -> int:
    """SIGTERM the daemon and wait for its exit code, failing if it still runs when the restart
    marker it writes says it is due (its ``until``): a successor or a shim waiting on it gives up."""
    assert cluster.daemon is not None
    cluster.daemon.send_signal(signal.SIGTERM)
    marker = cluster.socket_dir / "multus.restarting"
    wait_for(marker.exists, "the restart marker", cluster)
    until = json.loads(marker.read_text())["until"]
    try:
        return cluster.daemon.wait(timeout=max(until - time.time(), 1.0))
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon still ran when its restart marker expired") from None
