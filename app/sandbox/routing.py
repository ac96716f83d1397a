"""Request paths to targets: which resource, namespace, object and subresource a URL names.

``/api/v1/...`` (core) and ``/apis/<group>/<version>/...`` both end in one of
``<plural>[/<name>[/<sub>]]`` (cluster-wide or cluster-scoped) or
``namespaces/<ns>/<plural>[/<name>[/<sub>]]``; the legacy ``.../watch/...`` prefix is accepted too.
Discovery paths map to ``DiscoveryTarget``. Pure functions, no I/O. Part of the emulator, a
test/demo tool.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.sandbox import resources
from app.sandbox.resources import Resource
from app.sandbox.status import unknown_path


@dataclass(frozen=True, slots=True)
class ResourceTarget:
    resource: Resource
    namespace: str | None
    """The namespace in the path; None for cluster-scoped resources and cluster-wide collections."""
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False

    @property
    def is_collection(self) -> bool:
        return self.name is None


@dataclass(frozen=True, slots=True)
class DiscoveryTarget:
    """``/api`` (group None, version None), ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``."""

    legacy: bool
    group: str | None = None
    version: str | None = None


Target = ResourceTarget | DiscoveryTarget


def parse(path: str) -> Target:
    """The target of ``path``; ``ApiError`` 404 when the emulator serves nothing there."""
    segments = [segment for segment in path.split("/") if segment]
    if not segments or segments[0] not in ("api", "apis"):
        raise unknown_path()
    if segments[0] == "api":
        if len(segments) == 1:
            return DiscoveryTarget(legacy=True)
        group, version, rest = "", segments[1], segments[2:]
        if version != "v1":
            raise unknown_path()
        if not rest:
            return DiscoveryTarget(legacy=True, group="", version=version)
    else:
        if len(segments) == 1:
            return DiscoveryTarget(legacy=False)
        group = segments[1]
        if group not in resources.groups():
            raise unknown_path()
        if len(segments) == 2:
            return DiscoveryTarget(legacy=False, group=group)
        version, rest = segments[2], segments[3:]
        if version not in resources.groups()[group]:
            raise unknown_path()
        if not rest:
            return DiscoveryTarget(legacy=False, group=group, version=version)
    return _resource_target(group, version, rest)


def _resource_target(group: str, version: str, rest: list[str]) -> ResourceTarget:
    legacy_watch = rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        resource = resources.lookup(group=group, version=version, plural=rest[2])
        if resource is not None and resource.namespaced:
            return _checked(resource, rest[1], rest[3:], legacy_watch)
    if not rest:
        raise unknown_path()
    resource = resources.lookup(group=group, version=version, plural=rest[0])
    if resource is None:
        raise unknown_path()
    if resource.namespaced and len(rest) > 1:
        raise unknown_path()
    return _checked(resource, None, rest[1:], legacy_watch)


def _checked(
    resource: Resource, namespace: str | None, tail: list[str], legacy_watch: bool
) -> ResourceTarget:
    if len(tail) > 2 or (len(tail) == 2 and tail[1] not in resource.subresources):
        raise unknown_path()
    name = tail[0] if tail else None
    subresource = tail[1] if len(tail) == 2 else None
    return ResourceTarget(resource, namespace, name, subresource, legacy_watch)
