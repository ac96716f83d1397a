"""Fault injection: failing requests with a chosen status, added latency, cut connections, and
pausing the server.

The server's middleware consults one ``FaultInjector`` before every API request (never for the
``/_emulator`` control endpoints): it waits while paused, sleeps any matching latency (cut short
when latency is cleared), runs the actions armed with ``before_next`` (in-process tests only:
another writer changing an object between a client's GET and its PUT, say), then answers the next
matching failure rule instead of the handler. After the handler, a matching ``cut_next`` rule
drops the connection instead of sending the answer: the request took effect, and the client never
hears so (a load balancer or the network failing at the worst moment). Tests drive it from Python;
a daemon under test in another process is disturbed over HTTP (``POST /_emulator/faults``, see ``configure``).
Dropping watches and compacting history are not here: they act on the server and the store. Part of
the emulator, a test/demo tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.sandbox.status import ApiError, bad_request, reason_for


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise bad_request(f"invalid regular expression {pattern!r}: {error}") from error


@dataclass(slots=True)
class RequestMatcher:
    """Which requests a rule applies to: ``method`` and ``path`` are regexes, searched (not anchored)."""

    method: re.Pattern[str] | None = None
    path: re.Pattern[str] | None = None
    """Searched in the path with its raw query string, as the request log shows it."""

    @classmethod
    def of(cls, *, method: str | None, path: str | None) -> RequestMatcher:
        return cls(_compile(method), _compile(path))

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and not self.method.search(method):
            return False
        return self.path is None or bool(self.path.search(path))

    def to_json(self) -> dict[str, str | None]:
        return {
            "method": self.method.pattern if self.method else None,
            "path": self.path.pattern if self.path else None,
        }


@dataclass(slots=True)
class FailureRule:
    """Answer the next ``remaining`` matching requests with ``status``."""

    matcher: RequestMatcher
    status: int
    remaining: int
    retry_after: int | None = None
    reason: str | None = None
    message: str | None = None
    cause: str | None = None
    """The reason of the one cause the ``Status`` names (``details.causes``), e.g.
    ``ResourceVersionTooLarge``; None: no causes."""

    def error(self) -> ApiError:
        message = self.message or f"fault injected by the Kubernetes API emulator: HTTP {self.status}"
        details = {"causes": [{"reason": self.cause, "message": message}]} if self.cause else None
        return ApiError(
            self.status,
            message,
            reason=self.reason or reason_for(self.status),
            details=details,
            retry_after=self.retry_after,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.matcher.to_json(),
            "status": self.status,
            "remaining": self.remaining,
            "retryAfter": self.retry_after,
            "reason": self.reason,
            "message": self.message,
            "cause": self.cause,
        }


@dataclass(slots=True)
class LatencyRule:
    matcher: RequestMatcher
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**self.matcher.to_json(), "seconds": self.seconds}


@dataclass(slots=True)
class CutRule:
    """Handle each of the next ``remaining`` matching requests, then close the connection unanswered."""

    matcher: RequestMatcher
    remaining: int

    def to_json(self) -> dict[str, Any]:
        return {**self.matcher.to_json(), "remaining": self.remaining}


@dataclass(slots=True)
class ActionRule:
    """Run ``action`` before handling each of the next ``remaining`` matching requests."""

    matcher: RequestMatcher
    action: Callable[[], object]
    remaining: int


class FaultInjector:
    """The faults currently armed. Use it from the event loop thread only."""

    def __init__(self) -> None:
        self._failures: list[FailureRule] = []
        self._latencies: list[LatencyRule] = []
        self._actions: list[ActionRule] = []
        self._cuts: list[CutRule] = []
        self._running = asyncio.Event()
        self._running.set()
        self._latency_cleared = asyncio.Event()
        """Set (and replaced) when latency is cleared: the requests held on it go on at once."""

    # arming

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        retry_after: int | None = None,
        reason: str | None = None,
        message: str | None = None,
        cause: str | None = None,
    ) -> FailureRule:
        """Fail the next ``count`` requests matching ``method``/``path`` (regexes) with ``status``.

        ``retry_after`` sets the ``Retry-After`` header (use it with 429 or 503); ``cause`` names
        one cause in the ``Status`` (``details.causes[].reason``).
        """
        if count < 1 or not 400 <= status <= 599:
            raise bad_request(f"fail_next needs count >= 1 and an error status, got {count} x {status}")
        rule = FailureRule(
            RequestMatcher.of(method=method, path=path), status, count, retry_after, reason, message, cause
        )
        self._failures.append(rule)
        return rule

    def add_latency(
        self, seconds: float, *, method: str | None = None, path: str | None = None
    ) -> LatencyRule:
        """Delay every matching request by ``seconds`` before it is handled (until cleared)."""
        if seconds < 0:
            raise bad_request(f"latency must not be negative, got {seconds}")
        rule = LatencyRule(RequestMatcher.of(method=method, path=path), seconds)
        self._latencies.append(rule)
        return rule

    def cut_next(self, count: int = 1, *, method: str | None = None, path: str | None = None) -> CutRule:
        """Let the next ``count`` requests matching ``method``/``path`` (regexes) take effect, then
        close their connections without an answer."""
        if count < 1:
            raise bad_request(f"cut_next needs count >= 1, got {count}")
        rule = CutRule(RequestMatcher.of(method=method, path=path), count)
        self._cuts.append(rule)
        return rule

    def before_next(
        self,
        action: Callable[[], object],
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> ActionRule:
        """Run ``action`` (synchronously, on the loop) just before the next ``count`` matching
        requests are handled, e.g. a store write that makes a client's resourceVersion stale."""
        if count < 1:
            raise bad_request(f"before_next needs count >= 1, got {count}")
        rule = ActionRule(RequestMatcher.of(method=method, path=path), action, count)
        self._actions.append(rule)
        return rule

    def clear_latency(self) -> None:
        """No more latency, for the requests held on one now too."""
        self._latencies.clear()
        self._latency_cleared.set()
        self._latency_cleared = asyncio.Event()

    def pause(self) -> None:
        """Hold every API request (and every watch stream's next write) until ``resume``."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def clear(self) -> None:
        """Disarm everything: failures, cuts, latency, and a pause."""
        self._failures.clear()
        self._cuts.clear()
        self.clear_latency()
        self._actions.clear()
        self.resume()

    # consulted by the server

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def wait_until_resumed(self) -> None:
        await self._running.wait()

    def latency_for(self, method: str, path: str) -> float:
        return max(
            (rule.seconds for rule in self._latencies if rule.matcher.matches(method, path)), default=0.0
        )

    async def delay(self, method: str, path: str) -> None:
        """Wait out the latency matching this request, or until latency is cleared."""
        seconds = self.latency_for(method, path)
        if seconds <= 0:
            return
        cleared = self._latency_cleared
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await cleared.wait()

    def run_actions(self, method: str, path: str) -> None:
        """Run (and use up one turn of) every armed action matching this request."""
        for rule in list(self._actions):
            if rule.matcher.matches(method, path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._actions.remove(rule)
                rule.action()

    def take_failure(self, method: str, path: str) -> ApiError | None:
        """The error to answer this request with, consuming one use of the first matching rule."""
        for rule in self._failures:
            if rule.matcher.matches(method, path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._failures.remove(rule)
                return rule.error()
        return None

    def take_cut(self, method: str, path: str) -> bool:
        """Whether this request's answer is to be dropped, consuming one use of the first matching rule."""
        for rule in self._cuts:
            if rule.matcher.matches(method, path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._cuts.remove(rule)
                return True
        return False

    def snapshot(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "failures": [rule.to_json() for rule in self._failures],
            "cuts": [rule.to_json() for rule in self._cuts],
            "latency": [rule.to_json() for rule in self._latencies],
        }

    def configure(self, payload: Any) -> None:
        """Apply one ``POST /_emulator/faults`` body, ``{"action": ..., ...}``.

        Actions: ``fail``, ``cut``, ``latency``, ``pause``, ``resume``, ``clear``.

        ``fail``: ``count``, ``status``, ``method``, ``path``, ``retryAfter``, ``reason``, ``message``,
        ``cause``;
        ``cut``: ``count``, ``method``, ``path``;
        ``latency``: ``seconds`` (0 clears all latency), ``method``, ``path``.
        """
        if not isinstance(payload, dict):
            raise bad_request("a fault is a JSON object with an 'action'")
        action = payload.get("action")
        if action == "fail":
            self.fail_next(
                _int(payload, "count", 1),
                status=_int(payload, "status", 500),
                method=_optional_str(payload, "method"),
                path=_optional_str(payload, "path"),
                retry_after=_optional_int(payload, "retryAfter"),
                reason=_optional_str(payload, "reason"),
                message=_optional_str(payload, "message"),
                cause=_optional_str(payload, "cause"),
            )
        elif action == "cut":
            self.cut_next(
                _int(payload, "count", 1),
                method=_optional_str(payload, "method"),
                path=_optional_str(payload, "path"),
            )
        elif action == "latency":
            seconds = payload.get("seconds")
            if not isinstance(seconds, int | float):
                raise bad_request("'latency' needs a number of 'seconds'")
            if seconds == 0:
                self.clear_latency()
            else:
                self.add_latency(
                    float(seconds),
                    method=_optional_str(payload, "method"),
                    path=_optional_str(payload, "path"),
                )
        elif action == "pause":
            self.pause()
        elif action == "resume":
            self.resume()
        elif action == "clear":
            self.clear()
        else:
            raise bad_request(f"unknown fault action {action!r}")


def _int(payload: dict[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{key!r} must be an integer")
    return value


def _optional_int(payload: dict[str, Any], key: str) -> int | None:
    return None if payload.get(key) is None else _int(payload, key, 0)


def _optional_str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{key!r} must be a string")
    return value
