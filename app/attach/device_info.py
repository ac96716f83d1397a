"""Device-information files (Network Plumbing WG device-info spec): the CNI file of a delegate with a device.

A delegate that gets a ``deviceID`` also gets ``runtimeConfig.CNIDeviceInfoFile``: a path under
``<deviceInfoDir>/cni/`` named ``<network>-<containerID>_<ifname>`` (``/`` → ``-``). When the device
came from a device-plugin resource, the device plugin's file
``<deviceInfoDir>/dp/<resource>-<deviceID>-device.json`` is copied there before the delegate runs
(the plugin may rewrite it); after the ADD the file is read back for the ``device-info`` of the
pod's network-status; after the delegate's DEL succeeded it is removed. The path is part of the
recorded runtimeConfig, so DEL, recovery and GC find it in the checkpoint alone.

Called by network resolution (``stage_from_device_plugin``, at the end of an ADD's resolution, and
``cni_file_path``), by the engine (``read_for_status`` after a delegate's ADD,
``remove_for_attachment`` after its DEL), and by the DEL of a sandbox upstream Multus attached
(``remove_for_upstream_cache``: the file upstream made, named in its libcni cache). Never fails an
attachment: the spec makes these files informational (a device plugin need not write one, a CNI
may write its own), and upstream Multus ignores every error here, so a missing file is logged at
debug level and a malformed or unwritable one as a warning naming the file; the delegate runs
without it and network-status has no ``device-info`` for it. Files are written whole (temporary
file + rename); start-up recovery removes the temporaries a killed daemon left
(``remove_leftover_temporaries``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from typing import Any, Final

from app.attach.network_status import DEVICE_INFO_OBJECTS, device_info_document
from app.cni import names
from app.cni.types import JsonObject
from app.store.records import AttachmentRecord

log = logging.getLogger(__name__)

DEFAULT_DIR: Final = "/var/run/k8s.cni.cncf.io/devinfo"
"""The spec's base directory; ``dp/`` holds device plugins' files, ``cni/`` the files for CNIs."""
CAPABILITY: Final = "CNIDeviceInfoFile"
_MAX_BYTES: Final = 1 << 20
_TEMPORARY_PREFIX: Final = ".devinfo-"
"""A file being written whole, until its rename (``remove_leftover_temporaries``)."""


class DeviceInfoError(ValueError):
    """A device-info file that is not the spec's JSON object (the message names the file and field)."""


def cni_file_path(base_dir: str, *, network_name: str, container_id: str, ifname: str) -> str:
    """``runtimeConfig.CNIDeviceInfoFile`` for a delegate (``/`` in the file name → ``-``)."""
    filename = f"{network_name}-{container_id}_{ifname}".replace("/", "-")
    return os.path.join(base_dir, "cni", filename)


def dp_file_path(base_dir: str, *, resource: str, device_id: str) -> str:
    """Where a device plugin leaves the device-info file of one of its devices."""
    filename = f"{resource.replace('/', '-')}-{device_id.replace('/', '-')}-device.json"
    return os.path.join(base_dir, "dp", filename)


def stage_from_device_plugin(*, base_dir: str, resource: str, device_id: str, cni_path: str) -> bool:
    """Copy the device plugin's file of ``resource``/``device_id`` to ``cni_path``; True when copied.

    The copy is the spec's document as upstream re-encodes it (known fields only, compact JSON).
    A previous file at ``cni_path`` (an earlier attempt of the same container and interface) is
    replaced. Missing, malformed or unwritable: logged, False.
    """
    source = dp_file_path(base_dir, resource=resource, device_id=device_id)
    try:
        document = load(source)
    except FileNotFoundError:
        log.debug("no device-info file %s from the device plugin of %s", source, resource)
        return False
    except (OSError, DeviceInfoError) as exc:
        log.warning("device-info file %s not copied for the CNI: %s", source, exc)
        return False
    try:
        _write_whole(cni_path, json.dumps(device_info_document(document), separators=(",", ":")).encode())
    except OSError as exc:
        log.warning("cannot write device-info file %s: %s", cni_path, exc)
        return False
    return True


def read_for_status(capability_args: Mapping[str, Any]) -> JsonObject | None:
    """The ``CNIDeviceInfoFile`` of a delegate's runtimeConfig, read after its ADD; None without one.

    The file is the copy made before the ADD or whatever the CNI plugin wrote there.
    """
    path = capability_args.get(CAPABILITY)
    if not isinstance(path, str) or not path:
        return None
    try:
        return load(path)
    except FileNotFoundError:
        log.debug("device-info file %s does not exist; network-status gets no device-info", path)
    except (OSError, DeviceInfoError) as exc:
        log.warning("device-info file %s not shown in network-status: %s", path, exc)
    return None


