"""Immutable stored object versions and the changes between them, each JSON-encoded exactly once.

The store keeps one ``StoredObject`` per live object and replaces it on every write; it never mutates
one, so lists, gets and watch fan-out can send ``raw`` to any number of clients without copying or
re-encoding (the benchmarks run 1,000 pods and bursts of status writes). Data only, no I/O. Part of
the emulator, a test/demo tool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]


def encode(value: Any) -> bytes:
    """Compact JSON, as the API server writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def watch_line(event_type: str, raw_object: bytes) -> bytes:
    """One line of a watch stream: ``{"type":…,"object":…}`` and a newline."""
    return b'{"type":"' + event_type.encode() + b'","object":' + raw_object + b"}\n"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One version of one object. ``obj`` must never be mutated; copy it (``decoded()``) to edit."""

    obj: dict[str, Any]
    raw: bytes
    namespace: str
    name: str
    resource_version: int

    @classmethod
    def of(cls, obj: dict[str, Any]) -> StoredObject:
        metadata = obj["metadata"]
        return cls(
            obj=obj,
            raw=encode(obj),
            namespace=metadata.get("namespace", ""),
            name=metadata["name"],
            resource_version=int(metadata["resourceVersion"]),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def decoded(self) -> dict[str, Any]:
        """A private deep copy of the object (decoding ``raw`` is cheaper than ``copy.deepcopy``)."""
        result: dict[str, Any] = json.loads(self.raw)
        return result

    def at_resource_version(self, resource_version: int) -> StoredObject:
        """The same content stamped with another resourceVersion (deletions carry the deleting rv)."""
        metadata = {**self.obj["metadata"], "resourceVersion": str(resource_version)}
        return StoredObject.of({**self.obj, "metadata": metadata})


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the watch history keeps it."""

    type: ChangeType
    obj: StoredObject
    """The new version; for DELETED the last version, stamped with the deletion's resourceVersion."""
    prev: StoredObject | None
    """The version this write replaced (None for ADDED)."""
    line: bytes
    """The watch line every unfiltered watcher receives."""

    @classmethod
    def of(cls, change_type: ChangeType, obj: StoredObject, prev: StoredObject | None) -> Change:
        return cls(change_type, obj, prev, watch_line(change_type, obj.raw))

    @property
    def resource_version(self) -> int:
        return self.obj.resource_version
