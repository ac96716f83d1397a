"""Sightings (pods a live GET found while the pod watch lagged) never outlive what the watch has
already seen: whatever order the GET's answer and the watch's commits take, GC is not told of a
pod the watch saw deleted, neither as present (its leftover sandbox is never collected) nor in
place of its successor (whose live sandbox GC would collect as "pod-replaced").

The writer's order of events is driven directly: a GET's answer handled (``note_sighting``) after
commits the watch made meanwhile.
"""

from __future__ import annotations

import time
from typing import cast

import pytest

from app.attach.cluster import ClusterUnavailableError
from app.store.database import Database
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi
from app.watch.mirroring import RECENT_DELETIONS_KEPT, MirrorWriter
from app.watch.readiness import MirrorState
from app.watch.resources import Delete, Upsert, pods_on_node
from app.watch.sources import MirrorPodPresence
from tests.watch.support import NETWORKS, NODE

KEY = ("default", "web")
FIRST = PodRecord("default", "web", "uid-first", NODE, "11")
SECOND = PodRecord("default", "web", "uid-second", NODE, "13")
NO_API = cast(KubeApi, object())
"""What the presence is built with here: telling GC of the node's pods never asks the API."""


@pytest.fixture
async def writer(database: Database) -> MirrorWriter:
    """A pod writer synced by a relist of an empty node."""
    writer = MirrorWriter(
        database=database,
        target=pods_on_node(NODE, kept_annotations=(NETWORKS,)),
        state=MirrorState("pods"),
    )
    await writer.write_snapshot([], "10", listed_at=time.monotonic())
    return writer


async def told(writer: MirrorWriter, database: Database) -> dict[tuple[str, str], str]:
    """What GC is told of this node's pods: {(namespace, name): uid}."""
    presence = MirrorPodPresence(
        database=database, state=writer.state, api=NO_API, node_name=NODE, memory=writer
    )
    pods = await presence.pods_on_node()
    assert pods is not None, "the mirror has synced"
    return dict(pods)


async def test_a_pod_sighted_after_the_watch_saw_it_created_and_deleted_is_gone(
    writer: MirrorWriter, database: Database
) -> None:
    """The GET answered; before its answer was handled the watch committed the pod's ADDED and
    DELETED. The sighting was kept, and nothing but the next relist ended it: GC took the
    deleted pod for present."""
    answered_at = time.monotonic()
    await writer.write_batch([Upsert(FIRST)])
    await writer.write_batch([Delete(KEY, "12")])

    writer.note_sighting(FIRST, answered_at=answered_at)

    assert writer.sightings() == []
    assert await told(writer, database) == {}


async def test_a_pod_created_and_deleted_in_one_batch_before_its_sighting_is_gone(
    writer: MirrorWriter, database: Database
) -> None:
    answered_at = time.monotonic()
    await writer.write_batch([Upsert(FIRST), Delete(KEY, "12")])

    writer.note_sighting(FIRST, answered_at=answered_at)

    assert await told(writer, database) == {}


async def test_a_late_sighting_of_a_deleted_pod_does_not_hide_its_successor(
    writer: MirrorWriter, database: Database
) -> None:
    """The worse error: the watch saw the first pod deleted and its successor of the same name
    created before the first pod's GET answer was handled. GC was told the first pod's UID, so
    the successor's live sandbox counted as "pod-replaced", until the next relist."""
    answered_at = time.monotonic()
    await writer.write_batch([Upsert(FIRST), Delete(KEY, "12"), Upsert(SECOND)])

    writer.note_sighting(FIRST, answered_at=answered_at)

    assert await told(writer, database) == {KEY: SECOND.uid}


async def test_a_pod_a_relist_no_longer_showed_is_not_sighted_after_it(
    writer: MirrorWriter, database: Database
) -> None:
    """The watch brought the pod, then expired (410): the relist that followed no longer showed
    it (deleted meanwhile), before the GET's answer was handled."""
    await writer.write_batch([Upsert(FIRST)])
    await writer.write_snapshot([], "20", listed_at=time.monotonic())

    writer.note_sighting(FIRST, answered_at=time.monotonic())

    assert await told(writer, database) == {}


async def test_a_sighting_of_a_pod_the_watch_has_not_seen_deleted_is_kept(
    writer: MirrorWriter, database: Database
) -> None:
    """What the sightings are for: the watch lags behind the GET (its predecessor deleted, it
    not brought yet), and GC must see the pod the GET found."""
    await writer.write_batch([Upsert(FIRST), Delete(KEY, "12")])

    writer.note_sighting(SECOND, answered_at=time.monotonic())

    assert await told(writer, database) == {KEY: SECOND.uid}


async def test_the_memory_of_deleted_pods_is_bounded(writer: MirrorWriter, database: Database) -> None:
    """A writer remembers only the last ``RECENT_DELETIONS_KEPT`` deletions, however many pods the
    node churns through: the oldest is forgotten (a sighting of it then waits for a relist)."""
    churned = [
        PodRecord("default", f"job-{n}", f"uid-{n}", NODE, str(n)) for n in range(RECENT_DELETIONS_KEPT + 1)
    ]
    await writer.write_batch([Upsert(pod) for pod in churned])
    await writer.write_batch([Delete(pod.key, "") for pod in churned])

    for pod in churned:
        writer.note_sighting(pod, answered_at=time.monotonic())

    assert writer.sightings() == [churned[0]]


class _NoPodAnswers:
    """An API whose answer to a pod's GET is no pod (a proxy's, a broken server's)."""

    async def get(self, path: str) -> object:
        return {"kind": "Status", "status": "Success"}


async def test_an_answer_that_is_no_pod_is_an_api_that_could_not_be_asked(
    writer: MirrorWriter, database: Database
) -> None:
    """GC asks the API for a pod before taking the mirror's word that it is gone: an answer that is
    not a pod raised out of the whole GC pass, where an API that cannot be asked keeps the sandbox."""
    api = cast(KubeApi, _NoPodAnswers())
    presence = MirrorPodPresence(
        database=database, state=writer.state, api=api, node_name=NODE, memory=writer
    )

    with pytest.raises(ClusterUnavailableError, match="default/web"):
        await presence.gone_from_api("default", "web", "uid-first")