def remove_for_attachment(attachment: AttachmentRecord) -> bool:
    """Remove the CNI device-info file of a recorded attachment whose DEL succeeded; True if removed.

    Only a file named as ``cni_file_path`` names this attachment's is removed, so a
    ``CNIDeviceInfoFile`` the runtime itself passed through is never deleted. An absent file is
    fine (DEL is idempotent); any other failure is logged and does not fail the DEL.
    """
    return remove_ours(
        attachment.capability_args,
        network_name=attachment.network_name,
        container_id=attachment.container_id,
        ifname=attachment.ifname,
    )


def remove_ours(
    capability_args: Mapping[str, Any], *, network_name: str, container_id: str, ifname: str
) -> bool:
    """``remove_for_attachment`` of a delegate given by its fields: also of one dropped from the
    checkpoint because it never ran (its file was staged with the others' before any ran)."""
    path = capability_args.get(CAPABILITY)
    if not isinstance(path, str) or not os.path.isabs(path):
        return False
    expected = os.path.basename(
        cni_file_path("", network_name=network_name, container_id=container_id, ifname=ifname)
    )
    if os.path.basename(path) != expected:
        log.debug("CNIDeviceInfoFile %s of %s is not ours; left in place", path, ifname)
        return False
    return _remove(path)


def remove_for_upstream_cache(
    capability_args: Mapping[str, Any], *, network_name: str, container_id: str, ifname: str
) -> bool:
    """Remove the CNI device-info file upstream Multus made for a delegate of its libcni cache, once
    that delegate's DEL is done; True if removed.

    Upstream's DEL removes it after each delegate's DEL, as the spec asks of a DELETE. Upstream
    names it ``<network>-<containerID>_<ifname>`` in the spec's own ``cni/`` directory (fixed in
    upstream, whatever multus-py's ``deviceInfoDir``): only the ``CNIDeviceInfoFile`` of the cached
    runtimeConfig that is exactly that path is removed, never a file anywhere else (one the runtime
    passed through, a cache naming another path). An absent file is fine; any other failure is
    logged and does not fail the DEL.
    """
    path = capability_args.get(CAPABILITY)
    if not isinstance(path, str) or not path:
        return False
    upstreams = cni_file_path(
        DEFAULT_DIR, network_name=network_name, container_id=container_id, ifname=ifname
    )
    if path != upstreams:
        log.debug("CNIDeviceInfoFile %s of upstream's cache is not upstream's own; left in place", path)
        return False
    return _remove(path)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:  # ValueError: a path holding a NUL byte names no file
        log.warning("cannot remove device-info file %r: %s", path, exc)
        return False
    return True


def load(path: str) -> JsonObject:
    """A device-info file as a JSON object of the spec's shape; ``DeviceInfoError`` otherwise.

    As upstream's decoding into its ``DeviceInfo`` struct: the known fields must have their types,
    unknown keys are ignored (and dropped when the document is re-encoded), a null is an absent field.
    Only a regular file is read, opened without waiting: this runs on the daemon's event loop, and a
    FIFO a device plugin's pod left at its file's name (through its hostPath) would otherwise hold
    ``open`` for ever, and every request of the node with it. A path holding a NUL byte or a lone
    surrogate (a runtimeConfig ``CNIDeviceInfoFile`` is the runtime's text) names no file: refused
    as malformed."""
    unusable = names.unusable_character(path)
    if unusable is not None:
        raise DeviceInfoError(f"its path holds {unusable}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DeviceInfoError("not a regular file")
        data = handle.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise DeviceInfoError(f"larger than {_MAX_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DeviceInfoError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DeviceInfoError("must be a JSON object")
    for key in ("type", "version"):
        if document.get(key) is not None and not isinstance(document[key], str):
            raise DeviceInfoError(f'"{key}" must be a string')
    for key, fields in DEVICE_INFO_OBJECTS.items():
        nested = document.get(key)
        if nested is None:
            continue
        if not isinstance(nested, dict):
            raise DeviceInfoError(f'"{key}" must be an object')
        for field in fields:
            if nested.get(field) is not None and not isinstance(nested[field], str):
                raise DeviceInfoError(f'"{key}.{field}" must be a string')
    return document


def remove_leftover_temporaries(base_dir: str) -> list[str]:
    """Remove the temporary files a writer killed between its ``mkstemp`` and its rename left in
    ``<base_dir>/cni/`` (a kill -9 of the daemon: nothing else removes them until a reboot empties
    ``/var/run``); return their names. Only for start-up recovery, before any ADD can write one."""
    directory = os.path.join(base_dir, "cni")
    try:
        names = [name for name in os.listdir(directory) if name.startswith(_TEMPORARY_PREFIX)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot look for leftover device-info temporaries in %s: %s", directory, exc)
        return []
    removed = []
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the leftover device-info temporary %s: %s", name, exc)
            continue
        removed.append(name)
    if removed:
        log.info("removed %d device-info temporaries a killed writer left in %s", len(removed), directory)
    return removed


def _write_whole(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=_TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o444)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
