"""Publishing a pod's ``k8s.v1.cni.cncf.io/network-status`` annotation: the ``StatusPublisher``.

Called by ``app.attach`` once per successful ADD. Upstream Multus GETs the pod and PUTs
``pods/status`` in a conflict-retry loop (two requests, both throttled); here it is ONE merge
PATCH of ``pods/<name>/status`` without a GET: a merge patch carries no resourceVersion, so it
cannot conflict with other writers, and it carries ``metadata.uid``, an immutable field, so that a
pod recreated under the same name is never written (the API server refuses the patch: 422 naming
``metadata.uid``; 409 where a server checks it as a precondition; the answer's uid is checked too,
for servers that do neither). A pod that is gone (404), or whose name now belongs to another pod,
is not an error: its sandbox is being torn down anyway. 409, 429, 5xx and unreachable are
retried a few times, a few hundred milliseconds apart at most, the whole write bounded by
``status_deadline``; then ``ClusterUnavailableError``.

Under upstream's ClusterRole (``get`` and ``update`` of ``pods/status``, no ``patch``) the PATCH is
refused with 403: the publisher then writes as upstream does, a GET of the pod and a PUT of
``pods/<name>/status`` carrying the resourceVersion it read, repeated (fresh GET each time) when
another writer got in between (409), at most ``len(status_retry_delays)`` times; and it remembers
the refusal, so every later write goes straight to GET + PUT. A GET answering another uid means the
pod was replaced: skipped, like a 404.

``NoNetworkFound`` and ``AddedInterface`` events go through ``PodEventPoster`` and never wait.
Never reads the mirror and never retries beyond ``status_retry_delays``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.attach.cluster import (
    NETWORK_STATUS_ANNOTATION,
    ClusterUnavailableError,
    InterfaceEvent,
)
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi
from app.watch.errors import (
    RETRYABLE_ERRORS,
    ApiConflictError,
    ApiError,
    ApiNotFoundError,
    ApiRejectedError,
)
from app.watch.podevents import PodEventPoster
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)


def status_patch(pod: PodRecord, status_json: str) -> dict[str, Any]:
    """The merge patch: the annotation, and the pod's uid as a precondition when it is known."""
    metadata: dict[str, Any] = {"annotations": {NETWORK_STATUS_ANNOTATION: status_json}}
    if pod.uid:
        metadata["uid"] = pod.uid
    return {"metadata": metadata}


def _refused_for_its_uid(error: ApiRejectedError) -> bool:
    """The API server refused the patch because the pod of that name has another uid: the uid in a
    patch is an immutable field, not a precondition, so a real server answers 422 naming it."""
    return error.status == 422 and "metadata.uid" in error.fields


class _PodReplacedError(Exception):
    """The GET before a PUT answered a pod with another uid than the sandbox's."""


class ApiStatusPublisher:
    def __init__(self, *, api: KubeApi, settings: WatchSettings, events: PodEventPoster) -> None:
        self._api = api
        self._settings = settings
        self._events = events
        self.put_only = False
        """PATCH was refused (403) once: every write is a GET + PUT of ``pods/status`` since."""
        self.published = 0
        self.skipped = 0
        """Pods gone (or replaced) before their status could be written."""
        self.foreign_writes = 0
        """Answers naming another uid (a server ignoring the uid precondition): should stay 0."""
        self.put_conflicts = 0
        """PUTs refused because another writer changed the pod since our GET (each was retried)."""

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> None:
        where = f"{pod.namespace}/{pod.name}"
        try:
            async with asyncio.timeout(self._settings.status_deadline):
                answer = await self._write(pod, status_json)
        except TimeoutError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {where}: "
                f"no success within {self._settings.status_deadline} s"
            ) from exc
        except ApiNotFoundError:
            self.skipped += 1
            log.info("pod %s is gone: network-status not written", where)
            return
        except (ApiConflictError, _PodReplacedError):
            self.skipped += 1
            log.warning("pod %s now has another uid than %s: network-status not written", where, pod.uid)
            return
        except ApiRejectedError as exc:
            if not _refused_for_its_uid(exc):
                raise ClusterUnavailableError(f"cannot write network-status of pod {where}: {exc}") from exc
            self.skipped += 1
            log.warning("pod %s now has another uid than %s: network-status not written", where, pod.uid)
            return
        except ApiError as exc:
            raise ClusterUnavailableError(f"cannot write network-status of pod {where}: {exc}") from exc
        self._check_uid(pod, answer)
        self.published += 1

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        self._events.offer(pod, events)

    def emit_network_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        self._events.offer_not_found(pod, namespace=namespace, name=name, error=error)

    def emit_pod_event(self, pod: PodRecord, *, reason: str, warning: bool, message: str) -> None:
        self._events.offer_event(pod, reason=reason, warning=warning, message=message)

    async def _write(self, pod: PodRecord, status_json: str) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status"
        if not self.put_only:
            try:
                return await self._with_retries(
                    "PATCH", path, lambda: self._api.patch(path, status_patch(pod, status_json))
                )
            except ApiRejectedError as exc:
                if exc.status != 403:
                    raise
                self.put_only = True
                log.warning(
                    "PATCH of pods/status refused (%s): writing network-status with GET + PUT from now on",
                    exc,
                )
        return await self._get_and_put(pod, status_json, path)

    async def _get_and_put(self, pod: PodRecord, status_json: str, path: str) -> dict[str, Any]:
        """Upstream's write: GET the pod, set the annotation, PUT it with the resourceVersion read."""
        pod_path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"

        async def attempt() -> dict[str, Any]:
            current = await self._api.get(pod_path)
            metadata = current.setdefault("metadata", {})
            if pod.uid and metadata.get("uid") and metadata["uid"] != pod.uid:
                raise _PodReplacedError(metadata["uid"])
            annotations = metadata.get("annotations") or {}
            metadata["annotations"] = {**annotations, NETWORK_STATUS_ANNOTATION: status_json}
            try:
                return await self._api.put(path, current)
            except ApiConflictError:
                self.put_conflicts += 1
                raise

        try:
            return await self._with_retries("GET + PUT", path, attempt)
        except ApiConflictError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {pod.namespace}/{pod.name}: the pod kept changing "
                f"between GET and PUT ({1 + len(self._settings.status_retry_delays)} attempts): {exc}"
            ) from exc

    async def _with_retries(
        self, what: str, path: str, request: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        delays = self._settings.status_retry_delays
        for attempt in range(len(delays) + 1):
            try:
                return await request()
            except RETRYABLE_ERRORS as exc:
                if attempt == len(delays) or (exc.retry_after or 0) > delays[attempt]:
                    raise
                log.debug("%s %s: %s; retrying in %.0f ms", what, path, exc, delays[attempt] * 1000)
                await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check_uid(self, pod: PodRecord, answer: dict[str, Any]) -> None:
        written_uid = (answer.get("metadata") or {}).get("uid", "")
        if pod.uid and written_uid and written_uid != pod.uid:
            self.foreign_writes += 1
            log.error(
                "network-status for pod %s/%s (uid %s) was written to uid %s: "
                "the API server ignored the uid precondition",
                pod.namespace,
                pod.name,
                pod.uid,
                written_uid,
            )
