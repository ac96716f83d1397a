"""Publishing a pod's ``k8s.v1.cni.cncf.io/network-status`` annotation: the ``StatusPublisher``.

Called by ``app.attach`` once per successful ADD. Upstream Multus GETs the pod and PUTs
``pods/status`` in a conflict-retry loop (two requests, both throttled); here it is ONE merge
PATCH of ``pods/<name>/status`` without a GET: a merge patch carries no resourceVersion, so it
cannot conflict with other writers, and it carries ``metadata.uid``, which the API server checks
as a precondition so that a pod recreated under the same name is never written (the answer's uid
is checked too, for servers that do not enforce it). A pod that is gone (404), or whose name now
belongs to another pod (409 that persists), is not an error: its sandbox is being torn down
anyway. 409, 429, 5xx and unreachable are retried a few times, a few hundred milliseconds
apart at most, the whole write bounded by ``status_deadline``; then ``ClusterUnavailableError``.
Events go through ``PodEventPoster`` and never wait. Never reads the mirror and never retries
beyond ``status_retry_delays``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from app.attach.cluster import (
    NETWORK_STATUS_ANNOTATION,
    ClusterUnavailableError,
    InterfaceEvent,
    PodInfo,
)
from app.watch.api import KubeApi
from app.watch.errors import RETRYABLE_ERRORS, ApiConflictError, ApiError, ApiNotFoundError
from app.watch.podevents import PodEventPoster
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)


def status_patch(pod: PodInfo, status_json: str) -> dict[str, Any]:
    """The merge patch: the annotation, and the pod's uid as a precondition when it is known."""
    metadata: dict[str, Any] = {"annotations": {NETWORK_STATUS_ANNOTATION: status_json}}
    if pod.uid:
        metadata["uid"] = pod.uid
    return {"metadata": metadata}


class ApiStatusPublisher:
    def __init__(self, *, api: KubeApi, settings: WatchSettings, events: PodEventPoster) -> None:
        self._api = api
        self._settings = settings
        self._events = events
        self.published = 0
        self.skipped = 0
        """Pods gone (or replaced) before their status could be written."""
        self.foreign_writes = 0
        """Answers naming another uid (a server ignoring the uid precondition): should stay 0."""

    async def publish_network_status(self, pod: PodInfo, status_json: str) -> None:
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status"
        body = status_patch(pod, status_json)
        try:
            async with asyncio.timeout(self._settings.status_deadline):
                answer = await self._patch_with_retries(path, body)
        except TimeoutError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {pod.namespace}/{pod.name}: "
                f"no success within {self._settings.status_deadline} s"
            ) from exc
        except ApiNotFoundError:
            self.skipped += 1
            log.info("pod %s/%s is gone: network-status not written", pod.namespace, pod.name)
            return
        except ApiConflictError:
            self.skipped += 1
            log.warning(
                "pod %s/%s now has another uid than %s: network-status not written",
                pod.namespace,
                pod.name,
                pod.uid,
            )
            return
        except ApiError as exc:
            raise ClusterUnavailableError(
                f"cannot write network-status of pod {pod.namespace}/{pod.name}: {exc}"
            ) from exc
        self._check_uid(pod, answer)
        self.published += 1

    def emit_interface_events(self, pod: PodInfo, events: Sequence[InterfaceEvent]) -> None:
        self._events.offer(pod, events)

    async def _patch_with_retries(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        delays = self._settings.status_retry_delays
        for attempt in range(len(delays) + 1):
            try:
                return await self._api.patch(path, body)
            except RETRYABLE_ERRORS as exc:
                if attempt == len(delays) or (exc.retry_after or 0) > delays[attempt]:
                    raise
                log.debug("PATCH %s: %s; retrying in %.0f ms", path, exc, delays[attempt] * 1000)
                await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check_uid(self, pod: PodInfo, answer: dict[str, Any]) -> None:
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
