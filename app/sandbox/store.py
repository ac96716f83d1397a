"""The emulator's object store: live objects, the global resourceVersion, and the API's write rules.

Owns what etcd and the registry strategies own in a real cluster: one resourceVersion counter shared
by all kinds (integers, strictly increasing), server-set metadata (uid, creationTimestamp,
generation), namespace existence, optimistic concurrency (409 on a stale resourceVersion; a PUT
body's uid is a precondition, 409, while a PATCH that changes the uid is invalid, 422), the
status subresource (a pod's ``status`` PUT/PATCH changes status, labels and annotations; a main PUT
never changes status), no-op writes that keep the resourceVersion, empty metadata fields left out
(``omitempty``: removing the last annotation leaves no ``annotations``), the 256 KiB cap on an
object's annotations (422), cascading namespace deletion, and paged lists (every page, and an
``Exact`` list, read at its resourceVersion from the retained history; a list at a version not
reached yet is refused 504 ``ResourceVersionTooLarge``, once ``wait_until_reached`` has given it
the short wait the real watch cache gives). Every committed change goes to the ``WatchHub``.
Writes are synchronous and atomic on the event loop thread; callers must not use the store from
another thread. Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.sandbox import patching, resources
from app.sandbox.objects import Change, ChangeType, StoredObject
from app.sandbox.resources import NAMESPACES, PODS, Resource
from app.sandbox.selectors import FieldSelector, LabelSelector
from app.sandbox.status import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    expired_continue,
    invalid,
    not_found,
    stale_update,
    too_large_resource_version,
    too_old_resource_version,
)
from app.sandbox.watching import WatchHub

JsonObject = dict[str, Any]
ObjectKey = tuple[str, str]

SERVER_SET_METADATA = ("uid", "creationTimestamp", "generation", "resourceVersion")
INITIAL_NAMESPACES = ("default", "kube-system")
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
"""Bytes of annotation keys and values together, as the API server validates on every write."""
_NAME_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[StoredObject]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list request asked for."""

    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)
    limit: int = 0
    continue_token: str | None = None
    resource_version: int | None = None
    exact: bool = False
    """``resourceVersionMatch=Exact``: fail with 410 when that version is no longer retained."""


