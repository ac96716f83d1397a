"""The kubelet device-manager checkpoint file: device ids of a pod when the pod-resources API is silent.

The kubelet records every device-plugin allocation in ``kubelet_internal_checkpoint`` (JSON) under its
device-plugins directory. Upstream Multus reads it when the pod-resources socket cannot be used;
``app.watch.nodedevices`` does the same through ``checkpoint_device_ids``. Layout (kubelet ≥ 1.20;
the older form, a plain list of ids, is accepted too)::

    {"Data": {"PodDeviceEntries": [{"PodUID": "...", "ContainerName": "...", "ResourceName": "...",
                                    "DeviceIDs": {"<NUMA node>": ["id", ...]}, "AllocResp": "..."}],
              "RegisteredDevices": {...}},
     "Checksum": 123}

Entries are matched by pod UID (the file knows no pod names). The checksum is not verified (upstream
does not either). Every entry is validated, so a malformed file is a ``DeviceDataError`` naming the
field, never a partial answer. A missing or unreadable file is a ``DeviceLookupError`` naming the
path. Reads the file once per call, in the caller's thread; writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.attach.devices import DeviceDataError, DeviceLookupError
from app.cni.types import ErrorCode

DEFAULT_CHECKPOINT_PATH = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024


def checkpoint_device_ids(path: str, *, pod_uid: str, resource: str) -> list[str]:
    """The ids of ``resource`` the checkpoint at ``path`` records for pod ``pod_uid``: each once, sorted."""
    entries = read_entries(path)
    ids = {
        device_id
        for entry in entries
        if entry["PodUID"] == pod_uid and entry["ResourceName"] == resource
        for device_id in entry["DeviceIDs"]
    }
    return sorted(ids)


def read_entries(path: str) -> list[dict[str, Any]]:
    """Every ``Data.PodDeviceEntries`` item as ``{PodUID, ResourceName, DeviceIDs: [ids]}``."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CHECKPOINT_BYTES + 1)
    except FileNotFoundError as exc:
        raise DeviceLookupError(f"kubelet device checkpoint {path} is missing") from exc
    except OSError as exc:
        raise DeviceLookupError(f"kubelet device checkpoint {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise _malformed(path, f"larger than {MAX_CHECKPOINT_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _malformed(path, f"not JSON: {exc}") from exc
    if not isinstance(document, Mapping):
        raise _malformed(path, "the document must be a JSON object")
    data = document.get("Data")
    if not isinstance(data, Mapping):
        raise _malformed(path, "'Data' must be an object")
    listed = data.get("PodDeviceEntries")
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise _malformed(path, "'Data.PodDeviceEntries' must be a list")
    return [_entry(path, index, item) for index, item in enumerate(listed)]


def _entry(path: str, index: int, item: object) -> dict[str, Any]:
    where = f"Data.PodDeviceEntries[{index}]"
    if not isinstance(item, Mapping):
        raise _malformed(path, f"'{where}' must be an object")
    for key in ("PodUID", "ResourceName"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise _malformed(path, f"'{where}.{key}' must be a non-empty string")
    return {
        "PodUID": item["PodUID"],
        "ResourceName": item["ResourceName"],
        "DeviceIDs": _device_ids(path, f"{where}.DeviceIDs", item.get("DeviceIDs")),
    }


def _device_ids(path: str, where: str, value: object) -> list[str]:
    """Ids per NUMA node (``{"0": [...], "-1": [...]}``), or the pre-1.20 plain list; null: none."""
    if value is None:
        return []
    if isinstance(value, list):
        return _id_list(path, where, value)
    if isinstance(value, Mapping):
        ids: list[str] = []
        for node, listed in value.items():
            if not isinstance(listed, list):
                raise _malformed(path, f"'{where}.{node}' must be a list of device ids")
            ids.extend(_id_list(path, f"{where}.{node}", listed))
        return ids
    raise _malformed(path, f"'{where}' must be an object of lists (per NUMA node) or a list")


def _id_list(path: str, where: str, listed: list[Any]) -> list[str]:
    for position, device_id in enumerate(listed):
        if not isinstance(device_id, str) or not device_id:
            raise _malformed(path, f"'{where}[{position}]' must be a non-empty string")
    return list(listed)


def _malformed(path: str, reason: str) -> DeviceDataError:
    return DeviceDataError(
        f"kubelet device checkpoint {path} is malformed: {reason}", code=ErrorCode.DECODING_FAILURE
    )
