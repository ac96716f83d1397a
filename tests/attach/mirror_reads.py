"""A pod mirror whose first read lets something else happen first: what a daemon serves (an ADD,
a DEL) while ``StatusRetries.resume`` waits for the mirror after a restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.attach.status_retries import PodMirror
from app.store.mirror_records import PodRecord


class MirrorReadAfter:
    """``pods``, whose first read awaits ``during`` before it answers (later reads answer at once)."""

    def __init__(self, pods: PodMirror, during: Callable[[], Awaitable[object]]) -> None:
        self._pods = pods
        self._during: Callable[[], Awaitable[object]] | None = during

    async def mirrored_pod(self, namespace: str, name: str) -> PodRecord | None:
        during, self._during = self._during, None
        if during is not None:
            await during()
        return await self._pods.mirrored_pod(namespace, name)
