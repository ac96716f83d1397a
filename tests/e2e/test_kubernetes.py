"""multus-py as a Kubernetes Multus: NADs, pod annotations and network-status, end to end.

The API server is the emulator in its own process (real HTTP, watches, faults); the daemon mirrors
it through kubernetes-asyncio; the shim, the plugins and the namespaces are real.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.sandbox.processes import free_port, wait_until
from tests.e2e.conftest import Cluster, KubeApiProcess, Netns, new_container_id, shim_add

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

NODE = "node-a"


def _bridge_nad(cluster: Cluster, subnet: str, suffix: str) -> dict[str, Any]:
    bridge = f"{cluster.bridge}{suffix}"
    cluster.host_links.append(bridge)
    return {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "dataDir": str(cluster.ipam_dir), "ranges": [[{"subnet": subnet}]]},
    }


def _macvlan_nad(cluster: Cluster) -> dict[str, Any]:
    parent = cluster.veth_uplink()
    return {
        "cniVersion": "1.0.0",
        "type": "macvlan",
        "master": parent,
        "mode": "bridge",
        "capabilities": {"ips": True, "mac": True},
        "ipam": {"type": "static"},
    }


@pytest.fixture
def node(cluster: Cluster, kube: KubeApiProcess, started: Callable[..., Cluster]) -> Cluster:
    """A daemon mirroring the emulator: cluster network from conf, NADs ``bridge-net`` and ``macvlan-net``."""
    kube.create_nad("default", "bridge-net", _bridge_nad(cluster, "10.71.0.0/24", "b"))
    kube.create_nad("default", "macvlan-net", _macvlan_nad(cluster))
    return started(gcIntervalSeconds=3600, gcPodGoneGraceSeconds=0)


def _add(
    cluster: Cluster,
    kube: KubeApiProcess,
    name: str,
    annotations: dict[str, str],
    *,
    namespace: str = "default",
) -> tuple[Netns, str, Any]:
    return shim_add(cluster, kube.create_pod(namespace, name, node=NODE, annotations=annotations))


def _network_status(kube: KubeApiProcess, name: str, namespace: str = "default") -> str:
    annotations = kube.get_pod(namespace, name)["metadata"].get("annotations") or {}
    return str(annotations.get("k8s.v1.cni.cncf.io/network-status", ""))


def test_a_pod_gets_its_annotated_networks_and_its_network_status(
    node: Cluster, kube: KubeApiProcess
) -> None:
    netns, container, added = _add(
        node, kube, "web", {"k8s.v1.cni.cncf.io/networks": "bridge-net, default/bridge-net@extra9"}
    )

    assert added.returncode == 0, added.stdout
    interfaces = netns.interfaces()
    assert set(interfaces) == {"lo", "eth0", "net1", "extra9"}
    assert interfaces["net1"]["addresses"] == ["10.71.0.2/24"]
    status = _network_status(kube, "web")
    entries = json.loads(status)
    assert [(e["name"], e["interface"], e.get("default", False)) for e in entries] == [
        ("primary", "eth0", True),
        ("default/bridge-net", "net1", False),
        ("default/bridge-net", "extra9", False),
    ]
    assert entries[1]["ips"] == ["10.71.0.2"]
    assert entries[1]["mac"] == interfaces["net1"]["mac"]
    assert status.startswith('[{\n    "name": "primary",\n    "interface": "eth0",'), "upstream's byte layout"
    assert node.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert netns.links() == {"lo"}
    assert node.leases() == []


def test_json_selection_fields_reach_the_delegate(node: Cluster, kube: KubeApiProcess) -> None:
    selection = [
        {"name": "macvlan-net", "interface": "mv9", "ips": ["10.77.0.50/24"], "mac": "02:00:00:00:00:31"}
    ]
    netns, _, added = _add(node, kube, "fields", {"k8s.v1.cni.cncf.io/networks": json.dumps(selection)})

    assert added.returncode == 0, added.stdout
    mv9 = netns.interfaces()["mv9"]
    assert mv9["addresses"] == ["10.77.0.50/24"]
    assert mv9["mac"] == "02:00:00:00:00:31"
    with sqlite3.connect(f"file:{node.state_db}?mode=ro", uri=True) as connection:
        cni_args, capability_args = connection.execute(
            "SELECT cni_args, capability_args FROM attachments WHERE ifname = 'mv9'"
        ).fetchone()
    assert ["MAC", "02:00:00:00:00:31"] in json.loads(cni_args)
    assert json.loads(capability_args)["ips"] == ["10.77.0.50/24"]


def test_default_network_annotation_replaces_the_cluster_network(node: Cluster, kube: KubeApiProcess) -> None:
    kube.create_nad("kube-system", "alt-default", _bridge_nad(node, "10.72.0.0/24", "d"))

    netns, _, added = _add(node, kube, "alt", {"v1.multus-cni.io/default-network": "alt-default"})

    assert added.returncode == 0, added.stdout
    assert netns.interfaces()["eth0"]["addresses"] == ["10.72.0.2/24"]
    assert json.loads(_network_status(kube, "alt"))[0]["name"] == "kube-system/alt-default"


@pytest.mark.parametrize(
    ("annotation", "named"),
    [
        ("no-such-net", "cannot find a network-attachment-definition (no-such-net) in namespace (default)"),
        ('[{"name": "bridge-net", "mac": "zz"}]', "invalid MAC address"),
        ("[{not json", "parsePodNetworkAnnotation"),
        ("bridge-net@eth0", 'interface name "eth0" requested twice'),
    ],
)
def test_bad_selections_fail_the_add_naming_why_and_leave_nothing(
    node: Cluster, kube: KubeApiProcess, annotation: str, named: str
) -> None:
    netns, _, added = _add(node, kube, "bad", {"k8s.v1.cni.cncf.io/networks": annotation})

    assert added.returncode == 1
    error = added.json()
    assert error["code"] == 7
    assert named in error["msg"] + error.get("details", "")
    assert netns.links() == {"lo"}
    assert node.leases() == []


def test_namespace_isolation_refuses_another_namespaces_nad(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    kube.create_namespace("team-a")
    kube.create_namespace("team-b")
    kube.create_nad("team-b", "private", _bridge_nad(cluster, "10.73.0.0/24", "p"))
    started(namespaceIsolation=True)

    netns, _, added = _add(
        cluster, kube, "nosy", {"k8s.v1.cni.cncf.io/networks": "team-b/private"}, namespace="team-a"
    )

    assert added.returncode == 1
    assert "namespace isolation enabled" in added.json()["msg"]
    assert netns.links() == {"lo"}


def test_a_pod_the_api_does_not_know_is_a_retryable_error_not_a_fake_success(node: Cluster) -> None:
    netns = node.new_netns()
    container = new_container_id()

    added = node.run_shim(
        "ADD",
        container_id=container,
        netns=netns,
        cni_args=f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost;K8S_POD_INFRA_CONTAINER_ID={container}",
    )

    assert added.returncode == 1
    assert added.json()["code"] == 11
    assert "ghost" in added.json()["msg"]
    assert netns.links() == {"lo"}


def test_with_the_api_server_down_add_fails_clearly_and_del_still_cleans_up(
    node: Cluster, kube: KubeApiProcess
) -> None:
    netns, container, added = _add(node, kube, "before", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0
    kube.stop()

    other = node.new_netns()
    late = new_container_id()
    refused = node.run_shim(
        "ADD",
        container_id=late,
        netns=other,
        cni_args=f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=late;K8S_POD_INFRA_CONTAINER_ID={late}",
    )
    deleted = node.run_shim("DEL", container_id=container, netns=netns)

    assert refused.returncode == 1
    assert refused.json()["code"] == 11
    assert "Kubernetes API" in refused.json()["msg"]
    assert other.links() == {"lo"}
    assert deleted.returncode == 0
    assert netns.links() == {"lo"}
    assert node.leases() == []


def test_gc_collects_the_sandbox_of_a_pod_deleted_from_the_cluster(
    node: Cluster, kube: KubeApiProcess
) -> None:
    netns, container, added = _add(node, kube, "doomed", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0
    kube.delete_pod("default", "doomed")
    deadline = time.monotonic() + 10
    while True:
        status, report = node.post("/gc")
        if container in json.loads(report)["collected"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert status == 200
    assert json.loads(report)["collected"] == [container]
    assert netns.links() == {"lo"}, "the pod-gone orphan was torn down though its netns still exists"
    assert node.leases() == []


def test_gc_keeps_a_live_pod_the_api_still_has_when_the_node_name_is_not_this_nodes(
    cluster: Cluster, kube: KubeApiProcess, started: Callable[..., Cluster]
) -> None:
    """``MULTUS_NODE_NAME`` naming another node (or unset where the hostname is not the node's name):
    the pod mirror syncs with none of this node's pods, while every ADD still succeeds (a pod the
    mirror lacks is asked of the API by name). GC took every sandbox for "pod-gone" and, once the
    grace had passed, tore down the networks of every live pod on the node. The API, asked for the
    pod itself before anything is torn down, still has it: kept, and the mismatch said."""
    cluster.daemon_env["MULTUS_NODE_NAME"] = "node-b"  # the pods run on node-a
    node = started(gcIntervalSeconds=3600, gcPodGoneGraceSeconds=0)
    netns, container, added = shim_add(node, kube.create_pod("default", "alive", node=NODE, annotations={}))
    assert added.returncode == 0

    status, report = node.post("/gc")

    assert status == 200
    assert json.loads(report)["collected"] == []
    assert json.loads(report)["disputed"] == [
        {"containerID": container, "reason": "pod-gone", "pod": "default/alive"}
    ]
    assert "eth0" in netns.links()
    assert "node-b" in node.daemon_log.read_text()


def test_gc_collects_the_sandbox_of_a_pod_the_cluster_restored_from_an_older_backup_no_longer_has(
    node: Cluster, kube: KubeApiProcess
) -> None:
    """The API server came back from a backup older than the daemon's saved watch positions (etcd
    restored without bumping its revision): the resumed watches would hear nothing, and a mirror
    of the old world, counted as synced, would keep "doomed" on the node for ever; the daemon sees
    the server has not reached its positions, relists, and GC collects the pod's sandbox."""
    netns, container, added = _add(node, kube, "doomed", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0
    node.stop_daemon(signal.SIGTERM)
    kube.stop()
    kube.start()  # the restored cluster: fewer revisions, and no "doomed"
    node.start_daemon()
    deadline = time.monotonic() + 10
    while True:
        status, report = node.post("/gc")
        if container in json.loads(report)["collected"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert status == 200
    assert json.loads(report)["collected"] == [container]
    assert netns.links() == {"lo"}
    relists = [r["path"] for r in kube.requests(path="/pods\\?limit=") if "resourceVersion=" not in r["path"]]
    assert len(relists) == 1


def test_a_restarted_daemon_resumes_its_watches_without_listing_again(
    node: Cluster, kube: KubeApiProcess
) -> None:
    node.stop_daemon(signal.SIGTERM)
    since = max((r["seq"] for r in kube.requests()), default=0)

    node.start_daemon()

    lists = [
        r["path"]
        for r in kube.requests(since=since)
        if r["method"] == "GET"
        and "watch=" not in r["path"]
        and "/pods" in r["path"]
        and "/pods/" not in r["path"]
    ]
    # one LIST of at most one pod at the saved position (the server shows it reached it), no relist
    assert len(lists) == 1, f"the restarted daemon listed pods again: {lists}"
    assert "limit=1&resourceVersion=" in lists[0]
    assert "resourceVersionMatch=NotOlderThan" in lists[0]


@pytest.fixture
def kubelet(cluster: Cluster) -> Any:
    """A kubelet pod-resources server (real gRPC on a unix socket) in a thread of its own."""
    import asyncio
    import threading

    from tests.podresources.support import FakeKubelet, container, pod

    socket_path = str(cluster.root / "kubelet.sock")
    loop = asyncio.new_event_loop()
    server = FakeKubelet(socket_path)
    thread = threading.Thread(target=loop.run_forever, name="fake-kubelet", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    cluster.daemon_config["podResourcesSocket"] = socket_path

    def allocate(namespace: str, name: str, resource: str, ids: list[str]) -> None:
        server.pods.append(pod(namespace, name, container("c", {resource: ids})))

    try:
        yield allocate
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_nads_with_a_resource_name_get_the_pods_device_ids_from_the_kubelet(
    cluster: Cluster, kube: KubeApiProcess, kubelet: Any, started: Any
) -> None:
    log = cluster.root / "recorder.jsonl"
    kube.create_nad(
        "default",
        "vf-net",
        {
            "cniVersion": "1.0.0",
            "type": "recorder",
            "capabilities": {"deviceID": True},
            "recorder": {"log": str(log)},
        },
        **{"k8s.v1.cni.cncf.io/resourceName": "example.com/vf"},
    )
    kubelet("default", "gpu", "example.com/vf", ["0000:00:06.2", "0000:00:06.1"])
    started(gcIntervalSeconds=3600)

    netns, container, added = _add(cluster, kube, "gpu", {"k8s.v1.cni.cncf.io/networks": "vf-net, vf-net"})

    assert added.returncode == 0, added.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [
        (c["env"]["CNI_IFNAME"], c["stdin"]["deviceID"], c["stdin"]["runtimeConfig"]["deviceID"])
        for c in calls
    ] == [
        ("net1", "0000:00:06.1", "0000:00:06.1"),
        ("net2", "0000:00:06.2", "0000:00:06.2"),
    ], "each delegate takes the next of the pod's ids, sorted"
    assert all(c["stdin"]["pciBusID"] == c["stdin"]["deviceID"] for c in calls)
    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_cni_gc_removes_every_sandbox_the_runtime_no_longer_lists_and_status_answers(started: Any) -> None:
    cluster: Cluster = started(gcIntervalSeconds=3600)
    kept, dropped = (cluster.new_netns(), new_container_id()), (cluster.new_netns(), new_container_id())
    for netns, container in (kept, dropped):
        assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    conf = cluster.shim_conf(
        cniVersion="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": kept[1], "ifname": "eth0"}]}
    )

    collected = cluster.run_shim("GC", conf=conf)
    status = cluster.run_shim("STATUS", conf=cluster.shim_conf(cniVersion="1.1.0"))

    assert (collected.returncode, collected.stdout) == (0, "")
    assert dropped[0].links() == {"lo"}
    assert kept[0].links() == {"lo", "eth0"}
    assert len(cluster.leases()) == 1
    assert (status.returncode, status.stdout) == (0, "")


