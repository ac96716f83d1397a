"""What is watched, and what is kept of each object: watch targets, records, and watch events.

A ``WatchTarget`` names one list/watch (this node's pods; all NADs, or the NADs of one
namespace): its path, selector, the key of its row in the mirror's ``watch_state`` and the scope
stored with it. ``parse_event`` turns one watch line into a ``Upsert``, ``Delete`` or
``Bookmark`` holding a small record, never the API object: the pod's identity, node and the kept
annotations; the NAD's ``spec.config`` and resourceName. Pure functions over JSON, no I/O; used by
the watch loops and the pod source.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from app.store.mirror_records import NadRecord, ObjectKey, PodRecord
from app.watch.errors import ApiProtocolError, error_for_status, status_causes

JsonObject = dict[str, Any]
Record = PodRecord | NadRecord

RESOURCE_NAME_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"
NAD_GROUP_VERSION = "k8s.cni.cncf.io/v1"
NAD_PLURAL = "network-attachment-definitions"


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One list/watch the daemon keeps running, and how its objects become records."""

    key: str
    """Row of ``watch_state``: ``pods``, ``nads`` or ``nads/<namespace>``."""
    kind: Literal["pods", "nads"]
    path: str
    node_name: str = ""
    """Pods: only this node's (empty: every pod of the cluster, as upstream without MULTUS_NODE_NAME)."""
    namespace: str | None = None
    """NADs: only this namespace's (None: all namespaces)."""
    kept_annotations: tuple[str, ...] = ()
    """Pods: the only annotations recorded."""

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.node_name}" if self.kind == "pods" and self.node_name else ""

    @property
    def scope(self) -> str:
        """What this watch selects; a stored position with another scope is not resumed."""
        if self.kind == "pods":
            return f"pods node={self.node_name or '*'} annotations={','.join(sorted(self.kept_annotations))}"
        return f"nads namespace={self.namespace or '*'}"

    def list_query(self, *, limit: int, continue_token: str | None) -> list[tuple[str, str]]:
        query = [("limit", str(limit))]
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        if continue_token:
            query.append(("continue", continue_token))
        return query

    def position_check_query(self, resource_version: str) -> list[tuple[str, str]]:
        """A LIST of at most one object at ``resource_version`` or newer: the watch cache answers
        it at once when it has reached that version, else 504 ``ResourceVersionTooLarge``."""
        query = [
            ("limit", "1"),
            ("resourceVersion", resource_version),
            ("resourceVersionMatch", "NotOlderThan"),
        ]
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def watch_query(self, *, resource_version: str, timeout_seconds: int) -> list[tuple[str, str]]:
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def record(self, obj: Mapping[str, Any]) -> Record | None:
        """What the mirror keeps of ``obj``; None when it is not this target's (a pod of another node)."""
        if self.kind == "pods":
            pod = pod_record(obj, kept_annotations=self.kept_annotations)
            if self.node_name and pod.node_name != self.node_name:
                return None
            return pod
        return nad_record(obj)


def pods_on_node(node_name: str, *, kept_annotations: Collection[str]) -> WatchTarget:
    return WatchTarget(
        key="pods",
        kind="pods",
        path="/api/v1/pods",
        node_name=node_name,
        kept_annotations=tuple(sorted(kept_annotations)),
    )


def nads_in(namespace: str | None) -> WatchTarget:
    if namespace is None:
        return WatchTarget(key="nads", kind="nads", path=f"/apis/{NAD_GROUP_VERSION}/{NAD_PLURAL}")
    return WatchTarget(
        key=f"nads/{namespace}",
        kind="nads",
        path=f"/apis/{NAD_GROUP_VERSION}/namespaces/{namespace}/{NAD_PLURAL}",
        namespace=namespace,
    )


def pod_path(namespace: str, name: str) -> str:
    """The API path of one pod; its namespace and name escaped as ``nad_path`` escapes them."""
    namespace, name = quote(namespace, safe=""), quote(name, safe="")
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def nad_path(namespace: str, name: str) -> str:
    """The API path of one NAD; its namespace and name escaped, so that whatever they hold they
    name one object (``..``, ``/`` or ``?`` cannot reach another path)."""
    namespace, name = quote(namespace, safe=""), quote(name, safe="")
    return f"/apis/{NAD_GROUP_VERSION}/namespaces/{namespace}/{NAD_PLURAL}/{name}"


# records


def pod_record(obj: Mapping[str, Any], *, kept_annotations: Collection[str]) -> PodRecord:
    metadata = _metadata(obj)
    annotations = metadata.get("annotations") or {}
    spec = obj.get("spec") or {}
    return PodRecord(
        namespace=_text(metadata, "namespace"),
        name=_text(metadata, "name"),
        uid=_text(metadata, "uid"),
        node_name=str(spec.get("nodeName") or "") if isinstance(spec, dict) else "",
        resource_version=_text(metadata, "resourceVersion"),
        annotations={key: str(annotations[key]) for key in kept_annotations if key in annotations},
    )


def nad_record(obj: Mapping[str, Any]) -> NadRecord:
    metadata = _metadata(obj)
    annotations = metadata.get("annotations") or {}
    spec = obj.get("spec") or {}
    config = spec.get("config", "") if isinstance(spec, dict) else ""
    return NadRecord(
        namespace=_text(metadata, "namespace"),
        name=_text(metadata, "name"),
        uid=_text(metadata, "uid"),
        resource_version=_text(metadata, "resourceVersion"),
        config=config if isinstance(config, str) else "",
        resource_name=str(annotations.get(RESOURCE_NAME_ANNOTATION, "")),
    )


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = _metadata(obj)
    return (_text(metadata, "namespace"), _text(metadata, "name"))


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ApiProtocolError(0, "an object without metadata.name")
    return metadata


def _text(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key, "")
    return value if isinstance(value, str) else str(value)


# watch events


@dataclass(frozen=True, slots=True)
class Upsert:
    record: Record

    @property
    def resource_version(self) -> str:
        return self.record.resource_version


@dataclass(frozen=True, slots=True)
class Delete:
    key: ObjectKey
    resource_version: str


@dataclass(frozen=True, slots=True)
class Bookmark:
    resource_version: str


WatchItem = Upsert | Delete | Bookmark


def parse_event(target: WatchTarget, line: bytes) -> WatchItem | None:
    """One watch line as an item; None for an event type the API may add later (ignored).

    An ``ERROR`` event raises the ``ApiError`` its ``Status`` names (410: ``ApiGoneError``; 504
    with the cause ``ResourceVersionTooLarge``: ``ApiResourceVersionTooLargeError``).
    """
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise ApiProtocolError(0, "a watch line that is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ApiProtocolError(0, "a watch line without an object")
    kind, obj = event.get("type"), event["object"]
    if kind == "ERROR":
        raise error_for_status(
            int(obj.get("code") or 500),
            str(obj.get("message", "watch error")),
            fields=status_causes(obj, "field"),
            causes=status_causes(obj, "reason"),
        )
    if kind == "BOOKMARK":
        return Bookmark(_text(_bookmark_metadata(obj), "resourceVersion"))
    if kind in ("ADDED", "MODIFIED"):
        record = target.record(obj)
        if record is None:
            return Delete(object_key(obj), _text(_metadata(obj), "resourceVersion"))
        return Upsert(record)
    if kind == "DELETED":
        return Delete(object_key(obj), _text(_metadata(obj), "resourceVersion"))
    return None


def _bookmark_metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("resourceVersion"):
        raise ApiProtocolError(0, "a BOOKMARK without metadata.resourceVersion")
    return metadata
