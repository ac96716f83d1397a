"""Raw JSON requests to the Kubernetes API through one kubernetes_asyncio ``ApiClient``.

``KubeApi`` owns the client (auth, TLS, token refresh and the connection pool come from
kubernetes_asyncio) and speaks plain JSON dicts: responses are read with
``_preload_content=False`` and never deserialised into the library's model classes, which cost
far more memory and time than the few fields the daemon keeps. Requests go to the client's REST
layer directly, with the client's default headers and auth: the generic ``call_api`` front would
only copy every body and header through its model serialiser on the way (an ADD's PATCH and event
are on the daemon's hot path). Every failure becomes one of
``app.watch.errors``' types, the original chained. Used by the watch loops, the pod source, the
status publisher and the event poster; never retries (its callers decide) and never logs request
bodies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp

from app import metrics
from app.watch.errors import (
    ApiError,
    ApiProtocolError,
    ApiUnreachableError,
    error_for_status,
    status_causes,
    status_named,
)
from app.watch.settings import WatchSettings

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

JsonObject = dict[str, Any]
Query = Sequence[tuple[str, str]]

MERGE_PATCH = "application/merge-patch+json"
MAX_WATCH_LINE = 16 * 1024 * 1024
"""A watch line longer than this is refused (etcd's object limit is 1.5 MiB)."""
READ_CHUNK = 64 * 1024
"""Most bytes a watch stream takes from its connection at a time."""
_AUTH = ["BearerToken"]


class KubeApi:
    """The API as JSON: ``get``, ``patch``, ``post``, ``put`` and ``watch``. Close it with ``close``."""

    def __init__(self, client: ApiClient, *, settings: WatchSettings) -> None:
        self._client = client
        self._settings = settings

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get(self, path: str, *, query: Query = ()) -> JsonObject:
        return await self._request("GET", path, query=query)

    async def patch(self, path: str, body: JsonObject, *, content_type: str = MERGE_PATCH) -> JsonObject:
        return await self._request("PATCH", path, body=body, content_type=content_type)

    async def post(self, path: str, body: JsonObject) -> JsonObject:
        return await self._request("POST", path, body=body, content_type="application/json")

    async def put(self, path: str, body: JsonObject) -> JsonObject:
        return await self._request("PUT", path, body=body, content_type="application/json")

    @asynccontextmanager
    async def watch(self, path: str, query: Query) -> AsyncIterator[WatchStream]:
        """Open one watch stream (``query`` must include ``watch=true``); closed on exit."""
        response = await self._send("GET", path, query=query, limit=self._settings.request_timeout)
        try:
            if response.status != 200:
                raise _error_from(response, await self._error_body(response, path))
            yield WatchStream(response.content, read_ahead=self._settings.event_buffer_size)
        finally:
            response.close()

    async def _error_body(self, response: aiohttp.ClientResponse, path: str) -> bytes:
        limit = self._settings.request_timeout
        try:
            async with asyncio.timeout(limit):
                return await _read(response, "GET", path)
        except TimeoutError as exc:
            raise ApiUnreachableError(0, f"GET {path}: no error body within {limit} s") from exc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: JsonObject | None = None,
        content_type: str | None = None,
    ) -> JsonObject:
        """One request bounded by ``request_timeout`` as a whole (connection, answer, body)."""
        limit = self._settings.request_timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                response = await self._send(method, path, query=query, body=body, content_type=content_type)
                try:
                    data = await _read(response, method, path)
                finally:
                    response.release()
        except TimeoutError as exc:
            raise ApiUnreachableError(0, f"{method} {path}: no answer within {limit:g} s") from exc
        finally:
            metrics.KUBE_API_SECONDS.labels(method, _resource_of(path)).observe(time.monotonic() - started)
        if not 200 <= response.status < 300:
            raise _error_from(response, data)
        return _json_object(data, f"{method} {path}")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: JsonObject | None = None,
        content_type: str | None = None,
        limit: float | None = None,
    ) -> aiohttp.ClientResponse:
        client = self._client
        headers = {"Accept": "application/json", **client.default_headers}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if client.cookie:
            headers["Cookie"] = client.cookie
        query_params = list(query)
        try:
            async with asyncio.timeout(limit):
                await client.update_params_for_auth(headers, query_params, _AUTH)
                url = f"{client.configuration.host}{path}"
                if query_params:
                    url = f"{url}?{urlencode(query_params)}"
                response: aiohttp.ClientResponse = await client.rest_client.request(
                    method,
                    url,
                    headers=headers,
                    body=body,
                    _preload_content=False,
                )
        except TimeoutError as exc:
            raise ApiUnreachableError(0, f"{method} {path}: no answer within {limit} s") from exc
        except aiohttp.ClientError as exc:
            raise ApiUnreachableError(0, f"{method} {path}: {exc!r}") from exc
        return response


