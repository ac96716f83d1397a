"""Kubernetes ``Status`` objects and ``ApiError``, the exception that carries one.

Every failure the emulator answers with (not found, conflict, expired, injected faults, ...) is an
``ApiError`` raised by the store or a handler and turned into a ``Status`` body by the server, with the
reason, message and details the real API server would use. Data only, no I/O. Part of the emulator,
a test/demo tool.
"""

from __future__ import annotations

from typing import Any

from app.sandbox.resources import Resource

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    """The reason the real API server gives for an HTTP status code (``Unknown`` when it has none)."""
    return REASONS.get(code, "Unknown")


class ApiError(Exception):
    """A request failed the way the Kubernetes API fails: HTTP code, reason, message and details."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or reason_for(code)
        self.details = details
        self.retry_after = retry_after
        self.metadata = metadata or {}

    def status(self) -> dict[str, Any]:
        """The ``Status`` object the real API server would return for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details or {})
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def _object_details(resource: Resource, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return details


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404, f'{resource.qualified_plural} "{name}" not found', details=_object_details(resource, name)
    )


def already_exists(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'{resource.qualified_plural} "{name}" already exists',
        reason="AlreadyExists",
        details=_object_details(resource, name),
    )


def conflict(resource: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {resource.qualified_plural} "{name}": {why}',
        reason="Conflict",
        details=_object_details(resource, name),
    )


def stale_update(resource: Resource, name: str) -> ApiError:
    return conflict(
        resource,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def invalid(resource: Resource, name: str, field: str, why: str) -> ApiError:
    return ApiError(
        422,
        f'{resource.kind} "{name}" is invalid: {field}: {why}',
        reason="Invalid",
        details={**_object_details(resource, name), "causes": [{"field": field, "message": why}]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def too_old_resource_version(requested: int, oldest: int) -> ApiError:
    """410 for a watch from a compacted resourceVersion (sent as a watch ``ERROR`` event)."""
    return ApiError(410, f"too old resource version: {requested} ({oldest})", reason="Expired")


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """504 for a read at a resourceVersion the server has not reached."""
    return ApiError(
        504,
        f"Timeout: Too large resource version: {requested}, current: {current}",
        reason="Timeout",
        details={"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]},
        retry_after=1,
    )


def expired_continue(inconsistent_continue: str) -> ApiError:
    """410 for a list ``continue`` token older than the retained history.

    Like the real API server, the Status carries a token that continues from the same key in the
    current state (``metadata.continue``), for clients that accept an inconsistent list.
    """
    return ApiError(
        410,
        "The provided continue parameter is too old to display a consistent list result. You can start a "
        "new list without the continue parameter, or use the continue token in this response to retrieve "
        "the remainder of the results. Continuing with the provided token results in an inconsistent list "
        "- objects that were created, modified, or deleted between the time the first chunk was returned "
        "and now may show up in the list.",
        reason="Expired",
        metadata={"continue": inconsistent_continue},
    )


def unknown_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})
