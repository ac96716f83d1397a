"""What the engine needs from Kubernetes, as protocols the daemon fills in.

The engine must not import the watch package (nor kubernetes_asyncio), yet an ADD needs the pod
(its annotations and UID), NetworkAttachmentDefinitions, and a way to publish the pod's
``network-status``. These protocols are that seam: ``app.watch`` implements them over the SQLite
mirror and the API client; static mode (no Kubernetes) passes none. Pods and NADs cross as the
mirror's own frozen records (``PodRecord``, ``NadRecord`` of ``app.store.mirror_records``): one
type each from the watch to the engine, holding only the fields the daemon reads, never API objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.store.mirror_records import CONFIG_SOURCE_ANNOTATION, NadRecord, PodRecord

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK_ANNOTATION = "v1.multus-cni.io/default-network"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
RESOURCE_NAME_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"
PARALLEL_DELEGATES_ANNOTATION = "v1.multus-cni.io/parallel-delegates"
"""``"true"``/``"false"``: this pod's delegates in parallel or not, where ``parallelDelegates`` allows it."""

POD_ANNOTATIONS_KEPT = (
    NETWORKS_ANNOTATION,
    DEFAULT_NETWORK_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    PARALLEL_DELEGATES_ANNOTATION,
)
"""The only pod annotations the mirror keeps."""


class ClusterUnavailableError(Exception):
    """The Kubernetes API could not answer (outage, 5xx, timeout): callers may retry later."""


class StatusWriteRefusedError(ClusterUnavailableError):
    """The API server refuses a network-status write for a reason sending it again soon will not
    change: 403 to both the PATCH and the PUT (the ClusterRole lacks them), or another 4xx. Raised
    by the watch package's publisher; the writers that retry (``app.attach.status_retries``,
    hot-plug's reconciler) back off to ``status_retries.REFUSED_MAX_DELAY`` for it and log it once
    per pod and reason. A subclass of ``ClusterUnavailableError``: to an ADD it is a write not
    made, retried in the background."""


class PodSource(Protocol):
    async def get_pod(self, namespace: str, name: str, *, uid: str = "") -> PodRecord | None:
        """The pod from the mirror; if absent, wait briefly for the watch, then one live GET.

        With ``uid`` (the runtime's ``K8S_POD_UID``), a mirrored predecessor of that name (another
        UID, not a static pod) counts as absent: the mirror has not caught up yet.
        None when the pod does not exist; ``ClusterUnavailableError`` when that cannot be known.
        """
        ...


class NadSource(Protocol):
    async def get_nad(self, namespace: str, name: str) -> NadRecord | None:
        """The NAD from the mirror, None if it does not exist there (no API request)."""
        ...

    async def fetch_nad(self, namespace: str, name: str) -> NadRecord | None:
        """The NAD from one live GET: for a name the mirror lacks, before an ADD fails for it (it
        may have been created after the mirror's position). None when the API says it does not
        exist; ``ClusterUnavailableError`` when that cannot be known."""
        ...


@dataclass(frozen=True, slots=True)
class InterfaceEvent:
    """One ``AddedInterface`` event: ``Add <ifname> [<addr/prefix> ...] from <network>``."""

    ifname: str
    addresses: tuple[str, ...]
    network_name: str


class StatusPublisher(Protocol):
    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        """Set the pod's network-status annotation; a pod deleted meanwhile is not an error. Return
        True once the write is done, False when there was no pod to write it to (deleted, or
        replaced under another uid).

        Raises ``ClusterUnavailableError`` when the API cannot be reached after retries.
        """
        ...

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        """Queue ``AddedInterface`` events; never blocks and never fails the ADD."""
        ...


class NetworkEvents(Protocol):
    """Events network resolution raises about a pod (the watch package's publisher implements it)."""

    def emit_network_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        """Queue upstream's Warning ``NoNetworkFound`` for NAD ``namespace/name`` (``error``: the API's
        not-found text); never blocks and never fails the ADD."""
        ...
