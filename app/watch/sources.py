"""The engine's view of pods and NADs (``PodSource``, ``NadSource``), answered from the mirror.

``MirrorPodSource.get_pod`` reads the mirror; a pod not there yet (an ADD often arrives before
the watch event) is waited for, briefly and on a wake-up from the mirror writer, then asked of
the API with ONE live GET. ``MirrorNadSource.get_nad`` reads the mirror only, after its first
sync; ``fetch_nad`` is the one live GET the resolution asks for a NAD the mirror lacks before it
fails the ADD (a NAD created just before its pod is often not mirrored yet). Either live GET
takes a 404 for "not found" only when its ``Status`` names that object (``says_pod_gone``,
``says_nad_gone``); a proxy's 404 is the API not answering. Either reads the
mirror from its writers' memory (``MirrorWriter.held``: what is committed, without a hop to a
reader thread) and asks the store only what memory cannot tell. Both are called
by ``app.attach`` during ADD, through the protocols of ``app.attach.cluster``; they return the
mirror's own records (``PodRecord``, ``NadRecord``) and raise only that module's
``ClusterUnavailableError``. They never write the mirror (only the watch does, in order) and never
retry: the engine decides what an unavailable cluster means for the ADD. ``mirrored_pod`` is the
read of native hot-plug (every mirror commit of a pod queues it again): the mirror alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from functools import partial

from app.attach.cluster import ClusterUnavailableError
from app.store import mirror
from app.store.database import Database
from app.store.mirror_records import CONFIG_SOURCE_ANNOTATION, NadRecord, PodRecord
from app.watch.api import KubeApi
from app.watch.arrivals import Arrivals
from app.watch.errors import ApiError, ApiNotFoundError
from app.watch.mirroring import MirrorWriter
from app.watch.readiness import MirrorState
from app.watch.resources import nad_path, nad_record, pod_path, pod_record
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)


class MirrorPodSource:
    def __init__(
        self,
        *,
        database: Database,
        api: KubeApi,
        arrivals: Arrivals,
        settings: WatchSettings,
        kept_annotations: Collection[str],
        memory: MirrorWriter | None = None,
    ) -> None:
        self._db = database
        self._memory = memory
        self._api = api
        self._arrivals = arrivals
        self._settings = settings
        self._kept = tuple(kept_annotations)
        self.live_gets = 0
        """Pods the mirror could not answer in time (a metric: should stay rare)."""

    @property
    def waiting(self) -> int:
        """Calls waiting for the watch to bring their pod right now."""
        return self._arrivals.waiting

    async def get_pod(self, namespace: str, name: str, *, uid: str = "") -> PodRecord | None:
        """The pod from the mirror, or after a short wait for the watch, or from one live GET.

        A mirrored pod of another ``uid`` (its predecessor under that name: the watch lags) is
        waited past like a missing one, never answered."""
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.pod_wait
        with self._arrivals.expect(key) as arrived:
            record = _current(await self._read(namespace, name), uid)
            while record is None and await _wait(arrived, deadline - loop.time()):
                arrived.clear()
                record = _current(await self._read(namespace, name), uid)
        return record if record is not None else await self._live_get(namespace, name)

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        """The pod as the mirror holds it now, None when it holds none: no wait for the watch and
        no API request (native hot-plug: every mirror commit of the pod queues it again)."""
        return await self._read(namespace, name)

    async def _read(self, namespace: str, name: str) -> PodRecord | None:
        if self._memory is not None:
            known, record = self._memory.held((namespace, name))
            if known:
                return record if isinstance(record, PodRecord) else None
        return await self._db.read(partial(mirror.get_pod, namespace=namespace, name=name))

    async def _live_get(self, namespace: str, name: str) -> PodRecord | None:
        self.live_gets += 1
        log.info("pod %s/%s is not in the mirror yet: asking the API", namespace, name)
        try:
            obj = await self._api.get(pod_path(namespace, name))
        except ApiNotFoundError as exc:
            if exc.says_pod_gone(name):
                return None
            # not the API's word about this pod (a proxy's 404, a path prefix it does not serve):
            # taken for "not found", the ADD would blame the pod for an API it cannot reach
            raise ClusterUnavailableError(
                f"cannot get pod {namespace}/{name}: a 404 that does not name the pod: {exc}"
            ) from exc
        except ApiError as exc:
            raise ClusterUnavailableError(f"cannot get pod {namespace}/{name}: {exc}") from exc
        record = pod_record(obj, kept_annotations=self._kept)
        if self._memory is not None:  # the watch lags behind this answer: GC must not miss the pod
            self._memory.note_sighting(record, answered_at=time.monotonic())
        return record


class MirrorNadSource:
    def __init__(
        self,
        *,
        database: Database,
        api: KubeApi,
        states: Sequence[MirrorState],
        settings: WatchSettings,
        memories: Sequence[MirrorWriter] = (),
    ) -> None:
        self._db = database
        self._api = api
        self._states = tuple(states)
        self._settings = settings
        self._memories = tuple(memories)
        self.live_gets = 0
        """NADs asked of the API because the mirror lacked them (a metric: should stay rare)."""

    async def get_nad(self, namespace: str, name: str) -> NadRecord | None:
        """The NAD from the mirror; ``ClusterUnavailableError`` if the mirror never synced in time."""
        await self._wait_for_first_sync()
        for memory in self._memories:
            if memory.target.namespace in (None, namespace):
                known, record = memory.held((namespace, name))
                if known:
                    return record if isinstance(record, NadRecord) else None
        return await self._db.read(partial(mirror.get_nad, namespace=namespace, name=name))

    async def fetch_nad(self, namespace: str, name: str) -> NadRecord | None:
        """The NAD from ONE live GET (bounded by ``request_timeout``), for a name the mirror lacks.

        What it finds serves this lookup only and is never written to the mirror: only the watch
        writes it, in order. A GET answered before a DELETE whose event the watch commits first
        would otherwise bring a deleted NAD back until the next relist, and the watch's own ADDED
        event would then change nothing in memory and be skipped as an echo, never stored."""
        self.live_gets += 1
        log.info("network-attachment-definition %s/%s is not in the mirror: asking the API", namespace, name)
        try:
            return nad_record(await self._api.get(nad_path(namespace, name)))
        except ApiNotFoundError as exc:
            if exc.says_nad_gone(name):
                return None
            # not the API's word about this NAD (a proxy's 404, the CRD not served): taken for "not
            # found", the ADD would fail as a configuration error (code 7, a NoNetworkFound Warning)
            raise ClusterUnavailableError(
                f"cannot get network-attachment-definition {namespace}/{name}: a 404 that does not "
                f"name it: {exc}"
            ) from exc
        except ApiError as exc:
            raise ClusterUnavailableError(
                f"cannot get network-attachment-definition {namespace}/{name}: {exc}"
            ) from exc

    async def _wait_for_first_sync(self) -> None:
        pending = [state for state in self._states if not state.synced.is_set()]
        if not pending:
            return
        try:
            async with asyncio.timeout(self._settings.nad_sync_wait):
                for state in pending:
                    await state.synced.wait()
        except TimeoutError as exc:
            keys = ", ".join(state.key for state in pending if not state.synced.is_set())
            raise ClusterUnavailableError(
                f"the NetworkAttachmentDefinition mirror ({keys}) has not synced with the API yet"
            ) from exc


def _current(record: PodRecord | None, uid: str) -> PodRecord | None:
    """``record`` unless it is another pod than the one of ``uid`` (a static pod's UID differs)."""
    return record if record is None or record.is_pod_of(uid) else None


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


DISPUTES_REMEMBERED = 4096
"""Pods ``MirrorPodPresence.gone_from_api`` remembers having warned about (then it starts again)."""


class MirrorPodPresence:
    """``PodPresence`` for GC: this node's pods as the mirror knows them, once it has synced, and
    the pods live GETs found that the watch has not brought yet (``MirrorWriter.sightings``).

    Until the pod mirror has synced since start-up it answers None: an unsynced mirror proves
    nothing about a pod being gone (invariant 10). Nor does a synced one about a pod the API showed
    after the mirror's position: an ADD answered from a live GET while the watch lags must not be
    torn down by the next pass as "pod-gone" (or "pod-replaced", the mirror holding its predecessor).
    """

    def __init__(
        self,
        *,
        database: Database,
        state: MirrorState,
        api: KubeApi,
        node_name: str,
        memory: MirrorWriter | None = None,
    ) -> None:
        self._db = database
        self._state = state
        self._api = api
        self._node_name = node_name
        self._memory = memory
        self._disputes_said: set[tuple[str, str, str]] = set()
        """The pods ``gone_from_api`` has warned about (again at info level only)."""

    async def pods_on_node(self) -> dict[tuple[str, str], str] | None:
        if not self._state.synced.is_set():
            return None
        pods = await self._db.read(mirror.pod_uids)
        for record in self._memory.sightings() if self._memory is not None else ():
            if isinstance(record, PodRecord):
                pods[record.key] = "" if record.is_static else record.uid  # as ``mirror.pod_uids``
        return pods

    async def gone_from_api(self, namespace: str, name: str, uid: str) -> bool:
        """ONE live GET of the pod, before GC tears down what the mirror says is a gone or replaced
        pod's: the mirror is a cache of the API, and a node name that is not this node's
        (``MULTUS_NODE_NAME`` wrong, or unset where the hostname is not the node's name) makes it
        sync without this node's pods while every ADD still succeeds (``get_pod`` asks by name). A
        pod of ``uid`` (any, when ``uid`` is not known) still there is said at warning level, with
        the node it runs on. An API that cannot be asked proves nothing either way:
        ``ClusterUnavailableError``, which GC tells apart from a pod the API still has."""
        try:
            obj = await self._api.get(pod_path(namespace, name))
            record = pod_record(obj, kept_annotations=(CONFIG_SOURCE_ANNOTATION,))
        except ApiNotFoundError as exc:
            if exc.says_pod_gone(name):
                return True
            # Not the API's word about this pod (a proxy's 404, a path prefix it does not serve):
            # taken for "gone", it would have GC tear down every sandbox the mirror disputes. Kept
            # for as long as it lasts, so said once per pod at warning level: an operator must see it.
            said = (namespace, name, "404")
            if said not in self._disputes_said:
                if len(self._disputes_said) >= DISPUTES_REMEMBERED:
                    self._disputes_said.clear()
                self._disputes_said.add(said)
                log.warning(
                    "gc: the API answered 404 for pod %s/%s without naming the pod (a proxy's, or a path"
                    " it does not serve): its sandbox is kept until the API answers for it: %s",
                    namespace,
                    name,
                    exc,
                )
            raise ClusterUnavailableError(
                f"cannot get pod {namespace}/{name}: a 404 that does not name the pod: {exc}"
            ) from exc
        except ApiError as exc:  # an answer that is no pod (``ApiProtocolError``) tells no more
            raise ClusterUnavailableError(f"cannot get pod {namespace}/{name}: {exc}") from exc
        if not record.is_pod_of(uid):
            return True
        said = (namespace, name, record.uid)
        if len(self._disputes_said) >= DISPUTES_REMEMBERED:
            self._disputes_said.clear()
        log.log(
            logging.INFO if said in self._disputes_said else logging.WARNING,
            "gc: the API still has pod %s/%s (uid %s, on node %r), which this node's pod mirror (node %r)"
            " does not hold: its sandbox is kept; is MULTUS_NODE_NAME this node's name?",
            namespace,
            name,
            record.uid,
            record.node_name,
            self._node_name,
        )
        self._disputes_said.add(said)
        return False
