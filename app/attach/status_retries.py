"""Background retries of a pod's network-status write that failed at ADD: ``StatusRetries``.

An ADD does not wait beyond ``watch.statusDeadline`` for its network-status write, nor fail when it
does not land (README); only a write of the same pod already in flight (a retry of an older
sandbox's, or hot-plug's), bounded the same way, is waited for first, so at most twice that. Without
a retry the pod would go without the annotation for its whole life; ``offer`` hands such a write to
this queue, whose one task (running only while something is pending) tries again with exponential
backoff (``StatusRetrySettings``), never sooner than the API server's ``Retry-After``, until the
write lands or becomes moot:

- one entry per pod (namespace/name): a newer ADD of the pod drops the pending one
  (``supersede``) before it writes its own, and a retry in flight finishes before that write
  starts (the pod's turn, ``turn``), so an older sandbox's status never lands over a newer one;
- what is written is read from the checkpoint at each attempt, under the sandbox's lock: a sandbox
  no longer recorded ``ready`` (DELed, being DELed, rolled back), recorded during an earlier boot
  (``resume`` offers one that recovery could not settle: its addresses died with that boot), or no
  longer the newest recorded for its pod (a newer one's ADD wrote its own status, with no retry
  pending for ``supersede`` to drop: it finished while ``resume`` was offering the older one),
  makes the write moot, and a DEL
  arriving during an attempt waits for that attempt, so no write follows a DEL. Reading the
  checkpoint also means a retry writes what the sandbox has now (with ``hotplugNetworks``, what the
  reconciler attached since), never an older value than a writer sharing the pod's turn wrote;
- a pod gone (404), replaced (another uid) or whose value can never fit (the publisher removes the
  annotation) ends the entry, as the publisher returns normally for those;
- at most ``max_pending`` pods wait; past it the oldest is dropped and counted;
- a write the API server refuses for good (``StatusWriteRefusedError``: 403, RBAC missing) backs
  off to ``refused_max_delay`` (minutes) instead of ``max_delay``, and is logged once per pending
  write and reason rather than at every try: nothing changes until someone fixes the cluster, and
  then it lands within that interval. A 429, a 5xx or no answer keeps the short backoff.

The queue lives in memory, but a write the ADD hands over (``retry_later``) is first marked in the
sandbox's checkpoint (``status_unwritten``), and the runtime hears success only after that mark is
committed; a retry that writes clears it after the write, and one that finds the write moot with
the sandbox still recorded clears it too (nothing is ever to be written for it: a later restart must
not offer it again), so does ``resume`` for a sandbox whose pod the mirror holds under another uid
(in a commit that clears it only while the sandbox recorded under the ID is still of that uid), and
hot-plug's reconciler when it writes the pod's status (``written_elsewhere``); a DEL removes it
with the sandbox.
So a restart (upgrade, crash, kill -9) at any point costs at worst one extra write, never a missing
one: once the pod mirror has synced, ``resume`` offers every sandbox so marked (the newest of its
pod, within ``max_pending``) to the queue again. The mark is committed without a sync of the WAL:
only a power loss can undo it, and after the reboot that follows the sandbox belongs to an earlier
boot and is torn down (invariant 11).

Hot-plug's reconciler (``app.attach.hotplug``, which imports this module) writes the same status
from the same checkpoint, so what both need is here: the pod's key of the writers' turns
(``pod_key``), the status a sandbox's checkpoint shows (``recorded_status``), the mirror they read
pods from (``PodMirror``) and the publisher's refusal for good (``StatusWriteRefusedError``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from app.attach import device_info
from app.attach.cluster import ClusterUnavailableError, StatusPublisher, StatusWriteRefusedError
from app.attach.locks import SandboxLocks
from app.attach.network_status import DelegateOutcome, render, status_entries
from app.metrics import STATUS_WRITES_PENDING, STATUS_WRITES_RETRIED
from app.store import checkpoints
from app.store.database import Connection, Database
from app.store.mirror_records import PodRecord
from app.store.records import SandboxRecord

log = logging.getLogger(__name__)

REFUSED_MAX_DELAY = 600.0
"""Seconds a network-status write the API server refuses for good is retried at most every, once
backed off (here and in hot-plug's reconciler, ``app.attach.hotplug``)."""


@dataclass(frozen=True, slots=True)
class StatusRetrySettings:
    initial_delay: float = 1.0
    """Delay before the first background retry."""
    max_delay: float = 60.0
    """Retries back off by doubling up to this many seconds (a longer ``Retry-After`` wins)."""
    refused_max_delay: float = REFUSED_MAX_DELAY
    """The same, for a write the API server refuses for good (``StatusWriteRefusedError``)."""
    max_pending: int = 1024
    """Pods waiting at most; past it the oldest pending write is dropped (counted)."""


class PodMirror(Protocol):
    """This node's pods as the mirror holds them: what the retries' ``resume`` and hot-plug's
    reconciler (``app.attach.hotplug``) read pods from (the watch package's pod source implements it)."""

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        """The pod as the mirror holds it now, None when it holds none; never waits for the watch
        and never asks the API."""
        ...


@dataclass(slots=True)
class _Pending:
    container_id: str
    pod: PodRecord
    attempts: int
    due: float
    refusal: str = ""
    """The last refusal (``StatusWriteRefusedError``) logged for this write: not logged again."""


def pod_key(pod: PodRecord) -> str:
    """A pod's key for the per-pod turns of network-status writers (``namespace/name``)."""
    return f"{pod.namespace}/{pod.name}"


def recorded_outcomes(record: SandboxRecord) -> list[DelegateOutcome]:
    """The outcomes of the sandbox's attached delegates as its checkpoint holds them, in position
    order: what its network-status shows (also hot-plug's, ``app.attach.hotplug``)."""
    return [
        DelegateOutcome(
            network_name=a.network_name,
            result=json.loads(a.result),
            is_master=a.is_master,
            device_info=device_info.read_for_status(a.capability_args),
            ifname=a.ifname,
        )
        for a in sorted(record.attachments, key=lambda a: a.position)
        if a.result and a.state == "added"
    ]


def recorded_status(record: SandboxRecord) -> str | None:
    """The sandbox's network-status from its checkpoint, None when it has no entry to show (what
    the retries write, and hot-plug's reconciler, ``app.attach.hotplug``)."""
    entries = status_entries(recorded_outcomes(record))
    return render(entries) if entries else None


class StatusRetries:
    """Pending network-status writes, one per pod, retried until they land or become moot."""

    def __init__(
        self,
        *,
        publisher: StatusPublisher,
        db: Database,
        locks: SandboxLocks,
        boot_id: str,
        settings: StatusRetrySettings | None = None,
    ) -> None:
        self._publisher = publisher
        self._db = db
        self._locks = locks
        self._boot_id = boot_id
        self._settings = settings or StatusRetrySettings()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._turns = SandboxLocks()  # keyed by pod: a retry and a newer ADD's write take turns
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.written = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def pending(self, pod: PodRecord) -> str | None:
        """The container ID whose status is pending for ``pod``, if any."""
        entry = self._pending.get(pod_key(pod))
        return entry.container_id if entry is not None else None

    def next_try(self, pod: PodRecord) -> float | None:
        """Seconds until the pending write of ``pod`` is tried again (0 when due), None when none is
        pending."""
        entry = self._pending.get(pod_key(pod))
        return max(0.0, entry.due - time.monotonic()) if entry is not None else None

    @asynccontextmanager
    async def turn(self, pod: PodRecord) -> AsyncIterator[None]:
        """The pod's turn: an ADD writes in it, after any retry of the pod in flight."""
        async with self._turns.hold(pod_key(pod)):
            yield

    def supersede(self, pod: PodRecord) -> None:
        """A newer write of ``pod``'s status is about to be made: drop the pending one."""
        if self._pending.pop(pod_key(pod), None) is not None:
            STATUS_WRITES_RETRIED.labels("superseded").inc()
            STATUS_WRITES_PENDING.set(len(self._pending))

    def offer(self, *, container_id: str, pod: PodRecord, retry_after: float | None = None) -> None:
        """Retry sandbox ``container_id``'s status write for ``pod`` in the background; never blocks.
        Once stopped, nothing is offered any more (a write marked unwritten waits for the next run)."""
        if self._stopped:
            return
        key = pod_key(pod)
        self._pending.pop(key, None)
        while len(self._pending) >= self._settings.max_pending:
            _, oldest = self._pending.popitem(last=False)
            self.dropped += 1
            STATUS_WRITES_RETRIED.labels("dropped").inc()
            log.warning(
                "network-status of pod %s/%s dropped from the retries: more than %d pods pending",
                oldest.pod.namespace,
                oldest.pod.name,
                self._settings.max_pending,
            )
        delay = max(self._settings.initial_delay, retry_after or 0.0)
        self._pending[key] = _Pending(container_id, pod, attempts=1, due=time.monotonic() + delay)
        STATUS_WRITES_PENDING.set(len(self._pending))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="network-status-retries")
            self._task.add_done_callback(self._ended)

    async def retry_later(
        self, *, container_id: str, pod: PodRecord, retry_after: float | None = None
    ) -> None:
        """``offer``, once sandbox ``container_id`` is marked in its checkpoint as having its status
        unwritten, so that a restart writes it too (``resume``). Called by an ADD whose write failed,
        holding the sandbox's lock, after its results are committed (the sandbox is ``ready``) and
        before the runtime hears success. A failure to commit the mark is raised: the ADD fails."""
        mark = partial(checkpoints.mark_status_unwritten, container_id=container_id)
        await self._db.write(mark, durable=False)
        self.offer(container_id=container_id, pod=pod, retry_after=retry_after)

    async def written_elsewhere(self, *, container_id: str) -> None:
        """Another writer of the pod's status (hot-plug's reconciler) wrote sandbox
        ``container_id``'s network-status from its checkpoint: clear the sandbox's mark, so that a
        restart does not write it once more. A pending retry of it is left to write (harmless).

        Called in the pod's turn of the ordered publisher (``hotplug.OrderedStatusPublisher``),
        right after that write landed, as a retry clears the mark right after its own: no other
        write of the pod comes between, so no failed write is outstanding after it. A mark set
        meanwhile records an ADD's write that failed before this one (the ADD marks only after its
        write, in that turn, failed), which this one, read from the checkpoint of the ``ready``
        sandbox later, supersedes. After a DEL there is no row left to clear, and an ADD of the
        container ID again cannot mark its row before the turn ends."""
        await self._db.write(
            partial(checkpoints.clear_status_unwritten, container_id=container_id), durable=False
        )

    async def resume(self, pods: PodMirror) -> int:
        """Offer the writes a previous run left unwritten (sandboxes marked ``status_unwritten``),
        within ``max_pending`` (the newest first); return how many were offered. Called once at
        start-up, after the pod mirror has synced (the write needs the pod as the API has it).

        A sandbox of a pod the mirror holds under another uid (recreated) has nothing to write for
        good: its mark is cleared (its teardown is GC's), so later restarts do not read it again;
        not by container ID alone, as this reads outside the sandboxes' locks: a sandbox ADDed
        again under the ID meanwhile, for another pod uid, keeps its own mark
        (``_clear_marks_of_replaced``).
        One of a pod the mirror does not hold keeps its mark (the mirror alone proves no pod gone:
        GC asks the API before its DEL removes the row). A pod with a write already pending (a
        newer ADD of this run's) keeps it."""
        room = self._settings.max_pending - len(self._pending)
        if room <= 0:
            log.warning(
                "network-status writes left unwritten by the previous run not retried: %d pods pending "
                "already (the bound); they wait for a later restart",
                len(self._pending),
            )
            return 0
        marked = await self._db.read(partial(checkpoints.status_unwritten, limit=room + 1))
        if len(marked) > room:
            log.warning(
                "more than %d network-status writes left unwritten by the previous run: "
                "the newest %d are retried, the others wait for a later restart",
                room,
                room,
            )
            marked = marked[1:]
        offered = 0
        replaced: list[tuple[str, str]] = []
        for sandbox in marked:
            pod = await pods.mirrored_pod(sandbox.pod.namespace, sandbox.pod.name)
            if pod is None or not pod.is_pod_of(sandbox.pod.uid):
                log.info(
                    "network-status of pod %s/%s (sandbox %s) not retried: the pod is %s",
                    sandbox.pod.namespace,
                    sandbox.pod.name,
                    sandbox.container_id,
                    "not on this node" if pod is None else "recreated",
                )
                if pod is not None:
                    replaced.append((sandbox.container_id, sandbox.pod.uid))
                continue
            if pod_key(pod) in self._pending:
                continue  # an ADD of this run wrote, or failed to write, a newer sandbox's status
            self.offer(container_id=sandbox.container_id, pod=pod)
            offered += 1
        if replaced:
            await self._db.write(partial(_clear_marks_of_replaced, judged=replaced), durable=False)
        if offered:
            log.info("%d network-status writes left unwritten by the previous run are retried", offered)
        return offered

    async def stop(self) -> None:
        """End the background task (the pending writes are forgotten, as at a daemon restart)."""
        self._stopped = True  # the daemon stops: a late offer (start-up's resume) starts no task
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("network-status retries crashed", exc_info=task.exception())

    async def _run(self) -> None:
        while self._pending:
            key, entry = min(self._pending.items(), key=lambda item: item[1].due)
            delay = entry.due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()  # a new or superseded entry may be due sooner
                except TimeoutError:
                    pass
                continue
            try:
                await self._attempt(key, entry)
            except Exception as exc:  # e.g. the database: this pod waits, the others go on
                log.exception("network-status retry of pod %s failed", key)
                self._reschedule(entry, exc)
            STATUS_WRITES_PENDING.set(len(self._pending))

    async def _attempt(self, key: str, entry: _Pending) -> None:
        pod = entry.pod
        async with self._locks.hold(entry.container_id), self.turn(pod):
            if self._pending.get(key) is not entry:
                return  # superseded or dropped while this waited for the lock
            found = partial(_sandbox_and_newest, container_id=entry.container_id)
            record, newest = await self._db.read(found)
            current = (
                record is not None
                and newest == record.container_id
                and _is_current(record, pod, boot_id=self._boot_id)
            )
            status_json = recorded_status(record) if record is not None and current else None
            if status_json is None:
                if record is not None:  # moot for good: a restart must not offer it again
                    await self._db.write(
                        partial(checkpoints.clear_status_unwritten, container_id=entry.container_id),
                        durable=False,
                    )
                if self._pending.get(key) is entry:  # else a newer ADD superseded it during the read
                    del self._pending[key]
                STATUS_WRITES_RETRIED.labels("moot").inc()
                log.info(
                    "network-status of pod %s/%s no longer retried: sandbox %s is not running any more"
                    " (or was recorded during an earlier boot), or a newer sandbox of the pod is recorded",
                    pod.namespace,
                    pod.name,
                    entry.container_id,
                )
                return
            try:
                written = await self._publisher.publish_network_status(pod, status_json)
            except ClusterUnavailableError as exc:
                self._reschedule(entry, exc)
                return
            # After the write: a restart before this commit writes once more, never not at all.
            await self._db.write(
                partial(checkpoints.clear_status_unwritten, container_id=entry.container_id), durable=False
            )
        if self._pending.get(key) is entry:  # else a newer ADD superseded it meanwhile (it waited)
            del self._pending[key]
        if not written:  # the pod deleted, or replaced under another uid: the publisher logged it
            STATUS_WRITES_RETRIED.labels("moot").inc()
            return
        self.written += 1
        STATUS_WRITES_RETRIED.labels("written").inc()
        log.info(
            "network-status of pod %s/%s (sandbox %s) written at background attempt %d",
            pod.namespace,
            pod.name,
            entry.container_id,
            entry.attempts,
        )

    def _reschedule(self, entry: _Pending, error: Exception) -> None:
        STATUS_WRITES_RETRIED.labels("failed").inc()
        refused = isinstance(error, StatusWriteRefusedError)
        cap = self._settings.refused_max_delay if refused else self._settings.max_delay
        backoff = doubled_delay(self._settings.initial_delay, entry.attempts + 1, cap=cap)
        # The publisher's error carries the server's Retry-After when it asked for one.
        delay = max(backoff, getattr(error, "retry_after", None) or 0.0)
        entry.attempts += 1
        entry.due = time.monotonic() + delay
        if not refused:
            log.warning(
                "network-status of pod %s/%s not written yet (retried in %.1f s): %s",
                entry.pod.namespace,
                entry.pod.name,
                delay,
                error,
            )
        elif str(error) != entry.refusal:
            entry.refusal = str(error)
            log_refusal(
                log, entry.pod.namespace, entry.pod.name, entry.refusal, self._settings.refused_max_delay
            )
        else:
            log.debug(
                "network-status of pod %s/%s still refused (retried in %.1f s)",
                entry.pod.namespace,
                entry.pod.name,
                delay,
            )


