"""Events about pods (``AddedInterface``, ``NoNetworkFound``): queued without waiting, posted later.

``offer`` and ``offer_not_found`` are called by the status publisher on the ADD path and never
block: events go to a bounded queue, and when it is full they are dropped and counted (an Event is a
courtesy to the operator; it must never slow an ADD or grow memory without bound). A queued event
keeps only its text and the pod's identity, never the pod's record and its annotations. ``run`` is the
drain task the ``Watchers`` supervise: woken from idle, it lets ``event_delay`` pass first, so the
ADD that offered the event has answered before the POST takes the event loop, then it posts what is
queued in order. It posts core/v1 Events shaped as upstream Multus posts them
(Normal ``AddedInterface`` ``Add <if> [<addrs>] from <network>``; Warning ``NoNetworkFound``
``cannot find a network-attachment-definition (<name>) in namespace (<ns>): <api error>``; source
and reportingComponent ``multus``, the pod as involvedObject) at its own rate, separate from
everything else. A failed POST is logged and counted, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app import metrics
from app.attach.cluster import InterfaceEvent
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi
from app.watch.backoff import TokenBucket
from app.watch.errors import ApiError
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)

COMPONENT = "multus"
REASON = "AddedInterface"
NOT_FOUND_REASON = "NoNetworkFound"
MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class InvolvedPod:
    """What an event names of its pod. Not the ``PodRecord``: a queued event would keep the
    record's annotations alive (a networks annotation may be 256 KiB), a full queue of them tens
    of MiB while the API cannot take events."""

    namespace: str
    name: str
    uid: str
    resource_version: str

    @classmethod
    def of(cls, pod: PodRecord) -> InvolvedPod:
        return cls(pod.namespace, pod.name, pod.uid, pod.resource_version)


@dataclass(frozen=True, slots=True)
class PodEvent:
    pod: InvolvedPod
    reason: str
    type: str
    message: str


def message(event: InterfaceEvent) -> str:
    """``Add <ifname> [<addr> <addr>] from <network>``, as upstream formats it."""
    text = f"Add {event.ifname} [{' '.join(event.addresses)}]"
    return f"{text} from {event.network_name}" if event.network_name else text


def not_found_message(*, namespace: str, name: str, error: str) -> str:
    """Upstream's ``NoNetworkFound`` text: ``cannot find a network-attachment-definition (<name>) ...``."""
    return f"cannot find a network-attachment-definition ({name}) in namespace ({namespace}): {error}"


def event_body(pod: InvolvedPod, item: PodEvent, *, node_name: str, now: datetime) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    suffix = f".{time.time_ns():x}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": pod.name[: MAX_NAME - len(suffix)] + suffix, "namespace": pod.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "resourceVersion": pod.resource_version,
        },
        "reason": item.reason,
        "message": item.message,
        "type": item.type,
        "source": {"component": COMPONENT, "host": node_name} if node_name else {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class PodEventPoster:
    def __init__(self, *, api: KubeApi, settings: WatchSettings, node_name: str) -> None:
        self._api = api
        self._settings = settings
        self._node_name = node_name
        self._queue: asyncio.Queue[PodEvent] = asyncio.Queue(maxsize=settings.event_queue_size)
        self._bucket = TokenBucket(rate=settings.event_rate, burst=settings.event_burst)
        self.posted = 0
        self.dropped = 0
        self.failed = 0

    def offer(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        """Queue ``events`` about ``pod``; drop (and count) what does not fit. Never blocks."""
        involved = InvolvedPod.of(pod)
        for event in events:
            self._offer(PodEvent(involved, REASON, "Normal", message(event)))

    def offer_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        """Queue a Warning ``NoNetworkFound`` about ``pod`` (NAD ``namespace/name`` missing). Never blocks."""
        text = not_found_message(namespace=namespace, name=name, error=error)
        self._offer(PodEvent(InvolvedPod.of(pod), NOT_FOUND_REASON, "Warning", text))

    def offer_event(self, pod: PodRecord, *, reason: str, warning: bool, message: str) -> None:
        """Queue any event about ``pod`` (hot-plug's ``RemovedInterface``, ...). Never blocks."""
        self._offer(PodEvent(InvolvedPod.of(pod), reason, "Warning" if warning else "Normal", message))

    def _offer(self, item: PodEvent) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.EVENTS_DROPPED.inc()
            log.debug(
                "event queue full: dropped %s for %s/%s", item.reason, item.pod.namespace, item.pod.name
            )

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def drained(self) -> None:
        """Return once every queued event has been posted or has failed (tests, shutdown)."""
        await self._queue.join()

    async def run(self) -> None:
        """Post queued events forever, at most ``event_rate`` per second; each run of them starts
        ``event_delay`` after the first was offered to an idle poster."""
        while True:
            item = await self._queue.get()
            if self._settings.event_delay:
                try:
                    await asyncio.sleep(self._settings.event_delay)
                except asyncio.CancelledError:
                    self._queue.task_done()  # not posted: stopped meanwhile
                    raise
            await self._post_counted(item)
            while not self._queue.empty():
                await self._post_counted(self._queue.get_nowait())

    async def _post_counted(self, item: PodEvent) -> None:
        try:
            await self._bucket.acquire()
            await self._post(item)
        except Exception:  # one bad event must not stop the others (nor the watches beside us)
            self.failed += 1
            log.exception("posting an event for pod %s/%s failed", item.pod.namespace, item.pod.name)
        finally:
            self._queue.task_done()

    async def _post(self, item: PodEvent) -> None:
        pod = item.pod
        body = event_body(pod, item, node_name=self._node_name, now=datetime.now(UTC))
        try:
            async with asyncio.timeout(self._settings.event_timeout):
                await self._api.post(f"/api/v1/namespaces/{pod.namespace}/events", body)
        except (ApiError, TimeoutError) as exc:
            self.failed += 1
            log.warning("cannot post %s event for pod %s/%s: %s", item.reason, pod.namespace, pod.name, exc)
            return
        self.posted += 1
