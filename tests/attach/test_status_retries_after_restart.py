"""Network-status writes a previous run left unwritten, retried by the next run (``StatusRetries.resume``):
never the status of a sandbox of an earlier boot, and a write found to have nothing to land for good
takes its ``status_unwritten`` mark with it, so later restarts do not offer it again.

Real: the SQLite checkpoint, its mark and the retries' task. The sandboxes are recorded as an ADD
records them (no plugin runs: what is retried is read from the checkpoint); the publisher records
the writes it is asked for, the pod mirror is a dictionary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from functools import partial

import pytest

from app.attach.cluster import InterfaceEvent
from app.attach.locks import SandboxLocks
from app.attach.status_retries import StatusRetries, StatusRetrySettings
from app.store import checkpoints
from app.store.database import Connection, Database
from app.store.mirror_records import PodRecord
from app.store.records import PodIdentity, SandboxIntent
from tests.attach.mirror_reads import MirrorReadAfter
from tests.store.builders import delegate_intent, record_running

BOOT = "boot-now"
EARLIER_BOOT = "boot-before"
POD = PodRecord(namespace="default", name="web", uid="uid-web")
CONTAINER = "c" * 64
RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:00:05", "sandbox": "/var/run/netns/web"}],
    "ips": [{"address": "10.244.0.5/24", "interface": 0}],
}


class RecordingPublisher:
    """The API's side of a status write: every write asked for, each landing."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        self.writes.append((pod.name, status_json))
        return True

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        pass


class Mirror:
    """This node's pods as a synced mirror holds them."""

    def __init__(self, *pods: PodRecord) -> None:
        self._pods = {(pod.namespace, pod.name): pod for pod in pods}

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        return self._pods.get((namespace, name))


def _running(connection: Connection, *, container_id: str, pod: PodRecord, boot_id: str) -> None:
    """A sandbox recorded as an ADD records it before it answers: ``ready``, one attachment with
    its result."""
    identity = PodIdentity(pod.namespace, pod.name, pod.uid)
    record_running(
        connection,
        SandboxIntent(container_id, "/var/run/netns/web", "eth0", "1.0.0", identity, boot_id),
        intent=delegate_intent(
            container_id,
            network_name="cluster",
            config=b'{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}',
        ),
        result=json.dumps(RESULT),
    )


def _running_and_marked(connection: Connection, *, container_id: str, pod: PodRecord, boot_id: str) -> None:
    """A sandbox recorded as an ADD that answered with its status write failed: ``_running``,
    marked ``status_unwritten``."""
    _running(connection, container_id=container_id, pod=pod, boot_id=boot_id)
    assert checkpoints.mark_status_unwritten(connection, container_id)


def _marked_ids(connection: Connection) -> list[str]:
    query = "SELECT container_id FROM sandboxes WHERE status_unwritten ORDER BY rowid"
    return [str(row[0]) for row in connection.execute(query)]


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def retries(database: Database, publisher: RecordingPublisher) -> AsyncIterator[StatusRetries]:
    """The retries of a daemon started on this boot over the state database."""
    retries = StatusRetries(
        publisher=publisher,
        db=database,
        locks=SandboxLocks(),
        boot_id=BOOT,
        settings=StatusRetrySettings(initial_delay=0.0),
    )
    yield retries
    await retries.stop()


async def _until_settled(retries: StatusRetries) -> None:
    """Wait until the retries have nothing pending (each entry written or found moot): their task
    runs only while something is pending."""
    running = [task for task in asyncio.all_tasks() if task.get_name() == "network-status-retries"]
    async with asyncio.timeout(5):
        await asyncio.gather(*running)
    assert len(retries) == 0


