"""Read-only inspection of a network namespace: which links a sandbox has. The one pyroute2 user.

Called by CHECK (does every recorded interface still exist, with its MAC?) and by GC (is a netns
still there?). Never creates or modifies anything: namespaces are opened without ``O_CREAT``, so
looking at a vanished namespace cannot recreate it. Blocking netlink calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass


class NetnsGoneError(FileNotFoundError):
    """The namespace path does not exist, or is not a network namespace any more."""


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    mac: str
    kind: str


def netns_exists(path: str) -> bool:
    """True when ``path`` is a live network namespace (a bind mount of an nsfs inode).

    Every namespace file lives on the kernel's one nsfs device, so comparing devices with our own
    namespace tells a live namespace from the empty file a removed one may leave behind.
    """
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _list_links_blocking(path: str) -> dict[str, Link]:
    from pyroute2 import IPRoute

    if not netns_exists(path):
        raise NetnsGoneError(f"network namespace {path} does not exist")
    with IPRoute(netns=path, flags=0) as ipr:
        links = {}
        for msg in ipr.get_links():
            name = msg.get("ifname")
            info = msg.get(("linkinfo", "kind")) if hasattr(msg, "get") else None
            links[name] = Link(name=name, mac=str(msg.get("address") or ""), kind=str(info or ""))
        return links


async def list_links(path: str) -> dict[str, Link]:
    """Links inside the namespace at ``path``, by name; ``NetnsGoneError`` if it is gone."""
    return await asyncio.to_thread(_list_links_blocking, path)
