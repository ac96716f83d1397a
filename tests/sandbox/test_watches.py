"""Watches through the real Watch: resourceVersions, bookmarks, 410, timeouts, filters, WatchList."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from app.sandbox.kubeapi import KubeApiEmulator
from app.sandbox.objects import Change, StoredObject
from app.sandbox.resources import PODS
from app.sandbox.streaming import INITIAL_EVENTS_END
from app.sandbox.watching import WatchFilter, WatchHub
from tests.sandbox.conftest import HISTORY_SIZE
from tests.sandbox.manifests import pod_manifest

NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
Event = dict[str, Any]


def summary(event: Event) -> tuple[str, str]:
    return (event["type"], event["raw_object"]["metadata"].get("name", ""))


async def take(stream: watch.Watch, count: int) -> list[Event]:
    """The next ``count`` events of ``stream`` (the caller closes the Watch)."""
    events: list[Event] = []
    async for event in stream:
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_watch_from_a_resource_version_sends_only_later_changes(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    first = emulator.create_pod(pod_manifest("p1"))
    emulator.create_pod(pod_manifest("p2"))
    emulator.patch_pod("default", "p1", {"metadata": {"labels": {"a": "b"}}})
    emulator.delete_pod("default", "p2")

    async with watch.Watch() as stream:
        since = first["metadata"]["resourceVersion"]
        events = await take(
            stream.stream(core.list_namespaced_pod, "default", resource_version=since, timeout_seconds=5), 3
        )

    assert [summary(event) for event in events] == [("ADDED", "p2"), ("MODIFIED", "p1"), ("DELETED", "p2")]
    versions = [int(event["raw_object"]["metadata"]["resourceVersion"]) for event in events]
    assert versions == sorted(versions)
    assert versions[-1] == int(emulator.resource_version)


async def test_watch_without_a_resource_version_starts_with_the_current_state(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("existing"))
    events: list[Event] = []

    async with watch.Watch() as stream:
        async for event in stream.stream(core.list_pod_for_all_namespaces, timeout_seconds=5):
            events.append(event)
            if summary(event) == ("ADDED", "existing"):
                emulator.create_pod(pod_manifest("new"))
            else:
                break

    assert [summary(event) for event in events] == [("ADDED", "existing"), ("ADDED", "new")]
    assert isinstance(events[0]["object"], client.V1Pod)


async def test_bookmarks_arrive_only_when_allowed(core: client.CoreV1Api, emulator: KubeApiEmulator) -> None:
    emulator.create_pod(pod_manifest("p"))
    current = emulator.resource_version

    async with watch.Watch() as stream:
        allowed = await take(
            stream.stream(
                core.list_pod_for_all_namespaces,
                resource_version=current,
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ),
            2,
        )
    async with watch.Watch() as stream:
        not_allowed = [
            event
            async for event in stream.stream(
                core.list_pod_for_all_namespaces, resource_version=current, timeout_seconds=1
            )
        ]

    assert [event["type"] for event in allowed] == ["BOOKMARK", "BOOKMARK"]
    assert allowed[0]["raw_object"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": current},
    }
    assert not_allowed == []


async def test_bookmarks_advance_the_clients_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    start = emulator.resource_version
    emulator.create_namespace("elsewhere")

    async with watch.Watch() as stream:
        await take(
            stream.stream(
                core.list_namespaced_pod,
                "default",
                resource_version=start,
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ),
            1,
        )
        assert stream.resource_version == emulator.resource_version != start


async def test_watch_from_a_compacted_resource_version_raises_410(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    old = emulator.create_pod(pod_manifest("p"))["metadata"]["resourceVersion"]
    emulator.create_pod(pod_manifest("q"))
    compacted = emulator.compact()

    with pytest.raises(ApiException) as raised:
        async with watch.Watch() as stream:
            await take(
                stream.stream(core.list_pod_for_all_namespaces, resource_version=old, timeout_seconds=5), 1
            )

    assert raised.value.status == 410
    assert raised.value.reason == f"Expired: too old resource version: {old} ({compacted})"
    assert emulator.requests(path="watch")[-1].status == 200


async def test_history_keeps_only_the_newest_changes(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    oldest = emulator.resource_version
    for index in range(HISTORY_SIZE + 5):
        emulator.create_pod(pod_manifest(f"p{index}"))
    recent = emulator.get_pod("default", f"p{HISTORY_SIZE}")["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as raised:
        async with watch.Watch() as stream:
            await take(
                stream.stream(core.list_pod_for_all_namespaces, resource_version=oldest, timeout_seconds=5), 1
            )
    async with watch.Watch() as stream:
        replayed = await take(
            stream.stream(core.list_pod_for_all_namespaces, resource_version=recent, timeout_seconds=5), 4
        )

    assert raised.value.status == 410
    assert [summary(event)[1] for event in replayed] == [f"p{HISTORY_SIZE + index}" for index in range(1, 5)]


async def test_timeout_seconds_ends_the_stream_cleanly(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    async with watch.Watch() as stream:
        events = [
            event
            async for event in stream.stream(
                core.list_pod_for_all_namespaces,
                resource_version=emulator.resource_version,
                timeout_seconds=1,
            )
        ]

    assert events == []
    assert emulator.open_watches() == []


async def test_node_field_selector_watch_sees_only_that_nodes_pods(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    start = emulator.resource_version
    emulator.create_pod(pod_manifest("elsewhere", node="node-b"))
    emulator.create_pod(pod_manifest("mine", node="node-a"))
    emulator.delete_pod("default", "elsewhere")
    emulator.delete_pod("default", "mine")

    async with watch.Watch() as stream:
        events = await take(
            stream.stream(
                core.list_pod_for_all_namespaces,
                field_selector="spec.nodeName=node-a",
                resource_version=start,
                timeout_seconds=5,
            ),
            2,
        )

    assert [summary(event) for event in events] == [("ADDED", "mine"), ("DELETED", "mine")]


async def test_filtered_watch_turns_leaving_into_deleted_and_joining_into_added(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    start = emulator.resource_version
    emulator.create_pod(pod_manifest("p", app="web"))
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"app": "db"}}})
    left_at = emulator.resource_version
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"app": "web", "v": "2"}}})
    emulator.patch_pod("default", "p", {"metadata": {"labels": {"v": "3"}}})

    async with watch.Watch() as stream:
        events = await take(
            stream.stream(
                core.list_namespaced_pod,
                "default",
                label_selector="app=web",
                resource_version=start,
                timeout_seconds=5,
            ),
            4,
        )

    assert [summary(event) for event in events] == [
        ("ADDED", "p"),
        ("DELETED", "p"),
        ("ADDED", "p"),
        ("MODIFIED", "p"),
    ]
    deleted = events[1]["raw_object"]["metadata"]
    assert deleted["labels"] == {"app": "web"}, "a DELETED for a watcher carries the last state it matched"
    assert deleted["resourceVersion"] == left_at


async def test_watchlist_sends_initial_events_then_an_annotated_bookmark(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("a", node="node-a"))
    emulator.create_pod(pod_manifest("b", node="node-b"))
    emulator.create_pod(pod_manifest("c", node="node-a"))
    synced_at = emulator.resource_version

    async with watch.Watch() as stream:
        events = await take(
            stream.stream(
                core.list_pod_for_all_namespaces,
                field_selector="spec.nodeName=node-a",
                allow_watch_bookmarks=True,
                send_initial_events=True,
                resource_version_match="NotOlderThan",
                timeout_seconds=5,
            ),
            3,
        )

    assert [summary(event) for event in events] == [("ADDED", "a"), ("ADDED", "c"), ("BOOKMARK", "")]
    assert events[2]["raw_object"]["metadata"] == {
        "resourceVersion": synced_at,
        "annotations": {INITIAL_EVENTS_END: "true"},
    }
    assert emulator.requests(method="GET", path="(?i)sendInitialEvents=true")


async def test_watchlist_without_its_required_options_answers_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        async with watch.Watch() as stream:
            await take(
                stream.stream(core.list_pod_for_all_namespaces, send_initial_events=True, timeout_seconds=5),
                1,
            )

    assert raised.value.status == 422


async def test_deleted_event_carries_the_deletions_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("p"))
    emulator.delete_pod("default", "p")

    async with watch.Watch() as stream:
        events = await take(
            stream.stream(
                core.list_namespaced_pod,
                "default",
                resource_version=created["metadata"]["resourceVersion"],
                timeout_seconds=5,
            ),
            1,
        )

    assert summary(events[0]) == ("DELETED", "p")
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == emulator.resource_version
    assert events[0]["raw_object"]["metadata"]["uid"] == created["metadata"]["uid"]


async def test_nads_are_watched_through_custom_objects_api(
    custom: client.CustomObjectsApi, emulator: KubeApiEmulator
) -> None:
    emulator.create_nad("default", "macvlan-conf", {"cniVersion": "1.0.0", "type": "macvlan"})
    events: list[Event] = []

    async with watch.Watch() as stream:
        async for event in stream.stream(
            custom.list_cluster_custom_object, NAD_GROUP, NAD_VERSION, NAD_PLURAL, timeout_seconds=5
        ):
            events.append(event)
            if len(events) == 1:
                emulator.delete_nad("default", "macvlan-conf")
            else:
                break

    assert [summary(event) for event in events] == [("ADDED", "macvlan-conf"), ("DELETED", "macvlan-conf")]
    assert events[0]["object"]["spec"]["config"] == '{"cniVersion": "1.0.0", "type": "macvlan"}'


def test_a_watcher_that_falls_too_far_behind_is_closed() -> None:
    hub = WatchHub(history_size=10, queue_size=3)
    watcher = hub.subscribe(WatchFilter(PODS), since=None)

    for index in range(1, 5):
        obj = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": f"p{index}", "resourceVersion": str(index)},
        }
        hub.record(Change.of("ADDED", StoredObject.of(obj), None), PODS)

    assert watcher.closed == "overflow"
    assert len(watcher.drain()) == 3


async def test_watch_stream_is_chunked_json_lines_on_the_wire(emulator: KubeApiEmulator) -> None:
    old = emulator.resource_version
    emulator.create_pod(pod_manifest("p"))
    emulator.compact()

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{emulator.url}/api/v1/namespaces?watch=1&timeoutSeconds=30") as response:
            headers = response.headers
            lines = [json.loads(await response.content.readline()) for _ in range(2)]
        async with session.get(f"{emulator.url}/api/v1/pods?watch=1&resourceVersion={old}") as response:
            [error] = [json.loads(line) async for line in response.content]

    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Type"] == "application/json"
    assert [(line["type"], line["object"]["metadata"]["name"]) for line in lines] == [
        ("ADDED", "default"),
        ("ADDED", "kube-system"),
    ]
    assert response.status == 200
    assert error["type"] == "ERROR"
    assert error["object"]["kind"] == "Status"
    assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")


async def test_watch_from_a_future_resource_version_skips_changes_up_to_it(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """The watch cache sends a watcher only events newer than its resourceVersion, even when that
    version has not been reached yet (a client holding a position from before an etcd restore)."""
    emulator.create_pod(pod_manifest("before"))
    future = int(emulator.resource_version) + 2
    path = f"/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={future}&timeoutSeconds=30"

    async with aiohttp.ClientSession() as session, session.get(f"{emulator.url}{path}") as response:
        async with asyncio.timeout(10):
            await emulator.wait_for_watch(f"resourceVersion={future}")
        emulator.create_pod(pod_manifest("skipped-1"))
        emulator.create_pod(pod_manifest("skipped-2"))
        emulator.create_pod(pod_manifest("sent"))
        first = json.loads(await response.content.readline())

    assert first["type"] == "ADDED"
    assert first["object"]["metadata"]["name"] == "sent"
    assert int(first["object"]["metadata"]["resourceVersion"]) == future + 1