def doubled_delay(first: float, failures: int, *, cap: float) -> float:
    """The delay after ``failures`` failures in a row: ``first``, doubled at each failure after
    the first, at most ``cap`` (these retries', hot-plug's reconciler's, ``app.attach.hotplug``,
    and GC's teardown retries', ``app.gc.collector.retry_delay``).
    The doublings are bounded: a write or a pod that keeps failing counts failures for as long as
    it lasts, and past 1,024 of them ``2 ** n`` is no float any more (``OverflowError``, which
    ended the task retrying them)."""
    doublings = max(0, min(failures, 64) - 1)  # the cap is reached long before
    return min(cap, first * float(1 << doublings))


def log_refusal(logger: logging.Logger, namespace: str, name: str, reason: str, max_delay: float) -> None:
    """The one error a writer of the pod's status (these retries, hot-plug's reconciler, each on its
    own ``logger``) logs when the API server refuses a write for good (``StatusWriteRefusedError``),
    and again only when the reason changes."""
    logger.error(
        "network-status of pod %s/%s not written: the API server refuses it (%s); retried less and "
        "less often, at most every %.0f s, and logged again only if the refusal changes",
        namespace,
        name,
        reason,
        max_delay,
    )


def _sandbox_and_newest(connection: Connection, *, container_id: str) -> tuple[SandboxRecord | None, str]:
    """The sandbox's record, and the container ID of the newest sandbox recorded for its pod (the
    last one recorded): an older sandbox's status must not land over a newer one's, whose ADD may
    have written it without a retry pending (``resume`` offered the older one meanwhile)."""
    record = checkpoints.load_sandbox(connection, container_id)
    if record is None:
        return None, ""
    sandboxes = checkpoints.sandboxes_of_pod(connection, namespace=record.pod.namespace, name=record.pod.name)
    return record, sandboxes[-1].container_id if sandboxes else ""


