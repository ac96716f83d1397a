"""The watch loops that keep the mirror in step with the API, in kopf's shape: three layers.

- ``infinite_watch`` runs forever: it calls ``continuous_watch`` again after a 410 at once, and
  after an error, an outage or a 410 that came before anything but its own relist was written
  after a capped exponential backoff with jitter (reset once a write succeeds, or once a call ran
  ``backoff_reset_after`` before it ended), never sooner than an error's ``Retry-After`` (up to
  ``backoff_max``). It never lets an exception escape, except the cancellation its task was asked
  for: a ``CancelledError`` out of something it awaited (a future another party cancelled) is a
  crash like any other, logged and followed by a reconnection.
- ``continuous_watch`` resumes from the stored resourceVersion when there is one (no full LIST
  after a restart), or lists page by page, writes the snapshot to the mirror (deletions
  reconciled) and marks it synced; then watches from the position with bookmarks, one stream
  after another, writing each batch, until the server says 410 Gone (it returns: the caller
  relists). A resumed position is never trusted before the server has shown it reached it: until
  the mirror is synced, one ``LIST ?limit=1&resourceVersion=<position>&resourceVersionMatch=
  NotOlderThan`` (from the watch cache, cheap) comes first. A server whose store went back in
  time (etcd restored from a backup without bumping its revision) answers it 504 with the cause
  ``ResourceVersionTooLarge``: a watch from that position would hear nothing of the restored
  objects, for ever, while the mirror of the old world counted as synced. That answer, on this
  LIST or on any watch, forgets the position and relists at once, as a 410 does; a 504 without
  that cause is an ordinary transient error, retried with backoff. A running watch asks the same
  question again whenever it has reason to doubt its position: after a failed call (an etcd
  restore takes the API servers down and up again), after streams that ended at once, and after
  a stream that heard nothing at all, not even a bookmark (a watch from a position the server has
  not reached waits silently).
- ``watch_objs`` is one streaming request whose inactivity deadline is reset by every line.

Called by ``Watchers`` (one ``infinite_watch`` task per target); each layer is usable alone in
tests. Raw JSON only: at most one LIST page or one burst of events is decoded at a time, and
only records (never API objects) outlive a page. Never calls ``app.attach``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from app import aiotasks
from app.watch.api import KubeApi
from app.watch.backoff import Backoff
from app.watch.errors import ApiError, ApiGoneError, ApiResourceVersionTooLargeError
from app.watch.mirroring import MirrorWriter
from app.watch.resources import Bookmark, Record, WatchItem, WatchTarget, parse_event
from app.watch.settings import WatchSettings

log = logging.getLogger(__name__)

MAX_LIST_RESTARTS = 3
"""A paged LIST whose continue token expires (410) is restarted this often before giving up."""
MIN_USEFUL_STREAM = 1.0
"""A stream that ends cleanly sooner than this without delivering anything counts as idle."""


class WatchEnd(enum.Enum):
    """Why ``continuous_watch`` returned."""

    EXPIRED = "expired"
    """410 Gone, or a position the server has not reached (``ResourceVersionTooLarge``): relist now."""
    IDLE = "idle"
    """Streams end at once without delivering anything: back off before trying again."""
    EXPIRED_AT_ONCE = "expired at once"
    """410 Gone (or too large) before any stream wrote anything since this call's own relist: the
    server's watch history does not reach its own LIST; relisting at once would hammer it, so back
    off first."""


async def infinite_watch(
    *,
    api: KubeApi,
    writer: MirrorWriter,
    settings: WatchSettings,
    stop: asyncio.Event | None = None,
    _iterations: int | None = None,
    _backoff: Backoff | None = None,
) -> None:
    """Keep ``writer``'s target mirrored until ``stop`` is set (or ``_iterations`` calls, for tests)."""
    target = writer.target
    backoff = _backoff or reconnect_backoff(settings)
    await _load_position(writer)
    iteration = 0
    doubt_position = False
    while not (stop is not None and stop.is_set()) and (_iterations is None or iteration < _iterations):
        iteration += 1
        writes_before = writer.writes
        backoff.started()
        end: WatchEnd | None
        retry_after: float | None = None
        try:
            end = await continuous_watch(
                api=api, writer=writer, settings=settings, doubt_position=doubt_position
            )
        except ApiError as exc:
            writer.state.note_error(exc)
            log.warning("watch %s failed: %s", target.key, exc)
            end, retry_after = None, exc.retry_after
        except (Exception, asyncio.CancelledError) as exc:  # a bug or a store failure: log it whole,
            # keep the mirror alive. A cancellation nobody asked this task for would otherwise end it
            # silently (a TaskGroup drops a child ended cancelled) and freeze this mirror for good.
            if isinstance(exc, asyncio.CancelledError) and aiotasks.cancel_requested():
                raise
            writer.state.note_error(exc)
            log.exception("watch %s crashed; restarting it", target.key)
            end = None
        if writer.writes != writes_before and end is not WatchEnd.EXPIRED_AT_ONCE:
            backoff.reset()
        doubt_position = end is None or end is WatchEnd.IDLE  # an outage (an API server restarted
        # on a restored store, say) or streams that heard nothing: ask before watching from it again
        if end is WatchEnd.EXPIRED:
            continue
        delay = backoff.next_delay()
        if retry_after is not None:  # the server said when (429, 503): coming back sooner adds to its load
            delay = max(delay, min(retry_after, settings.backoff_max))
        log.debug("watch %s: reconnecting in %.2f s (attempt %d)", target.key, delay, backoff.attempt)
        await _sleep_unless_stopped(delay, stop)


