"""The shim-facing HTTP server on ``<socketDir>/multus.sock``: routes, readiness, limits, shielding.

Speaks upstream's protocol so upstream's Go shim works unchanged: ``POST /cni``, ``/healthz`` and
``/readyz`` (GET or POST), 404 elsewhere, 405 for a wrong method (upstream's plain-text line), one
request per connection.
One addition of ours: ``POST /gc[?dryRun=true]``, an operator's garbage-collection pass: the
spooled DELs replayed (``app.daemon.spool``), then one pass, as the periodic passes do.
``POST /delegate`` is upstream's hot-plug API (``app.attach.hotplug``), held and limited like ``/cni``.
Requests are decoded by ``app.daemon.protocol`` and handed to the engine as tasks shielded from
cancellation: a shim that disconnects mid-ADD must not leave a delegate half-recorded, so the
operation always runs to its final commit.

What the HTTP layer itself refuses still gets a CNI error body: malformed HTTP (a garbage request
line, a bad header, garbage pipelined after a request), a body larger than ``MAX_BODY_BYTES``, a
body whose ``Content-Encoding`` does not decode (code 6, no traceback logged), a
body shorter than its Content-Length or not received within ``BODY_READ_SECONDS`` (a client
that sent ``Expect: 100-continue`` is told to send it first). A client that sends its request
and then half-closes its socket still gets the answer. ``connectionLimit`` bounds the CNI, GC and
delegate requests served at once; the others wait for a slot (nothing is dropped); health probes
are never held. A request takes its slot once admitted: one held for readiness holds none, so the
ADDs held while the daemon recovers never keep a DEL waiting for its readiness. ADD, CHECK and GC
that arrive before the daemon is ready
are held up to ``ready_hold`` seconds (``READY_HOLD_SECONDS``) for it, then answered 503 with CNI
code 11; DEL only waits for the store, because DEL needs nothing but the checkpoint. STATUS, which
asks whether an ADD can be served now, is answered at once: code 50 (plugin not available) with
what the daemon waits for (while it stops, 503 as the others, for the shim to wait for the next).

Built by ``app.daemon.wiring`` and started by ``app.daemon.startup`` (``CniServer``, ``Readiness``,
``start``) on the socket ``app.daemon.listener`` bound; never runs a delegate itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import ClientPayloadError, HttpVersion11, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from app import metrics, settings
from app.attach import hotplug
from app.attach.engine import AttachEngine
from app.attach.locks import SandboxLocks
from app.attach.requests import Command, NodeRequest, SandboxRequest
from app.cni.types import CniError, ErrorCode
from app.daemon import protocol
from app.gc.collector import GarbageCollector, GcReport
from app.store import checkpoints, filters

if TYPE_CHECKING:  # the query server imports this module's Readiness
    from app.daemon.query_server import Activity

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body accepted (a CNI configuration is a few kilobytes)."""
BODY_READ_SECONDS = 30.0
"""How long a request's body may take to arrive once its headers have."""
READY_HOLD_SECONDS = 30.0
"""How long a request that needs readiness is held for it: well under the shim's own deadline
(180 s) and the runtime's CNI timeout, long enough for a restarting daemon's recovery."""
ABANDON_WAIT_SECONDS = 2.0
"""How long ``abandon`` waits for the operations it cancels to end (each SIGKILLs its plugins'
process groups, then waits for them to be reaped: milliseconds, unless one is stuck in the kernel,
which no wait of ours would end)."""
CLOSE_ANSWER_SECONDS = 0.5
"""Once the operations are drained or abandoned, how long the closing server still gives a
connection's handler to finish (aiohttp's default is 60 s, and again 60 s once it cancels one)."""
_READ_CHUNK = 64 * 1024
_Route = tuple[tuple[str, ...], Callable[[web.BaseRequest], Awaitable[web.Response]]]
"""The methods a path takes, and its handler."""
_active_requests = [0]
"""CNI, GC and delegate requests being served by every server of the process, read when the metrics
are scraped (``multus_py_server_requests_active``)."""
metrics.SERVER_REQUESTS_ACTIVE.set_function(lambda: _active_requests[0])


