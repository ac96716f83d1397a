"""``POST /delegate`` driven the way multus-dynamic-networks-controller (DNC) drives it.

A small DNC-shaped client sends what DNC sends for a running pod (CNI_COMMAND, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME and ``K8S_POD_NAMESPACE/NAME/UID`` in CNI_ARGS, the NAD's config base64, the
selection's interface attributes). Real daemon process, emulated API server, real bridge and
host-local plugins in a real netns. The hot-plugged delegate is recorded in the checkpoint, so its
DEL removes exactly it and the runtime's final DEL removes it too when DNC never DELed it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from app.sandbox.processes import free_port
from tests.e2e.conftest import Cluster, KubeApiProcess, Netns, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

NODE = "node-a"


def _bridge_nad(cluster: Cluster, subnet: str, suffix: str, name: str = "") -> dict[str, Any]:
    bridge = f"{cluster.bridge}{suffix}"
    cluster.host_links.append(bridge)
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": str(cluster.ipam_dir), "ranges": [[{"subnet": subnet}]]},
    }
    if name:
        conf["name"] = name
    return conf


@pytest.fixture
def node(cluster: Cluster, kube: KubeApiProcess, started: Callable[..., Cluster]) -> Cluster:
    return started(gcIntervalSeconds=3600, metricsPort=free_port())


def _metric(node: Cluster, line_start: str) -> float:
    port = node.daemon_config["metricsPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


class DncClient:
    """Sends ``/delegate`` requests shaped as DNC's (``multusapi.CreateDelegateRequest``)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def request(
        self,
        command: str,
        *,
        container: str,
        netns: str,
        ifname: str,
        pod: dict[str, Any],
        config: dict[str, Any] | bytes,
        attributes: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        metadata = pod["metadata"]
        envelope: dict[str, Any] = {
            "env": {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": container,
                "CNI_NETNS": netns,
                "CNI_IFNAME": ifname,
                "CNI_ARGS": f"K8S_POD_NAMESPACE={metadata['namespace']};K8S_POD_NAME={metadata['name']};"
                f"K8S_POD_UID={metadata['uid']}",
            },
            "config": base64.b64encode(
                config if isinstance(config, bytes) else json.dumps(config).encode()
            ).decode(),
        }
        if attributes is not None:
            envelope["interfaceAttributes"] = attributes
        status, body = self.cluster.post("/delegate", json.dumps(envelope).encode())
        return status, json.loads(body) if body else None


def _running_pod(node: Cluster, kube: KubeApiProcess, name: str) -> tuple[dict[str, Any], Netns, str]:
    pod = kube.create_pod("default", name, node=NODE)
    netns = node.new_netns()
    container = new_container_id()
    added = node.run_shim(
        "ADD",
        container_id=container,
        netns=netns,
        cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};"
        f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={pod['metadata']['uid']}",
    )
    assert added.returncode == 0, added.stdout
    return pod, netns, container


def _recorded(node: Cluster, container: str) -> dict[str, str]:
    with sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT ifname, state FROM attachments WHERE container_id = ?", (container,)
        ).fetchall()
    return {str(ifname): str(state) for ifname, state in rows}


def _history(node: Cluster, container: str) -> list[tuple[str, str, str, str, str]]:
    with sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT command, step, trigger, outcome, ifname FROM history WHERE container_id = ? ORDER BY id",
            (container,),
        ).fetchall()
    return [
        (str(command), str(step), str(trigger), str(outcome), str(ifname))
        for command, step, trigger, outcome, ifname in rows
    ]


