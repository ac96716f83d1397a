"""Plain values going in and out of the store: what callers write and what they read back.

Frozen dataclasses, no ORM objects, no I/O. ``config`` is the exact delegate configuration bytes
that were handed to the CNI library; ``result`` is the delegate's result as JSON text. The store
does not interpret either: the facts derived from a result (``DelegateFacts``) are the caller's.
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
    netns_id: str = ""
    """Identity of the namespace behind ``netns`` at ADD time (``<dev>:<inode>``)."""
    parallel: bool = False
    """Its delegates run in parallel (after the cluster network's): its DEL runs them so too."""
    default_networks: int | None = None
    """How many ``defaultNetworks`` delegates the ADD runs (positions 1..n); None: not known."""


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
    device: Mapping[str, str] | None = None
    """A host device the delegate moves into the sandbox (an SR-IOV VF): its PCI address and the
    name and MAC it had in the host before the ADD, so teardown can prove it came back."""
    device_ids: tuple[str, ...] = ()
    """Device IDs the delegate is handed (``deviceID``, the host device's PCI address), derived by
    the caller; its result may add more (``DelegateFacts``)."""
    root: str = ""
    """The root the delegate runs in (daemon-config ``chrootDir``; "" = the daemon's own): DEL,
    CHECK, rollback, recovery and GC replay in it, whatever today's setting is."""


@dataclass(frozen=True, slots=True)
class DelegateFacts:
    """What a delegate's result and inputs say about it, derived once by the caller when the result is
    committed: the IPs, the MACs of its sandbox interfaces, and every device ID it used."""

    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()


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
    device: Mapping[str, str] | None = None
    facts: DelegateFacts = field(default_factory=DelegateFacts)
    """IPs, MACs and device IDs as recorded with the intent and then the result (never re-derived)."""
    root: str = ""
    """The root the delegate ran in, as recorded with its intent ("" = the daemon's own)."""


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
    netns_id: str = ""
    parallel: bool = False
    """The ADD ran the delegates after the cluster network's in parallel: so does the DEL."""
    default_networks: int | None = None
    """How many ``defaultNetworks`` attachments the ADD made (positions 1..n), which the ``networks``
    annotation never governs; None when recorded before revision 0007 (hot-plug then counts today's
    ``defaultNetworks``)."""

    def attachment(self, ifname: str) -> AttachmentRecord | None:
        return next((a for a in self.attachments if a.ifname == ifname), None)

    def pod_uid_given(self) -> str:
        """The UID of the pod this sandbox was added for, as far as a write to a pod or a hot-plug
        may trust it: the runtime's ``K8S_POD_UID``, else the one its delegates were given at ADD
        (the resolved pod's, as upstream fills it in); "" when neither is known (static mode).

        The second may be a predecessor's (a pod watch lagging behind a recreation resolves the
        name to it): a reason to refuse a write or a hot-plug, never one to tear a sandbox down."""
        if self.pod.uid:
            return self.pod.uid
        for attachment in sorted(self.attachments, key=lambda a: a.position):
            uid = dict(attachment.cni_args).get("K8S_POD_UID", "")
            if uid:
                return uid
        return ""

    def summary(self) -> SandboxSummary:
        """Its identity and state, as ``checkpoints.sandbox_summaries`` lists them."""
        return SandboxSummary(
            container_id=self.container_id,
            state=self.state,
            netns=self.netns,
            ifname=self.ifname,
            pod=self.pod,
            boot_id=self.boot_id,
        )


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
    node: str = ""
    """The node that ran the step (``MULTUS_NODE_NAME``, else the hostname); empty if not known."""
    device_ids: tuple[str, ...] = ()
    """Device IDs (e.g. SR-IOV PCI addresses) the step handed to, or got back from, its delegate."""


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """A recorded history entry and its row id (ids grow with time: newest is highest)."""

    id: int
    entry: HistoryEntry
