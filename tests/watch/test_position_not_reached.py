"""A saved watch position the API server has not reached: its store went back in time.

An etcd restored from a backup without ``etcdutl --bump-revision`` (or a cluster rebuilt under a
node that kept its state directory) serves resourceVersions older than the ones the daemon saved.
A watch from a saved one waits silently for a version that may never come, so a resumed mirror
that counted as synced after a quiet stream would keep the old world for ever (pods and NADs that
no longer exist, none of the restored ones), which GC and ADD trust. The rule: a resumed position
counts only once a LIST at it has been answered; a 504 naming the cause ``ResourceVersionTooLarge``
(on that LIST or on any watch) forgets it and relists; a 504 without that cause stays transient.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from functools import partial
from pathlib import Path

import pytest

from app.sandbox.kubeapi import KubeApiEmulator
from app.store import mirror
from app.store.database import Database
from app.watch import watching
from app.watch.api import KubeApi
from app.watch.errors import ApiResourceVersionTooLargeError, ApiTransientError
from app.watch.mirroring import MirrorWriter
from app.watch.readiness import MirrorState
from app.watch.resources import parse_event, pods_on_node
from app.watch.settings import WatchSettings
from tests.watch.support import (
    NODE,
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

PODS = pods_on_node(NODE, kept_annotations=())
TOO_LARGE = "ResourceVersionTooLarge"


async def restarted_writer(*, api: KubeApi, database: Database, settings: WatchSettings) -> MirrorWriter:
    """The pod watch's writer of a restarted daemon: a position stored by an earlier one (its
    relist), resumed by ``infinite_watch``; not synced yet."""
    earlier = MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))
    await watching.relist(api=api, writer=earlier, settings=settings)
    return MirrorWriter(database=database, target=PODS, state=MirrorState("pods"))


async def test_a_cluster_restored_from_an_older_backup_is_relisted_before_the_mirror_counts_as_synced(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings, tmp_path: Path
) -> None:
    old_world = emulator
    old_world.create_pod(pod_manifest("only-old"))
    old_world.create_pod(pod_manifest("in-both"))
    old_world.create_nad("default", "only-old", nad_config("old"))
    for index in range(20):  # revisions the restored store has not reached
        old_world.create_namespace(f"filler-{index}")
    async with Running.start(api=api, database=database, settings=settings):
        await eventually(mirrored_pods(database), lambda pods: len(pods) == 2)
    saved = await watch_state(database, "pods")()
    assert saved is not None

    async with KubeApiEmulator(bookmark_interval=0.2) as restored:
        in_both = restored.create_pod(pod_manifest("in-both"))
        restored.create_pod(pod_manifest("only-restored"))
        restored.create_nad("default", "only-restored", nad_config("new"))
        assert int(restored.resource_version) < int(saved.resource_version)
        (tmp_path / "restored").mkdir()
        async with (
            connected(restored, tmp_path / "restored", settings) as restored_api,
            Running.start(api=restored_api, database=database, settings=settings) as running,
        ):
            pods_when_synced = await mirrored_pods(database)()  # Running.start waited for the sync
            nads_when_synced = await mirrored_nads(database)()
            checks = position_checks_since(restored, 0)
            relists = lists_since(restored, 0)

    assert sorted(pods_when_synced) == [("default", "in-both"), ("default", "only-restored")]
    assert pods_when_synced[("default", "in-both")].uid == in_both["metadata"]["uid"]
    assert sorted(nads_when_synced) == [("default", "only-restored")]
    assert running.watchers.pod_state.relists == running.watchers.nad_states[0].relists == 1
    assert len(checks) == 2, "one position check per watch"
    assert len(relists) == 2, "one relist per watch"


@pytest.mark.parametrize(
    "refused", ["position check", "watch"], ids=["on-the-position-check", "on-the-watch"]
)
async def test_a_position_the_server_says_it_has_not_reached_is_relisted_not_retried_for_ever(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings, refused: str
) -> None:
    emulator.create_pod(pod_manifest("p"))
    writer = await restarted_writer(api=api, database=database, settings=settings)
    position = emulator.resource_version
    path = "/pods.*resourceVersionMatch=NotOlderThan" if refused == "position check" else "/pods.*watch=true"
    emulator.faults.fail_next(1, status=504, cause=TOO_LARGE, retry_after=1, path=path)
    emulator.create_pod(pod_manifest("q"))  # the relist's position differs from the refused one
    since = emulator.last_request_seq

    loop = asyncio.create_task(watching.infinite_watch(api=api, writer=writer, settings=settings))
    try:
        async with asyncio.timeout(5):
            await writer.state.synced.wait()
            await emulator.wait_for_watch(f"resourceVersion={writer.resource_version}&")
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

    assert writer.state.relists == 1
    assert len(lists_since(emulator, since)) == 1
    asked_again = [
        path for path in watches_since(emulator, since, "/pods") if f"resourceVersion={position}&" in path
    ]
    assert len(asked_again) == (1 if refused == "watch" else 0), "the refused position was asked again"


async def test_a_504_without_that_cause_is_retried_from_the_same_position_after_a_backoff(
    emulator: KubeApiEmulator,
    api: KubeApi,
    database: Database,
    settings: WatchSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API server timing out (504 with no cause) is an ordinary outage: no relist, whose full
    LIST would only add to its load; the watch comes back from where it was, after a backoff."""
    delays: list[float] = []

    async def record(delay: float, stop: asyncio.Event | None) -> None:
        delays.append(delay)

    monkeypatch.setattr(watching, "_sleep_unless_stopped", record)
    writer = await restarted_writer(api=api, database=database, settings=settings)
    position = emulator.resource_version
    emulator.faults.fail_next(1, status=504, path="/pods.*watch=true")
    since = emulator.last_request_seq

    await watching.infinite_watch(api=api, writer=writer, settings=settings, _iterations=1)

    assert writer.state.errors == 1
    assert (writer.state.last_error or "").startswith("ApiTransientError: HTTP 504")
    assert len(delays) == 1
    assert delays[0] > 0
    assert writer.resource_version == position
    assert lists_since(emulator, since) == []
    assert writer.state.relists == 0


