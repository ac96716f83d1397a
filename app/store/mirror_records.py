"""Plain values going in and out of the Kubernetes mirror: pods, NADs, and where each watch stands.

Frozen dataclasses, no ORM objects, no I/O. Written by ``app.watch`` (which decides what to keep:
the store does not know which pod annotations matter) and read back by it and by GC. A record
holds only the fields the daemon uses, never an API object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

ObjectKey = tuple[str, str]
"""(namespace, name)."""

CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"
"""Where the kubelet got a pod from: ``api``, or a file/http source for a static pod."""


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    uid: str
    node_name: str = ""
    resource_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Only the annotations the caller chose to keep."""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)

    @property
    def is_static(self) -> bool:
        """A static (kubelet file/http) pod: its mirror UID differs from the runtime's."""
        return self.annotations.get(CONFIG_SOURCE_ANNOTATION, "api") != "api"

    def is_pod_of(self, runtime_uid: str) -> bool:
        """Whether a sandbox whose runtime named pod uid ``runtime_uid`` (``K8S_POD_UID``) is this
        pod's and not a predecessor's of the same name: the uids agree where both are known, or this
        pod is static (its API uid is never the runtime's)."""
        return not runtime_uid or not self.uid or self.uid == runtime_uid or self.is_static


@dataclass(frozen=True, slots=True)
class NadRecord:
    namespace: str
    name: str
    uid: str
    resource_version: str = ""
    config: str = ""
    """``spec.config`` verbatim, empty when the NAD has none."""
    resource_name: str = ""
    """The ``k8s.v1.cni.cncf.io/resourceName`` annotation, empty when absent."""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class WatchState:
    """Where one watch (``key``, e.g. ``pods``) stands; ``scope`` says what it selects."""

    key: str
    scope: str = ""
    resource_version: str = ""
    """Resume the watch from here; empty: relist first."""
    synced_at: datetime | None = None
    """When the last full relist was written."""
    last_event_at: datetime | None = None
    relists: int = 0
    events: int = 0


@dataclass(frozen=True, slots=True)
class ReplaceOutcome:
    """What a relist changed in the mirror."""

    upserted: int
    deleted: tuple[ObjectKey, ...]


@dataclass(frozen=True, slots=True)
class MirrorCounts:
    pods: int
    nads: int
