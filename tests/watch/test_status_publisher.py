"""network-status: one PATCH of pods/status, else GET + PUT as upstream; pod events that never wait."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from app.attach.cluster import (
    NETWORK_STATUS_ANNOTATION,
    ClusterUnavailableError,
    InterfaceEvent,
    StatusWriteRefusedError,
)
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi
from app.watch.podevents import PodEventPoster
from app.watch.settings import WatchSettings
from app.watch.status import ApiStatusPublisher, StatusWriteUnavailableError
from tests.watch.support import NODE, pod_manifest

STATUS = json.dumps([{"name": "default/net1", "interface": "net1", "ips": ["10.1.0.5"], "dns": {}}], indent=4)
EVENT = InterfaceEvent(ifname="net1", addresses=("10.1.0.5/24", "fd00::5/64"), network_name="default/net1")


@pytest.fixture
async def poster(api: KubeApi, settings: WatchSettings) -> AsyncIterator[PodEventPoster]:
    poster = PodEventPoster(api=api, settings=settings, node_name=NODE)
    task = asyncio.create_task(poster.run(), name="test.events")
    yield poster
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def publisher(api: KubeApi, settings: WatchSettings, poster: PodEventPoster) -> ApiStatusPublisher:
    return ApiStatusPublisher(api=api, settings=settings, events=poster)


def pod_info(emulator: KubeApiEmulator, name: str) -> PodRecord:
    pod = emulator.get_pod("default", name)
    metadata = pod["metadata"]
    return PodRecord(
        namespace="default",
        name=name,
        uid=metadata["uid"],
        node_name=NODE,
        resource_version=metadata["resourceVersion"],
    )


async def test_network_status_is_written_with_one_patch_and_no_get(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p", annotations={"keep": "me"}))
    pod = pod_info(emulator, "p")
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod, STATUS)

    annotations = emulator.get_pod("default", "p")["metadata"]["annotations"]
    assert annotations == {"keep": "me", NETWORK_STATUS_ANNOTATION: STATUS}
    requests = emulator.requests(since=since)
    assert [(record.method, record.path, record.status) for record in requests] == [
        ("PATCH", "/api/v1/namespaces/default/pods/p/status", 200)
    ]
    assert requests[0].content_type == "application/merge-patch+json"
    assert publisher.published == 1


async def test_a_deleted_pod_is_not_an_error(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    emulator.delete_pod("default", "p")

    await publisher.publish_network_status(pod, STATUS)

    assert publisher.skipped == 1
    assert publisher.published == 0


@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_a_404_that_does_not_name_the_pod_is_no_word_that_it_is_gone(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, method: str
) -> None:
    """A 404 whose ``Status`` names no pod (a proxy's, a path prefix the server does not serve; a
    fault injected here) says nothing of the pod: taken for "deleted", the write was skipped for
    good (its background retry counted moot, its mark cleared), and the running pod never got its
    network-status. It is an outage, retried later; the API's own 404 names the pod (above)."""
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    if method == "GET":
        refuse_patch_as_upstreams_role_does(emulator)
    emulator.faults.fail_next(
        1, status=404, method=method, path="/pods/p(/status)?$", message="404 page not found"
    )

    with pytest.raises(StatusWriteUnavailableError, match="does not name the pod"):
        await publisher.publish_network_status(pod, STATUS)
    assert publisher.skipped == 0

    assert await publisher.publish_network_status(pod, STATUS) is True, "the API's answer, once it comes"
    assert emulator.get_pod("default", "p")["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] == STATUS
    emulator.faults.clear()


@pytest.mark.parametrize("status", [409, 429, 500, 503])
async def test_a_transient_refusal_is_retried_and_succeeds(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, status: int
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    emulator.faults.fail_next(1, status=status, method="PATCH")
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod, STATUS)

    assert [record.status for record in emulator.requests(since=since)] == [status, 200]
    assert emulator.get_pod("default", "p")["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] == STATUS


async def test_a_lasting_failure_gives_up_quickly_as_unavailable(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(100, status=500, method="PATCH")
    since = emulator.last_request_seq

    with pytest.raises(ClusterUnavailableError, match="network-status of pod default/p"):
        await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert len(emulator.requests(since=since)) == 1 + len(settings.status_retry_delays)
    emulator.faults.clear()


def refuse_patch_as_upstreams_role_does(emulator: KubeApiEmulator) -> None:
    """Upstream's ClusterRole grants get/update of pods/status, not patch: every PATCH is 403."""
    emulator.faults.fail_next(
        1000,
        status=403,
        method="PATCH",
        path="/pods/[^/]+/status",
        reason="Forbidden",
        message='pods "p" is forbidden: User "system:serviceaccount:kube-system:multus" cannot patch '
        'resource "pods/status" in API group "" in the namespace "default"',
    )


def calls(emulator: KubeApiEmulator, since: int) -> list[tuple[str, str, int | None]]:
    return [(record.method, record.path, record.status) for record in emulator.requests(since=since)]


POD_P = "/api/v1/namespaces/default/pods/p"


async def test_a_refused_patch_falls_back_to_get_and_put_and_is_remembered(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p", annotations={"keep": "me"}))
    emulator.create_pod(pod_manifest("q"))
    refuse_patch_as_upstreams_role_does(emulator)
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    annotations = emulator.get_pod("default", "p")["metadata"]["annotations"]
    assert annotations == {"keep": "me", NETWORK_STATUS_ANNOTATION: STATUS}
    assert calls(emulator, since) == [
        ("PATCH", f"{POD_P}/status", 403),
        ("GET", POD_P, 200),
        ("PUT", f"{POD_P}/status", 200),
    ]
    assert publisher.put_only
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod_info(emulator, "q"), STATUS)

    assert calls(emulator, since) == [
        ("GET", "/api/v1/namespaces/default/pods/q", 200),
        ("PUT", "/api/v1/namespaces/default/pods/q/status", 200),
    ], "no PATCH once it was refused"
    assert emulator.get_pod("default", "q")["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] == STATUS
    assert publisher.published == 2
    emulator.faults.clear()


async def test_a_write_between_get_and_put_is_a_conflict_retried_with_a_fresh_get(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p"))
    refuse_patch_as_upstreams_role_does(emulator)
    # another writer (the kubelet, a controller) changes the pod after our GET, before our PUT
    emulator.faults.before_next(
        lambda: emulator.patch_pod("default", "p", {"metadata": {"labels": {"by": "other"}}}),
        method="PUT",
        path="/pods/p/status",
    )
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert calls(emulator, since) == [
        ("PATCH", f"{POD_P}/status", 403),
        ("GET", POD_P, 200),
        ("PUT", f"{POD_P}/status", 409),
        ("GET", POD_P, 200),
        ("PUT", f"{POD_P}/status", 200),
    ]
    metadata = emulator.get_pod("default", "p")["metadata"]
    assert metadata["annotations"][NETWORK_STATUS_ANNOTATION] == STATUS
    assert metadata["labels"] == {"by": "other"}, "the other writer's change is kept, not overwritten"
    assert publisher.put_conflicts == 1
    emulator.faults.clear()


async def test_conflicts_that_never_stop_give_up_after_a_bounded_number_of_attempts(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("p"))
    refuse_patch_as_upstreams_role_does(emulator)
    counter = iter(range(1000))
    emulator.faults.before_next(
        lambda: emulator.patch_pod("default", "p", {"metadata": {"labels": {"n": str(next(counter))}}}),
        100,
        method="PUT",
    )
    since = emulator.last_request_seq

    with pytest.raises(ClusterUnavailableError, match="kept changing between GET and PUT"):
        await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    puts = [status for method, _, status in calls(emulator, since) if method == "PUT"]
    assert puts == [409] * (1 + len(settings.status_retry_delays))
    assert NETWORK_STATUS_ANNOTATION not in (
        emulator.get_pod("default", "p")["metadata"].get("annotations") or {}
    )
    emulator.faults.clear()


async def test_get_and_put_never_writes_a_pod_recreated_under_the_same_name(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p"))
    old = pod_info(emulator, "p")
    emulator.delete_pod("default", "p")
    emulator.create_pod(pod_manifest("p"))
    refuse_patch_as_upstreams_role_does(emulator)
    since = emulator.last_request_seq

    await publisher.publish_network_status(old, STATUS)

    assert [method for method, _, _ in calls(emulator, since)] == ["PATCH", "GET"], "no PUT"
    assert NETWORK_STATUS_ANNOTATION not in (
        emulator.get_pod("default", "p")["metadata"].get("annotations") or {}
    )
    assert publisher.skipped == 1
    emulator.faults.clear()


async def test_a_put_refused_too_is_an_error_naming_the_refusal(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p"))
    refuse_patch_as_upstreams_role_does(emulator)
    emulator.faults.fail_next(1, status=403, method="PUT")
    since = emulator.last_request_seq

    with pytest.raises(StatusWriteRefusedError, match="403"):  # for good: retried only rarely
        await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert [status for _, _, status in calls(emulator, since)] == [403, 200, 403], "403 is not retried"
    emulator.faults.clear()


async def test_an_unauthorized_write_is_retried_soon_not_refused_for_good(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    """A 401 was taken for a refusal for good, so the background retries backed off to ten minutes,
    though the token the next read of its file brings (each minute) makes the write land."""
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(1, status=401, method="PATCH")

    with pytest.raises(StatusWriteUnavailableError, match="401") as raised:
        await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert not isinstance(raised.value, StatusWriteRefusedError)
    emulator.faults.clear()


async def test_a_conflict_the_server_keeps_answering_is_a_write_not_landed_not_a_replaced_pod(
    emulator: KubeApiEmulator,
    publisher: ApiStatusPublisher,
    settings: WatchSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lasting 409 on the PATCH was taken for "the pod now has another uid" and the write given
    up as done: nothing retried it, and the log blamed a uid the pod still had. The API server
    refuses a patch's uid with 422; a 409 says only that the write did not land."""
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(100, status=409, method="PATCH")
    since = emulator.last_request_seq

    with pytest.raises(StatusWriteUnavailableError, match="kept answering 409 Conflict"):
        await publisher.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert [status for _, _, status in calls(emulator, since)] == [409] * (
        1 + len(settings.status_retry_delays)
    )
    assert publisher.skipped == 0
    assert "another uid" not in caplog.text
    emulator.faults.clear()


async def test_a_pod_recreated_under_the_same_name_does_not_get_its_predecessors_status(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p"))
    old = pod_info(emulator, "p")
    emulator.delete_pod("default", "p")
    emulator.create_pod(pod_manifest("p"))

    await publisher.publish_network_status(old, STATUS)

    # The patch carries the old pod's uid: the API server refuses it (422: metadata.uid is
    # immutable), which the publisher takes as "that pod is gone", not as an error.
    annotations = emulator.get_pod("default", "p")["metadata"].get("annotations") or {}
    assert "k8s.v1.cni.cncf.io/network-status" not in annotations
    assert publisher.foreign_writes == 0
    assert publisher.skipped == 1


async def test_interface_events_are_posted_in_the_background(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, poster: PodEventPoster
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")

    publisher.emit_interface_events(pod, [EVENT, InterfaceEvent("net2", (), "")])
    queued = poster.pending
    async with asyncio.timeout(5):
        await poster.drained()

    assert queued == 2
    events = emulator.events("default")
    assert [event["message"] for event in events] == [
        "Add net1 [10.1.0.5/24 fd00::5/64] from default/net1",
        "Add net2 []",
    ]
    first = events[0]
    assert first["reason"] == "AddedInterface"
    assert first["type"] == "Normal"
    assert first["source"]["component"] == "multus"
    assert first["reportingComponent"] == "multus"
    assert first["involvedObject"]["kind"] == "Pod"
    assert first["involvedObject"]["name"] == "p"
    assert first["involvedObject"]["uid"] == pod.uid
    assert poster.posted == 2


async def test_a_full_event_queue_drops_instead_of_blocking(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, poster: PodEventPoster, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    emulator.faults.pause()  # the API hangs: the first event's POST does not return
    publisher.emit_interface_events(pod, [EVENT])
    async with asyncio.timeout(5):
        await emulator.wait_for_request(method="POST", path="/events")

    publisher.emit_interface_events(pod, [EVENT] * 20)

    assert poster.pending == settings.event_queue_size
    assert poster.dropped == 20 - settings.event_queue_size
    emulator.faults.resume()
    async with asyncio.timeout(5):
        await poster.drained()
    assert poster.posted == 1 + settings.event_queue_size
    assert len(emulator.events("default")) == 1 + settings.event_queue_size


async def test_a_hanging_api_server_is_given_up_on_at_the_deadline(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings, poster: PodEventPoster
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    hasty = ApiStatusPublisher(
        api=api, settings=dataclasses.replace(settings, status_deadline=0.2), events=poster
    )
    emulator.faults.pause()

    with pytest.raises(ClusterUnavailableError, match=r"no success within 0\.2 s"):
        await hasty.publish_network_status(pod, STATUS)
    emulator.faults.resume()


async def test_events_offered_to_an_idle_poster_wait_the_delay_then_all_go_in_order(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("p"))
    pod = pod_info(emulator, "p")
    poster = PodEventPoster(api=api, settings=dataclasses.replace(settings, event_delay=0.5), node_name=NODE)
    task = asyncio.create_task(poster.run(), name="test.events")
    try:
        poster.offer(pod, [EVENT])
        await asyncio.sleep(0.1)
        poster.offer(pod, [InterfaceEvent("net2", (), "")])
        posted_early = emulator.requests(method="POST", path="/events")
        async with asyncio.timeout(5):
            await poster.drained()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert posted_early == [], "nothing is posted before the delay has passed"
    assert [event["message"] for event in emulator.events("default")] == [
        "Add net1 [10.1.0.5/24 fd00::5/64] from default/net1",
        "Add net2 []",
    ]
    assert poster.posted == 2


def too_large_status() -> str:
    """A network-status past the API server's 256 KiB cap on a pod's annotations by itself (a few
    hundred networks with device-info; one delegate printing a huge result does it too)."""
    entry = {"name": "sriov/net", "interface": "net1", "ips": ["10.1.0.5"], "dns": {}, "device-info": {}}
    return json.dumps([entry] * 3000, indent=4)


async def test_a_status_too_large_for_any_pod_is_never_sent_and_the_stale_one_is_removed(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, poster: PodEventPoster
) -> None:
    emulator.create_pod(pod_manifest("p", annotations={NETWORK_STATUS_ANNOTATION: STATUS, "keep": "me"}))
    since = emulator.last_request_seq

    await publisher.publish_network_status(pod_info(emulator, "p"), too_large_status())

    assert calls(emulator, since) == [("PATCH", f"{POD_P}/status", 200)], "one PATCH: the removal"
    assert emulator.get_pod("default", "p")["metadata"]["annotations"] == {"keep": "me"}
    assert (publisher.too_large, publisher.published) == (1, 0)
    async with asyncio.timeout(5):
        await poster.drained()
    [event] = emulator.events("default")
    assert (event["type"], event["reason"]) == ("Warning", "NetworkStatusTooLarge")
    assert "3000 entries" in event["message"]


async def test_under_upstreams_role_a_status_too_large_is_removed_with_get_and_put(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher
) -> None:
    emulator.create_pod(pod_manifest("p", annotations={NETWORK_STATUS_ANNOTATION: STATUS, "keep": "me"}))
    refuse_patch_as_upstreams_role_does(emulator)

    await publisher.publish_network_status(pod_info(emulator, "p"), too_large_status())

    assert emulator.get_pod("default", "p")["metadata"]["annotations"] == {"keep": "me"}
    assert publisher.too_large == 1
    emulator.faults.clear()


async def test_a_retry_after_longer_than_the_deadline_leaves_is_not_waited_for(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings, poster: PodEventPoster
) -> None:
    emulator.create_pod(pod_manifest("p"))
    hasty = ApiStatusPublisher(
        api=api, settings=dataclasses.replace(settings, status_deadline=0.5), events=poster
    )
    emulator.faults.fail_next(1, status=429, retry_after=1, method="PATCH")
    since = emulator.last_request_seq

    with pytest.raises(ClusterUnavailableError, match="HTTP 429"):  # not "no success within"
        await hasty.publish_network_status(pod_info(emulator, "p"), STATUS)

    assert [status for _, _, status in calls(emulator, since)] == [429], "no second request"


async def test_an_event_the_api_refuses_is_counted_once_and_never_posted_again(
    emulator: KubeApiEmulator, publisher: ApiStatusPublisher, poster: PodEventPoster
) -> None:
    emulator.create_pod(pod_manifest("p"))
    emulator.faults.fail_next(1, status=422, method="POST", path="/events", message="message: Too long")
    since = emulator.last_request_seq

    publisher.emit_interface_events(pod_info(emulator, "p"), [EVENT])
    async with asyncio.timeout(5):
        await poster.drained()

    assert [status for _, _, status in calls(emulator, since)] == [422]
    assert (poster.failed, poster.posted) == (1, 0)


async def test_queued_events_keep_only_the_pods_identity_not_its_annotations(
    emulator: KubeApiEmulator, api: KubeApi, settings: WatchSettings
) -> None:
    """A burst of ADDs whose events cannot be posted (the API hangs) fills the queue; each queued
    event held the pod's record, its networks annotation (up to 256 KiB) with it: a full queue
    could keep tens of MiB alive. It keeps the pod's namespace, name, uid and resourceVersion."""
    poster = PodEventPoster(
        api=api, settings=dataclasses.replace(settings, event_queue_size=64), node_name=NODE
    )
    annotation_size = 256 * 1024
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(64):
            pod = PodRecord(
                namespace="default",
                name=f"p{index}",
                uid=f"uid-{index}",
                annotations={"k8s.v1.cni.cncf.io/networks": str(index) * annotation_size},
            )
            poster.offer(pod, [EVENT])
        del pod
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert poster.pending == 64
    assert held < 64 * annotation_size // 4, f"{held} bytes held by 64 queued events"
