"""What the engine asks during ADD: pods from the mirror (else a short wait, else one GET), NADs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from app.attach.cluster import ClusterUnavailableError
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.mirror_records import NadRecord
from app.watch.api import KubeApi
from app.watch.settings import WatchSettings
from tests.watch.support import (
    NETWORKS,
    NODE,
    Running,
    connected,
    eventually,
    mirrored_pods,
    nad_config,
    pod_manifest,
)

POD_PATH = r"/api/v1/namespaces/default/pods/{name}$"


def pod_gets(emulator: KubeApiEmulator, since: int, name: str) -> int:
    return len(emulator.requests(since=since, method="GET", path=POD_PATH.format(name=name)))


async def test_a_mirrored_pod_is_answered_without_asking_the_api(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    created = emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net1", "other": "x"}))
    await eventually(mirrored_pods(database), lambda pods: ("default", "p") in pods)
    since = emulator.last_request_seq

    pod = await running.watchers.pods.get_pod("default", "p")

    assert pod is not None
    assert (pod.namespace, pod.name, pod.uid, pod.node_name) == (
        "default",
        "p",
        created["metadata"]["uid"],
        NODE,
    )
    assert dict(pod.annotations) == {NETWORKS: "net1"}
    assert pod.resource_version == created["metadata"]["resourceVersion"]
    assert emulator.requests(since=since) == []


async def test_a_pod_not_mirrored_yet_is_waited_for_not_fetched(
    emulator: KubeApiEmulator, running: Running
) -> None:
    pods = running.watchers.pods
    emulator.faults.pause()  # hold the watch stream: the pod cannot reach the mirror before the call
    emulator.create_pod(pod_manifest("just-created"))
    since = emulator.last_request_seq

    lookup = asyncio.create_task(pods.get_pod("default", "just-created"))
    await eventually(lambda: asyncio.sleep(0, result=pods.waiting), lambda waiting: waiting == 1)
    emulator.faults.resume()
    async with asyncio.timeout(5):
        pod = await lookup

    assert pod is not None
    assert pod.name == "just-created"
    assert pod_gets(emulator, since, "just-created") == 0
    assert pods.live_gets == 0
    assert pods.waiting == 0


async def test_a_stalled_watch_falls_back_to_exactly_one_live_get(
    emulator: KubeApiEmulator, running: Running
) -> None:
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("/pods")
    emulator.faults.add_latency(30, path="/pods.*watch=true")
    emulator.drop_watches()
    created = emulator.create_pod(pod_manifest("stalled", annotations={NETWORKS: "net1"}))
    since = emulator.last_request_seq

    pod = await running.watchers.pods.get_pod("default", "stalled")

    assert pod is not None
    assert pod.uid == created["metadata"]["uid"]
    assert dict(pod.annotations) == {NETWORKS: "net1"}
    assert pod_gets(emulator, since, "stalled") == 1
    assert running.watchers.pods.live_gets == 1
    emulator.faults.clear_latency()


async def test_a_pod_that_does_not_exist_is_none(emulator: KubeApiEmulator, running: Running) -> None:
    since = emulator.last_request_seq

    pod = await running.watchers.pods.get_pod("default", "ghost")

    assert pod is None
    assert pod_gets(emulator, since, "ghost") == 1


async def test_a_failing_api_makes_an_unknown_pod_unavailable_not_absent(
    emulator: KubeApiEmulator, running: Running
) -> None:
    emulator.faults.fail_next(1, status=500, method="GET", path="/pods/ghost$")

    with pytest.raises(ClusterUnavailableError, match="ghost"):
        await running.watchers.pods.get_pod("default", "ghost")


async def test_an_unreachable_api_makes_an_unknown_pod_unavailable(
    emulator: KubeApiEmulator, tmp_path: Path, database: Database, settings: WatchSettings
) -> None:
    quick = dataclasses.replace(settings, request_timeout=0.2, pod_wait=0.1)
    async with (
        connected(emulator, tmp_path, quick) as api,
        Running.start(api=api, database=database, settings=quick) as running,
    ):
        emulator.faults.pause()

        with pytest.raises(ClusterUnavailableError) as raised:
            await running.watchers.pods.get_pod("default", "ghost")
        emulator.faults.resume()

    assert "no answer within 0.2 s" in str(raised.value)


async def test_nads_are_answered_from_the_mirror(emulator: KubeApiEmulator, running: Running) -> None:
    created = emulator.create_nad(
        "default", "net1", nad_config("net1"), annotations={"k8s.v1.cni.cncf.io/resourceName": "intel/sriov"}
    )
    nads = running.watchers.nads
    await eventually(lambda: nads.get_nad("default", "net1"), lambda nad: nad is not None)
    since = emulator.last_request_seq

    nad = await nads.get_nad("default", "net1")
    missing = await nads.get_nad("default", "net2")

    assert nad == NadRecord(
        namespace="default",
        name="net1",
        config=nad_config("net1"),
        resource_name="intel/sriov",
        uid=created["metadata"]["uid"],
        resource_version=created["metadata"]["resourceVersion"],
    )
    assert missing is None
    assert emulator.requests(since=since) == []


async def test_a_nad_lookup_waits_for_the_first_sync(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.create_nad("default", "net1", nad_config("net1"))
    emulator.faults.fail_next(2, status=500, path="network-attachment-definitions")

    async with Running.start(api=api, database=database, settings=settings, wait_synced=False) as running:
        assert not running.watchers.nad_states[0].synced.is_set()
        nad = await running.watchers.nads.get_nad("default", "net1")

    assert nad is not None
    assert nad.config == nad_config("net1")


async def test_a_nad_mirror_that_never_syncs_makes_lookups_unavailable(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.faults.fail_next(1000, status=403, path="network-attachment-definitions")
    quick = dataclasses.replace(settings, nad_sync_wait=0.2)

    async with Running.start(api=api, database=database, settings=quick, wait_synced=False) as running:
        with pytest.raises(ClusterUnavailableError, match="has not synced"):
            await running.watchers.nads.get_nad("default", "net1")
        # the pod mirror syncs on its own meanwhile (waited for: a loaded machine may be slower
        # than the NAD lookup's 0.2 s)
        await asyncio.wait_for(running.watchers.pod_state.synced.wait(), timeout=30)
    emulator.faults.clear()


async def test_a_synced_mirror_answers_from_memory_without_reading_the_store(
    emulator: KubeApiEmulator, running: Running, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net1"}))
    emulator.create_nad("default", "net1", nad_config("net1"))
    await eventually(mirrored_pods(database), lambda pods: ("default", "p") in pods)
    await eventually(lambda: running.watchers.nads.get_nad("default", "net1"), lambda nad: nad is not None)
    stored = (await mirrored_pods(database)())[("default", "p")]

    async def no_read(work: object) -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(database, "read", no_read)
    pod = await running.watchers.pods.get_pod("default", "p")
    nad = await running.watchers.nads.get_nad("default", "net1")
    missing = await running.watchers.nads.get_nad("default", "absent")

    assert pod == stored
    assert nad is not None
    assert nad.config == nad_config("net1")
    assert missing is None
