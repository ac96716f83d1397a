"""The HTTP side of the emulator: the aiohttp application, its middleware and the API handlers.

``make_app`` wires routes for discovery, ``/version``, health, every resource path (parsed by
``routing``) and the ``/_emulator`` control endpoints. The middleware logs each API request, applies
injected faults (pause, latency, failures) and turns ``ApiError`` into a ``Status`` response.
Handlers parse query parameters and bodies, call the store, and answer with the stored JSON bytes
(no re-encoding of objects). Bodies are JSON only (protobuf is answered with 415) and at most
3 MiB, as the API server reads them (413 beyond). Part of the
emulator, a test/demo tool.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from app.sandbox import control, discovery, routing
from app.sandbox.faults import FaultInjector
from app.sandbox.objects import StoredObject, encode, watch_line
from app.sandbox.requestlog import RequestLog, RequestRecord
from app.sandbox.resources import Resource
from app.sandbox.selectors import parse_field_selector, parse_label_selector
from app.sandbox.status import ApiError, bad_request, unknown_path
from app.sandbox.store import ListQuery, ListResult, ObjectStore
from app.sandbox.streaming import WatchRequest, WatchStreams
from app.sandbox.watching import WatchFilter

logger = logging.getLogger(__name__)

RECORD_KEY = web.RequestKey("sandbox_record", RequestRecord)
MAX_BODY_BYTES = 3 * 1024 * 1024
"""The API server's ``MaxRequestBodyBytes``: a longer body is answered 413."""
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})


@dataclass(frozen=True, slots=True)
class ServerParts:
    store: ObjectStore
    faults: FaultInjector
    requests: RequestLog
    streams: WatchStreams
    default_watch_timeout: float
    too_large_wait: float = 0.1
    """How long a list at a resourceVersion not reached yet waits for it before its 504 (the real
    watch cache waits 3 s)."""


def make_app(parts: ServerParts) -> web.Application:
    app = web.Application(middlewares=[_middleware(parts)], client_max_size=MAX_BODY_BYTES)
    control.add_routes(
        app.router, store=parts.store, faults=parts.faults, requests=parts.requests, streams=parts.streams
    )
    handlers = _Handlers(parts)
    app.router.add_get("/version", handlers.version)
    app.router.add_get("/version/", handlers.version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, handlers.health)
    app.router.add_route("*", "/api", handlers.api)
    app.router.add_route("*", "/api/{tail:.*}", handlers.api)
    app.router.add_route("*", "/apis", handlers.api)
    app.router.add_route("*", "/apis/{tail:.*}", handlers.api)

    async def record_status(request: web.Request, response: web.StreamResponse) -> None:
        record = request.get(RECORD_KEY)
        if record is not None:
            parts.requests.answer(record, response.status)

    app.on_response_prepare.append(record_status)
    return app


def _middleware(parts: ServerParts) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(control.PREFIX + "/"):
            return await handler(request)
        request[RECORD_KEY] = parts.requests.start(
            method=request.method,
            path=request.raw_path,
            content_type=request.headers.get("Content-Type"),
            accept=request.headers.get("Accept"),
        )
        try:
            await _apply_faults(parts.faults, request)
            response = await handler(request)
            if parts.faults.take_cut(request.method, request.raw_path):
                _cut(request)
            return response
        except ApiError as error:
            return control.error_response(error)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            if error.status == 413:
                return control.error_response(
                    ApiError(413, f"Request entity too large: limit is {MAX_BODY_BYTES}")
                )
            message = (
                "the server could not find the requested resource" if error.status == 404 else error.text
            )
            return control.error_response(ApiError(error.status, message or error.reason))
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as error:
            logger.exception("emulator handler failed: %s %s", request.method, request.raw_path)
            return control.error_response(ApiError(500, f"emulator internal error: {error!r}"))

    return middleware


async def _apply_faults(faults: FaultInjector, request: web.Request) -> None:
    if faults.paused:
        await faults.wait_until_resumed()
    await faults.delay(request.method, request.raw_path)
    faults.run_actions(request.method, request.raw_path)
    error = faults.take_failure(request.method, request.raw_path)
    if error is not None:
        raise error


