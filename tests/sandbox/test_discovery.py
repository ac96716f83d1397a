"""Discovery and health endpoints, read through kubernetes-asyncio's own discovery calls."""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio import client

from app.sandbox.kubeapi import KubeApiEmulator


async def test_version_is_served(api: client.ApiClient) -> None:
    version = await client.VersionApi(api).get_code()

    assert (version.major, version.minor) == ("1", "31")


async def test_core_discovery_lists_pods_with_status_events_and_namespaces(api: client.ApiClient) -> None:
    versions = await client.CoreApi(api).get_api_versions()
    resources = await client.CoreV1Api(api).get_api_resources()

    assert versions.versions == ["v1"]
    by_name = {resource.name: resource for resource in resources.resources}
    assert {"pods", "pods/status", "events", "namespaces"} <= by_name.keys()
    assert by_name["pods"].namespaced
    assert "watch" in by_name["pods"].verbs
    assert not by_name["namespaces"].namespaced
    assert by_name["pods/status"].verbs == ["get", "patch", "update"]


async def test_group_discovery_lists_the_nad_crd(api: client.ApiClient) -> None:
    groups = await client.ApisApi(api).get_api_versions()
    nad_resources = await client.CustomObjectsApi(api).get_api_resources("k8s.cni.cncf.io", "v1")

    assert {group.name for group in groups.groups} == {"k8s.cni.cncf.io", "events.k8s.io", "resource.k8s.io"}
    [nad] = nad_resources.resources
    assert (nad.name, nad.kind, nad.singular_name, nad.namespaced) == (
        "network-attachment-definitions",
        "NetworkAttachmentDefinition",
        "network-attachment-definition",
        True,
    )


async def test_unknown_paths_answer_a_404_status(emulator: KubeApiEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/apis/apps/v1/deployments", "/api/v1/namespaces/default/configmaps", "/nothing"):
            async with session.get(f"{emulator.url}{path}") as response:
                body = await response.json()
                assert (response.status, body["kind"], body["reason"]) == (404, "Status", "NotFound"), path


async def test_health_endpoints_answer_ok(emulator: KubeApiEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/livez", "/readyz"):
            async with session.get(f"{emulator.url}{path}") as response:
                assert (response.status, await response.text()) == (200, "ok")


async def test_protobuf_bodies_are_refused_with_415(emulator: KubeApiEmulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{emulator.url}/api/v1/namespaces/default/events",
            data=b"k8s\x00",
            headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
        ) as response,
    ):
        assert response.status == 415
