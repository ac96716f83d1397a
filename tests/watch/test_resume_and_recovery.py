"""Restarts, expired history, dropped streams and outages: the mirror recovers without a leak."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.watch.api import KubeApi
from app.watch.settings import WatchSettings
from tests.watch.support import (
    NODE,
    OTHER_NODE,
    Running,
    connected,
    eventually,
    lists_since,
    mirrored_nads,
    mirrored_pods,
    nad_config,
    pod_manifest,
    position_checks_since,
    watch_state,
    watches_since,
)


async def test_a_restarted_watcher_resumes_from_the_stored_resource_version_without_listing(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """A healthy restart costs each watch one LIST of at most one object at its saved position
    (the server shows it has reached it), never a full relist."""
    emulator.create_pod(pod_manifest("gone-while-down"))
    emulator.create_nad("default", "old", nad_config("old"))
    async with Running.start(api=api, database=database, settings=settings):
        await eventually(mirrored_pods(database), lambda pods: len(pods) == 1)
    stored = await watch_state(database, "pods")()
    stored_nads = await watch_state(database, "nads")()
    assert stored is not None
    assert stored_nads is not None
    emulator.delete_pod("default", "gone-while-down")
    emulator.create_pod(pod_manifest("new-while-down"))
    emulator.create_nad("default", "new", nad_config("new"))
    since = emulator.last_request_seq

    async with Running.start(api=api, database=database, settings=settings) as running:
        pods = await eventually(mirrored_pods(database), lambda pods: ("default", "new-while-down") in pods)
        nads = await eventually(mirrored_nads(database), lambda nads: len(nads) == 2)

    assert list(pods) == [("default", "new-while-down")]
    assert sorted(nads) == [("default", "new"), ("default", "old")]
    assert lists_since(emulator, since) == []
    assert sorted(position_checks_since(emulator, since)) == [
        "/api/v1/pods?limit=1&resourceVersion="
        f"{stored.resource_version}&resourceVersionMatch=NotOlderThan&fieldSelector=spec.nodeName%3D{NODE}",
        "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions?limit=1&resourceVersion="
        f"{stored_nads.resource_version}&resourceVersionMatch=NotOlderThan",
    ]
    assert f"resourceVersion={stored.resource_version}" in watches_since(emulator, since, "/pods")[0]
    assert running.watchers.pod_state.relists == 0
    assert running.watchers.synced


async def test_an_expired_resource_version_relists_and_reconciles_deletions(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("deleted-meanwhile"))
    emulator.create_pod(pod_manifest("kept"))
    emulator.create_nad("default", "deleted-meanwhile", nad_config("x"))
    async with Running.start(api=api, database=database, settings=settings):
        await eventually(mirrored_pods(database), lambda pods: len(pods) == 2)
    emulator.delete_pod("default", "deleted-meanwhile")
    emulator.delete_nad("default", "deleted-meanwhile")
    emulator.create_pod(pod_manifest("created-meanwhile"))
    emulator.compact()
    since = emulator.last_request_seq

    async with Running.start(api=api, database=database, settings=settings) as running:
        pods = await eventually(
            mirrored_pods(database), lambda pods: ("default", "created-meanwhile") in pods
        )
        nads = await mirrored_nads(database)()
        state = await watch_state(database, "pods")()

    assert sorted(pods) == [("default", "created-meanwhile"), ("default", "kept")]
    assert nads == {}
    assert running.watchers.pod_state.relists == 1
    assert state is not None
    assert state.relists == 2
    expired = next(record for record in emulator.requests(since=since, path=r"/api/v1/pods\?watch=true"))
    relist = rf"/api/v1/pods\?limit={settings.list_page_size}&"  # not the position check (limit=1)
    relisted = next(record for record in emulator.requests(since=since, path=relist))
    assert expired.seq < relisted.seq


async def test_dropped_watches_reconnect_from_where_they_were(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    async with asyncio.timeout(5):
        await emulator.wait_for_watch("/pods")
        await emulator.wait_for_watch("network-attachment-definitions")
    since = emulator.last_request_seq

    assert emulator.drop_watches() == 2
    emulator.create_pod(pod_manifest("after-drop"))
    emulator.create_nad("default", "after-drop", nad_config("x"))

    await eventually(mirrored_pods(database), lambda pods: ("default", "after-drop") in pods)
    await eventually(mirrored_nads(database), lambda nads: ("default", "after-drop") in nads)
    assert lists_since(emulator, since) == []
    assert watches_since(emulator, since, "/pods")
    assert running.watchers.pod_state.relists == 1


async def test_an_outage_backs_off_keeps_serving_the_synced_mirror_and_recovers(
    emulator: KubeApiEmulator, running: Running, database: Database
) -> None:
    emulator.create_pod(pod_manifest("before"))
    await eventually(mirrored_pods(database), lambda pods: len(pods) == 1)
    since = emulator.last_request_seq
    emulator.faults.fail_next(4, status=500, path="/pods")
    emulator.faults.fail_next(4, status=503, path="network-attachment-definitions")

    emulator.drop_watches()
    emulator.create_pod(pod_manifest("during"))
    await eventually(
        lambda: asyncio.sleep(0, result=running.watchers.pod_state.errors), lambda errors: errors >= 1
    )
    served = await running.watchers.pods.get_pod("default", "before")

    assert running.watchers.synced
    assert served is not None
    pods = await eventually(mirrored_pods(database), lambda pods: len(pods) == 2)
    assert sorted(pods) == [("default", "before"), ("default", "during")]
    failed = [record.status for record in emulator.requests(since=since) if record.status in (500, 503)]
    assert len(failed) == 8
    assert running.watchers.pod_state.errors == 1 + 4  # the dropped stream, then four refusals
    assert lists_since(emulator, since) == []


async def test_a_paused_api_server_is_waited_out(
    emulator: KubeApiEmulator, tmp_path: Path, database: Database, settings: WatchSettings
) -> None:
    quick = dataclasses.replace(settings, request_timeout=0.2, watch_inactivity_timeout=0.5)
    async with (
        connected(emulator, tmp_path, quick) as api,
        Running.start(api=api, database=database, settings=quick) as running,
    ):
        emulator.faults.pause()
        emulator.create_pod(pod_manifest("during-pause"))
        await eventually(
            lambda: asyncio.sleep(0, result=running.watchers.pod_state.errors), lambda errors: errors >= 1
        )
        assert running.watchers.synced
        emulator.faults.resume()

        pods = await eventually(mirrored_pods(database), lambda pods: len(pods) == 1)

    assert list(pods) == [("default", "during-pause")]


async def test_a_changed_node_name_relists_instead_of_resuming(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    emulator.create_pod(pod_manifest("on-a", node=NODE))
    emulator.create_pod(pod_manifest("on-b", node=OTHER_NODE))
    async with Running.start(api=api, database=database, settings=settings):
        await eventually(mirrored_pods(database), lambda pods: len(pods) == 1)

    async with Running.start(api=api, database=database, node_name=OTHER_NODE, settings=settings) as running:
        pods = await mirrored_pods(database)()

    assert list(pods) == [("default", "on-b")]
    assert running.watchers.pod_state.relists == 1
