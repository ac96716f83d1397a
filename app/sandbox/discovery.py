"""Discovery documents: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``.

Built from ``resources.ALL``, in the shapes the real API server returns (``APIVersions``,
``APIResourceList``, ``APIGroupList``, ``APIGroup``), enough for kubernetes-asyncio and client-go
discovery. Aggregated discovery (``apidiscovery.k8s.io/v2``) is not served; clients fall back to
these. Pure functions, no I/O. Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

from typing import Any

from app.sandbox import resources
from app.sandbox.resources import COMMON_VERBS, Resource
from app.sandbox.status import unknown_path

VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-multus-py-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _resource_entries(resource: Resource) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(COMMON_VERBS),
    }
    if resource.short_names:
        main["shortNames"] = list(resource.short_names)
    entries = [main]
    for subresource in resource.subresources:
        entries.append(
            {
                "name": f"{resource.plural}/{subresource}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    return entries


def resource_list(group: str, version: str) -> dict[str, Any]:
    served = [r for r in resources.ALL if r.group == group and r.version == version]
    if not served:
        raise unknown_path()
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for resource in served for entry in _resource_entries(resource)],
    }


def api_group(group: str) -> dict[str, Any]:
    versions = resources.groups().get(group)
    if not versions:
        raise unknown_path()
    entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = [api_group(group) for group in resources.groups()]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
