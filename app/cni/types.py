"""Values of the CNI protocol: identifiers, error codes, the error type, runtime arguments, configs.

Data only, no I/O: everything else in ``app.cni`` (and its callers) speaks in these types. The
error codes are the CNI specification's table plus the Go library's ``ErrInternal`` (999); callers
decide on codes, never on message text.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NewType

ContainerId = NewType("ContainerId", str)
IfName = NewType("IfName", str)

JsonObject = dict[str, Any]
"""A decoded JSON object whose shape an outside specification sets (a CNI config or result)."""


class ErrorCode(IntEnum):
    """CNI error codes (spec 1.1.0 table; 8 and 999 from the Go reference library)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 999


SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
"""Failures of a call that say nothing about its file: the daemon (``EMFILE``) or the node
(``ENFILE``) has no descriptor left, or no memory (``ENOMEM``), for the moment. A retry may succeed."""


class CniError(Exception):
    """A CNI error object: ``code``, ``msg`` and ``details``, passed through unchanged.

    Raised by plugins (decoded from their stdout) and by this project's own checks. Context is
    added by wrapping the message (``with_context``), never by replacing the code.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(code, msg, details)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}; {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        return f"CniError(code={self.code}, msg={self.msg!r}, details={self.details!r})"

    @property
    def transient(self) -> bool:
        """True when the specification says the caller may retry later (code 11)."""
        return self.code == ErrorCode.TRY_AGAIN_LATER

    @classmethod
    def reading(cls, what: str, err: OSError) -> CniError:
        """``error reading <what>``: code 11 (try again later) when the daemon is short of
        descriptors or memory for the moment (``SHORTAGE_ERRNOS``), else code 5 (an I/O failure)."""
        code = ErrorCode.TRY_AGAIN_LATER if err.errno in SHORTAGE_ERRNOS else ErrorCode.IO_FAILURE
        return cls(code, f"error reading {what}: {err.strerror}")

    def to_json(self) -> JsonObject:
        """The error object as the Go library prints it: ``details`` omitted when empty."""
        obj: JsonObject = {"code": self.code, "msg": self.msg}
        if self.details:
            obj["details"] = self.details
        return obj

    def with_context(self, context: str) -> CniError:
        """The same error with ``context`` prefixed to its message (code and details kept)."""
        return type(self)(self.code, f"{context}: {self.msg}", self.details)

    @classmethod
    def from_json(cls, obj: object) -> CniError | None:
        """Decode an error object printed by a plugin; None if ``obj`` is not one."""
        if not isinstance(obj, dict):
            return None
        code = obj.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or code == 0:
            return None
        msg = obj.get("msg", "")
        details = obj.get("details", "")
        return cls(
            code,
            msg if isinstance(msg, str) else json.dumps(msg),
            details if isinstance(details, str) else json.dumps(details),
        )


class NotExecutedError(CniError):
    """A CniError raised before any plugin of the call was executed (nothing can exist because of it).

    Raised when a plugin is not found, cannot be started (it vanished, is not executable) or when a
    request is refused before running anything. Callers may treat what it concerns as never present.
    """


class PluginRefusedError(NotExecutedError):
    """A plugin ``type`` refused by name (not a plain file name): no retry can ever run it."""


class PluginExitError(CniError):
    """A plugin exited non-zero by itself (no signal, no deadline of the daemon's): the error object
    it printed, or code 999 naming it and its exit status."""


class RefusedAlikeError(CniError):
    """A plugin's DEL failed where the ADD of the same config shows that nothing of it exists
    (``app.cni.api.AddFailure``): the plugin never ran (the ADD stopped before it), or it refused
    the config at ADD with the very error object it fails with now. No retry can change either
    (invariant 5b)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One (container, interface) pair, as GC's ``cni.dev/valid-attachments`` lists them."""

    container_id: ContainerId
    ifname: IfName


@dataclass(frozen=True, slots=True)
class RuntimeConf:
    """What the runtime says about one invocation: libcni's ``RuntimeConf``.

    ``args`` are the CNI_ARGS pairs in order. ``capability_args`` are the runtime-supplied values
    (``portMappings``, ``bandwidth``, ``ips``, ``mac``, ``deviceID``, ...); each plugin receives, in
    ``runtimeConfig``, only those its ``capabilities`` declare.
    """

    container_id: ContainerId
    netns: str
    ifname: IfName
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def cni_args_string(self) -> str:
        """The ``CNI_ARGS`` environment value: ``K=V;K=V``."""
        return ";".join([f"{key}={value}" for key, value in self.args])


@dataclass(frozen=True, slots=True)
class NetworkConfigList:
    """A network configuration list (a conflist; a single conf is a list of one plugin).

    ``raw`` is the exact bytes the list was loaded from, kept so a checkpoint can replay them.
    ``plugins`` are the decoded plugin objects in chain order.
    """

    name: str
    cni_version: str
    plugins: tuple[JsonObject, ...]
    raw: bytes
    disable_check: bool = False
    disable_gc: bool = False
    is_single_conf: bool = False

    @property
    def plugin_types(self) -> Sequence[str]:
        return [str(plugin.get("type", "")) for plugin in self.plugins]
