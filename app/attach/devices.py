"""Device ids for delegates whose NAD has a ``resourceName``: the source protocol and the allocation.

A NAD annotated ``k8s.v1.cni.cncf.io/resourceName`` wants one of the pod's devices of
that resource (an SR-IOV VF, say) as its ``deviceID``. ``DeviceSource`` is what the engine needs
from the node: the ids of one resource that the kubelet allocated to one pod's containers (that pod:
named, and identified by its UID).
``app.watch.nodedevices`` implements it (the kubelet pod-resources gRPC API, else the kubelet's
device checkpoint, merged with DRA devices of the pod's ResourceClaims) and the daemon wires it in;
tests may pass another. ``DeviceDataError`` is a source's answer that names no usable device.
``DeviceAllocator`` is upstream's per-ADD bookkeeping: each delegate with a given resource takes the
next unused id of that resource, in sorted order, and none once they run out (upstream then injects
no ``deviceID``); ``build_allocator`` asks the source once per distinct resource. Called by network
resolution (``app.attach.networks``) while it builds an ADD's delegates. This module does no I/O of
its own, never imports gRPC or ``app.watch``, and never injects ids into configs (resolution does,
through ``app.attach.delegate_inputs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from app.cni.types import ErrorCode


class DeviceLookupError(Exception):
    """The device source could not be asked (socket missing, server down or failing, timeout).

    Distinct from "no devices": that is an empty list. The message names where the source was asked.
    """


class DeviceDataError(DeviceLookupError):
    """The source answered, but with data naming no usable device: a malformed kubelet checkpoint, a
    ResourceClaim without allocated devices. Asking again will not help; the message names the field
    and ``code`` is the CNI error code the ADD fails with."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.INVALID_NETWORK_CONFIG) -> None:
        super().__init__(message)
        self.code = code


class DeviceSource(Protocol):
    async def device_ids(self, *, namespace: str, pod: str, uid: str, resource: str) -> list[str]:
        """The ids of ``resource`` allocated to the containers of pod ``namespace/pod``, sorted.

        Ids from all the pod's containers are merged, each id once. ``[]`` when the pod has none of
        that resource (or the source does not know the pod); ``DeviceLookupError`` when the source
        could not be asked. With ``uid`` (the UID of the pod the ADD resolved), the ids are that
        pod's or none: when the pod of that name has another UID (it was recreated under its name,
        as a StatefulSet's pods are), a ``DeviceDataError`` with code 3 (``UNKNOWN_CONTAINER``), as
        network resolution refuses a replaced pod: its successor's devices are not this sandbox's.
        """
        ...


class DeviceAllocator:
    """One ADD's device ids, handed out one per delegate and resource, in order, each at most once.

    Built from one listing per resource (``build_allocator``, or directly from a mapping in tests);
    ``next_id`` is pure bookkeeping and never asks the source again. Not shared between ADDs.
    """

    __slots__ = ("_ids", "_taken")

    def __init__(self, listings: Mapping[str, Sequence[str]]) -> None:
        self._ids: dict[str, tuple[str, ...]] = {resource: tuple(ids) for resource, ids in listings.items()}
        self._taken: dict[str, int] = dict.fromkeys(self._ids, 0)

    @property
    def resources(self) -> frozenset[str]:
        """The resources this allocator was built for."""
        return frozenset(self._ids)

    def next_id(self, resource: str) -> str | None:
        """The next unused id of ``resource``, or None once all its ids are taken (or it has none).

        Raises ``KeyError`` for a resource that was never listed: that is a bug in the caller, and a
        silent None would attach the delegate without its device.
        """
        if resource not in self._ids:
            raise KeyError(f"device resource {resource!r} was not listed for this ADD")
        ids, taken = self._ids[resource], self._taken[resource]
        if taken >= len(ids):
            return None
        self._taken[resource] = taken + 1
        return ids[taken]


async def build_allocator(
    source: DeviceSource, *, namespace: str, pod: str, uid: str, resources: Iterable[str]
) -> DeviceAllocator:
    """Ask ``source`` once per distinct resource for pod ``namespace/pod`` of UID ``uid``, in sorted
    resource order.

    Raises ``DeviceLookupError`` from the source as is; upstream fails the ADD when the kubelet (and
    its device-plugin checkpoint) cannot be read.
    """
    listings = {
        resource: await source.device_ids(namespace=namespace, pod=pod, uid=uid, resource=resource)
        for resource in sorted(set(resources))
    }
    return DeviceAllocator(listings)