def test_kubernetes_metrics_count_api_requests_watch_events_and_the_mirror(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    import urllib.request

    port = free_port()
    kube.create_nad("default", "bridge-net", _bridge_nad(cluster, "10.71.0.0/24", "b"))
    started(metricsPort=port, gcIntervalSeconds=3600)
    _, _, added = _add(cluster, kube, "metered", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()

    def sample(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    assert sample('multus_py_kube_api_request_seconds_count{resource="pods/status",verb="PATCH"}') == 1
    assert sample('multus_py_watch_relists_total{resource="pods"}') == 1
    assert sample('multus_py_watch_events_total{resource="pods",type="upsert"}') >= 1
    assert sample('multus_py_mirrored_objects{resource="nads"}') == 1


def test_default_route_selection_moves_the_pods_default_route(node: Cluster, kube: KubeApiProcess) -> None:
    selection = [{"name": "bridge-net", "default-route": ["10.71.0.1"]}]

    netns, container, added = _add(
        node, kube, "router", {"k8s.v1.cni.cncf.io/networks": json.dumps(selection)}
    )

    assert added.returncode == 0, added.stdout
    routes = json.loads(
        subprocess.run(
            ["ip", "-n", netns.name, "-j", "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [(r["gateway"], r["dev"]) for r in routes] == [("10.71.0.1", "net1")], (
        "exactly one default route, via net1"
    )
    assert node.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def test_a_default_route_through_an_unreachable_gateway_fails_and_rolls_back(
    node: Cluster, kube: KubeApiProcess
) -> None:
    selection = [{"name": "bridge-net", "default-route": ["192.0.2.1"]}]

    netns, _, added = _add(node, kube, "lost", {"k8s.v1.cni.cncf.io/networks": json.dumps(selection)})

    assert added.returncode == 1
    assert "default route via 192.0.2.1 on net1" in added.json()["msg"]
    assert netns.links() == {"lo"}
    assert node.leases() == []


def test_under_upstreams_role_network_status_is_written_with_get_and_put(
    node: Cluster, kube: KubeApiProcess
) -> None:
    # upstream's ClusterRole grants get/update of pods/status, not patch: the API refuses every PATCH
    kube.fault(action="fail", status=403, method="PATCH", path="/pods/[^/]+/status", count=1000)

    first, first_container, added = _add(node, kube, "one", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0, added.stdout
    second, second_container, added = _add(node, kube, "two", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0, added.stdout

    pod_requests = [
        (r["method"], r["path"].split("?")[0], r["status"])
        for r in kube.requests(path="/pods/(one|two)")
        if r["method"] != "GET" or "watch" not in r["path"]
    ]
    for name in ("one", "two"):
        entries = json.loads(_network_status(kube, name))
        assert [(e["name"], e["interface"]) for e in entries] == [
            ("primary", "eth0"),
            ("default/bridge-net", "net1"),
        ]
    assert pod_requests == [
        ("PATCH", "/api/v1/namespaces/default/pods/one/status", 403),
        ("GET", "/api/v1/namespaces/default/pods/one", 200),
        ("PUT", "/api/v1/namespaces/default/pods/one/status", 200),
        ("GET", "/api/v1/namespaces/default/pods/two", 200),
        ("PUT", "/api/v1/namespaces/default/pods/two/status", 200),
    ], "after the first refusal the daemon goes straight to GET + PUT"
    kube.fault(action="clear")
    assert node.run_shim("DEL", container_id=first_container, netns=first).returncode == 0
    assert node.run_shim("DEL", container_id=second_container, netns=second).returncode == 0


def test_a_network_status_write_that_failed_at_add_is_written_by_the_daemon_started_after_a_kill(
    cluster: Cluster, kube: KubeApiProcess, started: Callable[..., Cluster]
) -> None:
    """Without ``hotplugNetworks`` nothing else writes a running pod's network-status: before the
    checkpoint marked the write as pending, a kill -9 left the pod without it until its next ADD."""
    kube.create_nad("default", "bridge-net", _bridge_nad(cluster, "10.71.0.0/24", "b"))
    node = started(gcIntervalSeconds=3600, watch={"statusDeadline": 1.0})
    kube.fault(action="fail", status=503, method="PATCH|PUT", path="/pods/p/status", count=100_000)
    netns, container, added = _add(node, kube, "p", {"k8s.v1.cni.cncf.io/networks": "bridge-net"})
    assert added.returncode == 0, added.stdout  # the ADD succeeds without its network-status
    assert _network_status(kube, "p") == ""
    assert _marked(node) == [container]  # committed before the ADD answered

    node.stop_daemon(signal.SIGKILL)
    kube.fault(action="clear")
    node.start_daemon()

    wait_until(lambda: bool(_network_status(kube, "p")), what="network-status written", timeout=30)
    entries = json.loads(_network_status(kube, "p"))
    assert [(e["name"], e["interface"]) for e in entries] == [
        ("primary", "eth0"),
        ("default/bridge-net", "net1"),
    ]
    ips = {ip for entry in entries for ip in entry.get("ips", [])}
    assert {ip["address"].split("/")[0] for ip in added.json()["ips"]} <= ips
    wait_until(
        lambda: _marked(node) == [], what="the mark cleared once written"
    )  # no write at the next start
    assert node.run_shim("DEL", container_id=container, netns=netns).returncode == 0


def _marked(node: Cluster) -> list[str]:
    """The sandboxes whose network-status the daemon's checkpoint marks as not written yet."""
    with sqlite3.connect(node.state_db) as state:
        return [
            str(row[0]) for row in state.execute("SELECT container_id FROM sandboxes WHERE status_unwritten")
        ]