async def test_a_sandbox_of_an_earlier_boot_never_has_its_status_written(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """Recovery could not settle the sandbox of the last boot (its teardown's first commit failed:
    a full disk), so it is still ``ready``, marked, the newest of its pod, and its pod (same uid:
    the kubelet keeps the pod across a reboot) is mirrored. Its addresses died with that boot:
    writing them onto the pod would show addresses it does not have until its new sandbox's ADD."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=EARLIER_BOOT))

    await retries.resume(Mirror(POD))
    await _until_settled(retries)

    assert publisher.writes == []
    assert retries.written == 0


async def test_the_same_sandbox_of_this_boot_has_its_status_written(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """The counterpart: a sandbox of this boot marked so is written and its mark cleared."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=BOOT))

    assert await retries.resume(Mirror(POD)) == 1
    await _until_settled(retries)

    assert [(name, json.loads(status)[0]["ips"]) for name, status in publisher.writes] == [
        ("web", ["10.244.0.5"])
    ]
    assert await database.read(_marked_ids) == []


async def test_a_retry_that_finds_a_sandbox_of_an_earlier_boot_clears_its_mark(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """Found moot for good, the mark stayed: every later restart offered the sandbox again (and read
    it, and logged it) until its DEL, which for a sandbox recovery could not settle may be long."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=EARLIER_BOOT))

    await retries.resume(Mirror(POD))
    await _until_settled(retries)

    assert await database.read(_marked_ids) == []
    assert await retries.resume(Mirror(POD)) == 0  # the next restart's
    assert publisher.writes == []


async def test_a_restart_that_finds_the_pod_recreated_clears_the_mark(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """The pod was deleted and created again under its name while the daemon was down: the marked
    sandbox's pod is gone for good, nothing of it is ever to be written. Its mark stayed, so each
    restart until the sandbox's DEL read it again, and it took one of the ``max_pending`` places
    of the newest marks."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=BOOT))
    recreated = PodRecord(namespace=POD.namespace, name=POD.name, uid="uid-web-again")

    assert await retries.resume(Mirror(recreated)) == 0

    assert await database.read(_marked_ids) == []
    assert publisher.writes == []


async def test_a_restart_that_finds_the_pod_recreated_keeps_the_mark_of_an_add_of_the_new_pod_made_meanwhile(
    database: Database, publisher: RecordingPublisher
) -> None:
    """``resume`` judged the marked sandbox a recreated pod's, then, while it read the mirror, the
    container ID was DELed and ADDed again for the pod the mirror holds, whose status write failed
    and was marked (``retry_later``). ``resume`` then cleared the marks of the sandboxes it had
    judged by container ID alone: the new ADD's mark went with the old one's, and a restart before
    its in-memory retry landed never wrote the pod's status."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=BOOT))
    recreated = PodRecord(namespace=POD.namespace, name=POD.name, uid="uid-web-again")
    retries = StatusRetries(
        publisher=publisher,
        db=database,
        locks=SandboxLocks(),
        boot_id=BOOT,
        settings=StatusRetrySettings(initial_delay=3600.0),  # not retried before the next restart
    )

    async def deled_and_added_again_for_the_recreated_pod() -> None:
        def deled(connection: Connection) -> None:
            checkpoints.begin_delete(connection, CONTAINER)
            checkpoints.remove_attachments(connection, container_id=CONTAINER, ifnames=["eth0"])
            assert checkpoints.finish_delete(connection, CONTAINER)

        await database.write(deled)
        await database.write(partial(_running, container_id=CONTAINER, pod=recreated, boot_id=BOOT))
        await retries.retry_later(container_id=CONTAINER, pod=recreated)  # its status write failed

    try:
        assert (
            await retries.resume(
                MirrorReadAfter(Mirror(recreated), deled_and_added_again_for_the_recreated_pod)
            )
            == 0
        )
        assert retries.pending(recreated) == CONTAINER
        assert await database.read(_marked_ids) == [CONTAINER]
    finally:
        await retries.stop()  # the daemon stops before the retry landed

    next_run = StatusRetries(
        publisher=publisher,
        db=database,
        locks=SandboxLocks(),
        boot_id=BOOT,
        settings=StatusRetrySettings(initial_delay=0.0),
    )
    try:
        assert await next_run.resume(Mirror(recreated)) == 1
        await _until_settled(next_run)
    finally:
        await next_run.stop()
    assert [name for name, _ in publisher.writes] == ["web"]


async def test_a_restart_that_does_not_find_the_pod_in_the_mirror_keeps_the_mark(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """A pod the mirror does not hold is not proven gone by that alone (GC asks the API before it
    DELs the sandbox, which removes the mark; a static pod whose mirror pod the API refused is
    still running): the mark stays for a later restart."""
    await database.write(partial(_running_and_marked, container_id=CONTAINER, pod=POD, boot_id=BOOT))

    assert await retries.resume(Mirror()) == 0

    assert await database.read(_marked_ids) == [CONTAINER]
    assert publisher.writes == []


async def test_a_sandbox_added_without_a_pod_uid_has_no_status_written_on_a_pod_recreated_since(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """The runtime sent no ``K8S_POD_UID``, so the sandbox records none; its delegates were given
    the UID of the pod the ADD resolved. The pod was deleted and made again under its name while
    the daemon was down, before the new pod's sandbox was added: the old sandbox is still the
    newest of that name, and its addresses were written on the new, live pod."""

    def uidless_running_and_marked(connection: Connection) -> None:
        record_running(
            connection,
            SandboxIntent(
                CONTAINER, "/var/run/netns/web", "eth0", "1.0.0", PodIdentity("default", "web", ""), BOOT
            ),
            intent=delegate_intent(
                CONTAINER,
                network_name="cluster",
                config=b'{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}',
                cni_args=(
                    ("K8S_POD_NAMESPACE", "default"),
                    ("K8S_POD_NAME", "web"),
                    ("K8S_POD_UID", POD.uid),
                ),
            ),
            result=json.dumps(RESULT),
        )
        assert checkpoints.mark_status_unwritten(connection, CONTAINER)

    await database.write(uidless_running_and_marked)
    recreated = PodRecord(namespace=POD.namespace, name=POD.name, uid="uid-web-again")

    await retries.resume(Mirror(recreated))
    await _until_settled(retries)

    assert publisher.writes == []
    assert await database.read(_marked_ids) == []


async def test_a_sandbox_added_without_a_pod_uid_has_its_status_written_on_its_own_pod(
    database: Database, retries: StatusRetries, publisher: RecordingPublisher
) -> None:
    """The counterpart: the pod its delegates were given is the one mirrored."""

    def uidless_running_and_marked(connection: Connection) -> None:
        record_running(
            connection,
            SandboxIntent(
                CONTAINER, "/var/run/netns/web", "eth0", "1.0.0", PodIdentity("default", "web", ""), BOOT
            ),
            intent=delegate_intent(CONTAINER, cni_args=(("K8S_POD_UID", POD.uid),)),
            result=json.dumps(RESULT),
        )
        assert checkpoints.mark_status_unwritten(connection, CONTAINER)

    await database.write(uidless_running_and_marked)

    assert await retries.resume(Mirror(POD)) == 1
    await _until_settled(retries)

    assert [name for name, _ in publisher.writes] == ["web"]
