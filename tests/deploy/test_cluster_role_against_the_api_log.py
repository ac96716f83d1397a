"""The shipped ClusterRole against what a real daemon asks of the API server.

A daemon in Kubernetes mode (the emulator in its own process, real plugins, netns and shim) goes
through every kind of API call it makes: the pod and NAD mirrors (list, watch), an ADD with a NAD
network (network-status PATCH, ``AddedInterface`` events), an ADD naming a network that does not
exist (the live NAD GET, the ``NoNetworkFound`` event), network-status under a role refusing the
PATCH (GET + PUT), and an ADD whose network has a ``resourceName`` served by DRA (a live pod GET, the
pod's ResourceClaim, the node's ResourceSlices). The emulator's request log then gives each request's
RBAC attributes (API group, resource with subresource, verb), as the API server's authorizer derives
them. Every one must be granted by the manifest's ClusterRole, and every verb the role grants must
have been asked: a rule missing fails the first check (on a cluster, a 403 the daemon logs and
retries), a rule nothing uses fails the second (more than the daemon needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.deploy.conftest import MAIN_MANIFEST, find, load_documents
from tests.e2e.conftest import Cluster, KubeApiProcess, shim_add

pytestmark = pytest.mark.slow  # starts daemon and emulator processes

NODE = "node-a"
RESOURCE_NAME = "example.com/nic"
DRIVER = "nic.example.com"
DEVICE_ID = "0000:81:00.2"
DISCOVERY_PATHS = ("/api", "/apis", "/version", "/openapi")
"""Non-resource URLs every authenticated client may GET (the ``system:discovery`` role)."""

Permission = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb), as an RBAC rule grants it."""


def permission_of(method: str, raw_path: str) -> Permission | None:
    """The RBAC attributes of a resource request; None for a discovery (non-resource) URL."""
    split = urlsplit(raw_path)
    parts = [part for part in split.path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        assert split.path.startswith(DISCOVERY_PATHS), f"{method} {raw_path}: not a resource request"
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource: the namespace is no part of the rule
    resource, named = rest[0], len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    query = parse_qs(split.query)
    if method == "GET":
        watching = query.get("watch", [""])[0] in ("1", "true")
        verb = "watch" if watching else "get" if named else "list"
    else:
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection",
        }[method]
    return group, resource, verb


def granted_by_the_cluster_role() -> set[Permission]:
    role = find(load_documents(MAIN_MANIFEST), "ClusterRole", "multus-py")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_permission_of_a_request_is_what_the_authorizer_checks() -> None:
    assert permission_of("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&limit=100") == (
        "",
        "pods",
        "list",
    )
    assert permission_of("GET", "/api/v1/pods?watch=1&resourceVersion=5") == ("", "pods", "watch")
    assert permission_of("PATCH", "/api/v1/namespaces/ns/pods/p/status") == ("", "pods/status", "patch")
    assert permission_of("POST", "/api/v1/namespaces/ns/events") == ("", "events", "create")
    assert permission_of(
        "GET", "/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/n"
    ) == (
        "k8s.cni.cncf.io",
        "network-attachment-definitions",
        "get",
    )
    assert permission_of("GET", "/apis/resource.k8s.io/v1/resourceslices?limit=1") == (
        "resource.k8s.io",
        "resourceslices",
        "list",
    )
    assert permission_of("GET", "/apis") is None


def _set_status(kube: KubeApiProcess, path: str, status: dict[str, Any]) -> None:
    current = kube.request("GET", path)
    current["status"] = status
    kube.request("PUT", f"{path}/status", current)


def _publish_a_dra_device(kube: KubeApiProcess) -> None:
    """A ResourceSlice of this node with one device for CNI, and a claim allocated that device."""
    kube.request(
        "POST",
        "/apis/resource.k8s.io/v1/resourceslices",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{NODE}-nic"},
            "spec": {
                "driver": DRIVER,
                "nodeName": NODE,
                "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {
                        "name": "vf-0",
                        "attributes": {
                            "k8s.cni.cncf.io/deviceID": {"string": DEVICE_ID},
                            "k8s.cni.cncf.io/resourceName": {"string": RESOURCE_NAME},
                        },
                    }
                ],
            },
        },
    )
    claims = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
    kube.request(
        "POST",
        claims,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "dra-nic", "namespace": "default"},
            "spec": {"devices": {"requests": []}},
        },
    )
    result = {"request": "nic", "driver": DRIVER, "pool": NODE, "device": "vf-0"}
    _set_status(kube, f"{claims}/dra-nic", {"allocation": {"devices": {"results": [result]}}})


