"""The resource types the emulator serves: names, scope, verbs and which fields a selector may use.

Data only, no I/O. Every other sandbox module names a resource by one of the ``Resource`` constants
below; the router looks them up by (group, version, plural). Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, slots=True)
class Resource:
    """One served resource type (``pods``, ``network-attachment-definitions``, ...)."""

    group: str
    """API group; ``""`` for the core (legacy) group served under ``/api``."""
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    """Subresources served as ``<object>/<name>`` (only ``status`` is implemented)."""
    field_labels: tuple[str, ...] = COMMON_FIELDS
    """Dotted paths a ``fieldSelector`` may name, as the real API server allows for this type."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified_plural(self) -> str:
        """The name the API server uses in messages: ``network-attachment-definitions.k8s.cni.cncf.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


NAMESPACES = Resource(
    group="",
    version="v1",
    kind="Namespace",
    plural="namespaces",
    singular="namespace",
    namespaced=False,
    short_names=("ns",),
    subresources=("status",),
    field_labels=(*COMMON_FIELDS, "status.phase"),
)

PODS = Resource(
    group="",
    version="v1",
    kind="Pod",
    plural="pods",
    singular="pod",
    namespaced=True,
    short_names=("po",),
    subresources=("status",),
    field_labels=(
        *COMMON_FIELDS,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
)

EVENTS = Resource(
    group="",
    version="v1",
    kind="Event",
    plural="events",
    singular="event",
    namespaced=True,
    short_names=("ev",),
    field_labels=(
        *COMMON_FIELDS,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
)

EVENTS_V1 = Resource(
    group="events.k8s.io",
    version="v1",
    kind="Event",
    plural="events",
    singular="event",
    namespaced=True,
    short_names=("ev",),
)

NETWORK_ATTACHMENT_DEFINITIONS = Resource(
    group="k8s.cni.cncf.io",
    version="v1",
    kind="NetworkAttachmentDefinition",
    plural="network-attachment-definitions",
    singular="network-attachment-definition",
    namespaced=True,
    short_names=("net-attach-def",),
)

RESOURCE_CLAIMS = Resource(
    group="resource.k8s.io",
    version="v1",
    kind="ResourceClaim",
    plural="resourceclaims",
    singular="resourceclaim",
    namespaced=True,
    subresources=("status",),
)
"""DRA claims: ``status.allocation.devices.results[]`` names the allocated (driver, pool, device)."""

RESOURCE_SLICES = Resource(
    group="resource.k8s.io",
    version="v1",
    kind="ResourceSlice",
    plural="resourceslices",
    singular="resourceslice",
    namespaced=False,
    field_labels=("metadata.name", "spec.driver", "spec.nodeName", "spec.pool.name"),
)
"""DRA devices a driver publishes for a node: ``spec.devices[].attributes`` (cluster-scoped)."""

ALL: tuple[Resource, ...] = (
    NAMESPACES,
    PODS,
    EVENTS,
    EVENTS_V1,
    NETWORK_ATTACHMENT_DEFINITIONS,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
)

BY_KEY: dict[tuple[str, str, str], Resource] = {resource.key: resource for resource in ALL}


def lookup(*, group: str, version: str, plural: str) -> Resource | None:
    """The resource served at ``group/version/plural``, or None when the emulator does not serve it."""
    return BY_KEY.get((group, version, plural))


def groups() -> dict[str, list[str]]:
    """Served API groups (core excluded) and their versions, in a stable order."""
    served: dict[str, list[str]] = {}
    for resource in ALL:
        if resource.group and resource.version not in served.setdefault(resource.group, []):
            served[resource.group].append(resource.version)
    return served
