"""A daemon process: a background task that crashes is restarted while ADDs complete; a graceful
stop drains the ADD in flight, leaves the restart marker (the next daemon removes it) and resets
no connection; the socket accepts early and a second daemon on it exits 3."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.sandbox.processes import DaemonProcess, ProcessError
from tests.conftest import child_environment
from tests.e2e.conftest import Cluster, ShimResult, new_container_id
from tests.e2e.gated import gated_network, stop_within_the_restart_marker, wait_for

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

GATE = """#!/bin/sh
# the bridge plugin, once the test lets it run (the ADD is in flight meanwhile)
touch "{gate}.running"
while [ ! -e "{gate}.open" ]; do sleep 0.02; done
exec {bridge}
"""


INJECTED_FAULT = """
# Loaded by the daemon at start (on its PYTHONPATH): while the trigger file exists, every pass of
# the 00-multus.conf keeper raises what no task expects, as a bug of its would.
import os
import pathlib

import app.daemon.autoconf as autoconf

trigger = pathlib.Path(os.environ["MULTUS_TEST_AUTOCONF_FAULT"])
passing = autoconf.Keeper.step


def step(self, *, indicator_missing):
    if trigger.exists():
        raise RuntimeError("a fault the test injected into the keeper's pass")
    return passing(self, indicator_missing=indicator_missing)


