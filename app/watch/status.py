"""Publishing a pod's ``k8s.v1.cni.cncf.io/network-status`` annotation: the ``StatusPublisher``.

Called by ``app.attach`` once per successful ADD. Upstream Multus GETs the pod and PUTs
``pods/status`` in a conflict-retry loop (two requests, both throttled); here it is ONE merge
PATCH of ``pods/<name>/status`` without a GET: a merge patch carries no resourceVersion, so it
cannot conflict with other writers, and it carries ``metadata.uid``, an immutable field, so that a
pod recreated under the same name is never written (the API server refuses the patch: 422 naming
``metadata.uid``; the answer's uid is checked too, for a server that does not). A pod that is gone
(404, its ``Status`` naming the pod), or whose name now belongs to another pod, is not an error: its
sandbox is being torn down anyway. A 404 that names no pod (a proxy's, a path prefix the server
does not serve) proves nothing of it: an outage, ``StatusWriteUnavailableError``, retried later.
409, 429, 5xx and unreachable are retried a few times (``status_retry_delays``), never sooner than
a ``Retry-After`` asks (an API server shedding load sends one with every 429), the whole write
bounded by ``status_deadline``: an attempt the deadline would cut short is not made.
Then ``ClusterUnavailableError`` (``StatusWriteUnavailableError``): a 409 the server kept
answering to the PATCH among them, which says nothing of the pod's uid (the uid is refused with
422), only that the write did not land.

A value the API server can never take is not sent: a pod's annotations may hold 256 KiB in all
(keys and values), and a network-status past that (hundreds of networks with device-info, or a
delegate printing a huge result) is refused with 422 naming ``metadata.annotations``, as it is when
the pod's other annotations leave it too little room. Either way the pod's network-status
annotation is removed instead (it may be a previous sandbox's, naming addresses the pod no longer
has), a Warning ``NetworkStatusTooLarge`` event says so, and the write counts as done: sending the
same value again cannot succeed, so nothing retries it.

Under upstream's ClusterRole (``get`` and ``update`` of ``pods/status``, no ``patch``) the PATCH is
refused with 403: the publisher then writes as upstream does, a GET of the pod and a PUT of
``pods/<name>/status`` carrying the resourceVersion it read, repeated (fresh GET each time) when
another writer got in between (409), at most ``len(status_retry_delays)`` times; and it remembers
the refusal, so every later write goes straight to GET + PUT. A GET answering another uid means the
pod was replaced: skipped, like a 404. A PUT (or GET) refused too (403: the role lacks them as
well), or any other 4xx but the uid's and the size's 422 and 401, is ``StatusWriteRefusedError``:
sending the same write soon cannot succeed, so the writers that retry back off to minutes for it.
A 401 (the token expired or was rotated, which the next read of the token file puts right) is
retried like an outage. A GET
answering no pod (no ``metadata`` object, or ``annotations`` that are not one) is
``ApiProtocolError``, and so an outage to retry, like any answer that is not JSON or not an object.

``NoNetworkFound`` and ``AddedInterface`` events go through ``PodEventPoster`` and never wait.
Never reads the mirror and never retries beyond ``status_retry_delays``: a write that failed so
is retried later, in the background, by the engine (``app.attach.status_retries``), which is
handed the last ``Retry-After`` with the error (``StatusWriteUnavailableError``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.attach.cluster import (
    NETWORK_STATUS_ANNOTATION,
    ClusterUnavailableError,
    InterfaceEvent,
    StatusWriteRefusedError,
)
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi
from app.watch.errors import (
    RETRYABLE_ERRORS,
    ApiConflictError,
    ApiError,
    ApiNotFoundError,
    ApiProtocolError,
    ApiRejectedError,
)
from app.watch.podevents import PodEventPoster
from app.watch.resources import pod_path
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)

ANNOTATIONS_SIZE_LIMIT = 256 * 1024
"""The API server's bound on a pod's annotations, keys and values together, in bytes
(``TotalAnnotationSizeLimitB``)."""
TOO_LARGE_REASON = "NetworkStatusTooLarge"


def status_patch(pod: PodRecord, status_json: str | None) -> dict[str, Any]:
    """The merge patch: the annotation (None removes it), and the pod's uid when it is known."""
    metadata: dict[str, Any] = {"annotations": {NETWORK_STATUS_ANNOTATION: status_json}}
    if pod.uid:
        metadata["uid"] = pod.uid
    return {"metadata": metadata}


def annotation_bytes(status_json: str) -> int:
    """What the annotation takes of the pod's ``ANNOTATIONS_SIZE_LIMIT``: its key and value, UTF-8."""
    return len(NETWORK_STATUS_ANNOTATION.encode()) + len(status_json.encode("utf-8", "surrogatepass"))