def _resource_of(path: str) -> str:
    """A small, fixed label for an API path: ``pods``, ``pods/status``, ``events``, ``<plural>``."""
    parts = [part for part in path.split("/") if part]
    if "namespaces" in parts:
        index = parts.index("namespaces")
        parts = parts[index + 2 :] if len(parts) > index + 2 else ["namespaces"]
    elif parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if len(parts) >= 3:
        return f"{parts[0]}/{parts[2]}"
    return parts[0] if parts else "/"


class WatchStream:
    """One open watch response: JSON lines, handed out in batches of what has already arrived.

    ``next_lines`` waits for at least one complete line, then also takes the complete lines
    already buffered (up to ``limit``) without waiting, so a burst of events becomes one batch
    and one mirror transaction. It reads from the connection only while fewer than
    ``read_ahead`` complete lines wait here (one read of at most ``READ_CHUNK`` bytes may
    overshoot): the rest stays in the connection, whose read buffer is bounded, and TCP flow
    control then holds the server back until the mirror writer has caught up. Waiting is
    cancellation-safe: no data is lost when a timeout interrupts it.
    """

    def __init__(self, content: aiohttp.StreamReader, *, read_ahead: int) -> None:
        self._content = content
        self._read_ahead = read_ahead
        self._buffer = bytearray()
        self._lines = 0
        """Complete lines (newlines) in ``_buffer``."""

    @property
    def buffered_lines(self) -> int:
        """Complete lines read from the connection and not handed out yet."""
        return self._lines

    async def next_lines(self, limit: int) -> list[bytes]:
        """Up to ``limit`` complete lines; ``[]`` when the server ended the stream."""
        while True:
            self._absorb_buffered()
            lines = self._take_lines(limit)
            if lines:
                return lines
            try:
                chunk = await self._content.read(READ_CHUNK)
            except aiohttp.ClientError as exc:
                raise ApiUnreachableError(0, f"watch stream broken: {exc!r}") from exc
            if not chunk:
                if self._buffer.strip():
                    raise ApiProtocolError(0, "watch stream ended in the middle of an event")
                return []
            self._append(chunk)
            if len(self._buffer) > MAX_WATCH_LINE:
                raise ApiProtocolError(0, f"watch event longer than {MAX_WATCH_LINE} bytes")

    def _absorb_buffered(self) -> None:
        """Take what the connection has received already, until ``read_ahead`` lines wait here."""
        try:
            while self._lines < self._read_ahead:
                chunk = self._content.read_nowait(READ_CHUNK)
                if not chunk:
                    return
                self._append(chunk)
        except aiohttp.ClientError as exc:
            raise ApiUnreachableError(0, f"watch stream broken: {exc!r}") from exc

    def _append(self, chunk: bytes) -> None:
        self._buffer += chunk
        self._lines += chunk.count(b"\n")

    def _take_lines(self, limit: int) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while len(lines) < limit:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            self._lines -= 1
            line = bytes(self._buffer[start:end]).strip()
            if line:
                lines.append(line)
            start = end + 1
        del self._buffer[:start]
        return lines


async def _read(response: aiohttp.ClientResponse, method: str, path: str) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientError as exc:
        raise ApiUnreachableError(0, f"{method} {path}: {exc!r}") from exc


def _error_from(response: aiohttp.ClientResponse, data: bytes) -> ApiError:
    try:
        status = json.loads(data)
    except ValueError:
        status = None
    return error_for_status(
        response.status,
        _status_message(status, data, response.reason or ""),
        retry_after=_retry_after(response.headers),
        fields=status_causes(status, "field"),
        causes=status_causes(status, "reason"),
        named=status_named(status),
    )


def _status_message(status: object, data: bytes, fallback: str) -> str:
    """The ``message`` of a ``Status`` body (``status``, as decoded), else the raw body, shortened."""
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    text = data.decode("utf-8", "replace").strip()
    return text[:500] or fallback


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _json_object(data: bytes, what: str) -> JsonObject:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ApiProtocolError(0, f"{what}: the answer is not JSON") from exc
    if not isinstance(value, dict):
        raise ApiProtocolError(0, f"{what}: the answer is not a JSON object")
    return value