autoconf.Keeper.step = step
"""


def test_a_crashing_background_task_is_restarted_while_adds_complete(cluster: Cluster) -> None:
    gate = gated_network(cluster, GATE)
    autoconf_dir = cluster.root / "auto"
    cluster.write_network(
        autoconf_dir, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    injected = cluster.root / "injected"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(INJECTED_FAULT)
    fault = cluster.root / "autoconf-fault"
    cluster.daemon_env.update(PYTHONPATH=str(injected), MULTUS_TEST_AUTOCONF_FAULT=str(fault))
    cluster.daemon_config.update(multusAutoconfigDir=str(autoconf_dir), autoconfIntervalSeconds=0.1)
    cluster.start_daemon()
    generated = cluster.net_d / "00-multus.conf"
    wait_for(generated.exists, "00-multus.conf", cluster)

    netns, container_id = cluster.new_netns(), new_container_id()
    added: list[ShimResult] = []
    runtime = threading.Thread(
        target=lambda: added.append(cluster.run_shim("ADD", container_id=container_id, netns=netns))
    )
    runtime.start()
    try:
        wait_for(Path(f"{gate}.running").exists, "the ADD's delegate running", cluster)
        fault.touch()  # every pass of the keeper now raises
        wait_for(
            lambda: cluster.daemon_log.read_text().count("task autoconf crashed") >= 2, "two crashes", cluster
        )
    finally:
        Path(f"{gate}.open").touch()
        runtime.join(timeout=120)
    assert len(added) == 1
    assert added[0].returncode == 0, added
    assert "eth0" in netns.interfaces()
    log = cluster.daemon_log.read_text()
    crash = log[log.index("task autoconf crashed") :]
    assert "Traceback" in crash.split("task autoconf crashed")[1]
    assert "a fault the test injected" in crash

    second_netns, second_id = cluster.new_netns(), new_container_id()
    assert cluster.run_shim("ADD", container_id=second_id, netns=second_netns).returncode == 0  # serving on

    generated.unlink()
    fault.unlink()
    wait_for(generated.exists, "00-multus.conf written again by the restarted task", cluster)

    for pod_netns, pod_id in ((netns, container_id), (second_netns, second_id)):
        assert cluster.run_shim("DEL", container_id=pod_id, netns=pod_netns).returncode == 0
    assert cluster.stop_daemon() == 0
    assert cluster.leftover_host_veths() == set()


def test_a_graceful_stop_leaves_the_restart_marker_and_the_next_daemon_removes_it(
    started: Callable[..., Cluster],
) -> None:
    cluster = started()
    pid = cluster.daemon.pid if cluster.daemon is not None else 0
    marker = cluster.socket_dir / "multus.restarting"
    assert not marker.exists()
    stopped_at = time.time()
    assert cluster.stop_daemon() == 0
    content = json.loads(marker.read_text())
    assert content["pid"] == pid
    assert stopped_at + 25 < content["until"] < time.time() + 31

    cluster.start_daemon(wait=False)
    sock_path = str(cluster.socket_dir / "multus.sock")
    wait_for(lambda: _connects(sock_path), "the socket accepting", cluster)
    # a request sent as soon as the socket accepts is answered once the HTTP server runs
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(60)
        client.connect(sock_path)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(64).startswith(b"HTTP/1.1 200")
    wait_for(lambda: not marker.exists(), "the marker removed", cluster)
    cluster.wait_ready()

    second = subprocess.run(
        [sys.executable, "-m", "app.daemon.main", "--config", str(cluster.root / "daemon-config.json")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_environment(),
    )
    assert second.returncode == 3
    assert f"holds {cluster.socket_dir / 'multus.sock.lock'}: it serves" in cluster.daemon_log.read_text()
    assert os.path.exists(sock_path)
    assert _connects(sock_path)  # the live daemon keeps its socket
    assert cluster.stop_daemon() == 0


def _connects(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


def test_sigterm_drains_an_add_in_flight_and_leaves_the_marker_before_the_socket_closes(
    cluster: Cluster,
) -> None:
    gate = gated_network(cluster, GATE)
    cluster.daemon_config.update(multusConfigFile="none")
    cluster.start_daemon()
    assert cluster.daemon is not None
    netns, container_id = cluster.new_netns(), new_container_id()
    added: list[ShimResult] = []
    runtime = threading.Thread(
        target=lambda: added.append(cluster.run_shim("ADD", container_id=container_id, netns=netns))
    )
    runtime.start()
    marker = cluster.socket_dir / "multus.restarting"
    try:
        wait_for(Path(f"{gate}.running").exists, "the ADD's delegate running", cluster)
        cluster.daemon.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "waiting for 1 operations in flight" in cluster.daemon_log.read_text(), "drain", cluster
        )
        assert marker.exists()
        assert cluster._readyz() == 500  # not ready, still accepting
    finally:
        Path(f"{gate}.open").touch()
        runtime.join(timeout=120)
    assert cluster.daemon.wait(timeout=60) == 0
    cluster.daemon = None
    assert len(added) == 1
    assert added[0].returncode == 0, added
    assert "eth0" in netns.interfaces()
    assert "still running" not in cluster.daemon_log.read_text()

    cluster.start_daemon()
    assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
    assert cluster.stop_daemon() == 0


def test_a_stopping_daemon_answers_or_refuses_every_connection_and_resets_none(
    started: Callable[..., Cluster],
) -> None:
    cluster = started()
    assert cluster.daemon is not None
    path = str(cluster.socket_dir / "multus.sock")
    outcomes: dict[str, int] = {"answered": 0, "absent": 0, "reset": 0}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                try:
                    sock.connect(path)
                except (FileNotFoundError, ConnectionRefusedError):
                    outcomes["absent"] += 1  # no daemon: the shim waits for the next one
                    continue
                try:
                    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                    response = b""
                    while chunk := sock.recv(4096):
                        response += chunk
                except OSError:
                    response = b""
                outcomes["answered" if response.startswith(b"HTTP/1.1 ") else "reset"] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: outcomes["answered"] >= 20, "answers", cluster)
        assert cluster.stop_daemon() == 0
        wait_for(lambda: outcomes["absent"] >= 20, "connections finding no daemon", cluster)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    assert outcomes["reset"] == 0, outcomes


def test_a_daemon_started_while_its_predecessor_drains_waits_for_it_then_serves(cluster: Cluster) -> None:
    """A DaemonSet's rolling restart can start the new pod while the old one still drains: the new
    daemon exited 3 (the old one still answered on the socket) and was restarted with a crash-loop
    back-off, beyond the 30 s the restart marker lets shims wait."""
    gate = gated_network(cluster, GATE)
    cluster.daemon_config.update(multusConfigFile="none")
    cluster.start_daemon()
    predecessor = cluster.daemon
    assert predecessor is not None
    successor = DaemonProcess.for_config(
        cluster.root / "daemon-config.json", socket_dir=cluster.socket_dir, log=cluster.root / "successor.out"
    )
    netns, container_id = cluster.new_netns(), new_container_id()
    added: list[ShimResult] = []
    runtime = threading.Thread(
        target=lambda: added.append(cluster.run_shim("ADD", container_id=container_id, netns=netns))
    )
    runtime.start()
    try:
        wait_for(Path(f"{gate}.running").exists, "the ADD's delegate running", cluster)
        predecessor.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "waiting for 1 operations in flight" in cluster.daemon_log.read_text(), "drain", cluster
        )
        successor.start()
        try:
            successor.wait_until(
                lambda: "waiting for the daemon stopping" in cluster.daemon_log.read_text(),
                what="the successor waiting for its predecessor",
                timeout=60,
            )
        except ProcessError as failed:
            raise AssertionError(str(failed)) from None
        assert predecessor.poll() is None  # still draining: the successor has not taken over
    finally:
        Path(f"{gate}.open").touch()
        runtime.join(timeout=120)
    try:
        assert predecessor.wait(timeout=60) == 0
        cluster.daemon = None
        assert len(added) == 1
        assert added[0].returncode == 0, added
        try:
            successor.wait_ready(timeout=60)
        except ProcessError as failed:
            raise AssertionError(str(failed)) from None
        assert not (cluster.socket_dir / "multus.restarting").exists()
        assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
        assert successor.stop() == 0
    finally:
        successor.kill()
    assert cluster.leftover_host_veths() == set()


def test_an_add_stuck_past_the_grace_is_cancelled_and_the_daemon_stops_within_its_restart_marker(
    cluster: Cluster,
) -> None:
    """An ADD whose plugin never returned kept a SIGTERM'd daemon running long past
    ``shutdownGraceSeconds``: after the drain, aiohttp waited its own 60 s for the handler, and 60 s
    more once it cancelled it, while the restart marker told shims and the next daemon 30 s (a
    rolling restart's successor then gave up, exit 3). Now the straggler is named and cancelled at
    the grace, its plugin killed, its connection closed unanswered (the shim: code 11), and the
    next daemon's recovery rolls the ADD back from its recorded intents."""
    gate = gated_network(cluster, GATE)
    try:
        cluster.daemon_config.update(multusConfigFile="none", shutdownGraceSeconds=1)
        cluster.start_daemon()
        assert cluster.daemon is not None
        netns, container_id = cluster.new_netns(), new_container_id()
        added: list[ShimResult] = []
        runtime = threading.Thread(
            target=lambda: added.append(cluster.run_shim("ADD", container_id=container_id, netns=netns))
        )
        runtime.start()
        try:
            wait_for(Path(f"{gate}.running").exists, "the ADD's delegate running", cluster)
            code = stop_within_the_restart_marker(cluster)
        finally:
            runtime.join(timeout=120)
        cluster.daemon = None
        assert code == 0
        assert len(added) == 1
        assert added[0].returncode != 0
        assert added[0].json()["code"] == 11, added
        log = cluster.daemon_log.read_text()
        assert f"cni-ADD-{container_id[:12]}; cancelled" in log

        Path(f"{gate}.open").touch()  # the recovery's DEL runs the same plugin
        cluster.start_daemon()
        assert "eth0" not in netns.interfaces()  # rolled back before the daemon turned ready
        assert cluster.run_shim("DEL", container_id=container_id, netns=netns).returncode == 0
        assert cluster.stop_daemon() == 0
        assert cluster.leftover_host_veths() == set()
        assert cluster.leases() == []
    finally:  # a plugin the daemon left waiting (a failed run) must not loop on for ever
        Path(f"{gate}.open").touch()