class _Conditions(dict[str, bool]):
    """``Readiness.extra_conditions``: a dict that re-evaluates readiness when a value changes."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: Callable[[], None] = lambda: None

    def __setitem__(self, key: str, value: bool) -> None:
        super().__setitem__(key, value)
        self.changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed()


@dataclass
class Readiness:
    """What the daemon waits for before serving ADDs. ``reason`` says what is still missing.

    Set its flags and ``extra_conditions`` as things happen; ``wait_ready`` and
    ``wait_store_open`` let a request wait for them (two events kept in step with the flags)."""

    store_open: bool = False
    recovered: bool = False
    stopping: bool = False
    extra_conditions: dict[str, bool] = field(default_factory=_Conditions)
    _ready: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _store: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.extra_conditions, _Conditions):
            conditions = _Conditions()
            conditions.update(self.extra_conditions)
            self.extra_conditions = conditions
        self._refresh()

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in ("store_open", "recovered", "stopping", "extra_conditions") and hasattr(self, "_changed"):
            self._refresh()

    @property
    def ready_event(self) -> asyncio.Event:
        """Set while the daemon is ready (cleared again when a condition turns false)."""
        return self._ready

    def _refresh(self) -> None:
        conditions = self.extra_conditions
        if isinstance(conditions, _Conditions):
            conditions.changed = self._refresh
        for event, on in ((self._ready, self.ready), (self._store, self.store_open)):
            if on:
                event.set()
            else:
                event.clear()
        self._changed.set()  # wakes every waiter (stopping included); each waits on a fresh one
        self._changed = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.reason is None

    @property
    def reason(self) -> str | None:
        if self.stopping:
            return "daemon is shutting down"
        if not self.store_open:
            return "state database is not open yet"
        if not self.recovered:
            return "start-up recovery has not finished"
        waiting = [name for name, done in self.extra_conditions.items() if not done]
        return f"waiting for {', '.join(waiting)}" if waiting else None

    async def wait_ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for readiness; False at once when stopping."""
        return await self._wait(self._ready, seconds)

    async def wait_store_open(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the state database to be open."""
        return await self._wait(self._store, seconds)

    async def _wait(self, event: asyncio.Event, seconds: float) -> bool:
        """True once ``event`` is set; False when ``seconds`` pass or the daemon starts stopping."""
        if event.is_set():
            return True  # the usual case, without a timeout scope
        try:
            async with asyncio.timeout(seconds):
                while not event.is_set():
                    if self.stopping:
                        return False
                    await self._changed.wait()
        except TimeoutError:
            return event.is_set()
        return True


@dataclass
class CniServer:
    engine: AttachEngine
    daemon_config: Mapping[str, Any]
    readiness: Readiness
    collector: GarbageCollector | None = None
    activity: Activity | None = None
    connection_limit: int | None = None
    """Upstream's ``connectionLimit``: CNI and GC requests served at once (None: no bound)."""
    ready_hold: float = READY_HOLD_SECONDS
    """How long a request that needs readiness waits for it before code 11."""
    _in_flight: set[asyncio.Task[Any]] = field(default_factory=set)
    spool_dir: Path | None = None
    """The daemon's ``spoolDir`` (``Settings.spool_path``), replayed by an operator's GC pass; None:
    read from ``daemon_config`` (an in-process server of tests)."""
    spool_record: Path | None = None
    """The daemon's record of its earlier ``spoolDir``s (``app.daemon.spool.record_path`` of its
    ``stateDir``); None for a server the daemon did not wire (an in-process server of tests), which
    must not write one under the node's default ``stateDir``."""
    _operator_turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by an operator's GC pass (``_operator_gc``) from its spool replay to its end."""
    _slots: asyncio.Semaphore | None = None
    _arrivals: SandboxLocks = field(default_factory=SandboxLocks)
    """Per container ID, the requests admitted or waiting for admission, in arrival order."""

    def runner(self) -> web.BaseRunner:
        """An aiohttp runner for this server; call from a running event loop."""
        # A unix socket: TCP keep-alive means nothing on it (aiohttp would set it on every connection).
        server = _HttpServer(self.handle, access_log=None, tcp_keepalive=False)
        return web.ServerRunner(server, handle_signals=False, shutdown_timeout=CLOSE_ANSWER_SECONDS)

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for in-flight operations, those that begin meanwhile included
        (DELs are still served while stopping); return how many still run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (running := {task for task in self._in_flight if not task.done()}) and (
            left := deadline - loop.time()
        ) > 0:
            await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        return sum(1 for task in self._in_flight if not task.done())

    async def abandon(self) -> list[str]:
        """Cancel the operations still running once the drain is over and wait for them to end
        (at most ``ABANDON_WAIT_SECONDS``); return their names. A cancelled operation kills its
        plugins; what it recorded stays for the next daemon's recovery (an ADD's intents: rolled
        back; a DEL's pending attachments: torn down), and its connection is closed unanswered,
        so the shim spools a DEL (invariant 7) and answers an ADD code 11."""
        running = [task for task in self._in_flight if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=ABANDON_WAIT_SECONDS)
        return sorted(task.get_name() for task in running)

    def in_flight(self) -> list[str]:
        """Names of the operations still running (``cni-ADD-<container>``, ...), for shutdown logs."""
        return sorted(task.get_name() for task in self._in_flight if not task.done())

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request. One request per connection, as upstream's server (keep-alive
        disabled); counts every request answered the way upstream's ``multus_server_request_total``
        does, a handler's unexpected exception too (answered 500 with a CNI error, code 999)."""
        route = self._routes.get(request.path)
        if route is None:
            response = web.Response(status=404)
        elif request.method not in route[0]:
            response = _method_not_allowed(allowed=route[0])
        else:
            try:
                response = await route[1](request)
            except Exception as exc:
                log.exception("internal error serving %s %s", request.method, request.path)
                error = CniError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
                response = web.Response(
                    status=500, body=protocol.error_body(error), content_type="application/json"
                )
        response.force_close()
        metrics.labelled(
            metrics.SERVER_REQUESTS,
            request.path if route is not None else "NotFound",
            str(response.status),
            metrics.HTTP_METHOD.value(request.method),  # "post": found in the cache as it is
        ).inc()
        return response

    @functools.cached_property
    def _routes(self) -> dict[str, _Route]:
        """Each path's methods and handler, bound once."""
        return {
            "/cni": (("POST",), self._cni),
            "/gc": (("POST",), self._gc),
            "/delegate": (("POST",), self._delegate),
            "/healthz": (("GET", "HEAD", "POST"), self._healthz),
            "/readyz": (("GET", "HEAD", "POST"), self._readyz),
        }

    async def _in_slot(self, operation: Coroutine[Any, Any, Any]) -> Any:
        """``operation``'s outcome, awaited within a ``connectionLimit`` slot (taken by a request
        once it is admitted: one held for readiness holds none). Cancelled while waiting for the
        slot, ``operation`` is closed without having run."""
        try:
            await self._take_slot()
        except BaseException:
            operation.close()
            raise
        try:
            return await operation
        finally:
            self._give_slot()

    async def _take_slot(self) -> None:
        """Take one of the ``connectionLimit`` slots (any number without one); ``_give_slot`` it back."""
        if self.connection_limit is not None:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.connection_limit)
            if self._slots.locked():
                metrics.SERVER_REQUESTS_WAITING.inc()
                try:
                    await self._slots.acquire()
                finally:
                    metrics.SERVER_REQUESTS_WAITING.dec()
            else:
                await self._slots.acquire()
        _active_requests[0] += 1

    def _give_slot(self) -> None:
        _active_requests[0] -= 1
        if self._slots is not None:
            self._slots.release()

    async def _healthz(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(status=200)

    async def _readyz(self, _request: web.BaseRequest) -> web.Response:
        status = 200 if self.readiness.ready else 500
        return web.Response(status=status, content_type="application/json")

    async def _gc(self, http_request: web.BaseRequest) -> web.Response:
        """multus-py's operator GC (``multusctl gc``): what a periodic pass does, now: the DELs the
        shim spooled are replayed (their figures answered as ``spool``), then one GC pass, orphans
        whose teardown failed lately tried again too (the periodic passes wait for them).
        ``?dryRun=true`` only reports: nothing is replayed (``spool`` is null), nothing collected.
        Any other parameter, or a ``dryRun`` that is not a boolean, is refused (400 naming it): a
        misspelt dry run must not collect for real."""
        try:
            dry_run = _dry_run(http_request.query)
        except CniError as refused:
            return _error_response(refused)
        if self.collector is None:
            return _error_response(_NotReadyError("no garbage collector"))
        if not await self.readiness.wait_ready(self.ready_hold):
            return _error_response(_NotReadyError(self.readiness.reason or "not ready"))
        report, replayed = await self._run_shielded(
            self._in_slot(self._operator_gc(self.collector, dry_run=dry_run)), name="operator-gc"
        )
        if self.activity is not None:
            self.activity.gc_finished(report, trigger="operator", spool=replayed)
        return web.json_response({**report.as_json(), "spool": replayed})

    async def _operator_gc(
        self, collector: GarbageCollector, *, dry_run: bool
    ) -> tuple[GcReport, dict[str, object] | None]:
        """The spool replay (unless ``dry_run``), then the GC pass, in the periodic passes' order: an
        operator asking for a pass after an outage means the DELs the shim could not hand over too.
        Operator passes take turns, so no two replays read one spool entry at once."""
        async with self._operator_turn:
            replayed = None if dry_run else await self._replay_spool()
            return await collector.run_once(dry_run=dry_run, retry_now=True, stop=self._stopping), replayed

    async def _replay_spool(self) -> dict[str, object]:
        """Replay the spooled DELs as the daemon's own passes do: from the spool directory its
        configuration names (``spoolDir``, else ``<stateDir>/spool``, read from ``daemon_config``,
        which is the daemon's file), the shim's default one and the earlier ``spoolDir``s recorded."""
        from app.daemon import spool  # it imports this module (the body bound), so not before now

        report = await spool.replay(
            spool_dir=self._spool_path(),
            engine=self.engine,
            daemon_config=dict(self.daemon_config),
            record=self.spool_record,
            stop=self._stopping,
            retry_now=True,  # an operator asked for it now, as for the orphans' pass
        )
        return report.as_json()

    def _spool_path(self) -> Path:
        """The spool directory the daemon replays: ``spool_dir``, else the one ``daemon_config`` (the
        daemon's file) names (``spoolDir``, else ``<stateDir>/spool``)."""
        return self.spool_dir or settings.from_mapping(dict(self.daemon_config)).spool_path

    def _stopping(self) -> bool:
        """Whether the daemon has begun stopping: an operator's pass then begins no further DEL."""
        return self.readiness.stopping

    async def _cni(self, http_request: web.BaseRequest) -> web.Response:
        return await self._answer(http_request, self._serve_cni, what="a CNI request")

    async def _delegate(self, http_request: web.BaseRequest) -> web.Response:
        """Upstream's hot-plug API (what multus-dynamic-networks-controller calls): one delegate
        added to or removed from a running sandbox, recorded in its checkpoint."""
        return await self._answer(http_request, self._serve_delegate, what="a /delegate request")

    async def _answer(
        self,
        http_request: web.BaseRequest,
        serve: Callable[[bytes], Awaitable[Any]],
        *,
        what: str,
    ) -> web.Response:
        """Read the body, ``serve`` it, and answer as upstream's server does: an ADD's result as
        ``{"Result": ...}``, an empty 200 otherwise, a CNI error object for every failure."""
        try:
            result = await serve(await _read_body(http_request))
        except protocol.NothingRecordedError as nothing:
            log.warning("%s: answered success", nothing)
            return web.Response(status=200)
        except CniError as error:
            return _error_response(error)
        except Exception as exc:
            log.exception("internal error serving %s", what)
            return _error_response(
                CniError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            )
        if result is None:
            return web.Response(status=200)
        return web.Response(
            status=200, body=protocol.add_response_body(result), content_type="application/json"
        )

    async def _serve_cni(self, body: bytes) -> Any:
        request = protocol.interpret(protocol.decode_body(body), daemon_config=self.daemon_config)
        if isinstance(request, SandboxRequest):
            operation = self._in_turn(request.container_id, request.command, lambda: self._dispatch(request))
            return await self._run_shielded(operation, name=_task_name(request))
        if request.command is Command.STATUS and not self.readiness.ready and not self.readiness.stopping:
            # STATUS asks whether an ADD can be served now: its answer is the wait's reason, at once
            # (a runtime asks again; held, its status check would stall for ``ready_hold``)
            raise CniError(
                ErrorCode.PLUGIN_NOT_AVAILABLE, f"multus daemon is not ready: {self.readiness.reason}"
            )
        await self._admit(request.command)
        return await self._run_shielded(self._in_slot(self._dispatch(request)), name=_task_name(request))

    async def _serve_delegate(self, body: bytes) -> Any:
        shim_request, attributes = protocol.decode_delegate_body(body)
        call = protocol.interpret_delegate(shim_request, attributes, daemon_config=self.daemon_config)
        if call is None:
            await self._admit(Command.STATUS)
            return None
        operation = self._in_turn(
            call.request.container_id,
            call.request.command,
            lambda: hotplug.serve_delegate(self.engine, call, status=self.engine.status_publisher),
        )
        name = f"delegate-{call.request.command}-{call.request.container_id[:12]}"
        return await self._run_shielded(operation, name=name)

    async def _in_turn(
        self, container_id: str, command: Command, operation: Callable[[], Coroutine[Any, Any, Any]]
    ) -> Any:
        """Admit and run one sandbox's request in its arrival order, within a ``connectionLimit``
        slot once admitted: a request held for readiness keeps the later ones of its container
        behind it (a DEL, admitted as soon as the store is open, must not overtake a held ADD: it
        would find nothing, and the ADD then leak), but no slot."""
        async with self._arrivals.hold(container_id):
            await self._admit(command)
            return await self._in_slot(operation())

    async def _admit(self, command: Command) -> None:
        """Hold the request until the daemon can serve it (DEL: the store is open; others: ready),
        at most ``ready_hold`` seconds; then refuse with code 11."""
        needs_ready = command is not Command.DEL
        servable = self.readiness.ready if needs_ready else self.readiness.store_open
        if not servable and not self.readiness.stopping:
            log.info("holding %s until the daemon is ready: %s", command, self.readiness.reason)
        wait = self.readiness.wait_ready if needs_ready else self.readiness.wait_store_open
        if await wait(self.ready_hold):
            return
        raise _NotReadyError(self.readiness.reason or "not ready")

    async def _run_shielded(self, operation: Awaitable[Any], *, name: str) -> Any:
        task = asyncio.ensure_future(operation)
        task.set_name(name)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def _dispatch(self, request: SandboxRequest | NodeRequest) -> Any:
        if isinstance(request, SandboxRequest) and request.command is Command.ADD:
            return await self._add(request)
        if isinstance(request, SandboxRequest):
            handlers: dict[Command, Callable[[SandboxRequest], Awaitable[Any]]] = {
                Command.ADD: self.engine.add,
                Command.DEL: self.engine.delete,
                Command.CHECK: self.engine.check,
            }
            return await handlers[request.command](request)
        if request.command is Command.GC:
            await self.engine.gc(request)
        else:
            await self.engine.status(request)
        return None

    async def _add(self, request: SandboxRequest) -> Any:
        """ADD; refused because its container ID is still recorded, it is judged again once the
        DELs of that ID the shim spooled meanwhile (the runtime's DEL, which came first) have run,
        if any has, or once the ID is no longer recorded (a GC pass's replay took that DEL first):
        otherwise it would stay refused until the next GC pass replayed them."""
        try:
            return await self.engine.add(request)
        except CniError as refused:
            if not isinstance(refused.__cause__, checkpoints.SandboxExistsError):
                raise
            if not await self._replay_spooled_dels_of(request.container_id):
                raise
        return await self.engine.add(request)

    async def _replay_spooled_dels_of(self, container_id: str) -> bool:
        from app.daemon import spool  # it imports this module (the body bound), so not before now

        try:
            return await spool.replay_for(
                container_id,
                spool_dir=self._spool_path(),
                engine=self.engine,
                daemon_config=dict(self.daemon_config),
                record=self.spool_record,
            )
        except Exception:  # the ADD's own refusal stays its answer
            log.exception("replaying the spooled DELs of container %s failed", container_id)
            return False


async def _read_body(request: web.BaseRequest) -> bytes:
    """The whole body, bounded in size and time; every failure a code-6 error."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large(declared)
    if request.version >= HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        # The client waits for this before it sends its body (curl for a large one): without it,
        # the read below would wait until the client gives up waiting, or BODY_READ_SECONDS.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):
            while chunk := await request.content.read(_READ_CHUNK):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _too_large(size)
                chunks.append(chunk)
    except TimeoutError:
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            f"request body not received within {BODY_READ_SECONDS:g}s",
            f"{size} of {declared if declared is not None else 'an unknown number of'} bytes arrived",
        ) from None
    except RequestPayloadError as exc:  # its framing or Content-Encoding broken, as aiohttp decodes it
        raise CniError(ErrorCode.DECODING_FAILURE, "request body cannot be decoded", str(exc)) from None
    except (ClientPayloadError, HttpProcessingError, ConnectionError) as exc:
        raise CniError(ErrorCode.DECODING_FAILURE, "request body is incomplete", str(exc)) from None
    if declared is not None and size != declared:
        raise CniError(
            ErrorCode.DECODING_FAILURE,
            "request body is shorter than its Content-Length",
            f"{size} of {declared} bytes before the client closed its side",
        )
    return b"".join(chunks)


def _too_large(size: int) -> CniError:
    return CniError(
        ErrorCode.DECODING_FAILURE,
        f"request body is larger than {MAX_BODY_BYTES} bytes",
        f"{size} bytes",
    )


class _Connection(web.RequestHandler):
    """aiohttp's connection handler, with CNI error bodies and half-close kept open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bodies: list[StreamReader] = []
        self._received = 0

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)
        self._bodies.extend(payload for _message, payload in self._messages if payload not in self._bodies)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's protocol returns bool | None
        """The client closed its write side. Once a request has arrived it is still served and
        answered: end the bodies still being received and keep our side open (the response
        closes the connection). A request cut short in its headers is answered here; with no
        bytes at all there is nothing to answer."""
        for payload in self._bodies:
            payload.feed_eof()
        if self._request_count > 0:
            return True
        if self._received and self.transport is not None:
            error = CniError(
                ErrorCode.DECODING_FAILURE,
                "malformed HTTP request",
                f"the connection was closed after {self._received} bytes, before the end of the headers",
            )
            body = protocol.error_body(error)
            head = (
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        return False

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's log of what escaped a request, but for a body that did not decode: answered
        code 6 already, it is raised again when aiohttp drains the rest of the body afterwards."""
        if isinstance(kwargs.get("exc_info"), RequestPayloadError):
            log.debug("request body not drained: %s", kwargs["exc_info"])
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Malformed HTTP (or a failure outside our handler) answered with a CNI error object."""
        super().handle_error(request, status, exc, message)  # logs; raises if a response started
        if status >= 500:
            error = CniError(ErrorCode.INTERNAL, f"internal error: {message or HTTPStatus(status).phrase}")
        else:
            error = CniError(
                ErrorCode.DECODING_FAILURE, "malformed HTTP request", message or HTTPStatus(status).phrase
            )
        response = web.Response(
            status=status, body=protocol.error_body(error), content_type="application/json"
        )
        response.force_close()
        return response


class _HttpServer(web.Server):
    """aiohttp's low-level server making ``_Connection`` handlers."""

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


class _NotReadyError(CniError):
    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.TRY_AGAIN_LATER, f"multus daemon is not ready: {reason}")