def _refused_as_too_large(error: ApiRejectedError) -> bool:
    """The API server refused the annotations: the only one the write changes is network-status, a
    string, so the refusal is of their total size."""
    return error.status == 422 and "metadata.annotations" in error.fields


def _refused_for_its_uid(error: ApiRejectedError) -> bool:
    """The API server refused the patch because the pod of that name has another uid: the uid in a
    patch is an immutable field, not a precondition, so a real server answers 422 naming it."""
    return error.status == 422 and "metadata.uid" in error.fields


class StatusWriteUnavailableError(ClusterUnavailableError):
    """The write did not land within ``status_deadline``; ``retry_after``: what the API server
    last asked a retry to wait (seconds), which the engine's background retry honours."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _PodReplacedError(Exception):
    """The GET before a PUT answered a pod with another uid than the sandbox's."""


class _TooLargeError(Exception):
    """The network-status cannot fit in the pod's annotations."""


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
        self.too_large = 0
        """Values that could not fit in the pod's annotations: the annotation was removed instead."""

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        where = f"{pod.namespace}/{pod.name}"
        try:
            async with asyncio.timeout(self._settings.status_deadline) as deadline:
                answer = await self._write_fitting(pod, status_json, deadline)
        except _TooLargeError as exc:
            self._refuse_too_large(pod, status_json, reason=str(exc))
            return True
        except TimeoutError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {where}: "
                f"no success within {self._settings.status_deadline} s"
            ) from exc
        except ApiNotFoundError as exc:
            if not exc.says_pod_gone(pod.name):
                # Not the API's word about this pod (a proxy's 404, a path prefix it does not
                # serve): taken for "gone", the write would be dropped for good, the pod running.
                raise StatusWriteUnavailableError(
                    f"cannot write network-status of pod {where}: a 404 that does not name the pod: {exc}",
                    retry_after=exc.retry_after,
                ) from exc
            self.skipped += 1
            log.info("pod %s is gone: network-status not written", where)
            return False
        except _PodReplacedError:
            self.skipped += 1
            log.warning("pod %s now has another uid than %s: network-status not written", where, pod.uid)
            return False
        except ApiConflictError as exc:
            # Only a PATCH gets here (GET + PUT turns its lasting conflict into its own error): the
            # server lost its update to other writers every time. The write did not land, and
            # nothing says the pod was replaced: it is retried later like any outage.
            raise StatusWriteUnavailableError(
                f"cannot write network-status of pod {where}: the API server kept answering "
                f"409 Conflict ({1 + len(self._settings.status_retry_delays)} attempts): {exc}",
                retry_after=exc.retry_after,
            ) from exc
        except ApiRejectedError as exc:
            if exc.status == 401:
                # Not the role but the credentials: a token that expired or was rotated since it was
                # last read, which the next reads of the token file (every minute) put right. Retried
                # like an outage, not backed off to minutes like a refusal for good.
                raise StatusWriteUnavailableError(
                    f"cannot write network-status of pod {where}: {exc}", retry_after=exc.retry_after
                ) from exc
            if not _refused_for_its_uid(exc):
                raise StatusWriteRefusedError(f"cannot write network-status of pod {where}: {exc}") from exc
            self.skipped += 1
            log.warning("pod %s now has another uid than %s: network-status not written", where, pod.uid)
            return False
        except ApiError as exc:
            raise StatusWriteUnavailableError(
                f"cannot write network-status of pod {where}: {exc}", retry_after=exc.retry_after
            ) from exc
        self._check_uid(pod, answer)
        self.published += 1
        return True

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        self._events.offer(pod, events)

    def emit_network_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        self._events.offer_not_found(pod, namespace=namespace, name=name, error=error)

    def emit_pod_event(self, pod: PodRecord, *, reason: str, warning: bool, message: str) -> None:
        self._events.offer_event(pod, reason=reason, warning=warning, message=message)

    async def _write_fitting(
        self, pod: PodRecord, status_json: str, deadline: asyncio.Timeout
    ) -> dict[str, Any]:
        """Write ``status_json``, or, when the pod's annotations cannot hold it, remove the
        annotation and raise ``_TooLargeError``."""
        size = annotation_bytes(status_json)
        if size > ANNOTATIONS_SIZE_LIMIT:
            reason = f"it alone takes {size} bytes"
        else:
            try:
                return await self._write(pod, status_json, deadline)
            except ApiRejectedError as exc:
                if not _refused_as_too_large(exc):
                    raise
                reason = f"with the pod's other annotations it takes more (the API server: {exc.message})"
        await self._write(pod, None, deadline)
        raise _TooLargeError(reason)

    def _refuse_too_large(self, pod: PodRecord, status_json: str, *, reason: str) -> None:
        self.too_large += 1
        text = (
            f"network-status ({len(json.loads(status_json))} entries) not written: a pod's annotations "
            f"may hold {ANNOTATIONS_SIZE_LIMIT} bytes in all, and {reason}; the annotation is removed"
        )
        log.warning("pod %s/%s: %s", pod.namespace, pod.name, text)
        self._events.offer_event(pod, reason=TOO_LARGE_REASON, warning=True, message=text)

    async def _write(
        self, pod: PodRecord, status_json: str | None, deadline: asyncio.Timeout
    ) -> dict[str, Any]:
        """Set the annotation to ``status_json`` (remove it when None), by PATCH or GET + PUT."""
        path = f"{pod_path(pod.namespace, pod.name)}/status"
        if not self.put_only:
            try:
                return await self._with_retries(
                    "PATCH", path, lambda: self._api.patch(path, status_patch(pod, status_json)), deadline
                )
            except ApiRejectedError as exc:
                if exc.status != 403:
                    raise
                self.put_only = True
                log.warning(
                    "PATCH of pods/status refused (%s): writing network-status with GET + PUT from now on",
                    exc,
                )
        return await self._get_and_put(pod, status_json, path, deadline)

    async def _get_and_put(
        self, pod: PodRecord, status_json: str | None, path: str, deadline: asyncio.Timeout
    ) -> dict[str, Any]:
        """Upstream's write: GET the pod, set the annotation, PUT it with the resourceVersion read."""
        path_of_pod = pod_path(pod.namespace, pod.name)

        async def attempt() -> dict[str, Any]:
            current = await self._api.get(path_of_pod)
            metadata = _pod_metadata(current, f"GET {path_of_pod}")
            if pod.uid and metadata.get("uid") and metadata["uid"] != pod.uid:
                raise _PodReplacedError(metadata["uid"])
            annotations = dict(metadata.get("annotations") or {})
            if status_json is None:
                annotations.pop(NETWORK_STATUS_ANNOTATION, None)
            else:
                annotations[NETWORK_STATUS_ANNOTATION] = status_json
            metadata["annotations"] = annotations
            try:
                return await self._api.put(path, current)
            except ApiConflictError:
                self.put_conflicts += 1
                raise

        try:
            return await self._with_retries("GET + PUT", path, attempt, deadline)
        except ApiConflictError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {pod.namespace}/{pod.name}: the pod kept changing "
                f"between GET and PUT ({1 + len(self._settings.status_retry_delays)} attempts): {exc}"
            ) from exc

    async def _with_retries(
        self,
        what: str,
        path: str,
        request: Callable[[], Awaitable[dict[str, Any]]],
        deadline: asyncio.Timeout,
    ) -> dict[str, Any]:
        """``request``, retried after each of ``status_retry_delays`` (or the longer ``Retry-After``
        the server asked for) while the retry can start before ``deadline``."""
        delays = self._settings.status_retry_delays
        for attempt in range(len(delays) + 1):
            try:
                return await request()
            except RETRYABLE_ERRORS as exc:
                if attempt == len(delays):
                    raise
                pause = max(delays[attempt], exc.retry_after or 0.0)
                when = deadline.when()
                if when is not None and asyncio.get_running_loop().time() + pause >= when:
                    raise  # the retry could not begin in time: the caller hears this error now
                log.debug("%s %s: %s; retrying in %.0f ms", what, path, exc, pause * 1000)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check_uid(self, pod: PodRecord, answer: dict[str, Any]) -> None:
        metadata = answer.get("metadata")
        # a 2xx answer without a metadata object: the write landed, only its uid cannot be checked
        written_uid = metadata.get("uid", "") if isinstance(metadata, dict) else ""
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


def _pod_metadata(pod: dict[str, Any], what: str) -> dict[str, Any]:
    """The ``metadata`` of a pod the API answered, its ``annotations`` an object when present: what
    a PUT is built from. Anything else is no pod (``ApiProtocolError``), not a crash of the write:
    the publisher's callers handle ``ClusterUnavailableError`` only, and an ADD must not fail for a
    status write."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        raise ApiProtocolError(0, f"{what}: the answer has no metadata object")
    if not isinstance(metadata.get("annotations") or {}, dict):
        raise ApiProtocolError(0, f"{what}: the answer's metadata.annotations is not an object")
    return metadata