def _cut(request: web.Request) -> None:
    """Close the connection before the answer is sent: the client sees it end with no response."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise ConnectionResetError("connection cut by an injected fault")


def _object_response(stored: StoredObject, *, status: int = 200) -> web.Response:
    return web.Response(body=stored.raw, status=status, content_type="application/json")


def _list_response(resource: Resource, result: ListResult) -> web.Response:
    metadata: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
    if result.continue_token:
        metadata["continue"] = result.continue_token
    if result.remaining is not None:
        metadata["remainingItemCount"] = result.remaining
    head = encode({"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": metadata})
    body = head[:-1] + b',"items":[' + b",".join(stored.raw for stored in result.items) + b"]}"
    return web.Response(body=body, content_type="application/json")


def _bool(query: Mapping[str, str], key: str) -> bool:
    value = query.get(key, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad_request(f'invalid value for {key}: "{value}" is not a boolean')


def _int(query: Mapping[str, str], key: str) -> int | None:
    value = query.get(key, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError as error:
        raise bad_request(f'invalid value for {key}: "{value}" is not an integer') from error


def _resource_version(query: Mapping[str, str]) -> int | None:
    value = query.get("resourceVersion", "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError as error:
        raise ApiError(400, f'Invalid value: "{value}": resourceVersion: invalid value') from error


def _invalid_list_options(field: str, why: str) -> ApiError:
    return ApiError(
        422,
        f'ListOptions.meta.k8s.io "" is invalid: {field}: {why}',
        reason="Invalid",
        details={"kind": "ListOptions", "group": "meta.k8s.io", "causes": [{"field": field, "message": why}]},
    )


def _check_list_options(query: Mapping[str, str], match: str) -> None:
    """What the API server's list options validation (and etcd's paging) refuses."""
    rv = query.get("resourceVersion", "")
    if match:
        if match not in ("NotOlderThan", "Exact"):
            raise _invalid_list_options("resourceVersionMatch", f'Unsupported value: "{match}"')
        if not rv:
            raise _invalid_list_options(
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            )
        if query.get("continue"):
            raise _invalid_list_options(
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden when continue is provided",
            )
        if match == "Exact" and rv == "0":
            raise _invalid_list_options(
                "resourceVersionMatch",
                'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
            )
    if query.get("continue") and rv not in ("", "0"):
        raise bad_request("specifying resource version is not allowed when using continue")


async def _json_body(request: web.Request, *, required: bool = True) -> Any:
    media_type = (request.headers.get("Content-Type") or "application/json").split(";", 1)[0].strip().lower()
    raw = await request.read()
    if not raw and not required:
        return None
    if "json" not in media_type:
        raise ApiError(
            415,
            f'the body of the request was in an unknown format "{media_type}" - the Kubernetes API emulator '
            "accepts JSON only (application/json and the JSON patch types)",
        )
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"the body of the request is not valid JSON: {error}") from error


class _Handlers:
    def __init__(self, parts: ServerParts) -> None:
        self._parts = parts
        self._store = parts.store

    async def version(self, request: web.Request) -> web.StreamResponse:
        return control.json_response(discovery.VERSION_INFO)

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def api(self, request: web.Request) -> web.StreamResponse:
        target = routing.parse(request.path)
        if isinstance(target, routing.DiscoveryTarget):
            if request.method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return control.json_response(self._discovery(target, request.host))
        if target.is_collection:
            return await self._collection(request, target)
        return await self._object(request, target)

    @staticmethod
    def _discovery(target: routing.DiscoveryTarget, host: str) -> dict[str, Any]:
        if target.legacy and target.version is None:
            return discovery.api_versions(host)
        if not target.legacy and target.group is None:
            return discovery.api_group_list()
        if target.version is None:
            return discovery.api_group(target.group or "")
        return discovery.resource_list(target.group or "", target.version)

    async def _collection(self, request: web.Request, target: routing.ResourceTarget) -> web.StreamResponse:
        resource = target.resource
        query = request.query
        if request.method == "GET":
            if target.legacy_watch or _bool(query, "watch"):
                return await self._watch(request, target)
            list_query = self._list_query(target, query)
            await self._wait_until_reached(list_query)
            return _list_response(resource, self._store.list_page(resource, list_query))
        if target.legacy_watch:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if request.method == "POST":
            if resource.namespaced and target.namespace is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            _refuse_dry_run(query)
            stored = self._store.create(resource, target.namespace, await _json_body(request))
            return _object_response(stored, status=201)
        if request.method == "DELETE":
            _refuse_dry_run(query)
            deleted = self._store.delete_collection(
                resource,
                namespace=target.namespace,
                labels=parse_label_selector(query.get("labelSelector")),
                fields=parse_field_selector(query.get("fieldSelector"), resource),
            )
            return _list_response(resource, ListResult(deleted, self._store.resource_version))
        raise ApiError(405, "the server does not allow this method on the requested resource")

    async def _object(self, request: web.Request, target: routing.ResourceTarget) -> web.StreamResponse:
        resource, namespace, name = target.resource, target.namespace, target.name or ""
        if target.legacy_watch:
            raise unknown_path()
        if request.method == "GET":
            return _object_response(self._store.get(resource, namespace, name))
        _refuse_dry_run(request.query)
        if request.method == "PUT":
            body = await _json_body(request)
            stored = self._store.update(resource, namespace, name, body, subresource=target.subresource)
            return _object_response(stored)
        if request.method == "PATCH":
            body = await _json_body(request)
            stored = self._store.patch(
                resource,
                namespace,
                name,
                body,
                content_type=request.headers.get("Content-Type", ""),
                subresource=target.subresource,
            )
            return _object_response(stored)
        if request.method == "DELETE" and target.subresource is None:
            options = await _json_body(request, required=False)
            preconditions = options.get("preconditions") if isinstance(options, dict) else None
            deleted = self._store.delete(resource, namespace, name, preconditions=preconditions)
            return _object_response(deleted)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _list_query(self, target: routing.ResourceTarget, query: Mapping[str, str]) -> ListQuery:
        match = query.get("resourceVersionMatch", "")
        _check_list_options(query, match)
        return ListQuery(
            namespace=target.namespace,
            labels=parse_label_selector(query.get("labelSelector")),
            fields=parse_field_selector(query.get("fieldSelector"), target.resource),
            limit=_int(query, "limit") or 0,
            continue_token=query.get("continue") or None,
            resource_version=_resource_version(query),
            exact=match == "Exact",
        )

    async def _wait_until_reached(self, list_query: ListQuery) -> None:
        """Give a list at a resourceVersion not reached yet the watch cache's short wait for it;
        one still not reached then is refused by ``list_page`` (504 ResourceVersionTooLarge)."""
        wanted = list_query.resource_version
        if wanted is None or list_query.continue_token or wanted <= self._store.resource_version:
            return
        try:
            async with asyncio.timeout(self._parts.too_large_wait):
                await self._store.wait_until_reached(wanted)
        except TimeoutError:
            pass  # not reached: list_page answers the 504

    async def _watch(self, request: web.Request, target: routing.ResourceTarget) -> web.StreamResponse:
        query = request.query
        resource = target.resource
        watch_filter = WatchFilter(
            resource,
            namespace=target.namespace,
            labels=parse_label_selector(query.get("labelSelector")),
            fields=parse_field_selector(query.get("fieldSelector"), resource),
        )
        send_initial = _bool(query, "sendInitialEvents")
        bookmarks = _bool(query, "allowWatchBookmarks")
        match = query.get("resourceVersionMatch", "")
        if send_initial and match != "NotOlderThan":
            raise _invalid_list_options(
                "resourceVersionMatch", "sendInitialEvents requires resourceVersionMatch=NotOlderThan"
            )
        if send_initial and not bookmarks:
            raise _invalid_list_options(
                "allowWatchBookmarks", "sendInitialEvents requires allowWatchBookmarks=true"
            )
        if match and not send_initial:
            raise _invalid_list_options(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            )
        rv = _resource_version(query)
        timeout = _int(query, "timeoutSeconds")
        watch = WatchRequest(
            filter=watch_filter,
            since=rv if rv else None,
            send_initial_events=send_initial,
            bookmarks=bookmarks,
            timeout=float(timeout) if timeout and timeout > 0 else self._parts.default_watch_timeout,
        )

        def initial() -> list[bytes]:
            selected = self._store.select(
                resource, namespace=target.namespace, labels=watch_filter.labels, fields=watch_filter.fields
            )
            return [watch_line("ADDED", stored.raw) for stored in selected]

        return await self._parts.streams.serve(request, watch, initial)


def _refuse_dry_run(query: Mapping[str, str]) -> None:
    if query.get("dryRun"):
        raise bad_request("dryRun is not supported by the Kubernetes API emulator")