def _add(cluster: Cluster, kube: KubeApiProcess, name: str, networks: str) -> tuple[Any, str, Any]:
    pod = kube.create_pod("default", name, node=NODE, annotations={"k8s.v1.cni.cncf.io/networks": networks})
    return shim_add(cluster, pod)


def _event_reasons(kube: KubeApiProcess) -> set[str]:
    return {item["reason"] for item in kube.request("GET", "/api/v1/namespaces/default/events")["items"]}


@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_the_cluster_role_grants_every_call_of_the_daemon_and_nothing_else(
    cluster: Cluster, kube: KubeApiProcess, started: Callable[..., Cluster]
) -> None:
    kube.create_nad(
        "default",
        "bridge-net",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": f"{cluster.bridge}b",
            "ipam": {
                "type": "host-local",
                "dataDir": str(cluster.ipam_dir),
                "ranges": [[{"subnet": "10.73.0.0/24"}]],
            },
        },
    )
    cluster.host_links.append(f"{cluster.bridge}b")
    kube.create_nad(
        "default",
        "dra-net",
        {
            "cniVersion": "1.0.0",
            "type": "recorder",
            "capabilities": {"deviceID": True},
            "recorder": {"log": str(cluster.root / "recorder.jsonl")},
        },
        **{"k8s.v1.cni.cncf.io/resourceName": RESOURCE_NAME},
    )
    _publish_a_dra_device(kube)
    started(
        gcIntervalSeconds=3600,
        podResourcesSocket=str(cluster.root / "no-kubelet.sock"),
        deviceCheckpointFile=str(cluster.root / "no-checkpoint"),
        deviceInfoDir=str(cluster.root / "devinfo"),
    )
    added = []

    netns, container, result = _add(cluster, kube, "patched", "bridge-net")
    assert result.returncode == 0, result.stdout
    added.append((netns, container))
    netns, _container, result = _add(cluster, kube, "missing", "no-such-net")
    assert result.returncode != 0, result.stdout
    kube.fault(action="fail", status=403, method="PATCH", path="/pods/[^/]+/status", count=1000)
    netns, container, result = _add(cluster, kube, "put", "bridge-net")
    assert result.returncode == 0, result.stdout
    added.append((netns, container))
    kube.fault(action="clear")
    pod = kube.create_pod("default", "dra", node=NODE, annotations={"k8s.v1.cni.cncf.io/networks": "dra-net"})
    _set_status(
        kube,
        "/api/v1/namespaces/default/pods/dra",
        {"phase": "Pending", "resourceClaimStatuses": [{"name": "nic", "resourceClaimName": "dra-nic"}]},
    )
    netns, container, result = shim_add(cluster, pod)
    assert result.returncode == 0, result.stdout
    added.append((netns, container))
    recorded = [json.loads(line) for line in (cluster.root / "recorder.jsonl").read_text().splitlines()]
    assert recorded[0]["stdin"]["deviceID"] == DEVICE_ID, "the device id came from DRA"
    cluster.process.wait_until(
        lambda: {"AddedInterface", "NoNetworkFound"} <= _event_reasons(kube), what="the pods' events"
    )
    for netns, container in added:
        assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    asked: dict[Permission, str] = {}
    for request in kube.requests():
        if request["accept"] is None:
            continue  # this test's own requests (urllib sends no Accept; the daemon's client always does)
        permission = permission_of(request["method"], request["path"])
        if permission is not None:
            asked.setdefault(permission, f"{request['method']} {request['path']}")
    granted = granted_by_the_cluster_role()
    refused = {permission: example for permission, example in asked.items() if permission not in granted}
    assert refused == {}, "the daemon asked what the ClusterRole does not grant"
    assert granted - set(asked) == set(), "the ClusterRole grants what the daemon never asks"
