"""Watch responses: one chunked stream of JSON lines per watch request, and the registry of open ones.

For each ``?watch=true`` request the server hands a ``WatchRequest`` to ``WatchStreams.serve``,
which subscribes to the ``WatchHub`` (initial ADDED events when asked, else changes after the
requested resourceVersion), then writes what the watcher queues, BOOKMARKs at the configured
interval when ``allowWatchBookmarks=true``, and ends the stream cleanly at ``timeoutSeconds``. A
too-old resourceVersion is answered, as the real API server does, with HTTP 200 and one ``ERROR``
event carrying a 410 ``Status``. The registry lets tests drop every open watch abruptly (the TCP
connection is aborted, no final chunk) and lets ``stop`` end them cleanly. Part of the emulator, a
test/demo tool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from app.sandbox.faults import FaultInjector
from app.sandbox.objects import encode, watch_line
from app.sandbox.resources import Resource
from app.sandbox.status import ApiError
from app.sandbox.watching import Watcher, WatchFilter, WatchHub

logger = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """A parsed watch request."""

    filter: WatchFilter
    since: int | None
    """Send changes after this resourceVersion; None sends the current state as ADDED events first."""
    send_initial_events: bool = False
    """WatchList (``sendInitialEvents=true``): end the initial events with an annotated BOOKMARK."""
    bookmarks: bool = False
    timeout: float = 1800.0


def bookmark_line(resource: Resource, resource_version: int, *, initial_events_end: bool = False) -> bytes:
    metadata: dict[str, object] = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return watch_line(
        "BOOKMARK", encode({"kind": resource.kind, "apiVersion": resource.api_version, "metadata": metadata})
    )


class WatchStreams:
    """Serves watch requests and keeps track of the open ones."""

    def __init__(
        self,
        *,
        hub: WatchHub,
        faults: FaultInjector,
        current_resource_version: Callable[[], int],
        bookmark_interval: float,
    ) -> None:
        self._hub = hub
        self._faults = faults
        self._current_resource_version = current_resource_version
        self.bookmark_interval = bookmark_interval
        self._open: dict[Watcher, web.BaseRequest] = {}

    def open_watches(self) -> list[str]:
        """The raw path (with query) of every open watch stream."""
        return [watcher.description for watcher in self._open]

    def drop_all(self) -> int:
        """Abort every open watch connection at once, as a crashed API server or a broken network would."""
        dropped = 0
        for watcher, request in list(self._open.items()):
            watcher.close("dropped")
            if request.transport is not None:
                request.transport.abort()
            dropped += 1
        return dropped

    def close_all(self) -> int:
        """End every open watch stream cleanly (the client sees the end of the response)."""
        closed = 0
        for watcher in list(self._open):
            watcher.close("stopped")
            closed += 1
        return closed

    async def serve(
        self, request: web.BaseRequest, watch: WatchRequest, initial: Callable[[], list[bytes]]
    ) -> web.StreamResponse:
        """Stream ``watch``; ``initial()`` gives the current state's ADDED lines when ``since`` is None."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher = self._subscribe(watch, initial, description=request.raw_path)
        except ApiError as error:
            await response.prepare(request)
            await response.write(watch_line("ERROR", encode(error.status())))
            return response
        self._open[watcher] = request
        try:
            await response.prepare(request)
            await self._pump(response, watcher, watch)
        except ConnectionError:
            logger.debug("watch client went away: %s", request.raw_path)
        finally:
            self._open.pop(watcher, None)
            self._hub.unsubscribe(watcher)
        return response

    def _subscribe(
        self, watch: WatchRequest, initial: Callable[[], list[bytes]], *, description: str
    ) -> Watcher:
        if watch.since is not None and not watch.send_initial_events:
            return self._hub.subscribe(watch.filter, since=watch.since, description=description)
        # Synchronous from snapshot to subscription: no change can fall between the two.
        lines = initial()
        if watch.send_initial_events:
            lines.append(
                bookmark_line(
                    watch.filter.resource, self._current_resource_version(), initial_events_end=True
                )
            )
        return self._hub.subscribe(watch.filter, since=None, initial=lines, description=description)

    async def _pump(self, response: web.StreamResponse, watcher: Watcher, watch: WatchRequest) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + watch.timeout
        next_bookmark = loop.time() + self.bookmark_interval if watch.bookmarks else None
        since = watch.since or 0
        while True:
            if self._faults.paused:
                await self._faults.wait_until_resumed()
            if watcher.closed in ("dropped", "overflow"):
                return
            if watcher.has_pending:
                await response.write(b"".join(watcher.drain()))
                continue
            if watcher.closed:
                return
            now = loop.time()
            if now >= deadline:
                return
            if next_bookmark is not None and now >= next_bookmark:
                # Nothing pending: the watcher has seen every change up to the current version. A
                # watch from a version not reached yet gets no bookmark until it is reached.
                rv = self._current_resource_version()
                if rv >= since:
                    await response.write(bookmark_line(watch.filter.resource, rv))
                next_bookmark = now + self.bookmark_interval
                continue
            wake_at = deadline if next_bookmark is None else min(deadline, next_bookmark)
            try:
                async with asyncio.timeout(wake_at - now):
                    await watcher.wait()
            except TimeoutError:
                pass