def reconnect_backoff(settings: WatchSettings, *, clock: Callable[[], float] = time.monotonic) -> Backoff:
    """The delays between a watch's reconnections, as ``settings`` set them."""
    return Backoff(
        initial=settings.backoff_initial,
        maximum=settings.backoff_max,
        jitter=settings.backoff_jitter,
        reset_after=settings.backoff_reset_after,
        clock=clock,
    )


async def continuous_watch(
    *, api: KubeApi, writer: MirrorWriter, settings: WatchSettings, doubt_position: bool = False
) -> WatchEnd:
    """Relist if there is no position, or one the server has not reached; then watch stream after
    stream until 410 or a position not reached (raises on other errors).

    The position is checked with the server (``check_position``) before its first stream when the
    mirror was resumed and is not synced yet, or with ``doubt_position`` (the caller's last call
    failed or heard nothing), and after any stream that heard nothing at all, not even a bookmark.
    """
    target = writer.target
    relisted_at: int | None = None
    if writer.resource_version and (doubt_position or not writer.state.synced.is_set()):
        await _forget_position_unless_reached(api=api, writer=writer)
    if not writer.resource_version:
        await relist(api=api, writer=writer, settings=settings)
        relisted_at = writer.writes
    while True:
        loop = asyncio.get_running_loop()
        started, writes_before = loop.time(), writer.writes
        confirm_resume = not writer.state.synced.is_set()
        try:
            heard = await _stream_into_mirror(
                api=api, writer=writer, settings=settings, confirm_resume=confirm_resume
            )
        except (ApiGoneError, ApiResourceVersionTooLargeError) as exc:
            position = writer.resource_version
            log.info("watch %s: position %s unusable (%s); relisting", target.key, position, exc)
            writer.forget_position()
            return _expired(writer, relisted_at)
        if writer.writes == writes_before and loop.time() - started < MIN_USEFUL_STREAM:
            return WatchEnd.IDLE
        if not heard and not await _forget_position_unless_reached(api=api, writer=writer):
            return _expired(writer, relisted_at)


def _expired(writer: MirrorWriter, relisted_at: int | None) -> WatchEnd:
    """How a call that forgot its position ends: relist at once, unless the position came from
    this call's own relist and nothing was written since (``EXPIRED_AT_ONCE``)."""
    if relisted_at is not None and writer.writes == relisted_at:
        return WatchEnd.EXPIRED_AT_ONCE
    return WatchEnd.EXPIRED


async def _forget_position_unless_reached(*, api: KubeApi, writer: MirrorWriter) -> bool:
    """Check the writer's position with the server; forget it (and say False) when the server has
    not reached it: its store went back in time, and a watch from it would hear nothing, for ever."""
    try:
        await check_position(api=api, writer=writer)
    except ApiResourceVersionTooLargeError as exc:
        log.warning(
            "watch %s: the API server has not reached the resourceVersion %s (%s): its store went back"
            " in time; relisting",
            writer.target.key,
            writer.resource_version,
            exc.message,
        )
        writer.forget_position()
        return False
    return True


async def check_position(*, api: KubeApi, writer: MirrorWriter) -> None:
    """Ask the server whether it has reached the writer's position: one LIST of at most one object,
    which raises ``ApiResourceVersionTooLargeError`` when it has not (its answer is not kept)."""
    target = writer.target
    await api.get(target.path, query=target.position_check_query(writer.resource_version))