class ObjectStore:
    """All objects of every served resource, and the rules for changing them."""

    def __init__(self, *, hub: WatchHub, clock: Callable[[], str] = rfc3339_now) -> None:
        self.hub = hub
        self._clock = clock
        self._resource_version = 0
        self._progressed = asyncio.Event()
        """Set (and replaced) whenever the resourceVersion moves: ``wait_until_reached`` waits on it."""
        self._objects: dict[Resource, dict[ObjectKey, StoredObject]] = {r: {} for r in resources.ALL}
        for name in INITIAL_NAMESPACES:
            self.create(NAMESPACES, None, {"metadata": {"name": name}})

    @property
    def resource_version(self) -> int:
        """The newest committed resourceVersion (of any kind)."""
        return self._resource_version

    def _next_resource_version(self) -> int:
        self._resource_version += 1
        progressed, self._progressed = self._progressed, asyncio.Event()
        progressed.set()  # waiters run once this synchronous write has finished
        return self._resource_version

    async def wait_until_reached(self, resource_version: int) -> None:
        """Return once the newest resourceVersion is ``resource_version`` or later. Bound it with
        ``asyncio.timeout``: as the watch cache does for a read at a version it has not seen yet."""
        while self._resource_version < resource_version:
            await self._progressed.wait()

    # reads

    def get(self, resource: Resource, namespace: str | None, name: str) -> StoredObject:
        stored = self._objects[resource].get((namespace or "", name))
        if stored is None:
            raise not_found(resource, name)
        return stored

    def find(self, resource: Resource, namespace: str | None, name: str) -> StoredObject | None:
        return self._objects[resource].get((namespace or "", name))

    def count(self, resource: Resource) -> int:
        return len(self._objects[resource])

    def select(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[StoredObject]:
        """Matching objects, ordered by (namespace, name) as etcd orders keys."""
        return _select(
            self._objects[resource],
            namespace=namespace,
            labels=labels or LabelSelector(),
            fields=fields or FieldSelector(),
        )

    def _state_at(self, resource: Resource, resource_version: int) -> dict[ObjectKey, StoredObject]:
        """The objects of ``resource`` as they were at ``resource_version`` (at most the current one,
        not older than the compacted one): the live objects with every later change undone."""
        objects = dict(self._objects[resource])
        for change in reversed(self.hub.changes_after(resource, resource_version)):
            if change.prev is None:
                objects.pop(change.obj.key, None)
            else:
                objects[change.prev.key] = change.prev
        return objects

    def list_page(self, resource: Resource, query: ListQuery) -> ListResult:
        """A list response: one page when ``limit`` is set, continuing after a ``continue`` token.

        A continued page, and an ``Exact`` list, are read at their resourceVersion, as etcd reads
        at a revision: every page of one list shows the same snapshot. Any other list is read at
        the newest version (``NotOlderThan``, or the legacy semantics of a resourceVersion without
        ``resourceVersionMatch``). A list at a version not reached yet (but ``0``, "any") is
        refused 504 with the cause ``ResourceVersionTooLarge``, whatever its match; the server
        gives it its wait first (``wait_until_reached``).
        """
        compacted = self.hub.compacted_resource_version(resource)
        list_rv = self._resource_version
        start_after: ObjectKey | None = None
        if query.continue_token:
            list_rv, start_after = _decode_continue(query.continue_token)
            if list_rv < compacted:
                raise expired_continue(_encode_continue(self._resource_version, start_after))
        elif query.resource_version is not None:
            if query.resource_version > self._resource_version:
                raise too_large_resource_version(query.resource_version, self._resource_version)
            if query.exact:
                if query.resource_version < compacted:
                    raise too_old_resource_version(query.resource_version, compacted)
                list_rv = query.resource_version
        objects = self._objects[resource] if list_rv == self._resource_version else None
        items = _select(
            objects if objects is not None else self._state_at(resource, list_rv),
            namespace=query.namespace,
            labels=query.labels,
            fields=query.fields,
        )
        if start_after is not None:
            items = [stored for stored in items if stored.key > start_after]
        if query.limit <= 0 or len(items) <= query.limit:
            return ListResult(items, list_rv)
        page = items[: query.limit]
        token = _encode_continue(list_rv, page[-1].key)
        return ListResult(page, list_rv, continue_token=token, remaining=len(items) - len(page))

    # writes

    def create(self, resource: Resource, namespace: str | None, body: Any) -> StoredObject:
        obj = _require_object(body, resource)
        metadata = obj["metadata"]
        _check_kind(resource, obj)
        if resource.namespaced:
            namespace = _namespace_of(resource, namespace, metadata)
            if ("", namespace) not in self._objects[NAMESPACES]:
                raise not_found(NAMESPACES, namespace)
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        name = metadata.get("name") or self._generated_name(resource, namespace, metadata)
        metadata["name"] = name
        _check_name(resource, name)
        if (namespace or "", name) in self._objects[resource]:
            raise already_exists(resource, name)
        for key in SERVER_SET_METADATA:
            metadata.pop(key, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = self._clock()
        metadata["generation"] = 1
        metadata["resourceVersion"] = str(self._next_resource_version())
        _apply_defaults(resource, obj)
        _drop_empty_metadata(obj)
        _check_annotations_size(resource, obj)
        return self._commit(resource, "ADDED", _canonical(resource, obj), prev=None)

    def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
    ) -> StoredObject:
        """PUT: replace the object (or, for ``status``, its status), refusing a stale resourceVersion."""
        obj = _require_object(body, resource)
        existing = self.get(resource, namespace, name)
        if obj["metadata"].get("uid"):  # a PUT body's uid is a precondition, checked first
            _check_preconditions(resource, existing, {"uid": obj["metadata"]["uid"]})
        requested_rv = obj["metadata"].get("resourceVersion")
        if requested_rv and requested_rv != str(existing.resource_version):
            raise stale_update(resource, name)
        return self._replace(resource, existing, obj, subresource=subresource)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        content_type: str,
        subresource: str | None = None,
    ) -> StoredObject:
        """PATCH: apply a merge or JSON patch to a copy of the object, then write it as an update.

        Unlike a PUT, a PATCH has no uid precondition: a patch naming another uid makes an object
        whose uid differs from the stored one, which update validation refuses (422, immutable).
        """
        existing = self.get(resource, namespace, name)
        patched = _apply_patch(existing.decoded(), body, content_type=content_type, name=name)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patched object is not a Kubernetes object")
        requested_rv = patched["metadata"].get("resourceVersion")
        if requested_rv and requested_rv != str(existing.resource_version):
            raise stale_update(resource, name)
        return self._replace(resource, existing, patched, subresource=subresource)

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        preconditions: dict[str, Any] | None = None,
    ) -> StoredObject:
        """Delete at once (no graceful deletion, no finalizers); returns the deleted version."""
        existing = self.get(resource, namespace, name)
        _check_preconditions(resource, existing, preconditions or {})
        if resource is NAMESPACES:
            for namespaced in resources.ALL:
                if namespaced.namespaced:
                    for stored in self.select(namespaced, namespace=name):
                        self._remove(namespaced, stored)
        return self._remove(resource, existing)

    def delete_collection(
        self, resource: Resource, *, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> list[StoredObject]:
        selected = self.select(resource, namespace=namespace, labels=labels, fields=fields)
        return [self._remove(resource, stored) for stored in selected]

    def compact(self) -> int:
        """Forget all watch history: any watch or continue token from an older version gets 410."""
        self.hub.compact(self._resource_version)
        return self._resource_version

    # internals

    def _generated_name(self, resource: Resource, namespace: str | None, metadata: JsonObject) -> str:
        prefix = metadata.get("generateName")
        if not prefix:
            raise invalid(resource, "", "metadata.name", "Required value: name or generateName is required")
        while True:
            name = prefix + "".join(random.choices(_NAME_SUFFIX_ALPHABET, k=5))
            if (namespace or "", name) not in self._objects[resource]:
                return str(name)

    def _replace(
        self, resource: Resource, existing: StoredObject, candidate: JsonObject, *, subresource: str | None
    ) -> StoredObject:
        _check_kind(resource, candidate)
        metadata = candidate["metadata"]
        if metadata.get("name", existing.name) != existing.name:
            raise bad_request(
                f"the name of the object ({metadata.get('name')}) does not match the name on the URL "
                f"({existing.name})"
            )
        if resource.namespaced and metadata.get("namespace", existing.namespace) != existing.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        uid = metadata.get("uid")
        if uid and uid != existing.obj["metadata"]["uid"]:
            raise invalid(
                resource, existing.name, "metadata.uid", f'Invalid value: "{uid}": field is immutable'
            )
        current = existing.obj
        if subresource == "status":
            merged = _with_new_status(resource, current, candidate)
        else:
            merged = _with_new_body(resource, current, candidate)
        _drop_empty_metadata(merged)
        _check_annotations_size(resource, merged)
        if _same_content(merged, current):
            return existing
        if merged.get("spec") != current.get("spec"):
            merged["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        merged["metadata"]["resourceVersion"] = str(self._next_resource_version())
        return self._commit(resource, "MODIFIED", merged, prev=existing)

    def _remove(self, resource: Resource, existing: StoredObject) -> StoredObject:
        deleted = existing.at_resource_version(self._next_resource_version())
        del self._objects[resource][existing.key]
        self.hub.record(Change.of("DELETED", deleted, existing), resource)
        return deleted

    def _commit(
        self, resource: Resource, change_type: ChangeType, obj: JsonObject, *, prev: StoredObject | None
    ) -> StoredObject:
        stored = StoredObject.of(obj)
        self._objects[resource][stored.key] = stored
        self.hub.record(Change.of(change_type, stored, prev), resource)
        return stored


def _select(
    objects: dict[ObjectKey, StoredObject],
    *,
    namespace: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
) -> list[StoredObject]:
    keys = sorted(key for key in objects if namespace is None or key[0] == namespace)
    selected: list[StoredObject] = []
    for key in keys:
        stored = objects[key]
        if labels.matches(stored.obj["metadata"].get("labels")) and fields.matches(stored.obj):
            selected.append(stored)
    return selected


def _require_object(body: Any, resource: Resource) -> JsonObject:
    if not isinstance(body, dict):
        raise bad_request(f"the body of the request is not a {resource.kind} object")
    metadata = body.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object")
    return body


def _check_name(resource: Resource, name: str) -> None:
    """Names are RFC 1123 subdomains (namespaces: labels of at most 63 characters), as the API validates."""
    if resource is NAMESPACES:
        kind, characters, limit = "label", "'-'", 63
    else:
        kind, characters, limit = "subdomain", "'-' or '.'", 253
    if len(name) > limit or not _DNS1123_SUBDOMAIN.match(name) or (resource is NAMESPACES and "." in name):
        raise invalid(
            resource,
            name,
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 {kind} must consist of lower case alphanumeric '
            f"characters or {characters}, and must start and end with an alphanumeric character "
            f"(at most {limit} characters)",
        )


def _check_kind(resource: Resource, obj: JsonObject) -> None:
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if kind and kind != resource.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})")
    if api_version and api_version != resource.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({resource.api_version})"
        )


