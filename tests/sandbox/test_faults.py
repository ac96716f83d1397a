"""Fault injection from Python and over HTTP, and the request log that tests of the daemon read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from app.sandbox.kubeapi import KubeApiEmulator
from tests.sandbox.manifests import pod_manifest


async def wait_until_logged(emulator: KubeApiEmulator, path: str) -> None:
    async with asyncio.timeout(5):
        await emulator.wait_for_request(path=path)


async def test_injected_500s_answer_n_requests_then_success(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(2, status=500)
    statuses: list[int] = []

    for _ in range(3):
        try:
            await core.read_namespaced_pod("p", "default")
            statuses.append(200)
        except ApiException as error:
            statuses.append(error.status)

    assert statuses == [500, 500, 200]
    assert [record.status for record in emulator.requests()] == [500, 500, 200]


async def test_injected_429_carries_retry_after(core: client.CoreV1Api, emulator: KubeApiEmulator) -> None:
    emulator.faults.fail_next(1, status=429, retry_after=3)

    with pytest.raises(ApiException) as raised:
        await core.list_namespace()

    assert raised.value.status == 429
    assert raised.value.headers is not None
    assert raised.value.headers["Retry-After"] == "3"
    assert '"reason":"TooManyRequests"' in raised.value.body  # type: ignore[operator]  # the client decodes it to str


async def test_an_injected_failure_can_name_a_cause_in_its_status(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.faults.configure(
        {"action": "fail", "status": 504, "cause": "ResourceVersionTooLarge", "message": "too large"}
    )

    with pytest.raises(ApiException) as raised:
        await core.list_namespace()

    assert raised.value.status == 504
    status = json.loads(raised.value.body)  # type: ignore[arg-type]  # the client decodes it to str
    assert status["reason"] == "Timeout"
    assert status["details"]["causes"] == [{"reason": "ResourceVersionTooLarge", "message": "too large"}]


async def test_injected_failure_hits_only_matching_method_and_path(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(1, status=409, method="PUT", path=r"/pods/p/status$")

    await core.read_namespaced_pod("p", "default")
    pod = await core.read_namespaced_pod_status("p", "default")
    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod_status("p", "default", pod)
    await core.replace_namespaced_pod_status("p", "default", pod)

    assert raised.value.status == 409
    assert [(record.method, record.status) for record in emulator.requests()] == [
        ("GET", 200),
        ("GET", 200),
        ("PUT", 409),
        ("PUT", 200),
    ]


async def test_latency_delays_matching_requests_only(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    # long enough that the other read, however loaded the machine, finishes first (0.3 s did not)
    emulator.faults.add_latency(1.0, path="/namespaces/kube-system$")
    finished: list[str] = []

    async def read(name: str) -> None:
        await core.read_namespace(name)
        finished.append(name)

    slow = asyncio.create_task(read("kube-system"))
    await wait_until_logged(emulator, "kube-system")
    await read("default")
    await slow

    assert finished == ["default", "kube-system"]


async def test_clearing_latency_releases_the_requests_it_holds(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    """A request held on a latency cleared meanwhile went on waiting out the whole delay: a test
    that made a watch lag for 30 s and cleared it had the client time out first."""
    emulator.faults.add_latency(300, path="/namespaces/kube-system$")
    held = asyncio.ensure_future(core.read_namespace("kube-system"))
    await wait_until_logged(emulator, "kube-system")

    emulator.faults.clear_latency()

    async with asyncio.timeout(60):  # far below the latency: released, not waited out
        namespace = await held
    assert namespace.metadata.name == "kube-system"


async def test_paused_server_holds_requests_until_resumed(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.faults.pause()
    held = asyncio.ensure_future(core.list_namespace())
    await wait_until_logged(emulator, "/namespaces")

    assert not held.done()
    assert emulator.requests()[-1].status is None
    emulator.faults.resume()
    namespaces = await held
    assert len(namespaces.items) == 2
    assert emulator.requests()[-1].status == 200


async def watch_pods_dropping_after_the_first_event(
    core: client.CoreV1Api, drop: Callable[[], Awaitable[int]], events: list[str], **query: str
) -> None:
    async with watch.Watch() as stream:
        async for event in stream.stream(core.list_pod_for_all_namespaces, timeout_seconds=30, **query):
            events.append(event["type"])
            assert await drop() == 1


async def test_dropped_watch_breaks_the_clients_stream(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    events: list[str] = []

    async def drop() -> int:
        return emulator.drop_watches()

    with pytest.raises(aiohttp.ClientPayloadError):
        await watch_pods_dropping_after_the_first_event(core, drop, events)

    assert events == ["ADDED"]
    assert emulator.open_watches() == []


async def test_stopping_the_emulator_ends_watches_cleanly(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    events: list[str] = []

    async with watch.Watch() as stream:
        async for event in stream.stream(core.list_namespace, allow_watch_bookmarks=True, timeout_seconds=30):
            events.append(event["type"])
            if len(events) == 2:
                await emulator.stop()

    assert events == ["ADDED", "ADDED"]


async def test_stopping_a_paused_emulator_releases_held_requests(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.faults.pause()
    held = asyncio.ensure_future(core.list_namespace())
    await wait_until_logged(emulator, "/namespaces")

    await emulator.stop()

    assert len((await held).items) == 2


async def test_request_log_shows_raw_paths_and_headers(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    mark = emulator.last_request_seq
    await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    await core.patch_namespaced_pod_status("p", "default", {"metadata": {"annotations": {"a": "b"}}})

    records = emulator.requests(since=mark)

    assert [str(record) for record in records] == [
        "GET    200 /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a  "
        "[ct=application/json; accept=application/json]",
        "PATCH  200 /api/v1/namespaces/default/pods/p/status  "
        "[ct=application/strategic-merge-patch+json; accept=application/json]",
    ]
    assert emulator.requests(since=mark, method="GET", path=r"/pods/p$") == []


class Control:
    """The HTTP control endpoints, as a test driving a daemon in another process uses them."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def fault(self, **payload: Any) -> dict[str, Any]:
        async with self._session.post(f"{self._url}/_emulator/faults", json=payload) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    async def get(self, path: str) -> dict[str, Any]:
        async with self._session.get(f"{self._url}/_emulator/{path}") as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result


