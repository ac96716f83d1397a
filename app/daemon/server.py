"""The shim-facing HTTP server on ``<socketDir>/multus.sock``: routes, readiness, shielding.

Speaks upstream's protocol so upstream's Go shim works unchanged: ``POST /cni``, ``/healthz`` and
``/readyz`` (GET or POST), 404 elsewhere, 405 for a wrong method, one request per connection.
One addition of ours: ``POST /gc[?dryRun=true]`` runs a garbage-collection pass for operators.
``POST /delegate`` is upstream's hot-plug API (``app.attach.hotplug``), gated like ``/cni``.
Requests are decoded by ``app.daemon.protocol`` and handed to the engine as tasks shielded from
cancellation: a shim that disconnects mid-ADD must not leave a delegate half-recorded, so the
operation always runs to its final commit. ADD, CHECK, GC and STATUS wait for readiness (answered
503 with CNI code 11 before it); DEL is served as soon as the store is open, because DEL needs
nothing but the checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app import metrics
from app.attach import hotplug
from app.attach.engine import AttachEngine
from app.attach.requests import Command, NodeRequest, SandboxRequest
from app.cni.types import CniError, ErrorCode
from app.daemon import protocol
from app.gc.collector import GarbageCollector

if TYPE_CHECKING:  # the query server imports this module's Readiness
    from app.daemon.query_server import Activity

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    """What the daemon waits for before serving ADDs. ``reason`` says what is still missing."""

    store_open: bool = False
    recovered: bool = False
    stopping: bool = False
    extra_conditions: dict[str, bool] = field(default_factory=dict)

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


@dataclass
class CniServer:
    engine: AttachEngine
    daemon_config: Mapping[str, Any]
    readiness: Readiness
    collector: GarbageCollector | None = None
    activity: Activity | None = None
    _in_flight: set[asyncio.Task[Any]] = field(default_factory=set)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/cni", self._cni)
        app.router.add_post("/gc", self._gc)
        app.router.add_post("/delegate", self._delegate)
        for path, handler in (("/healthz", self._healthz), ("/readyz", self._readyz)):
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.middlewares.append(_close_connections)
        return app

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for in-flight operations; return how many still run."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        return sum(1 for task in self._in_flight if not task.done())

    def in_flight(self) -> list[str]:
        """Names of the operations still running (``cni-ADD-<container>``, ...), for shutdown logs."""
        return sorted(task.get_name() for task in self._in_flight if not task.done())

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _readyz(self, _request: web.Request) -> web.Response:
        status = 200 if self.readiness.ready else 500
        return web.Response(status=status, content_type="application/json")

    async def _gc(self, http_request: web.Request) -> web.Response:
        """multus-py's operator GC (``multusctl gc``): one pass now; ``?dryRun=true`` only reports."""
        if self.collector is None or not self.readiness.ready:
            return _error_response(_NotReadyError(self.readiness.reason or "no garbage collector"))
        dry_run = http_request.query.get("dryRun", "false").lower() in ("1", "true", "yes")
        report = await self._run_shielded(self.collector.run_once(dry_run=dry_run), name="operator-gc")
        if self.activity is not None:
            self.activity.gc_finished(report, trigger="operator")
        return web.json_response(report.as_json())

    async def _cni(self, http_request: web.Request) -> web.Response:
        body = await http_request.read()
        try:
            request = protocol.interpret(protocol.decode_body(body), daemon_config=self.daemon_config)
            self._admit(request.command)
            result = await self._run_shielded(self._dispatch(request), name=_task_name(request))
        except CniError as error:
            return _error_response(error)
        except Exception as exc:
            log.exception("internal error serving a CNI request")
            return _error_response(
                CniError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            )
        if result is None:
            return web.Response(status=200)
        return web.Response(
            status=200, body=protocol.add_response_body(result), content_type="application/json"
        )

    async def _delegate(self, http_request: web.Request) -> web.Response:
        """Upstream's hot-plug API (what multus-dynamic-networks-controller calls): one delegate
        added to or removed from a running sandbox, recorded in its checkpoint."""
        body = await http_request.read()
        try:
            shim_request, attributes = protocol.decode_delegate_body(body)
            call = protocol.interpret_delegate(shim_request, attributes, daemon_config=self.daemon_config)
            self._admit(call.request.command if call is not None else Command.STATUS)
            result = None
            if call is not None:
                operation = hotplug.serve_delegate(self.engine, call, status=self.engine.status_publisher)
                name = f"delegate-{call.request.command}-{call.request.container_id[:12]}"
                result = await self._run_shielded(operation, name=name)
        except CniError as error:
            return _error_response(error)
        except Exception as exc:
            log.exception("internal error serving a /delegate request")
            return _error_response(
                CniError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            )
        if result is None:
            return web.Response(status=200)
        return web.Response(
            status=200, body=protocol.add_response_body(result), content_type="application/json"
        )

    def _admit(self, command: Command) -> None:
        reason = self.readiness.reason
        if command is Command.DEL and self.readiness.store_open:
            return
        if reason is not None:
            raise _NotReadyError(reason)

    async def _run_shielded(self, operation: Awaitable[Any], *, name: str) -> Any:
        task = asyncio.ensure_future(operation)
        task.set_name(name)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def _dispatch(self, request: SandboxRequest | NodeRequest) -> Any:
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


class _NotReadyError(CniError):
    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.TRY_AGAIN_LATER, f"multus daemon is not ready: {reason}")


def _task_name(request: SandboxRequest | NodeRequest) -> str:
    if isinstance(request, SandboxRequest):
        return f"cni-{request.command}-{request.container_id[:12]}"
    return f"cni-{request.command}"


def _error_response(error: CniError) -> web.Response:
    status = 503 if isinstance(error, _NotReadyError) else 400
    return web.Response(status=status, body=protocol.error_body(error), content_type="application/json")


@web.middleware
async def _close_connections(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One request per connection, as upstream's server (keep-alive disabled); 404/405 included.
    Counts every request the way upstream's ``multus_server_request_total`` does."""
    try:
        response = await handler(request)
    except web.HTTPException as http_error:
        response = web.Response(status=http_error.status, text=http_error.text, headers=http_error.headers)
    response.force_close()
    known = request.match_info.route.resource is not None
    metrics.SERVER_REQUESTS.labels(
        request.path if known else "NotFound", str(response.status), request.method
    ).inc()
    return response


async def start(server: CniServer, sock: socket.socket) -> web.AppRunner:
    """Serve on ``sock``, the listening socket ``app.daemon.listener.bind`` made before the heavy
    imports (connections made since then wait in its backlog); return the runner to stop it with."""
    runner = web.AppRunner(server.application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=socket.SOMAXCONN)
    await site.start()
    return runner
