"""Errors the engine raises itself, as CNI error objects, and the folding of delegate failures.

Codes 0-99 belong to the CNI specification and are used with their meaning (3: unknown
container, 7: invalid configuration, 11: try again later). multus-py's own conditions use the
plugin-specific range from 100, listed here and nowhere else. ``as_cni_error`` turns whatever a
delegate step raised into one CniError without losing the delegate's code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from enum import IntEnum

from app import metrics
from app.cni.api import AddFailure
from app.cni.types import CniError, ErrorCode, PluginRefusedError, RefusedAlikeError
from app.store.database import StorageError

log = logging.getLogger("app.attach.engine")
"""Unexpected errors are the engine's to report: its logger names them."""


class MultusCode(IntEnum):
    INTERFACE_MISSING = 100
    """CHECK: an interface recorded in a delegate's result is not in the sandbox (or has another MAC)."""
    NETNS_GONE = 101
    """CHECK: the sandbox's network namespace no longer exists."""
    DEVICE_NOT_RETURNED = 102
    """DEL: a host device (an SR-IOV VF) the sandbox took is not back in the host namespace."""


def is_cni(exc: BaseException) -> bool:
    """True for a CniError, or a group holding nothing else (what the CNI verbs raise)."""
    if isinstance(exc, CniError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cni(inner) for inner in exc.exceptions)
    return False


def unexpected(exc: BaseException, *, step: str, context: Mapping[str, str]) -> CniError:
    """``exc`` as a CniError; a non-CNI exception (a bug) is logged with its traceback and the
    sandbox's log fields, and counted in ``multus_py_engine_unexpected_errors_total``; a failed
    storage under the state database (no bug) is logged as one line."""
    if isinstance(exc, StorageError):
        log.error("%s of container %s: %s", step, context.get("container_id", "?"), exc, extra=dict(context))
    elif not is_cni(exc):
        metrics.ENGINE_UNEXPECTED_ERRORS.labels(step).inc()
        log.error(
            "unexpected %s during %s of container %s",
            type(exc).__name__,
            step,
            context.get("container_id", "?"),
            exc_info=exc,
            extra=dict(context),
        )
    return as_cni_error(exc)


def as_cni_error(exc: BaseException) -> CniError:
    """One CniError for anything a delegate step raised; codes pass through unchanged."""
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        return combine([as_cni_error(inner) for inner in exc.exceptions])
    if isinstance(exc, StorageError):  # a full disk or an I/O error under the checkpoint: no bug
        return CniError(ErrorCode.IO_FAILURE, str(exc), "nothing of the failed write was recorded")
    return CniError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def combine(errors: Sequence[CniError]) -> CniError:
    """Several failures as one error: the first one's code, every message kept."""
    if not errors:
        raise ValueError("no errors to combine")
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    return CniError(first.code, "; ".join(str(error) for error in errors), first.details)


class SandboxNotRunningError(CniError):
    """A hot-plug (or CHECK) refused because its sandbox no longer runs: not recorded ``ready``
    (code 3: the runtime's DEL came first), or its network namespace is gone (101). ``POST
    /delegate`` answers it and records it like any refusal; native hot-plug gives the hot-plug up
    and records nothing (``hotplug.HotplugReconciler``): nothing was tried on a running sandbox."""


class UndeletableError(Exception):
    """A recorded delegate whose DEL can never run (its config or result does not parse)."""

    def __init__(self, error: CniError) -> None:
        super().__init__(str(error))
        self.error = error


def never_runnable(exc: BaseException) -> bool:
    """True when a DEL failed only for reasons time cannot change: a plugin ``type`` refused by
    name, an unreadable record, a plugin refusing the config as it refused it at ADD, or one the
    ADD never ran (invariant 5b); such a DEL is completed, not retried."""
    if isinstance(exc, UndeletableError | PluginRefusedError | RefusedAlikeError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(never_runnable(inner) for inner in exc.exceptions)
    return False


ADD_FAILURE_KEY = "addFailure"
"""The key, in an attachment's recorded error, of where its ADD stopped (``AddFailure``)."""


def attachment_error(error: CniError, *, failure: AddFailure | None) -> str:
    """What an attachment records as its last error: ``error``'s object, plus where its ADD
    stopped where it did; a later DEL's error keeps it, which every DEL of it needs."""
    recorded = error.to_json()
    if failure is not None:
        recorded[ADD_FAILURE_KEY] = failure.to_json()
    return json.dumps(recorded)


def recorded_add_failure(last_error: str | None) -> AddFailure | None:
    """Where the ADD stopped, kept in an attachment's recorded error (``attachment_error``), if any."""
    try:
        recorded = json.loads(last_error or "null")
    except (ValueError, RecursionError):
        return None
    return AddFailure.from_json(recorded.get(ADD_FAILURE_KEY)) if isinstance(recorded, dict) else None
