"""Native hot-plug through a real daemon (``hotplugNetworks: true``): editing the ``networks``
annotation of a running pod adds ``net3`` to its netns and removes it again, network-status follows,
and the runtime's DEL afterwards leaves nothing (issue 12 item 2).

Real: the emulator over HTTP, the daemon's watch and mirror, the shim, the bridge and host-local
plugins in a network namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, KubeApiProcess, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]

NODE = "node-a"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _status_interfaces(kube: KubeApiProcess, name: str) -> list[str]:
    annotations = kube.get_pod("default", name)["metadata"].get("annotations") or {}
    return [entry["interface"] for entry in json.loads(annotations.get(NETWORK_STATUS, "[]"))]


def _event_reasons(kube: KubeApiProcess) -> list[str]:
    return [
        event.get("reason") for event in kube.request("GET", "/api/v1/namespaces/default/events")["items"]
    ]


def _annotate(kube: KubeApiProcess, name: str, networks: str) -> None:
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{name}",
        {"metadata": {"annotations": {NETWORKS: networks}}},
        content_type="application/merge-patch+json",
    )


def test_editing_a_running_pods_annotation_adds_and_removes_net3(
    cluster: Cluster, kube: KubeApiProcess, started: Any
) -> None:
    bridge = f"{cluster.bridge}h"
    cluster.host_links.append(bridge)
    kube.create_nad(
        "default",
        "bridge-net",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": bridge,
            "ipam": {
                "type": "host-local",
                "dataDir": str(cluster.ipam_dir),
                "ranges": [[{"subnet": "10.73.0.0/24"}]],
            },
        },
    )
    started(gcIntervalSeconds=3600, hotplugNetworks=True)
    pod = kube.create_pod("default", "web", node=NODE, annotations={NETWORKS: "bridge-net"})
    netns = cluster.new_netns()
    container = new_container_id()
    added = cluster.run_shim(
        "ADD",
        container_id=container,
        netns=netns,
        cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={pod['metadata']['uid']}",
    )
    assert added.returncode == 0, added.stdout
    assert set(netns.interfaces()) == {"lo", "eth0", "net1"}

    _annotate(kube, "web", "bridge-net, bridge-net@net3")
    _wait_for(lambda: "net3" in netns.interfaces(), "net3 in the pod's netns")
    _wait_for(lambda: _status_interfaces(kube, "web") == ["eth0", "net1", "net3"], "network-status with net3")
    assert netns.interfaces()["net3"]["addresses"] == ["10.73.0.3/24"]
    assert len(cluster.leases()) == 3

    _annotate(kube, "web", "bridge-net")
    _wait_for(lambda: "net3" not in netns.interfaces(), "net3 gone from the pod's netns")
    _wait_for(lambda: _status_interfaces(kube, "web") == ["eth0", "net1"], "network-status without net3")
    _wait_for(lambda: len(cluster.leases()) == 2, "net3's lease released")
    _wait_for(lambda: "RemovedInterface" in _event_reasons(kube), "a RemovedInterface event (posted later)")

    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0
    assert netns.links() == {"lo"}
    assert cluster.leases() == []
    assert cluster.leftover_host_veths() == set()
