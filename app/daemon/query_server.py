"""The read-only query API on ``<socketDir>/multus-query.sock`` (mode 0600): what ``multusctl`` asks.

``GET /v1/attachments``, ``/v1/history``, ``/v1/sandboxes/{containerID}`` and ``/v1/status``
answer with the JSON documents of ``app.store.queries`` (filters: ``app.store.filters``; both
documented in README "Operating"); ``GET /v1`` lists them. Any other method is answered 405 before
routing, whatever the path. The handlers read through a connection of their own, opened with
SQLite ``mode=ro``: this server cannot write to the state database even by mistake, and its reads
never queue behind the engine's reader threads. One request per connection, as on ``multus.sock``.

Memory stays bounded whatever is asked (``limit=0``, a huge ``limit``, a container with a long
history): history lines are read, encoded and sent ``PAGE_ROWS`` at a time, each page a keyset read
of its own (``id <`` where the last ended), so a whole history never sits in the daemon at once and
no read transaction stays open while a slow client reads. An answer that fits in one page is sent
whole with a ``Content-Length``, as before; a longer one is streamed (chunked) and is still one JSON
document, byte for byte the one ``json.dumps`` would make of the whole list. A read that fails once
the stream has begun aborts the connection, so the client sees a truncated body, never a valid but
partial document.

Started by the daemon once the CNI socket listens; failing to start it is logged and does not
stop the daemon (it serves operators, not the runtime). ``Activity`` holds what the daemon did
lately that the database does not record (its last GC pass, its last history prune); the daemon
fills it, ``/v1/status`` shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from app.daemon import listener, server
from app.gc.collector import GcReport
from app.settings import Settings
from app.store import filters, queries
from app.store.database import Connection, Database
from app.store.retention import PruneReport

log = logging.getLogger(__name__)

ENDPOINTS = ("/v1/attachments", "/v1/history", "/v1/sandboxes/{containerID}", "/v1/status")
READ_METHODS = ("GET", "HEAD")
PAGE_ROWS = 500
"""History lines read, encoded and sent at once (README "Operating": a few hundred KiB of documents)."""

Page = tuple[list[Any], bool]
"""A page of history documents, and whether it is the answer's last."""


@dataclass
class Activity:
    """The daemon's recent doings that the database does not keep, for ``/v1/status``."""

    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_gc: dict[str, object] | None = None
    last_prune: dict[str, object] | None = None

    def gc_finished(self, report: GcReport, *, trigger: str, spool: dict[str, object] | None) -> None:
        """Remember a GC pass (``trigger``: ``periodic`` or ``operator``) with the spool replay
        before it (``SpoolReport.as_json``, as an operator's pass answers it); dry runs change nothing."""
        if not report.dry_run:
            self.last_gc = {
                "at": queries.timestamp(datetime.now(UTC)),
                "trigger": trigger,
                **report.as_json(),
                "spool": spool,
            }

    def history_pruned(self, report: PruneReport) -> None:
        self.last_prune = report.as_json()


@dataclass(frozen=True)
class QueryContext:
    """What ``/v1/status`` reports besides the database."""

    settings: Settings
    readiness: server.Readiness
    activity: Activity
    node: str
    version: str


class QueryServer:
    def __init__(self, *, db: Database, context: QueryContext) -> None:
        self._db = db
        self._context = context

    def application(self) -> web.Application:
        app = web.Application(middlewares=[_read_only])
        app.router.add_get("/v1", self._index)
        app.router.add_get("/v1/attachments", self._attachments)
        app.router.add_get("/v1/history", self._history)
        app.router.add_get("/v1/sandboxes/{container_id}", self._sandbox)
        app.router.add_get("/v1/status", self._status)
        return app

    async def _index(self, _request: web.Request) -> web.Response:
        return web.json_response({"endpoints": list(ENDPOINTS), "methods": list(READ_METHODS)})

    async def _attachments(self, request: web.Request) -> web.Response:
        where = filters.parse_attachments(request.query)
        return web.json_response(await self._read(lambda s: queries.attachments(s, where)))

    async def _history(self, request: web.Request) -> web.StreamResponse:
        where = filters.parse_history(request.query, now=datetime.now(UTC))
        return await _send_list(request, self._history_pages(where))

    async def _history_pages(self, where: filters.HistoryFilter) -> AsyncGenerator[Page, None]:
        """``history_lines`` a page at a time, each older than the last, until ``where.limit``."""
        remaining, before_id = where.limit, None
        while True:
            size = min(PAGE_ROWS, remaining) if remaining else PAGE_ROWS
            read = partial(queries.history_page, where=where, before_id=before_id, size=size)
            page: list[Any] = await self._read(read)
            if remaining:
                remaining -= len(page)
            last = len(page) < size or (where.limit > 0 and remaining == 0)
            before_id = page[-1]["id"] if page else None
            yield page, last
            if last:
                return

    async def _sandbox(self, request: web.Request) -> web.StreamResponse:
        if request.query:
            raise filters.FilterError(next(iter(request.query)), "show takes no filters")
        container = request.match_info["container_id"]
        document, newest = await self._read(lambda s: queries.sandbox_page(s, container, size=PAGE_ROWS))
        lines = document["history"]
        if len(lines) < PAGE_ROWS or lines[-1]["id"] >= newest:
            return web.json_response(document)
        del lines
        first = [document.pop("history")]  # "history" is the document's last key: streamed after the rest
        prefix = json.dumps(document)[:-1].encode() + b', "history": '
        pages = self._container_pages(document["containerID"], first, up_to_id=newest)
        return await _send_list(request, pages, prefix=prefix, suffix=b"}")

    async def _container_pages(
        self, container_id: str, first: list[list[Any]], *, up_to_id: int
    ) -> AsyncGenerator[Page, None]:
        """A container's history a page at a time, oldest first (``first`` given: taken out of it),
        up to the newest line ``sandbox_page`` saw."""
        page = first.pop()
        while True:
            last = len(page) < PAGE_ROWS or page[-1]["id"] >= up_to_id
            after_id = page[-1]["id"] if page else up_to_id
            yield page, last
            if last:
                return
            read = partial(
                queries.container_history_page,
                container_id=container_id,
                after_id=after_id,
                up_to_id=up_to_id,
                size=PAGE_ROWS,
            )
            page = await self._read(read)

    async def _status(self, request: web.Request) -> web.Response:
        if request.query:
            raise filters.FilterError(next(iter(request.query)), "status takes no filters")
        now = datetime.now(UTC)
        store, size = await self._read(lambda s: (queries.store_status(s, now=now), self._db.size_bytes()))
        context = self._context
        settings = context.settings
        document = queries.status_doc(
            source="daemon",
            node=context.node,
            ready=context.readiness.ready,
            ready_reason=context.readiness.reason,
            daemon={
                "pid": os.getpid(),
                "version": context.version,
                "startedAt": queries.timestamp(context.activity.started_at) or "",
                "socket": str(settings.socket_path),
                "querySocket": str(settings.query_socket_path),
            },
            db_path=settings.database_path,
            db_bytes=size,
            store=store,
            last_gc=context.activity.last_gc,
            retention={
                "maxAgeHours": settings.history_max_age_hours,
                "maxRows": settings.history_max_rows,
                "lastPrune": context.activity.last_prune,
            },
        )
        return web.json_response(document)

    async def _read(self, work: Callable[[Connection], Any]) -> Any:
        return await self._db.read(work)


