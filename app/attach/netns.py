"""Netlink access, the one pyroute2 user: which links a sandbox has, and leftover host links.

Called by CHECK (does every recorded interface still exist, with its MAC?) and by GC (is a netns
still there? is a host-side veth of a torn-down attachment still there?). Namespaces are opened
without ``O_CREAT``, so looking at a vanished namespace cannot recreate it. The only changes it
makes are deleting a host-side veth that GC has proven orphaned, restoring the name and MAC of
a host device (an SR-IOV VF) that came back from a sandbox under another name, and pointing a
sandbox's default route where its pod's ``default-route`` selection asked. Blocking netlink calls run in a
worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast


class NetnsGoneError(FileNotFoundError):
    """The namespace path does not exist, or is not a network namespace any more."""


T = TypeVar("T")


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
        return os.stat(path).st_dev == _nsfs_device()
    except OSError:
        return False


@functools.cache
def _nsfs_device() -> int:
    """The device of the kernel's nsfs (one per boot, the same in every namespace)."""
    return os.stat("/proc/self/ns/net").st_dev


CLONE_NEWNET = 0x40000000


def _in_netns(path: str, work: Callable[[], T]) -> T:
    """Run ``work`` in a new thread that has entered the namespace at ``path``.

    ``setns`` moves only the calling thread, and a netlink socket stays in the namespace it was
    created in, so the thread enters, opens its socket, works, and leaves. pyroute2's own
    ``netns=`` support forks a helper process instead, which must not happen here: a forked child
    inherits asyncio's signal wakeup pipe, and the SIGTERM pyroute2 sends it to stop it would
    arrive in the daemon's event loop as a SIGTERM of its own (the daemon would shut down).
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            outcome["error"] = exc
            return
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(own)
            outcome["error"] = NetnsGoneError(f"network namespace {path} cannot be opened: {exc.strerror}")
            return
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise NetnsGoneError(f"cannot enter network namespace {path}: {os.strerror(errno)}")
            try:
                outcome["value"] = work()
            finally:
                libc.setns(own, CLONE_NEWNET)  # the thread ends right after: a failure strands nothing
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=run, name="netns-inspect", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


def _list_links_blocking(path: str) -> dict[str, Link]:
    from pyroute2 import IPRoute

    if not netns_exists(path):
        raise NetnsGoneError(f"network namespace {path} does not exist")

    def links() -> dict[str, Link]:
        with IPRoute() as ipr:
            found = {}
            for msg in ipr.get_links():
                name = str(msg.get("ifname"))
                kind = msg.get(("linkinfo", "kind"))
                found[name] = Link(name=name, mac=str(msg.get("address") or ""), kind=str(kind or ""))
            return found

    return _in_netns(path, links)


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
    return f"{info.st_dev}:{info.st_ino}" if info.st_dev == _nsfs_device() else ""


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


def _set_default_route_blocking(path: str, gateway: str, ifname: str) -> None:
    import ipaddress
    import socket

    from pyroute2 import IPRoute

    family = socket.AF_INET6 if ipaddress.ip_address(gateway).version == 6 else socket.AF_INET

    def replace_default() -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise NetnsGoneError(f"interface {ifname} is not in network namespace {path}")
            for route in ipr.get_routes(family=family, table=254):
                if route["dst_len"] == 0:
                    ipr.route(
                        "del",
                        family=family,
                        table=254,
                        dst_len=0,
                        oif=route.get("oif"),
                        gateway=route.get("gateway"),
                    )
            ipr.route("add", family=family, table=254, dst_len=0, gateway=gateway, oif=found[0])

    _in_netns(path, replace_default)


async def set_default_route(path: str, *, gateway: str, ifname: str) -> None:
    """Make ``gateway`` via ``ifname`` the namespace's only default route of its address family."""
    await asyncio.to_thread(_set_default_route_blocking, path, gateway, ifname)