@pytest.fixture
async def control(emulator: KubeApiEmulator) -> Any:
    async with aiohttp.ClientSession() as session:
        yield Control(session, emulator.url)


async def test_faults_are_armed_over_http(
    core: client.CoreV1Api, emulator: KubeApiEmulator, control: Control
) -> None:
    state = await control.fault(
        action="fail", count=1, status=503, method="GET", path="/namespaces", retryAfter=1
    )
    assert state["failures"][0]["status"] == 503

    with pytest.raises(ApiException) as raised:
        await core.list_namespace()
    await core.list_namespace()

    assert raised.value.status == 503
    assert (await control.get("faults"))["failures"] == []


async def test_a_cut_request_takes_effect_and_its_connection_ends_unanswered(
    core: client.CoreV1Api, emulator: KubeApiEmulator, control: Control
) -> None:
    emulator.create_pod(pod_manifest("p"))
    state = await control.fault(action="cut", count=1, method="PATCH", path="/pods/p$")
    assert state["cuts"] == [{"method": "PATCH", "path": "/pods/p$", "remaining": 1}]
    patch = {"metadata": {"labels": {"cut": "yes"}}}

    with pytest.raises(aiohttp.ClientError):  # the server closed the connection: no answer at all
        await core.patch_namespaced_pod("p", "default", patch)
    await core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"after": "yes"}}})

    assert emulator.get_pod("default", "p")["metadata"]["labels"] == {"cut": "yes", "after": "yes"}
    assert (await control.get("faults"))["cuts"] == []


async def test_request_log_is_read_and_cleared_over_http(
    core: client.CoreV1Api, emulator: KubeApiEmulator, control: Control
) -> None:
    await core.list_namespace()
    await control.fault(action="latency", seconds=0.01)
    await core.read_namespace("default")

    logged = await control.get("requests?method=GET&path=/namespaces/default")
    async with (
        aiohttp.ClientSession() as session,
        session.delete(f"{emulator.url}/_emulator/requests") as response,
    ):
        assert response.status == 200

    assert [(item["method"], item["path"], item["status"]) for item in logged["items"]] == [
        ("GET", "/api/v1/namespaces/default", 200)
    ]
    assert emulator.requests() == []
    assert (await control.fault(action="latency", seconds=0))["latency"] == []


async def test_watches_are_dropped_and_history_compacted_over_http(
    core: client.CoreV1Api, emulator: KubeApiEmulator, control: Control
) -> None:
    old = emulator.create_pod(pod_manifest("p"))["metadata"]["resourceVersion"]
    emulator.create_pod(pod_manifest("q"))
    events: list[str] = []

    async def drop() -> int:
        assert (await control.get("watches"))["items"][0].startswith("/api/v1/pods?")
        dropped: int = (await control.fault(action="drop-watches"))["dropped"]
        return dropped

    compacted = await control.fault(action="compact")
    with pytest.raises(ApiException) as raised:
        await watch_pods_dropping_after_the_first_event(core, drop, events, resource_version=old)
    with pytest.raises(aiohttp.ClientPayloadError):
        await watch_pods_dropping_after_the_first_event(core, drop, events, field_selector="metadata.name=q")

    assert compacted["compactedResourceVersion"] == emulator.resource_version
    assert raised.value.status == 410
    assert events == ["ADDED"]


async def test_pause_and_resume_over_http(
    core: client.CoreV1Api, emulator: KubeApiEmulator, control: Control
) -> None:
    assert (await control.fault(action="pause"))["paused"] is True
    held = asyncio.ensure_future(core.list_namespace())
    await wait_until_logged(emulator, "/namespaces")

    assert (await control.get("faults"))["paused"] is True
    assert (await control.fault(action="resume"))["paused"] is False
    assert len((await held).items) == 2


async def test_unknown_fault_action_answers_400(control: Control, emulator: KubeApiEmulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.url}/_emulator/faults", json={"action": "explode"}) as response,
    ):
        body = await response.json()

    assert response.status == 400
    assert body["kind"] == "Status"


async def test_an_action_armed_before_a_put_makes_its_resource_version_stale(
    core: client.CoreV1Api, emulator: KubeApiEmulator
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = await core.read_namespaced_pod("p", "default")
    ran: list[str] = []

    def another_writer() -> None:
        ran.append("patched")
        emulator.patch_pod("default", "p", {"metadata": {"labels": {"by": "other"}}})

    emulator.faults.before_next(another_writer, method="PUT", path=r"/pods/p/status$")
    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_pod_status("p", "default", pod)
    fresh = await core.read_namespaced_pod("p", "default")
    await core.replace_namespaced_pod_status("p", "default", fresh)

    assert raised.value.status == 409
    assert ran == ["patched"], "the action runs once, before the first matching request only"
    assert emulator.get_pod("default", "p")["metadata"]["labels"] == {"by": "other"}