def _namespace_of(resource: Resource, namespace: str | None, metadata: JsonObject) -> str:
    in_body = metadata.get("namespace")
    if namespace and in_body and in_body != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    chosen = namespace or in_body
    if not chosen:
        raise invalid(resource, metadata.get("name", ""), "metadata.namespace", "Required value")
    return str(chosen)


def _apply_defaults(resource: Resource, obj: JsonObject) -> None:
    if resource is NAMESPACES:
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif resource is PODS:
        obj.setdefault("spec", {})
        obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})


def _canonical(resource: Resource, obj: JsonObject) -> JsonObject:
    """``kind``, ``apiVersion`` and ``metadata`` first, as the API server writes objects."""
    rest = {key: value for key, value in obj.items() if key not in ("kind", "apiVersion", "metadata")}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": obj["metadata"], **rest}


def _server_metadata(current: JsonObject) -> JsonObject:
    return {
        key: current["metadata"][key]
        for key in ("name", "namespace", *SERVER_SET_METADATA)
        if key in current["metadata"]
    }


def _with_new_body(resource: Resource, current: JsonObject, candidate: JsonObject) -> JsonObject:
    """A main-resource update: everything from the candidate except server-set metadata and status."""
    merged = _canonical(resource, candidate)
    merged["metadata"] = {**candidate["metadata"], **_server_metadata(current)}
    if "status" in resource.subresources:
        merged.pop("status", None)
        if "status" in current:
            merged["status"] = current["status"]
    return merged