def _dry_run(query: Mapping[str, str]) -> bool:
    """``POST /gc``'s one parameter, ``dryRun`` (false when absent), given at most once as a boolean."""
    names = [name for name, _value in query.items()]  # a multidict's items repeat a repeated name
    for name in names:
        if name != "dryRun":
            raise CniError(ErrorCode.UNSUPPORTED_FIELD, f"POST /gc takes no parameter {name!r}: only dryRun")
    if len(names) > 1:
        raise CniError(ErrorCode.UNSUPPORTED_FIELD, "POST /gc: dryRun is given more than once")
    value = query.get("dryRun", "false")
    dry_run = filters.boolean_value(value)
    if dry_run is None:
        raise CniError(ErrorCode.DECODING_FAILURE, f"POST /gc: dryRun {value!r} is not true or false")
    return dry_run


def _task_name(request: SandboxRequest | NodeRequest) -> str:
    if isinstance(request, SandboxRequest):
        return f"cni-{request.command}-{request.container_id[:12]}"
    return f"cni-{request.command}"


def _error_response(error: CniError) -> web.Response:
    status = 503 if isinstance(error, _NotReadyError) else 400
    return web.Response(status=status, body=protocol.error_body(error), content_type="application/json")


async def start(server: CniServer, sock: socket.socket) -> web.BaseRunner:
    """Serve on ``sock``, the listening socket ``app.daemon.listener.bind`` made before the heavy
    imports (connections made since then wait in its backlog); return the runner to stop it with."""
    runner = server.runner()
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=socket.SOMAXCONN)
    await site.start()
    return runner


def _method_not_allowed(*, allowed: tuple[str, ...]) -> web.Response:
    """405 as upstream's daemon answers it (its handlers' ``http.Error``: a plain-text line, the
    no-sniff header), plus the ``Allow`` header HTTP asks of a 405."""
    return web.Response(
        status=405,
        text="Method not allowed\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"Allow": ",".join(allowed), "X-Content-Type-Options": "nosniff"},
    )