def _clear_marks_of_replaced(connection: Connection, *, judged: list[tuple[str, str]]) -> None:
    """``checkpoints.clear_status_unwritten`` of each sandbox ``resume`` judged a recreated pod's,
    given as (container ID, the pod uid it read), in one commit: only where the sandbox recorded
    under the ID now is still one of that pod uid.

    ``resume`` read the marks, then the mirror, outside the sandboxes' locks: meanwhile the container
    ID may have been DELed and ADDed again for another pod (the one the mirror holds, or one
    whose uid the runtime did not give), whose own status write failed and was marked. That mark is
    not resume's to clear. One of the judged pod uid again is (the mirror holds that pod under
    another uid: nothing of it is ever to be written). The writer runs one unit at a time, so no
    DEL or ADD comes between this read and the clear."""
    for container_id, pod_uid in judged:
        record = checkpoints.load_sandbox(connection, container_id)
        if record is not None and record.pod.uid == pod_uid:
            checkpoints.clear_status_unwritten(connection, container_id)


def _is_current(record: SandboxRecord, pod: PodRecord, *, boot_id: str) -> bool:
    """The sandbox is running, during this boot (one of an earlier boot is recorded ``ready`` only
    until recovery or GC tears it down: its netns and addresses died with that boot), and for the
    pod the write is addressed to (not a predecessor)."""
    return record.state == "ready" and record.boot_id == boot_id and pod.is_pod_of(record.pod_uid_given())