async def _send_list(
    request: web.Request, pages: AsyncGenerator[Page, None], *, prefix: bytes = b"", suffix: bytes = b""
) -> web.StreamResponse:
    """Answer ``prefix`` + the JSON list of every page's documents + ``suffix``: whole when the
    first page is the last, else streamed a page at a time (one page in memory at once)."""
    first, last = await anext(pages)
    if last:
        await pages.aclose()
        body = prefix + json.dumps(first).encode() + suffix
        return web.Response(body=body, content_type="application/json", charset="utf-8")
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    response.force_close()
    await response.prepare(request)
    try:
        if request.method != "HEAD":
            chunk = prefix + b"[" + json.dumps(first)[1:-1].encode()
            first.clear()  # see _send_rest
            await response.write(chunk)
            del chunk
            await _send_rest(response, pages)
            await response.write_eof(b"]" + suffix)
    except ConnectionError:  # the client left: nothing more to send
        log.debug("query API: %s %s: the client left mid-answer", request.method, request.path_qs)
    except Exception:
        log.exception(
            "query API: %s %s failed mid-answer; connection aborted", request.method, request.path_qs
        )
        if request.transport is not None:
            request.transport.abort()  # the body stays unterminated: the client knows it is incomplete
    finally:
        await pages.aclose()
    return response


async def _send_rest(response: web.StreamResponse, pages: AsyncGenerator[Page, None]) -> None:
    """The pages after the first (which is not empty), each as ``, `` and its documents."""
    async for page, _last in pages:
        if page:
            chunk = b", " + json.dumps(page)[1:-1].encode()
            page.clear()  # encoded: its documents go now (the reader thread keeps its last value)
            await response.write(chunk)


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _read_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse every method but GET/HEAD before routing; turn domain errors into JSON answers."""
    response: web.StreamResponse
    if request.method not in READ_METHODS:
        response = _error(
            405,
            f"the query API is read-only: {request.method} is not allowed, use GET "
            "(an operator GC is POST /gc on multus.sock: multusctl gc)",
        )
        response.headers["Allow"] = ", ".join(READ_METHODS)
    else:
        response = await _answer(request, handler)
    response.force_close()
    return response


async def _answer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except filters.FilterError as exc:
        return _error(400, f"query parameter {exc.parameter!r}: {exc}", parameter=exc.parameter)
    except queries.NotFoundError as exc:
        return _error(404, str(exc))
    except queries.AmbiguousError as exc:
        return _error(400, str(exc))
    except web.HTTPNotFound:
        return _error(404, f"no endpoint {request.path}; the endpoints are {', '.join(ENDPOINTS)}")
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)
    except Exception as exc:
        log.exception("query API: %s %s failed", request.method, request.path_qs)
        return _error(500, f"{type(exc).__name__}: {exc}")


async def start(context: QueryContext) -> web.AppRunner | None:
    """Listen on ``settings.query_socket_path`` (0600) with a read-only connection of its own;
    return the runner (its cleanup closes that connection), or None when it cannot start."""
    settings = context.settings
    path = settings.query_socket_path
    try:
        db = await asyncio.to_thread(Database.open, settings.database_path, read_only=True)
    except Exception as exc:
        log.error("query API not started: cannot open %s read-only: %s", settings.database_path, exc)
        return None

    async def close_db(_app: web.Application) -> None:
        await asyncio.to_thread(db.close)

    try:
        listener.prepare_socket(path)
    except (listener.SocketInUseError, OSError) as exc:
        log.error("query API not started: cannot listen on %s: %s", path, exc)
        await asyncio.to_thread(db.close)
        return None
    app = QueryServer(db=db, context=context).application()
    app.on_cleanup.append(close_db)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=server.CLOSE_ANSWER_SECONDS
    )
    try:
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
    except OSError as exc:
        log.error("query API not started: cannot listen on %s: %s", path, exc)
        await runner.cleanup()
        await asyncio.to_thread(db.close)  # idempotent: the cleanup above may already have closed it
        return None
    log.info("query API on %s", path)
    return runner
