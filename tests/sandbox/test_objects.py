"""Creating, reading, listing and deleting objects through the real kubernetes-asyncio client."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from app.sandbox.kubeapi import KubeApiEmulator
from app.sandbox.resources import PODS
from app.sandbox.status import ApiError
from tests.sandbox.manifests import nad_manifest, pod_manifest

NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"


def status_of(error: ApiException) -> dict[str, object]:
    assert error.body is not None
    body: dict[str, object] = json.loads(error.body)
    return body


async def create_pod_from_manifest(
    core: client.CoreV1Api, namespace: str, manifest: dict[str, Any]
) -> client.V1Pod:
    """``create_namespaced_pod`` with a raw manifest, which the client serializes as it is."""
    return await core.create_namespaced_pod(namespace, manifest)  # type: ignore[arg-type]  # the stub wants a V1Pod


async def test_created_pod_gets_server_metadata_and_a_newer_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    before = int(emulator.resource_version)

    first = await create_pod_from_manifest(core, "default", pod_manifest("web-1"))
    second = await create_pod_from_manifest(core, "default", pod_manifest("web-2"))

    assert re.fullmatch(r"[0-9a-f-]{36}", first.metadata.uid)
    assert first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert first.metadata.generation == 1
    assert before < int(first.metadata.resource_version) < int(second.metadata.resource_version)
    assert first.status.phase == "Pending"
    fetched = await core.read_namespaced_pod("web-1", "default")
    assert fetched.metadata.resource_version == first.metadata.resource_version


async def test_one_resource_version_counter_spans_all_kinds(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    pod = await create_pod_from_manifest(core, "default", pod_manifest("a"))
    nad = await custom.create_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, nad_manifest("n")
    )
    namespace = await core.create_namespace({"metadata": {"name": "team"}})  # type: ignore[arg-type]  # a raw manifest

    versions = [int(pod.metadata.resource_version), int(nad["metadata"]["resourceVersion"])]
    versions.append(int(namespace.metadata.resource_version))
    assert versions == sorted(versions)
    assert len(set(versions)) == 3


async def test_initial_namespaces_exist(core: client.CoreV1Api) -> None:
    namespaces = await core.list_namespace()

    assert {ns.metadata.name for ns in namespaces.items} == {"default", "kube-system"}
    assert namespaces.kind == "NamespaceList"
    assert all(ns.status.phase == "Active" for ns in namespaces.items)


async def test_reading_a_missing_pod_answers_404_with_a_status(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_pod("ghost", "default")

    assert raised.value.status == 404
    status = status_of(raised.value)
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["message"] == 'pods "ghost" not found'


async def test_creating_in_a_missing_namespace_answers_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await create_pod_from_manifest(core, "nowhere", pod_manifest("p", namespace="nowhere"))

    assert raised.value.status == 404
    assert status_of(raised.value)["message"] == 'namespaces "nowhere" not found'


async def test_creating_a_duplicate_answers_409_already_exists(core: client.CoreV1Api) -> None:
    await create_pod_from_manifest(core, "default", pod_manifest("dup"))

    with pytest.raises(ApiException) as raised:
        await create_pod_from_manifest(core, "default", pod_manifest("dup"))

    assert raised.value.status == 409
    assert status_of(raised.value)["reason"] == "AlreadyExists"


async def test_generate_name_gets_a_random_suffix(core: client.CoreV1Api) -> None:
    manifest = pod_manifest("")
    manifest["metadata"] = {"generateName": "job-"}

    created = await create_pod_from_manifest(core, "default", manifest)

    assert re.fullmatch(r"job-[a-z0-9]{5}", created.metadata.name)


async def test_pods_listed_with_node_field_selector_are_only_that_nodes(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_namespace("other")
    emulator.create_pod(pod_manifest("a1", node="node-a"))
    emulator.create_pod(pod_manifest("a2", node="node-a", namespace="other"))
    emulator.create_pod(pod_manifest("b1", node="node-b"))

    on_a = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    not_on_a = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=node-a")
    named = await core.list_namespaced_pod("default", field_selector="metadata.name=a1")

    assert [(p.metadata.namespace, p.metadata.name) for p in on_a.items] == [
        ("default", "a1"),
        ("other", "a2"),
    ]
    assert [p.metadata.name for p in not_on_a.items] == ["b1"]
    assert [p.metadata.name for p in named.items] == ["a1"]
    assert int(on_a.metadata.resource_version) == int(emulator.resource_version)


async def test_an_unsupported_field_selector_answers_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await core.list_pod_for_all_namespaces(field_selector="spec.containers=x")

    assert raised.value.status == 400


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["w1", "w2"]),
        ("app==web,tier!=db", ["w1"]),
        ("app in (web, db)", ["d1", "w1", "w2"]),
        ("app notin (web)", ["d1", "x1"]),
        ("tier", ["d1", "w2"]),
        ("!tier", ["w1", "x1"]),
    ],
)
async def test_label_selectors_filter_lists(
    core: client.CoreV1Api, emulator: KubeApiEmulator, selector: str, expected: list[str]
) -> None:
    emulator.create_pod(pod_manifest("w1", app="web"))
    emulator.create_pod(pod_manifest("w2", app="web", tier="db"))
    emulator.create_pod(pod_manifest("d1", app="db", tier="db"))
    emulator.create_pod(pod_manifest("x1"))

    listed = await core.list_namespaced_pod("default", label_selector=selector)

    assert [pod.metadata.name for pod in listed.items] == expected


async def test_nads_round_trip_through_custom_objects_api(custom: client.CustomObjectsApi) -> None:
    created = await custom.create_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, nad_manifest("macvlan-conf")
    )
    fetched = await custom.get_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, "macvlan-conf"
    )
    everywhere = await custom.list_cluster_custom_object(NAD_GROUP, NAD_VERSION, NAD_PLURAL)
    deleted = await custom.delete_namespaced_custom_object(
        NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, "macvlan-conf"
    )
    remaining = await custom.list_namespaced_custom_object(NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL)

    assert created["kind"] == "NetworkAttachmentDefinition"
    assert created["apiVersion"] == "k8s.cni.cncf.io/v1"
    assert fetched == created
    assert everywhere["kind"] == "NetworkAttachmentDefinitionList"
    assert [item["metadata"]["name"] for item in everywhere["items"]] == ["macvlan-conf"]
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(deleted["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert remaining["items"] == []


async def test_missing_nad_answers_404_naming_the_resource(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as raised:
        await custom.get_namespaced_custom_object(NAD_GROUP, NAD_VERSION, "default", NAD_PLURAL, "nope")

    assert raised.value.status == 404
    assert (
        status_of(raised.value)["message"]
        == 'network-attachment-definitions.k8s.cni.cncf.io "nope" not found'
    )


async def test_deleted_pod_is_gone_and_the_answer_is_its_last_state(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("doomed"))

    deleted = await core.delete_namespaced_pod("doomed", "default")

    assert deleted.metadata.uid == created["metadata"]["uid"]
    assert not emulator.exists(PODS, "default", "doomed")
    with pytest.raises(ApiError) as raised:
        emulator.get_pod("default", "doomed")
    assert raised.value.code == 404


async def test_delete_with_a_stale_uid_precondition_answers_409(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("recreated"))
    emulator.delete_pod("default", "recreated")
    emulator.create_pod(pod_manifest("recreated"))

    with pytest.raises(ApiException) as raised:
        await core.delete_namespaced_pod(
            "recreated",
            "default",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="old-uid")),
        )

    assert raised.value.status == 409
    assert emulator.exists(PODS, "default", "recreated")


async def test_deleting_a_namespace_deletes_what_it_holds(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_namespace("team")
    emulator.create_pod(pod_manifest("p", namespace="team"))
    emulator.create_nad("team", "n", {"cniVersion": "1.0.0", "type": "bridge"})

    await core.delete_namespace("team")

    assert emulator.list_objects(PODS, namespace="team") == []
    with pytest.raises(ApiException) as raised:
        await create_pod_from_manifest(core, "team", pod_manifest("p", namespace="team"))
    assert raised.value.status == 404


async def test_core_and_events_k8s_io_events_are_recorded(
    api: client.ApiClient, emulator: KubeApiEmulator
) -> None:
    pod = emulator.create_pod(pod_manifest("ref-pod"))
    involved = client.V1ObjectReference(
        kind="Pod", namespace="default", name="ref-pod", uid=pod["metadata"]["uid"], api_version="v1"
    )
    core_event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="ref-pod."),
        involved_object=involved,
        reason="AddedInterface",
        message="Add eth0 [10.210.0.2/24] from default-net",
        type="Normal",
        source=client.V1EventSource(component="multus"),
    )
    new_event = client.EventsV1Event(
        metadata=client.V1ObjectMeta(generate_name="ref-pod."),
        event_time=datetime.now(UTC),
        regarding=involved,
        reason="AddedInterface",
        note="Add net1 [10.211.0.2/24] from default/macvlan-conf",
        type="Normal",
        action="Add",
        reporting_controller="multus",
        reporting_instance="node-a",
    )

    await client.CoreV1Api(api).create_namespaced_event("default", core_event)
    await client.EventsV1Api(api).create_namespaced_event("default", new_event)
    listed = await client.CoreV1Api(api).list_namespaced_event("default")

    assert [event.reason for event in listed.items] == ["AddedInterface"]
    recorded = emulator.events("default")
    assert [event["message"] for event in recorded] == [
        "Add eth0 [10.210.0.2/24] from default-net",
        "Add net1 [10.211.0.2/24] from default/macvlan-conf",
    ]
    assert all(event["involvedObject"]["uid"] == pod["metadata"]["uid"] for event in recorded)
    assert all(event["source"]["component"] == "multus" for event in recorded)


@pytest.mark.parametrize("name", ["Upper", "under_score", "-leading", "x" * 254])
async def test_invalid_names_answer_422(core: client.CoreV1Api, name: str) -> None:
    with pytest.raises(ApiException) as raised:
        await create_pod_from_manifest(core, "default", pod_manifest(name))

    assert raised.value.status == 422
    assert status_of(raised.value)["reason"] == "Invalid"


async def test_a_request_body_over_3_mib_is_refused_with_413(emulator: KubeApiEmulator) -> None:
    """The API server reads at most 3 MiB of a request body (``MaxRequestBodyBytes``)."""
    manifest = pod_manifest("big")
    manifest["spec"]["containers"][0]["env"] = [{"name": "BLOB", "value": "x" * (3 * 1024 * 1024)}]

    url = f"{emulator.url}/api/v1/namespaces/default/pods"
    async with aiohttp.ClientSession() as session, session.post(url, json=manifest) as response:
        status = await response.json()

    assert response.status == 413
    assert status["reason"] == "RequestEntityTooLarge"
    assert status["message"] == "Request entity too large: limit is 3145728"
    assert not emulator.exists(PODS, "default", "big")
