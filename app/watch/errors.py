"""The watch package's own exceptions: what went wrong talking to the API, as types, not text.

Raised by ``app.watch.api`` (which turns HTTP statuses and aiohttp errors into these, chaining
the original) and caught by the watch loops, the sources and the status publisher, which decide
to retry, relist or give up from the class alone. Nothing outside ``app.watch`` sees them: the
sources and the publisher translate them into ``app.attach.cluster.ClusterUnavailableError``.
"""

from __future__ import annotations


class KubeConfigError(Exception):
    """The configured way to reach the cluster is unusable (kubeconfig missing or invalid)."""


class ApiError(Exception):
    """The API answered, or could not be reached. ``status`` is 0 when no HTTP answer came."""

    def __init__(
        self, status: int, message: str, *, retry_after: float | None = None, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.fields = fields
        """The fields a ``Status`` answer names as the causes (``details.causes[].field``)."""


class ApiNotFoundError(ApiError):
    """404: the object (or its namespace) does not exist."""


class ApiConflictError(ApiError):
    """409: a precondition (uid, resourceVersion) failed; the same request may succeed later."""


class ApiGoneError(ApiError):
    """410: the resourceVersion is older than the server's history; the caller must relist."""


class ApiTransientError(ApiError):
    """429 or 5xx: the server is overloaded or failing; retry after a delay."""


class ApiUnreachableError(ApiError):
    """No answer: connection refused or reset, TLS failure, or a timeout."""


class ApiProtocolError(ApiError):
    """The answer is not what the API sends (not JSON, a torn or unknown watch event)."""


class ApiRejectedError(ApiError):
    """Any other 4xx (400, 401, 403, 422, ...): retrying the same request will not help."""


RETRYABLE_ERRORS: tuple[type[ApiError], ...] = (ApiConflictError, ApiTransientError, ApiUnreachableError)
"""Errors after which the same request may succeed (used by the status publisher)."""


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None, fields: tuple[str, ...] = ()
) -> ApiError:
    """The exception class for an HTTP error ``status``."""
    cls: type[ApiError]
    if status == 404:
        cls = ApiNotFoundError
    elif status == 409:
        cls = ApiConflictError
    elif status == 410:
        cls = ApiGoneError
    elif status == 429 or status >= 500:
        cls = ApiTransientError
    else:
        cls = ApiRejectedError
    return cls(status, message, retry_after=retry_after, fields=fields)
