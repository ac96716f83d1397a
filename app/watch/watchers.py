"""``Watchers``: everything Kubernetes the daemon runs, as one object it creates, runs and stops.

Created by ``app.daemon`` when a cluster is configured (``client.find_access`` / ``connect``),
with the node name it read from ``MULTUS_NODE_NAME``. It owns the watch loops (this node's pods;
NADs cluster-wide or per namespace) and the event poster, run as named tasks under one
TaskGroup by ``run``, each kept alive by ``keep_running``: a TaskGroup drops a child that ends
cancelled without a word and runs on with the others, so a child ended by a cancellation nobody
asked for, by a crash or by a return before ``stop`` is logged, counted in
``multus_py_task_crashes_total`` and started again after a backoff, never left dead while ``run``
(and the daemon's supervisor above it) goes on as if all were well. It hands the engine its
``pods``, ``nads`` and ``publisher``, and whoever registers with ``on_pod_written`` the pods each
mirror commit wrote. It does not own the API client or the database (the daemon opens and closes
both) and never calls the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import suppress
from functools import partial

from app import aiotasks, metrics
from app.attach.cluster import POD_ANNOTATIONS_KEPT
from app.store.database import Database
from app.watch import watching
from app.watch.api import KubeApi
from app.watch.arrivals import Arrivals
from app.watch.backoff import Backoff
from app.watch.mirroring import MirrorWriter
from app.watch.podevents import PodEventPoster
from app.watch.readiness import MirrorState, MirrorStatus
from app.watch.resources import WatchTarget, nads_in, pods_on_node
from app.watch.settings import WatchSettings
from app.watch.sources import MirrorNadSource, MirrorPodPresence, MirrorPodSource
from app.watch.status import ApiStatusPublisher

log = logging.getLogger(__name__)


class Watchers:
    """The pod and NAD watches, the sources and publisher built on them, and their tasks."""

    def __init__(
        self,
        *,
        api: KubeApi,
        database: Database,
        node_name: str,
        settings: WatchSettings | None = None,
        nad_namespaces: Sequence[str] | None = None,
        kept_annotations: Collection[str] = POD_ANNOTATIONS_KEPT,
    ) -> None:
        self.settings = settings or WatchSettings()
        self._api = api
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        if not node_name:
            log.warning("no node name (MULTUS_NODE_NAME): mirroring every pod of the cluster")
        arrivals = Arrivals()
        self._pod_listeners: list[Callable[[str, str], None]] = []
        pod_target = pods_on_node(node_name, kept_annotations=kept_annotations)
        nad_targets = [nads_in(None)] if nad_namespaces is None else [nads_in(ns) for ns in nad_namespaces]
        self._writers = [
            MirrorWriter(
                database=database,
                target=pod_target,
                state=MirrorState(pod_target.key),
                arrivals=arrivals,
                persist_interval=self.settings.position_persist_interval,
                listeners=self._pod_listeners,
            ),
            *(_writer(database, target, self.settings) for target in nad_targets),
        ]
        self.pod_state = self._writers[0].state
        self.nad_states = tuple(writer.state for writer in self._writers[1:])
        self.events = PodEventPoster(api=api, settings=self.settings, node_name=node_name)
        self.pods = MirrorPodSource(
            database=database,
            api=api,
            arrivals=arrivals,
            settings=self.settings,
            kept_annotations=kept_annotations,
            memory=self._writers[0],
        )
        self.nads = MirrorNadSource(
            database=database,
            api=api,
            states=self.nad_states,
            settings=self.settings,
            memories=self._writers[1:],
        )
        self.publisher = ApiStatusPublisher(api=api, settings=self.settings, events=self.events)
        self.presence = MirrorPodPresence(
            database=database, state=self.pod_state, api=api, node_name=node_name, memory=self._writers[0]
        )

    def on_pod_written(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(namespace, name)`` after every commit that wrote that pod to the mirror
        (relists included; echoes of unchanged pods excluded). It must not block."""
        self._pod_listeners.append(listener)

    @property
    def writers(self) -> tuple[MirrorWriter, ...]:
        """The mirror writers, pods first (their counters: writes, echoes skipped)."""
        return tuple(self._writers)

    @property
    def states(self) -> Mapping[str, MirrorState]:
        return {writer.target.key: writer.state for writer in self._writers}

    @property
    def synced(self) -> bool:
        """Every mirror has synced since start-up (what ``/readyz`` reports)."""
        return all(writer.state.synced.is_set() for writer in self._writers)

    async def wait_synced(self) -> None:
        """Return once every mirror has synced; bound it with ``asyncio.timeout``."""
        for writer in self._writers:
            await writer.state.synced.wait()

    def status(self) -> list[MirrorStatus]:
        return [writer.state.status() for writer in self._writers]

    async def run(self) -> None:
        """Run every watch and the event poster until ``stop``; a crash of one (or any other early
        end) is logged and restarted (``keep_running``), so this returns only when stopped (or
        cancelled)."""
        if self._stop.is_set():
            return
        async with asyncio.TaskGroup() as group:
            for writer in self._writers:
                self._start(group, partial(self._watch, writer), f"watch.{writer.target.key}")
            self._start(group, self.events.run, "watch.events")
        self._tasks.clear()

    def stop(self) -> None:
        """Make ``run`` return soon: open streams are cancelled, nothing more is written."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()

    def _start(self, group: asyncio.TaskGroup, run: Callable[[], Awaitable[None]], name: str) -> None:
        backoff = watching.reconnect_backoff(self.settings)
        task = group.create_task(keep_running(name, run, stop=self._stop, backoff=backoff), name=name)
        self._tasks.append(task)
        if self._stop.is_set():
            task.cancel()

    async def _watch(self, writer: MirrorWriter) -> None:
        await watching.infinite_watch(api=self._api, writer=writer, settings=self.settings, stop=self._stop)


async def keep_running(
    name: str, run: Callable[[], Awaitable[None]], *, stop: asyncio.Event, backoff: Backoff
) -> None:
    """Await ``run()`` until ``stop`` is set, a fresh call after each early end.

    An end is early when ``run()`` raised, returned before ``stop``, or ended by a
    ``CancelledError`` that no cancellation of this task asked for (one raised out of a future
    another party cancelled): it is logged with what happened, counted in
    ``multus_py_task_crashes_total`` under ``name``, and followed by ``backoff``'s next delay.
    The cancellation ``Watchers.stop`` or the TaskGroup asks for ends it, as it should.
    """
    while not stop.is_set():
        backoff.started()
        failure: BaseException | None = None
        try:
            await run()
        except asyncio.CancelledError as cancelled:
            if aiotasks.cancel_requested():
                raise
            how, failure = "ended by a cancellation nobody asked for", cancelled
        except Exception as crash:
            how, failure = "crashed", crash
        else:
            if stop.is_set():
                return
            how = "returned while the watchers run"
        metrics.TASK_CRASHES.labels(name).inc()
        delay = backoff.next_delay()
        log.error("task %s %s; restarting it in %.2f s", name, how, delay, exc_info=failure)
        del failure  # its traceback holds the ended run's frames: not kept through the pause
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def _writer(database: Database, target: WatchTarget, settings: WatchSettings) -> MirrorWriter:
    return MirrorWriter(
        database=database,
        target=target,
        state=MirrorState(target.key),
        persist_interval=settings.position_persist_interval,
    )
