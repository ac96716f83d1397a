"""The engine's view of one CNI request: verb, sandbox identity, pod identity, configuration.

Built by the daemon's wire-protocol module from a shim request (or by recovery and GC from the
checkpoint); the engine never sees HTTP, environment dictionaries or base64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from app.attach.netconf import MultusNetConf
from app.cni.types import Attachment, ContainerId, IfName
from app.store.records import PodIdentity


class Command(StrEnum):
    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    GC = "GC"
    STATUS = "STATUS"


class Trigger(StrEnum):
    """Who asked for an operation: recorded in the history of every step."""

    RUNTIME = "runtime"
    ROLLBACK = "rollback"
    RECOVERY = "recovery"
    GC = "gc"
    OPERATOR = "operator"
    SPOOL = "spool"
    """A DEL the shim spooled while the daemon was unreachable, replayed by the daemon."""
    DELEGATE = "delegate"
    """One delegate added to or removed from a running sandbox through ``POST /delegate`` (DNC)."""
    HOTPLUG = "hotplug"
    """One delegate added to or removed from a running sandbox by the daemon's own hot-plug."""


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """ADD, DEL or CHECK of one pod sandbox."""

    command: Command
    container_id: ContainerId
    netns: str
    ifname: IfName
    cni_args: tuple[tuple[str, str], ...]
    pod: PodIdentity
    conf: MultusNetConf
    trigger: Trigger = Trigger.RUNTIME


@dataclass(frozen=True, slots=True)
class NodeRequest:
    """GC or STATUS: about the node, not one sandbox."""

    command: Command
    conf: MultusNetConf
    valid_attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    trigger: Trigger = Trigger.RUNTIME
