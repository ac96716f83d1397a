"""The watch package's own exceptions: what went wrong talking to the API, as types, not text.

Raised by ``app.watch.api`` (which turns HTTP statuses and aiohttp errors into these, chaining
the original) and caught by the watch loops, the sources and the status publisher, which decide
to retry, relist or give up from the class alone. The class comes from the HTTP status and, where
a ``Status`` names one, from its machine-readable cause (``details.causes[].reason``), never from
its message. Nothing outside ``app.watch`` sees them: the
sources and the publisher translate them into ``app.attach.cluster.ClusterUnavailableError``.
"""

from __future__ import annotations

from typing import Literal


class KubeConfigError(Exception):
    """The configured way to reach the cluster is unusable (kubeconfig missing or invalid)."""


RESOURCE_VERSION_TOO_LARGE = "ResourceVersionTooLarge"
"""The cause (``details.causes[].reason``) of a read at a resourceVersion the server has not reached."""


class ApiError(Exception):
    """The API answered, or could not be reached. ``status`` is 0 when no HTTP answer came."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        fields: tuple[str, ...] = (),
        causes: tuple[str, ...] = (),
        named: tuple[str, str] = ("", ""),
    ) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.fields = fields
        """The fields a ``Status`` answer names as the causes (``details.causes[].field``)."""
        self.causes = causes
        """The reasons a ``Status`` answer gives as its causes (``details.causes[].reason``)."""
        self.named = named
        """(kind, name) of the object a ``Status`` answer is about (``details.kind``, ``details.name``;
        empty when it names none: an answer that is no ``Status``, a proxy's, a path unknown)."""


class ApiNotFoundError(ApiError):
    """404: the object (or its namespace) does not exist; or, when its ``Status`` names no object
    (``named``), a path the server (or a proxy before it) does not serve."""

    def says_gone(self, resource: str, name: str) -> bool:
        """Whether this is the API's word that object ``name`` of ``resource`` (its plural: ``pods``,
        ``network-attachment-definitions``, ``resourceclaims``) does not exist: a ``Status`` naming
        it, as the API server's NotFound does. A proxy's 404, or one for a path the server does not
        serve (a CRD or an API group not installed), names none: the API did not answer."""
        return self.named == (resource, name)

    def says_pod_gone(self, name: str) -> bool:
        """``says_gone`` for pod ``name``."""
        return self.says_gone("pods", name)

    def says_nad_gone(self, name: str) -> bool:
        """``says_gone`` for network-attachment-definition ``name``."""
        return self.says_gone("network-attachment-definitions", name)


class ApiConflictError(ApiError):
    """409: a precondition (uid, resourceVersion) failed; the same request may succeed later."""


class ApiGoneError(ApiError):
    """410: the resourceVersion is older than the server's history; the caller must relist."""


class ApiTransientError(ApiError):
    """429 or 5xx: the server is overloaded or failing; retry after a delay."""


class ApiResourceVersionTooLargeError(ApiTransientError):
    """A 504 whose ``Status`` names the cause ``ResourceVersionTooLarge``: the server has not reached
    the resourceVersion asked for. A saved watch position from before its store went back in time
    (etcd restored from a backup) is never reached by waiting, and a watch from it would stream
    nothing: the watch forgets it and relists (client-go's reflector does so too)."""


class ApiUnreachableError(ApiError):
    """No answer: connection refused or reset, TLS failure, or a timeout."""


class ApiProtocolError(ApiError):
    """The answer is not what the API sends (not JSON, a torn or unknown watch event)."""


class ApiRejectedError(ApiError):
    """Any other 4xx (400, 401, 403, 422, ...): retrying the same request will not help."""


RETRYABLE_ERRORS: tuple[type[ApiError], ...] = (ApiConflictError, ApiTransientError, ApiUnreachableError)
"""Errors after which the same request may succeed (used by the status publisher)."""


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    fields: tuple[str, ...] = (),
    causes: tuple[str, ...] = (),
    named: tuple[str, str] = ("", ""),
) -> ApiError:
    """The exception for an HTTP error ``status`` whose ``Status`` names ``causes`` (their reasons)
    and is about the object ``named`` (kind, name)."""
    cls: type[ApiError]
    if status == 504 and RESOURCE_VERSION_TOO_LARGE in causes:
        cls = ApiResourceVersionTooLargeError
    elif status == 404:
        cls = ApiNotFoundError
    elif status == 409:
        cls = ApiConflictError
    elif status == 410:
        cls = ApiGoneError
    elif status == 429 or status >= 500:
        cls = ApiTransientError
    else:
        cls = ApiRejectedError
    return cls(status, message, retry_after=retry_after, fields=fields, causes=causes, named=named)


def status_named(status: object) -> tuple[str, str]:
    """(``details.kind``, ``details.name``) of a decoded ``Status``; empty texts where it has none."""
    details = status.get("details") if isinstance(status, dict) else None
    if not isinstance(details, dict):
        return "", ""
    kind, name = details.get("kind"), details.get("name")
    return (kind if isinstance(kind, str) else "", name if isinstance(name, str) else "")


def status_causes(status: object, key: Literal["field", "reason"]) -> tuple[str, ...]:
    """The ``key`` of every cause a decoded ``Status`` names (``details.causes[].<key>``)."""
    details = status.get("details") if isinstance(status, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return ()
    return tuple(
        cause[key] for cause in causes if isinstance(cause, dict) and isinstance(cause.get(key), str)
    )
