"""The emulator's own HTTP control endpoints under ``/_emulator``, for tests driving another process.

``GET /_emulator/requests[?since=N&method=GET&path=REGEX]`` lists logged API requests,
``DELETE /_emulator/requests`` clears the log; ``GET /_emulator/faults`` shows armed faults and
``POST /_emulator/faults`` arms one (``{"action": "fail"|"cut"|"latency"|"pause"|"resume"|"clear"|
"drop-watches"|"compact", ...}``, see ``FaultInjector.configure``); ``GET /_emulator/watches`` lists
open watch streams. These endpoints are never logged, delayed, failed or paused. Part of the
emulator, a test/demo tool.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app.sandbox.faults import FaultInjector
from app.sandbox.objects import encode
from app.sandbox.requestlog import RequestLog
from app.sandbox.status import ApiError, bad_request
from app.sandbox.store import ObjectStore
from app.sandbox.streaming import WatchStreams

PREFIX = "/_emulator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=encode(payload), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return web.Response(
        body=encode(error.status()), status=error.code, content_type="application/json", headers=headers
    )


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error)

    return guarded


def add_routes(
    router: web.UrlDispatcher,
    *,
    store: ObjectStore,
    faults: FaultInjector,
    requests: RequestLog,
    streams: WatchStreams,
) -> None:
    async def list_requests(request: web.Request) -> web.StreamResponse:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError as error:
            raise bad_request("'since' must be an integer") from error
        records = requests.records(
            since=since, method=request.query.get("method"), path=request.query.get("path")
        )
        return json_response(
            {"items": [record.to_json() for record in records], "lastSeq": requests.last_seq}
        )

    async def clear_requests(request: web.Request) -> web.StreamResponse:
        requests.clear()
        return json_response({"lastSeq": requests.last_seq})

    async def show_faults(request: web.Request) -> web.StreamResponse:
        return json_response(faults.snapshot())

    async def arm_fault(request: web.Request) -> web.StreamResponse:
        try:
            payload = json.loads(await request.read() or b"null")
        except ValueError as error:
            raise bad_request(f"the fault body is not JSON: {error}") from error
        action = payload.get("action") if isinstance(payload, dict) else None
        result: dict[str, Any] = {}
        if action == "drop-watches":
            result["dropped"] = streams.drop_all()
        elif action == "compact":
            result["compactedResourceVersion"] = str(store.compact())
        else:
            faults.configure(payload)
        return json_response({**faults.snapshot(), **result})

    async def list_watches(request: web.Request) -> web.StreamResponse:
        return json_response({"items": streams.open_watches()})

    router.add_get(f"{PREFIX}/requests", _guarded(list_requests))
    router.add_delete(f"{PREFIX}/requests", _guarded(clear_requests))
    router.add_get(f"{PREFIX}/faults", _guarded(show_faults))
    router.add_post(f"{PREFIX}/faults", _guarded(arm_fault))
    router.add_get(f"{PREFIX}/watches", _guarded(list_watches))