@pytest.mark.parametrize(
    ("causes", "expected"),
    [
        ([{"reason": TOO_LARGE, "message": "Too large resource version"}], ApiResourceVersionTooLargeError),
        ([], ApiTransientError),
    ],
    ids=["with-the-cause", "without"],
)
def test_a_watch_error_event_is_classified_by_its_status_cause_not_its_message(
    causes: list[dict[str, str]], expected: type[Exception]
) -> None:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "Timeout: Too large resource version: 900, current: 12",
        "reason": "Timeout",
        "code": 504,
        "details": {"causes": causes, "retryAfterSeconds": 1},
    }
    line = json.dumps({"type": "ERROR", "object": status}).encode()

    with pytest.raises(ApiTransientError) as raised:
        parse_event(PODS, line)

    assert type(raised.value) is expected


async def watch_until_relisted(*, api: KubeApi, writer: MirrorWriter, settings: WatchSettings) -> None:
    """Run the writer's watch until it has relisted once."""

    async def relists() -> int:
        return writer.state.relists

    loop = asyncio.create_task(watching.infinite_watch(api=api, writer=writer, settings=settings))
    try:
        await eventually(relists, lambda count: count == 1)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def synced_writer_beyond_the_server(
    *, api: KubeApi, emulator: KubeApiEmulator, database: Database, settings: WatchSettings
) -> MirrorWriter:
    """A running daemon's synced pod watch whose position the server has not reached: the API
    server came back on a store restored from an older backup while the daemon kept running."""
    writer = await restarted_writer(api=api, database=database, settings=settings)
    beyond = str(int(emulator.resource_version) + 1000)
    await database.write(
        partial(mirror.record_progress, key=PODS.key, resource_version=beyond, events=1, at=None)
    )
    writer.state.mark_synced()
    return writer


async def test_after_an_outage_a_running_watch_checks_its_position_before_watching_from_it_again(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """An etcd restore takes the API servers down and up again: the running daemon's watch fails,
    then would reconnect from its position, one the restored store has not reached, and hear
    nothing of the restored world for ever while its mirror counts as synced."""
    writer = await synced_writer_beyond_the_server(
        api=api, emulator=emulator, database=database, settings=settings
    )
    emulator.faults.fail_next(1, status=503, path="/pods.*watch=true")
    since = emulator.last_request_seq

    await watch_until_relisted(api=api, writer=writer, settings=settings)

    assert writer.state.errors == 1
    assert len(position_checks_since(emulator, since)) == 1
    assert len(lists_since(emulator, since)) == 1


async def test_a_stream_that_heard_nothing_not_even_a_bookmark_has_its_position_checked(
    emulator: KubeApiEmulator, api: KubeApi, database: Database, settings: WatchSettings
) -> None:
    """A watch from a position the server has not reached waits silently: no event, no bookmark.
    Once a stream has heard nothing for the inactivity window, the position is checked."""
    quick = dataclasses.replace(settings, watch_inactivity_timeout=0.3)
    writer = await synced_writer_beyond_the_server(
        api=api, emulator=emulator, database=database, settings=quick
    )
    since = emulator.last_request_seq

    await watch_until_relisted(api=api, writer=writer, settings=quick)

    assert writer.state.errors == 0
    assert len(position_checks_since(emulator, since)) == 1
    assert len(lists_since(emulator, since)) == 1
