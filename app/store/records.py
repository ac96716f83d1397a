"""Plain values going in and out of the store: what callers write and what they read back.

Frozen dataclasses, no ORM objects, no I/O. ``config`` is the exact delegate configuration bytes
that were handed to the CNI library; ``result`` is the delegate's result as JSON text. The store
does not interpret either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PodIdentity:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True)
class SandboxIntent:
    """A sandbox about to be attached: written, with its first delegate, before anything runs."""

    container_id: str
    netns: str
    ifname: str
    cni_version: str
    pod: PodIdentity
    boot_id: str


@dataclass(frozen=True, slots=True)
class DelegateIntent:
    """One delegate about to run: everything DEL will need to undo it, without any other source.

    ``cni_path`` is the plugin search path used, so DEL does not depend on today's ``binDir``.
    """

    container_id: str
    ifname: str
    position: int
    is_master: bool
    network_name: str
    plugin_types: tuple[str, ...]
    config: bytes
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    cni_path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    container_id: str
    ifname: str
    position: int
    is_master: bool
    network_name: str
    plugin_types: tuple[str, ...]
    config: bytes
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    cni_path: tuple[str, ...]
    state: str
    result: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    container_id: str
    state: str
    netns: str
    ifname: str
    cni_version: str
    pod: PodIdentity
    boot_id: str
    created_at: datetime
    updated_at: datetime
    attachments: tuple[AttachmentRecord, ...] = ()

    def attachment(self, ifname: str) -> AttachmentRecord | None:
        return next((a for a in self.attachments if a.ifname == ifname), None)


@dataclass(frozen=True, slots=True)
class SandboxSummary:
    """A sandbox's identity and state, without its attachments (cheap to list by the thousand)."""

    container_id: str
    state: str
    netns: str
    ifname: str
    pod: PodIdentity
    boot_id: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of history: a whole CNI operation (``step="request"``) or one delegate step."""

    command: str
    step: str
    trigger: str
    outcome: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    network_name: str = ""
    plugin_types: tuple[str, ...] = ()
    pod: PodIdentity = field(default_factory=PodIdentity)
    duration_ms: float | None = None
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    error_code: int | None = None
    error_msg: str | None = None
    error_details: str | None = None
    at: datetime | None = None