def _with_new_status(resource: Resource, current: JsonObject, candidate: JsonObject) -> JsonObject:
    """A status update: the candidate's status; for pods also its labels and annotations (as the API)."""
    merged = dict(current)
    merged["metadata"] = dict(current["metadata"])
    if resource is PODS:
        for key in ("labels", "annotations"):
            if candidate["metadata"].get(key):
                merged["metadata"][key] = candidate["metadata"][key]
            else:
                merged["metadata"].pop(key, None)
    if "status" in candidate:
        merged["status"] = candidate["status"]
    else:
        merged.pop("status", None)
    return merged


def _drop_empty_metadata(obj: JsonObject) -> None:
    """Drop metadata fields that are null or empty: every ObjectMeta field is ``omitempty``, so the
    API server stores and returns no ``annotations`` rather than ``{}`` (custom resources too: their
    metadata goes through ObjectMeta)."""
    metadata = obj["metadata"]
    for key in [key for key, value in metadata.items() if value is None or value in ("", {}, [])]:
        del metadata[key]


def _check_annotations_size(resource: Resource, obj: JsonObject) -> None:
    """The API server's cap on annotations: key and value lengths (bytes) summed over all of them."""
    annotations = obj["metadata"].get("annotations")
    if not isinstance(annotations, dict):
        return
    total = sum(len(str(key).encode()) + len(str(value).encode()) for key, value in annotations.items())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        raise invalid(
            resource,
            obj["metadata"].get("name", ""),
            "metadata.annotations",
            f"Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
        )


def _same_content(a: JsonObject, b: JsonObject) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        if key == "metadata":
            strip_a = {k: v for k, v in value.items() if k != "resourceVersion"}
            strip_b = {k: v for k, v in b["metadata"].items() if k != "resourceVersion"}
            if strip_a != strip_b:
                return False
        elif value != b[key]:
            return False
    return True


def _apply_patch(document: JsonObject, body: Any, *, content_type: str, name: str) -> Any:
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        if media_type in (patching.MERGE_PATCH, patching.STRATEGIC_MERGE_PATCH):
            if not isinstance(body, dict):
                raise bad_request("the merge patch body must be a JSON object")
            return patching.merge_patch(document, body)
        if media_type == patching.JSON_PATCH:
            if not isinstance(body, list):
                raise bad_request(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch "
                    "(a JSON patch is an array of operations; send a dict as application/merge-patch+json)"
                )
            return patching.json_patch(document, body)
    except patching.PatchError as error:
        raise ApiError(422, f"{name}: {error}", reason="Invalid") from error
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{patching.JSON_PATCH}, {patching.MERGE_PATCH}, {patching.STRATEGIC_MERGE_PATCH}",
    )


def _check_preconditions(resource: Resource, existing: StoredObject, preconditions: dict[str, Any]) -> None:
    metadata = existing.obj["metadata"]
    uid = preconditions.get("uid")
    if uid and uid != metadata["uid"]:
        raise conflict(
            resource,
            existing.name,
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {metadata['uid']}",
        )
    rv = preconditions.get("resourceVersion")
    if rv and rv != metadata["resourceVersion"]:
        raise conflict(
            resource,
            existing.name,
            f"Precondition failed: ResourceVersion in precondition: {rv}, "
            f"ResourceVersion in object meta: {metadata['resourceVersion']}",
        )


def _encode_continue(resource_version: int, after: ObjectKey) -> str:
    payload = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": list(after)})
    return base64.urlsafe_b64encode(payload.encode()).decode()


def _decode_continue(token: str) -> tuple[int, ObjectKey]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, name = payload["start"]
        return int(payload["rv"]), (str(namespace), str(name))
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise bad_request(f"continue key is not valid: {error}") from error
