"""Netlink access, the one pyroute2 user: which links a sandbox has, and leftover host links.

Called by CHECK (does every recorded interface still exist, with its MAC?) and by GC (is a netns
still there? is a host-side veth of a torn-down attachment still there?). Namespaces are opened
without ``O_CREAT``, so looking at a vanished namespace cannot recreate it. The only changes it
makes are deleting a host-side veth that GC has proven orphaned and restoring the name and MAC of
a host device (an SR-IOV VF) that came back from a sandbox under another name. Blocking netlink calls run in a
worker thread.
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


def _delete_host_veths_blocking(names: list[str]) -> list[str]:
    from pyroute2 import IPRoute

    removed = []
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            link = ipr.get_links(found[0])[0]
            if link.get(("linkinfo", "kind")) != "veth":
                continue
            ipr.link("del", index=found[0])
            removed.append(name)
    return removed


async def delete_host_veths(names: list[str]) -> list[str]:
    """Delete those of ``names`` that exist in the host namespace as veths; return them."""
    if not names:
        return []
    return await asyncio.to_thread(_delete_host_veths_blocking, names)


def netns_identity(path: str) -> str:
    """``<dev>:<inode>`` of the namespace at ``path``; "" when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return f"{info.st_dev}:{info.st_ino}" if netns_exists(path) else ""


def _host_link_blocking(name: str) -> Link | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        msg = ipr.get_links(found[0])[0]
        return Link(
            name=name, mac=str(msg.get("address") or ""), kind=str(msg.get(("linkinfo", "kind")) or "")
        )


async def host_link(name: str) -> Link | None:
    """The host-namespace link called ``name``, if there is one."""
    return await asyncio.to_thread(_host_link_blocking, name)


def _restore_host_link_blocking(current: str, name: str, mac: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=current)
        if not found:
            raise NetnsGoneError(f"host link {current} does not exist")
        index = found[0]
        was_up = bool(ipr.get_links(index)[0]["flags"] & 1)
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=name, address=mac)
        if was_up:
            ipr.link("set", index=index, state="up")


async def restore_host_link(current: str, *, name: str, mac: str) -> None:
    """Rename host link ``current`` back to ``name`` and give it ``mac`` again."""
    await asyncio.to_thread(_restore_host_link_blocking, current, name, mac)