def _events(kube: KubeApiProcess, reason: str, within: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        items = kube.request("GET", "/api/v1/namespaces/default/events")["items"]
        found = [item for item in items if item.get("reason") == reason]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_dnc_adds_and_removes_a_delegate_and_the_checkpoint_follows(
    node: Cluster, kube: KubeApiProcess
) -> None:
    pod, netns, container = _running_pod(node, kube, "dyn")
    dnc = DncClient(node)
    nad = _bridge_nad(node, "10.81.0.0/24", "h", name="hot-net")

    status, answer = dnc.request(
        "ADD",
        container=container,
        netns=netns.path,
        ifname="net3",
        pod=pod,
        config=nad,
        attributes={"ips": None, "mac": "02:00:00:00:03:03", "cni-args": None},
    )

    assert status == 200, answer
    result = answer["Result"]
    assert result["cniVersion"] == "1.1.0"
    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["net3"]
    interfaces = netns.interfaces()
    assert interfaces["net3"]["addresses"] == ["10.81.0.2/24"]
    assert interfaces["net3"]["mac"] == "02:00:00:00:03:03"
    assert _recorded(node, container) == {"eth0": "added", "net3": "added"}
    assert ("ADD", "request", "delegate", "ok", "net3") in _history(node, container)
    added_events = _events(kube, "AddedInterface")
    assert any(e["message"].startswith("Add net3 [10.81.0.2/24] from hot-net") for e in added_events)
    status_annotation = kube.get_pod("default", "dyn")["metadata"]["annotations"].get(
        "k8s.v1.cni.cncf.io/network-status", ""
    )
    assert "net3" not in status_annotation, "DNC writes network-status for /delegate, not the daemon"
    checked = node.run_shim("CHECK", container_id=container, netns=netns)
    assert checked.returncode == 0, checked.stdout
    # DNC's CHECK: bridge and host-local check net3 against its recorded result
    status, answer = dnc.request(
        "CHECK", container=container, netns=netns.path, ifname="net3", pod=pod, config=nad
    )
    assert status == 200, answer
    status, answer = dnc.request(
        "CHECK", container=container, netns=netns.path, ifname="net4", pod=pod, config=nad
    )
    assert status == 400, answer
    assert answer["code"] == 3, answer

    status, answer = dnc.request(
        "DEL", container=container, netns=netns.path, ifname="net3", pod=pod, config=nad
    )

    assert status == 200, answer
    assert netns.links() == {"lo", "eth0"}
    assert _recorded(node, container) == {"eth0": "added"}
    assert ("DEL", "delegate", "delegate", "ok", "net3") in _history(node, container)
    assert [lease.parent.name for lease in node.leases()] == ["primary"], "net3's lease is released"
    assert _metric(node, 'multus_server_request_total{code="200",handler="/delegate",method="post"}') == 3
    assert (
        _metric(node, 'multus_py_hotplug_operations_total{command="ADD",outcome="ok",source="delegate"}') == 1
    )
    assert (
        _metric(node, 'multus_py_hotplug_operations_total{command="DEL",outcome="ok",source="delegate"}') == 1
    )


def test_the_runtimes_del_removes_a_hot_plugged_interface_nobody_deleted(
    node: Cluster, kube: KubeApiProcess
) -> None:
    pod, netns, container = _running_pod(node, kube, "leaky")
    dnc = DncClient(node)
    status, answer = dnc.request(
        "ADD",
        container=container,
        netns=netns.path,
        ifname="net4",
        pod=pod,
        config=_bridge_nad(node, "10.82.0.0/24", "l", name="leaky-net"),
    )
    assert status == 200, answer
    assert "net4" in netns.links()

    deleted = node.run_shim("DEL", container_id=container, netns=netns)

    assert deleted.returncode == 0, deleted.stdout
    assert netns.links() == {"lo"}
    assert _recorded(node, container) == {}
    assert node.leases() == [], "upstream leaks the hot-plugged lease here; the checkpoint does not"
    assert node.leftover_host_veths() == set()


def test_bad_delegate_requests_are_refused_naming_the_field_and_nothing_is_recorded(
    node: Cluster, kube: KubeApiProcess
) -> None:
    pod, netns, container = _running_pod(node, kube, "bad")
    dnc = DncClient(node)
    nad = _bridge_nad(node, "10.83.0.0/24", "x", name="bad-net")
    subprocess.run(
        ["ip", "-n", netns.name, "link", "add", "net7", "type", "veth", "peer", "name", "net7p"], check=True
    )

    def refused(code: int, naming: str, **overrides: Any) -> None:
        arguments: dict[str, Any] = {
            "container": container,
            "netns": netns.path,
            "ifname": "net5",
            "pod": pod,
            "config": nad,
        }
        arguments.update(overrides)
        command = arguments.pop("command", "ADD")
        status, answer = dnc.request(command, **arguments)
        assert status == 400, answer
        assert answer["code"] == code, answer
        assert naming in answer["msg"], answer

    refused(3, "CNI_CONTAINERID", container=new_container_id())
    refused(7, "'config'", config={"cniVersion": "1.0.0", "name": "m", "type": "multus-shim"})
    refused(6, "'config'", config=b"{not json")
    refused(4, '"eth0"', ifname="eth0")
    refused(4, '"net7"', ifname="net7")
    refused(4, "CNI_IFNAME", ifname="")
    refused(4, "GC", command="GC")
    refused(4, "K8S_POD_UID", pod={"metadata": {**pod["metadata"], "uid": "not-this-pod"}})
    refused(4, "cluster network", command="DEL", ifname="eth0")

    assert _recorded(node, container) == {"eth0": "added"}
    assert netns.links() == {"lo", "eth0", "net7", "net7p"}
    assert node.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert _recorded(node, container) == {}


def test_delegate_add_waits_for_readiness_and_del_does_not(cluster: Cluster) -> None:
    indicator = cluster.root / "primary-ready"
    cluster.write_network(
        cluster.net_d, "10-primary.conflist", cluster.bridge_conflist("primary", "10.240.0.0/24")
    )
    cluster.daemon_config["clusterNetwork"] = str(cluster.net_d / "10-primary.conflist")
    cluster.daemon_config["readinessindicatorfile"] = str(indicator)
    cluster.start_daemon(wait=False, env={"MULTUS_PY_READY_HOLD_SECONDS": "1"})  # not its 30 s
    deadline = time.monotonic() + 15
    while cluster._readyz() != 500:  # serving, not ready
        assert time.monotonic() < deadline, cluster.daemon_log.read_text()
        time.sleep(0.05)
    dnc = DncClient(cluster)
    pod = {"metadata": {"namespace": "default", "name": "early", "uid": "u-1"}}
    nad = _bridge_nad(cluster, "10.84.0.0/24", "r", name="early-net")
    container = new_container_id()

    status, answer = dnc.request("ADD", container=container, netns="/x", ifname="net3", pod=pod, config=nad)

    assert status == 503
    assert answer["code"] == 11
    assert "not ready" in answer["msg"]
    status, answer = dnc.request("DEL", container=container, netns="/x", ifname="net3", pod=pod, config=nad)
    assert status == 200, "DEL is served before readiness (and succeeds: nothing is recorded to remove)"
    assert answer is None
