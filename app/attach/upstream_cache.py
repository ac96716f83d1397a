"""Upstream Multus's on-disk caches, read so a pod attached before the swap can still be deleted.

Upstream keeps, under its ``cniDir`` (default ``/var/lib/cni/multus``), a scratch file
``<containerID>`` listing the sandbox's delegates in ADD order, and libcni's result cache
``results/<network>-<containerID>-<ifname>`` (``cniCacheV1``: the configuration bytes, the
interface, netns, CNI_ARGS, capability args and the result). When multus-py receives a DEL for
a sandbox it has no checkpoint of, ``app.attach.upstream_delete`` loads these here and replays them
exactly as upstream's DEL would, newest delegate first, then removes them as upstream does after a
successful DEL. Read-only otherwise:
installing multus-py never touches them, so a node can move back to upstream.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from app.cni import conf as cniconf
from app.cni.types import CniError

log = logging.getLogger(__name__)

MAX_CACHE_FILE_BYTES: Final = 8 * 1024 * 1024
"""Bytes of one upstream cache file read: its configuration (base64) and result, a few KiB. The
files are found under ``cniDir`` by the DEL's container ID, which can name anything there (a
``cniDir`` of ``/dev`` and a container ``zero``): only regular files this big are read."""


@dataclass(frozen=True, slots=True)
class CachedAttachment:
    """One delegate of an upstream-attached sandbox, as libcni cached it."""

    network_name: str
    ifname: str
    netns: str
    config: bytes
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] | None = None
    path: Path = Path()


def load(cni_dir: str, container_id: str) -> list[CachedAttachment]:
    """The sandbox's cached delegates in DEL order (newest first); [] when upstream knows none.

    A cache file that cannot be decoded is skipped with a warning: it is upstream's, not ours, and
    the rest of the sandbox can still be released. The files are found by a plain look at each
    name: every DEL of a sandbox we have no checkpoint of comes here (a repeated DEL, the DEL
    after a failed ADD), and a glob of its container ID would leave a compiled pattern in the
    caches of ``fnmatch`` and ``re`` (up to 32,768 of them, about 1 KiB each) for the daemon's life.
    """
    results = Path(cni_dir) / "results"
    infix = f"-{container_id}-"  # what a glob of "*-<id>-*" matches, without compiling one per DEL
    try:
        candidates = sorted(path for path in results.iterdir() if infix in path.name)
    except OSError:
        return []
    attachments = [entry for path in candidates if (entry := _decode(path, container_id)) is not None]
    by_ifname, by_name = _add_order(Path(cni_dir) / container_id)
    attachments.sort(
        key=lambda a: by_ifname.get(a.ifname, by_name.get(a.network_name, _fallback_rank(a.ifname))),
        reverse=True,
    )
    return attachments


def remove(cni_dir: str, container_id: str, attachments: list[CachedAttachment]) -> None:
    """Forget a sandbox upstream-style after its DEL succeeded: its result caches and scratch file."""
    for attachment in attachments:
        attachment.path.unlink(missing_ok=True)
    (Path(cni_dir) / container_id).unlink(missing_ok=True)


def _decode(path: Path, container_id: str) -> CachedAttachment | None:
    try:
        document = json.loads(_read(path))
        if document.get("kind") != "cniCacheV1" or document.get("containerId") != container_id:
            return None
        return CachedAttachment(
            network_name=str(document["networkName"]),
            ifname=str(document["ifName"]),
            netns=str(document.get("netns", "")),
            config=base64.b64decode(document["config"]),
            cni_args=tuple((str(k), str(v)) for k, v in document.get("cniArgs") or []),
            capability_args=dict(document.get("capabilityArgs") or {}),
            result=document.get("result"),
            path=path,
        )
    except (CniError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
        log.warning("skipping unreadable upstream cache %s: %s", path, exc)
        return None


def _add_order(scratch: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Positions in upstream's ADD order, by interface name and by network name (the conf's, as
    libcni keys its cache).

    Upstream names a delegate after its ``ifnameRequest``, else the one at 0 (the cluster network)
    after CNI_IFNAME and the one at ``i`` ``net<i>``: the interface name tells apart two
    attachments of one network, the network name finds the cluster network's.
    """
    try:
        delegates = json.loads(_read(scratch))
    except (CniError, ValueError, RecursionError):
        return {}, {}
    by_ifname: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for position, delegate in enumerate(delegates if isinstance(delegates, list) else []):
        if not isinstance(delegate, dict):
            continue
        requested = delegate.get("ifnameRequest")
        if isinstance(requested, str) and requested:
            by_ifname[requested] = position
        elif position > 0:
            by_ifname[f"net{position}"] = position
        for key in ("ConfList", "Conf"):
            conf = delegate.get(key)
            if isinstance(conf, dict) and conf.get("name"):
                by_name.setdefault(str(conf["name"]), position)
    return by_ifname, by_name


def _read(path: Path) -> bytes:
    """A cache file's bytes: a regular file of at most ``MAX_CACHE_FILE_BYTES`` (else CniError)."""
    return cniconf.read_regular_file(str(path), limit=MAX_CACHE_FILE_BYTES)


def _fallback_rank(ifname: str) -> int:
    """Without the scratch file: the cluster network (eth0) first, then net1, net2, ..."""
    return int(ifname[3:]) if ifname.startswith("net") and ifname[3:].isdigit() else 0
