"""Object manifests the emulator tests create."""

from __future__ import annotations

from typing import Any


def pod_manifest(
    name: str, *, node: str = "node-a", namespace: str = "default", **labels: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }


def nad_manifest(
    name: str, *, namespace: str = "default", config: str = '{"cniVersion":"1.0.0","type":"macvlan"}'
) -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config},
    }
