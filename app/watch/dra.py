"""DRA device ids of a pod: its ResourceClaims' allocated devices and their attributes in ResourceSlices.

Kubernetes ≥ 1.34 can give a pod network devices through Dynamic Resource Allocation instead of a
device plugin. As upstream Multus documents it, a DRA driver publishes on each such device (in the
``spec.devices[].attributes`` of its ResourceSlices, ``resource.k8s.io/v1``) two string attributes:
``k8s.cni.cncf.io/resourceName``, equal to the NAD's ``k8s.v1.cni.cncf.io/resourceName``, and
``k8s.cni.cncf.io/deviceID``, the id the delegate gets. ``dra_device_ids`` walks the pod's
``status.resourceClaimStatuses``: GET of each ResourceClaim (in the pod's namespace), its
``status.allocation.devices.results`` (driver, pool, device), and one LIST of the node's
ResourceSlices per driver (``fieldSelector=spec.nodeName=<node>,spec.driver=<driver>``, paged).
Devices without both attributes are skipped (a GPU claim beside a network claim is fine), as
upstream does. A claim that names no device (not allocated, no results, a result without driver,
pool or device) is a ``DeviceDataError`` naming the field; an API that cannot answer a
``DeviceLookupError``. Called by ``app.watch.nodedevices`` per lookup; keeps nothing between calls
and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from app.attach.devices import DeviceDataError, DeviceLookupError
from app.watch.api import KubeApi
from app.watch.errors import ApiError, ApiNotFoundError

log = logging.getLogger(__name__)

DEVICE_ID_ATTRIBUTE = "k8s.cni.cncf.io/deviceID"
RESOURCE_NAME_ATTRIBUTE = "k8s.cni.cncf.io/resourceName"
RESOURCE_API = "/apis/resource.k8s.io/v1"
SLICE_PAGE_SIZE = 100

_DeviceKey = tuple[str, str]
"""(pool, device) within one driver."""


async def dra_device_ids(api: KubeApi, pod: Mapping[str, Any]) -> dict[str, list[str]]:
    """resourceName → device ids (in claim and result order) of the DRA devices allocated to ``pod``
    (a pod object as the API returns it). ``{}`` for a pod without resource claims."""
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    statuses = (pod.get("status") or {}).get("resourceClaimStatuses") or []
    if not isinstance(statuses, list):
        raise DeviceDataError(f"pod {namespace}/{name}: status.resourceClaimStatuses must be a list")
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    slices: dict[str, dict[_DeviceKey, tuple[str, str]]] = {}
    found: dict[str, list[str]] = {}
    for index, status in enumerate(statuses):
        claim_name = status.get("resourceClaimName") if isinstance(status, Mapping) else None
        if not claim_name:  # no claim needed for this entry (upstream skips it too)
            log.debug("pod %s/%s: status.resourceClaimStatuses[%d] names no claim", namespace, name, index)
            continue
        claim = await _claim(api, namespace, str(claim_name), index)
        for driver, pool, device in _allocated(claim, f"ResourceClaim {namespace}/{claim_name}"):
            if driver not in slices:
                slices[driver] = await _devices_of(api, node=node, driver=driver)
            attributes = slices[driver].get((pool, device))
            if attributes is None:
                log.debug("DRA device %s/%s/%s is in no ResourceSlice of node %s", driver, pool, device, node)
                continue
            device_id, resource = attributes
            found.setdefault(resource, []).append(device_id)
    return found


async def _claim(api: KubeApi, namespace: str, name: str, index: int) -> Mapping[str, Any]:
    path = f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{name}"
    try:
        return await api.get(path)
    except ApiNotFoundError as exc:
        if not exc.says_gone("resourceclaims", name):  # a proxy's 404: the API did not answer
            raise DeviceLookupError(
                f"cannot read ResourceClaim {namespace}/{name}: a 404 that does not name it: {exc}"
            ) from exc
        raise DeviceDataError(
            f"ResourceClaim {namespace}/{name} (status.resourceClaimStatuses[{index}].resourceClaimName "
            "of the pod) does not exist"
        ) from exc
    except ApiError as exc:
        raise DeviceLookupError(f"cannot read ResourceClaim {namespace}/{name}: {exc}") from exc


def _allocated(claim: Mapping[str, Any], what: str) -> list[tuple[str, str, str]]:
    """(driver, pool, device) of every ``status.allocation.devices.results`` item; each field required."""
    allocation = (claim.get("status") or {}).get("allocation")
    if not isinstance(allocation, Mapping):
        raise DeviceDataError(f"{what} names no device: status.allocation is missing (not allocated)")
    results = (allocation.get("devices") or {}).get("results")
    if not isinstance(results, list) or not results:
        raise DeviceDataError(f"{what} names no device: status.allocation.devices.results is empty")
    allocated = []
    for index, result in enumerate(results):
        if not isinstance(result, Mapping):
            raise DeviceDataError(f"{what}: status.allocation.devices.results[{index}] must be an object")
        fields = []
        for key in ("driver", "pool", "device"):
            value = result.get(key)
            if not isinstance(value, str) or not value:
                raise DeviceDataError(
                    f"{what} names no device: status.allocation.devices.results[{index}].{key} is missing"
                )
            fields.append(value)
        allocated.append((fields[0], fields[1], fields[2]))
    return allocated


async def _devices_of(api: KubeApi, *, node: str, driver: str) -> dict[_DeviceKey, tuple[str, str]]:
    """(pool, device) → (deviceID, resourceName) of ``driver``'s devices on ``node`` having both."""
    selector = f"spec.nodeName={node},spec.driver={driver}" if node else f"spec.driver={driver}"
    devices: dict[_DeviceKey, tuple[str, str]] = {}
    token = ""
    while True:
        query = [("fieldSelector", selector), ("limit", str(SLICE_PAGE_SIZE))]
        if token:
            query.append(("continue", token))
        try:
            page = await api.get(f"{RESOURCE_API}/resourceslices", query=query)
        except ApiError as exc:
            raise DeviceLookupError(f"cannot list ResourceSlices of driver {driver}: {exc}") from exc
        for item in page.get("items") or []:
            spec = item.get("spec") or {}
            if spec.get("driver") != driver:  # a server ignoring the selector
                continue
            pool = str((spec.get("pool") or {}).get("name", ""))
            for device in spec.get("devices") or []:
                attributes = (device.get("attributes") or {}) if isinstance(device, Mapping) else {}
                device_id = _string(attributes.get(DEVICE_ID_ATTRIBUTE))
                resource = _string(attributes.get(RESOURCE_NAME_ATTRIBUTE))
                if device_id and resource:
                    devices[(pool, str(device.get("name", "")))] = (device_id, resource)
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return devices


def _string(attribute: object) -> str:
    """A ``DeviceAttribute``'s ``string`` value, else ``""``."""
    if isinstance(attribute, Mapping) and isinstance(attribute.get("string"), str):
        return str(attribute["string"])
    return ""