async def relist(*, api: KubeApi, writer: MirrorWriter, settings: WatchSettings) -> None:
    """LIST the target page by page and write it as one snapshot; a 410 on a page starts over."""
    for attempt in range(MAX_LIST_RESTARTS + 1):
        listed_at = time.monotonic()
        try:
            records, resource_version = await _list_all(api=api, target=writer.target, settings=settings)
        except ApiGoneError:
            if attempt == MAX_LIST_RESTARTS:
                raise
            log.info("list %s: continue token expired, listing again", writer.target.key)
            continue
        await writer.write_snapshot(records, resource_version, listed_at=listed_at)
        log.info(
            "list %s: %d objects at resourceVersion %s", writer.target.key, len(records), resource_version
        )
        return


async def _list_all(
    *, api: KubeApi, target: WatchTarget, settings: WatchSettings
) -> tuple[list[Record], str]:
    records: list[Record] = []
    continue_token: str | None = None
    while True:
        page = await api.get(
            target.path, query=target.list_query(limit=settings.list_page_size, continue_token=continue_token)
        )
        metadata = page.get("metadata") or {}
        for item in page.get("items") or ():
            record = target.record(item)
            if record is not None:
                records.append(record)
        continue_token = metadata.get("continue") or None
        if continue_token is None:
            return records, str(metadata.get("resourceVersion", ""))
        del page


async def _stream_into_mirror(
    *, api: KubeApi, writer: MirrorWriter, settings: WatchSettings, confirm_resume: bool
) -> bool:
    """One stream from the writer's position into the mirror, batch by batch; whether anything
    (an event or a bookmark) came.

    ``confirm_resume``: the mirror was resumed, not relisted, in this process; it becomes synced
    at the first bookmark or once the server's replay is over (the stream goes quiet).
    """
    heard = False
    quiet_after = settings.resume_settle if confirm_resume else None
    stream = watch_objs(
        api=api,
        target=writer.target,
        since=writer.resource_version,
        settings=settings,
        quiet_after=quiet_after,
    )
    async with aclosing(stream):
        async for batch in stream:
            heard = heard or bool(batch)
            await writer.write_batch(batch)
            if confirm_resume and (not batch or any(isinstance(item, Bookmark) for item in batch)):
                writer.state.mark_synced()
                confirm_resume = False
    return heard


async def watch_objs(
    *,
    api: KubeApi,
    target: WatchTarget,
    since: str,
    settings: WatchSettings,
    quiet_after: float | None = None,
) -> AsyncGenerator[list[WatchItem], None]:
    """One watch request from ``since``: batches of items, as they arrive, until the stream ends.

    Ends quietly when the server closes the stream or nothing (not even a bookmark) came for
    ``watch_inactivity_timeout``. With ``quiet_after``, yields one empty batch the first time
    the stream stays silent that long. Raises ``ApiGoneError`` on a 410 ``ERROR`` event. The
    deadline is re-armed around each read rather than held across ``yield``: a timeout context
    spanning a yield would cancel the consumer's own work.
    """
    loop = asyncio.get_running_loop()
    server_timeout = int(settings.watch_server_timeout * (1 + 0.1 * random.random()))
    query = target.watch_query(resource_version=since, timeout_seconds=server_timeout)
    async with api.watch(target.path, query) as stream:
        deadline = loop.time() + settings.watch_inactivity_timeout
        while True:
            quiet_at = None if quiet_after is None else loop.time() + quiet_after
            try:
                async with asyncio.timeout_at(deadline if quiet_at is None else min(deadline, quiet_at)):
                    lines = await stream.next_lines(settings.event_batch_size)
            except TimeoutError:
                if quiet_at is not None and loop.time() < deadline:
                    quiet_after = None
                    yield []
                    continue
                log.info(
                    "watch %s: nothing for %.0f s, reopening", target.key, settings.watch_inactivity_timeout
                )
                return
            if not lines:
                return
            deadline = loop.time() + settings.watch_inactivity_timeout
            items: list[WatchItem] = []
            for line in lines:
                try:
                    item = parse_event(target, line)
                except ApiError:
                    if items:  # what came before the error is still true: write it first
                        yield items
                    raise
                if item is not None:
                    items.append(item)
            if items:
                yield items


async def _load_position(writer: MirrorWriter) -> None:
    try:
        await writer.load_position()
    except Exception:  # the mirror is a cache: an unreadable position costs a relist, nothing more
        log.exception("watch %s: cannot read the stored position; relisting", writer.target.key)
        writer.forget_position()


async def _sleep_unless_stopped(delay: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass
