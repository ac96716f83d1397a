"""A node keeps networking pods while its daemon restarts, and the probes tell the kubelet the truth.

Upstream deletes 00-multus.conf on SIGTERM, so a pod started during a daemon restart or upgrade gets
no Multus at all (upstream-weaknesses.md §13). Here the conf stays, and the shim waits (bounded) for
the new daemon behind the restart marker the stopping daemon leaves: pods started meanwhile get every
network.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

from tests.deploy.conftest import Node, container, find, pod_spec
from tests.e2e.conftest import Netns, ShimResult, new_container_id

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

PODS = 14
RESTART_AFTER = 6
"""ADDs completed before the daemon gets SIGTERM; the others arrive during and after the restart."""


@dataclass
class Pod:
    netns: Netns
    container_id: str
    added: ShimResult
    conf_present: bool
    """Whether 00-multus.conf was there when the runtime read it."""
    started: float
    ended: float


def _with_a_second_network(node: Node) -> None:
    """A default network on top of the ConfigMap's config, so every pod gets eth0 and net1."""
    extra = node.network("extra", "10.247.0.0/24", f"{node.bridge}x", default_route=False)
    conf_dir = node.path("/etc/cni/multus/net.d")
    conf_dir.mkdir(parents=True)
    (conf_dir / "20-extra.conflist").write_text(json.dumps(extra))
    node.daemon_config["defaultNetworks"] = ["extra"]


def _probe(node: Node, probe: str) -> int:
    """Run a probe of the DaemonSet as the kubelet would (exec in the daemon container)."""
    spec = pod_spec(find(node.documents, "DaemonSet", "multus-py"))
    daemon = container(spec, "multus-daemon")
    command = [node.translate(spec, daemon, argument) for argument in daemon[probe]["exec"]["command"]]
    command[0] = "/usr/bin/python3"  # the image's /usr/local/bin/python3
    command[5] = str(node.settings.socket_path)  # the socket where this test's daemon listens
    timeout = daemon[probe]["timeoutSeconds"]
    return subprocess.run(command, capture_output=True, timeout=timeout, check=False).returncode


def test_every_pod_gets_every_network_while_the_daemon_restarts(node: Node) -> None:
    _with_a_second_network(node)
    assert node.install().returncode == 0
    node.start_daemon()
    generated = node.conf_dir / "00-multus.conf"
    node.wait_for(generated.exists, "00-multus.conf")

    pods: list[Pod] = []
    errors: list[BaseException] = []
    enough_done = threading.Event()
    in_flight = threading.Event()

    def runtime() -> None:
        try:
            for index in range(PODS):
                netns, container_id = node.new_netns(), new_container_id()
                started = time.monotonic()
                conf_present = generated.exists()
                in_flight.set()
                added = node.runtime_call("ADD", netns, container_id)
                in_flight.clear()
                pods.append(Pod(netns, container_id, added, conf_present, started, time.monotonic()))
                if index + 1 == RESTART_AFTER:
                    enough_done.set()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=runtime, name="runtime")
    thread.start()
    try:
        assert enough_done.wait(timeout=60)
        assert node.stop_daemon() == 0  # SIGTERM while ADDs keep arriving; returns once it exited
        down_since = time.monotonic()
        deadline = time.monotonic() + 30
        while not in_flight.is_set() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # until an ADD waits in the shim for a daemon
        back_at = time.monotonic()
        node.start_daemon()  # as the kubelet restarts the container
    finally:
        thread.join(timeout=120)
    assert errors == []
    assert not thread.is_alive()
    failed = [
        (pod.container_id[:8], pod.added.stdout, pod.added.stderr) for pod in pods if pod.added.returncode
    ]
    assert failed == [], node.daemon_log()
    assert [pod for pod in pods if pod.started < back_at and pod.ended > down_since]  # the wait was needed

    failed = [
        (pod.container_id[:8], pod.added.stdout, pod.added.stderr) for pod in pods if pod.added.returncode
    ]
    assert failed == [], node.daemon_log()
    assert len(pods) == PODS
    assert all(pod.conf_present for pod in pods)
    for pod in pods:
        interfaces = pod.netns.interfaces()
        assert {"eth0", "net1"} <= set(interfaces), pod.container_id
        assert [a.split(".")[:3] for a in interfaces["eth0"]["addresses"]] == [["10", "246", "0"]]
        assert [a.split(".")[:3] for a in interfaces["net1"]["addresses"]] == [["10", "247", "0"]]

    for pod in pods:
        deleted = node.runtime_call("DEL", pod.netns, pod.container_id)
        assert deleted.returncode == 0, deleted.stdout


def test_the_probes_report_the_daemons_health_over_its_socket(node: Node) -> None:
    assert _probe(node, "livenessProbe") != 0  # no daemon yet
    node.start_daemon()
    node.wait_for(lambda: _probe(node, "readinessProbe") == 0, "ready")
    assert _probe(node, "startupProbe") == 0
    assert _probe(node, "livenessProbe") == 0

    assert node.stop_daemon() == 0
    assert _probe(node, "readinessProbe") != 0
    assert _probe(node, "livenessProbe") != 0
