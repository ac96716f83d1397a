"""Lists: paging with limit and continue, expired continue tokens, resourceVersion parameters."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from app.sandbox.kubeapi import KubeApiEmulator
from tests.sandbox.manifests import pod_manifest


async def test_paging_with_limit_and_continue_returns_every_pod_once(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    for index in range(7):
        emulator.create_pod(pod_manifest(f"p{index}"))
    names: list[str] = []
    remaining: list[int | None] = []
    token: str | None = None

    while True:
        page = await core.list_namespaced_pod("default", limit=3, _continue=token)  # type: ignore[arg-type]  # the client omits a None _continue
        names += [pod.metadata.name for pod in page.items]
        remaining.append(page.metadata.remaining_item_count)
        token = page.metadata._continue
        if not token:
            break

    assert names == [f"p{index}" for index in range(7)]
    assert remaining == [4, 1, None]


async def test_continued_pages_report_the_first_pages_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    for index in range(4):
        emulator.create_pod(pod_manifest(f"p{index}"))
    first = await core.list_namespaced_pod("default", limit=2)
    emulator.create_pod(pod_manifest("later"))

    second = await core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)

    assert second.metadata.resource_version == first.metadata.resource_version


async def test_continue_token_older_than_compaction_answers_410(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    for index in range(4):
        emulator.create_pod(pod_manifest(f"p{index}"))
    first = await core.list_namespaced_pod("default", limit=2)
    emulator.create_pod(pod_manifest("later"))
    emulator.compact()

    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)

    assert raised.value.status == 410
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Expired"
    rest = await core.list_namespaced_pod("default", _continue=status["metadata"]["continue"])
    assert [pod.metadata.name for pod in rest.items] == ["p2", "p3"]


async def test_garbage_continue_token_answers_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod("default", limit=2, _continue="not-a-token")

    assert raised.value.status == 400


async def test_exact_list_of_a_compacted_version_answers_410(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    created = emulator.create_pod(pod_manifest("p"))
    emulator.create_pod(pod_manifest("q"))
    emulator.compact()

    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod(
            "default", resource_version=created["metadata"]["resourceVersion"], resource_version_match="Exact"
        )
    loose = await core.list_namespaced_pod(
        "default", resource_version="0", resource_version_match="NotOlderThan"
    )

    assert raised.value.status == 410
    assert [pod.metadata.name for pod in loose.items] == ["p", "q"]


async def test_continued_pages_show_the_state_at_the_first_pages_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """Every page of a paged list is read at the first page's resourceVersion (etcd reads at that
    revision): writes between pages do not show, so the pages are one consistent snapshot."""
    for index in range(4):
        emulator.create_pod(pod_manifest(f"p{index}"))
    before = emulator.get_pod("default", "p2")
    first = await core.list_namespaced_pod("default", limit=2)
    emulator.patch_pod("default", "p2", {"metadata": {"labels": {"changed": "yes"}}})
    emulator.delete_pod("default", "p3")
    emulator.create_pod(pod_manifest("p2a"))

    second = await core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)

    assert [pod.metadata.name for pod in second.items] == ["p2", "p3"]
    assert second.items[0].metadata.resource_version == before["metadata"]["resourceVersion"]
    assert second.items[0].metadata.labels is None
    assert second.metadata._continue is None


async def test_exact_list_shows_the_state_at_that_resource_version(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    then = emulator.resource_version
    emulator.delete_pod("default", "p")
    emulator.create_pod(pod_manifest("q"))

    exact = await core.list_namespaced_pod("default", resource_version=then, resource_version_match="Exact")

    assert [pod.metadata.name for pod in exact.items] == ["p"]
    assert exact.metadata.resource_version == then


async def test_exact_list_of_a_version_not_reached_yet_answers_504_too_large(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    future = str(int(emulator.resource_version) + 5)

    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod("default", resource_version=future, resource_version_match="Exact")

    assert raised.value.status == 504
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Timeout"
    assert status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


@pytest.mark.parametrize("match", ["NotOlderThan", None])
async def test_a_list_at_a_version_not_reached_yet_answers_504_too_large_as_the_watch_cache(
    core: client.CoreV1Api, emulator: KubeApiEmulator, match: str | None
) -> None:
    """A client holding a resourceVersion of before an etcd restore asks for one the server has not
    reached: after its short wait, the watch cache answers 504 naming the cause (not the state it
    has, as it does for any version it has reached)."""
    current = emulator.resource_version
    future = str(int(current) + 5)

    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_pod(
            "default",
            limit=1,
            resource_version=future,
            **({"resource_version_match": match} if match else {}),  # type: ignore[arg-type]
        )

    assert raised.value.status == 504
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Timeout"
    assert status["message"] == f"Timeout: Too large resource version: {future}, current: {current}"
    assert status["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]
    assert status["details"]["retryAfterSeconds"] == 1


async def test_a_list_at_a_version_reached_while_it_waits_is_answered_at_the_newest() -> None:
    async with KubeApiEmulator(too_large_wait=60.0) as emulator:
        future = int(emulator.resource_version) + 2
        since = emulator.last_request_seq
        path = f"/api/v1/namespaces/default/pods?resourceVersion={future}&resourceVersionMatch=NotOlderThan"
        async with aiohttp.ClientSession() as session:
            answer = asyncio.create_task(session.get(f"{emulator.url}{path}"), name="test.list")
            async with asyncio.timeout(10):
                await emulator.wait_for_request(since=since, path="resourceVersion=")
                assert not answer.done()
                emulator.create_pod(pod_manifest("p"))
                emulator.create_pod(pod_manifest("q"))
                async with await answer as response:
                    body = await response.json()

    assert response.status == 200
    assert body["metadata"]["resourceVersion"] == str(future)
    assert [pod["metadata"]["name"] for pod in body["items"]] == ["p", "q"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("resourceVersionMatch=NotOlderThan", 422),
        ("resourceVersion=0&resourceVersionMatch=Exact", 422),
        ("resourceVersion={rv}&continue={token}", 400),
        ("resourceVersion={rv}&resourceVersionMatch=NotOlderThan&continue={token}", 422),
    ],
)
async def test_list_options_the_api_server_forbids_are_refused(
    core: client.CoreV1Api, emulator: KubeApiEmulator, query: str, status: int
) -> None:
    for index in range(3):
        emulator.create_pod(pod_manifest(f"p{index}"))
    first = await core.list_namespaced_pod("default", limit=1)
    path = "/api/v1/namespaces/default/pods?limit=1&" + query.format(
        rv=first.metadata.resource_version, token=first.metadata._continue
    )

    async with aiohttp.ClientSession() as session, session.get(f"{emulator.url}{path}") as response:
        body = await response.json()

    assert response.status == status
    assert body["kind"] == "Status"
