"""Netlink access, the one pyroute2 user, and the one answer to "what is at this netns path".

``look`` says whether a path holds a network namespace (with its identity), provably holds none
any more (the path is missing, or what is there is no namespace: the file or mount an unmounted
namespace leaves behind), or cannot be looked at (permission denied, an I/O error, a looping
symlink: that proves nothing, the namespace may be a live pod's). GC, the DEL paths, CHECK and
hot-plug all decide on that answer. Called by CHECK (does every recorded interface still exist,
with its MAC?) and by GC (is a netns still there? is a host-side veth of a torn-down attachment
still there?). Namespaces are opened without ``O_CREAT``, so looking at a vanished namespace cannot
recreate it. The only changes it makes are deleting a host-side veth of a sandbox GC collected
(the link that has the name and the MAC its result recorded, never another that took the name),
restoring the name and MAC of a host device (an SR-IOV VF) that came back from a sandbox under
another name (the name first: a MAC the device refuses does not keep it from its name), moving such
a device still inside its sandbox after its DEL back to the host (the one link the caller proves to
be it, by index), and pointing a sandbox's default route where its pod's ``default-route``
selection asked. Blocking netlink calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar, cast

from app.attach import lean_pyroute2


class NetnsGoneError(FileNotFoundError):
    """The namespace path does not exist, or is not a network namespace any more."""


class NetnsUnreadableError(OSError):
    """The namespace path cannot be looked at: it proves nothing, the namespace may still be there."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    mac: str
    kind: str


class NetnsState(StrEnum):
    PRESENT = "present"
    """The path holds a network namespace."""
    GONE = "gone"
    """Provably no namespace: the path is missing, or what is there is no namespace."""
    UNREADABLE = "unreadable"
    """The path cannot be looked at (any error but "no such file"): proves nothing either way."""


@dataclass(frozen=True, slots=True)
class NetnsLook:
    """What ``look`` found at a netns path."""

    state: NetnsState
    identity: str = ""
    """``<dev>:<inode>`` of the namespace, when ``PRESENT``."""
    leftover: bool = False
    """``GONE`` with something at the path (a plain file, another filesystem's mount): what an
    unmounted namespace leaves behind, which plugins refuse to enter; or a path no plugin can be
    given (it holds a NUL or a lone surrogate, or a file is one of its directories)."""
    error: int = 0
    """The errno that made the path ``UNREADABLE``."""

    def describe(self, path: str) -> str:
        """For logs and errors: what is at ``path``."""
        if self.state is NetnsState.PRESENT:
            return f"network namespace {path} ({self.identity})"
        if self.state is NetnsState.GONE:
            held = "holds no network namespace" if self.leftover else "does not exist"
            return f"network namespace path {path} {held}"
        return f"network namespace path {path} cannot be looked at ({os.strerror(self.error)})"


def look(path: str) -> NetnsLook:
    """What is at ``path`` now: a namespace, provably none, or nothing that can be known.

    Every namespace file lives on the kernel's one nsfs device, so comparing devices with our own
    namespace tells a live namespace from the empty file a removed one may leave behind. Only "no
    such file" (``ENOENT``) proves the path empty, and ``ENOTDIR`` (a component is a file) that
    nothing can be below it: ``GONE`` as a leftover, since plugins take only a missing path for
    "already gone" and refuse this one; any other error (``EACCES``, ``EIO``, ``ELOOP``, ...)
    proves nothing.
    A path no system call takes (a NUL, a lone surrogate that encodes to no bytes: a corrupt
    cache's) holds no namespace either, and no plugin could be handed it: ``GONE`` as a leftover,
    which no DEL enters.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return NetnsLook(NetnsState.GONE)
    except NotADirectoryError:  # plugins refuse it ("failed to Statfs"), unlike a missing path
        return NetnsLook(NetnsState.GONE, leftover=True)
    except OSError as exc:
        return NetnsLook(NetnsState.UNREADABLE, error=exc.errno or errno.EIO)
    except ValueError:  # "embedded null byte", UnicodeEncodeError
        return NetnsLook(NetnsState.GONE, leftover=True)
    return _what_is(info)


def _what_is(info: os.stat_result) -> NetnsLook:
    if info.st_dev != _nsfs_device():
        return NetnsLook(NetnsState.GONE, leftover=True)
    return NetnsLook(NetnsState.PRESENT, identity=f"{info.st_dev}:{info.st_ino}")


def _unless_present(path: str, found: NetnsLook) -> None:
    """Raise ``NetnsGoneError`` or ``NetnsUnreadableError`` unless ``found`` is a namespace."""
    if found.state is NetnsState.GONE:
        raise NetnsGoneError(found.describe(path))
    if found.state is NetnsState.UNREADABLE:
        raise NetnsUnreadableError(found.error, found.describe(path))


@functools.cache
def _nsfs_device() -> int:
    """The device of the kernel's nsfs (one per boot, the same in every namespace)."""
    return os.stat("/proc/self/ns/net").st_dev


CLONE_NEWNET = 0x40000000


def _in_netns(path: str, work: Callable[[], T], *, identity: str = "") -> T:
    """Run ``work`` in a new thread that has entered the namespace at ``path``; raise
    ``NetnsGoneError`` or ``NetnsUnreadableError`` when there is none to enter or it cannot be
    told whether there is. With ``identity`` (a sandbox's recorded one), a path that holds another
    namespace now is taken as gone: the namespace opened is compared, not the one looked at first.

    ``setns`` moves only the calling thread, and a netlink socket stays in the namespace it was
    created in, so the thread enters, opens its socket, works, and leaves. pyroute2's own
    ``netns=`` support forks a helper process instead, which must not happen here: a forked child
    inherits asyncio's signal wakeup pipe, and the SIGTERM pyroute2 sends it to stop it would
    arrive in the daemon's event loop as a SIGTERM of its own (the daemon would shut down).
    """
    _unless_present(path, look(path))  # before opening: a FIFO left at the path would block open
    outcome: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            outcome["error"] = exc
            return
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO swapped in: no wait
        except OSError as exc:
            os.close(own)
            outcome["error"] = _not_opened(path, exc)
            return
        try:
            opened = _what_is(os.fstat(target))  # what was opened, not what was looked at
            _unless_present(path, opened)
            if identity and opened.identity != identity:
                raise NetnsGoneError(
                    f"{path} holds another network namespace now ({opened.identity}; recorded {identity})"
                )
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise _not_entered(path, ctypes.get_errno())
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


def _not_opened(path: str, exc: OSError) -> OSError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return NetnsGoneError(f"network namespace path {path} does not exist")
    code = exc.errno or errno.EIO
    return NetnsUnreadableError(code, f"network namespace {path} cannot be opened ({os.strerror(code)})")


def _not_entered(path: str, code: int) -> OSError:
    if code == errno.EINVAL:  # the kernel's answer for a namespace file of another kind
        return NetnsGoneError(f"{path} is not a network namespace")
    return NetnsUnreadableError(code, f"cannot enter network namespace {path} ({os.strerror(code)})")


def _list_links_blocking(path: str, identity: str) -> dict[str, Link]:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)

    def links() -> dict[str, Link]:
        with IPRoute() as ipr:
            found = {}
            for msg in ipr.get_links():
                name = str(msg.get("ifname"))
                kind = msg.get(("linkinfo", "kind"))
                found[name] = Link(name=name, mac=str(msg.get("address") or ""), kind=str(kind or ""))
            return found

    return _in_netns(path, links, identity=identity)


async def list_links(path: str, *, identity: str = "") -> dict[str, Link]:
    """Links inside the namespace at ``path``, by name; ``NetnsGoneError`` if it is gone (or, given
    the ``identity`` recorded for it, holds another namespace now), ``NetnsUnreadableError`` if it
    cannot be looked at (then it may well be there)."""
    return await asyncio.to_thread(_list_links_blocking, path, identity)


@dataclass(frozen=True, slots=True)
class HostVeth:
    """A host-side veth a delegate's result names: its name, and the MAC it had then, which is
    what ties the link to that delegate (a random veth name can come back on another sandbox's)."""

    name: str
    mac: str


@dataclass
class HostVethRemoval:
    """What ``delete_host_veths`` did: the veths it deleted, and those it could not (to try again).
    The others were not there: no link of that name, or one that is not that veth (another kind or
    MAC): nothing of theirs to remove."""

    removed: list[HostVeth] = field(default_factory=list)
    failed: list[tuple[HostVeth, OSError]] = field(default_factory=list)


def _delete_host_veths_blocking(veths: list[HostVeth]) -> HostVethRemoval:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)

    outcome = HostVethRemoval()
    try:
        ipr = IPRoute()
    except OSError as exc:
        outcome.failed.extend((veth, exc) for veth in veths)
        return outcome
    with ipr:
        for veth in veths:
            try:
                if _delete_host_veth(ipr, veth):
                    outcome.removed.append(veth)
            except OSError as exc:
                outcome.failed.append((veth, exc))
    return outcome


def _delete_host_veth(ipr: Any, veth: HostVeth) -> bool:
    """Delete ``veth`` if the host has it: a veth of that name with that MAC. True if deleted;
    False if not there (gone meanwhile included: the kernel removes a veth with its peer's
    namespace, on its own time). ``OSError`` when netlink refuses."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        found = ipr.link_lookup(ifname=veth.name)
        if not found:
            return False
        link = ipr.get_links(found[0])[0]
        if (
            link.get(("linkinfo", "kind")) != "veth"
            or str(link.get("address") or "").lower() != veth.mac.lower()
        ):
            return False  # that name is another interface's now
        ipr.link("del", index=found[0])  # by index: what was looked at, not whatever has the name now
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise OSError(exc.code, f"cannot delete host veth {veth.name}: {os.strerror(exc.code)}") from exc
    return True


async def delete_host_veths(veths: list[HostVeth]) -> HostVethRemoval:
    """Delete those of ``veths`` the host namespace has: a veth of that name with that MAC, none
    other (a veth without a recorded MAC cannot be told from another sandbox's: it is not touched)."""
    tied = [veth for veth in veths if veth.name and veth.mac]
    if not tied:
        return HostVethRemoval()
    return await asyncio.to_thread(_delete_host_veths_blocking, tied)


def netns_identity(path: str) -> str:
    """``<dev>:<inode>`` of the namespace at ``path``; "" when there is none, or none can be seen."""
    return look(path).identity


def _host_link_blocking(name: str) -> Link | None:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)

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


class MacRefusedError(OSError):
    """A host link refused a new MAC (a PF pinning its VF's MAC, an address the kernel rejects):
    retrying cannot change that. The link keeps the MAC it has, under the name it was given."""


_MAC_REFUSAL_MAY_PASS: Final = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT})
"""Answers to a MAC change that say "not now" (an iavf VF whose PF did not answer in time), not "no"."""


def _restore_host_link_blocking(current: str, name: str, mac: str) -> None:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=current)
        if not found:
            raise NetnsGoneError(f"host link {current} does not exist")
        index = found[0]
        link = ipr.get_links(index)[0]
        was_up = bool(link["flags"] & 1)
        ipr.link("set", index=index, state="down")  # a netdev is renamed only while down
        try:
            if name != current:
                ipr.link("set", index=index, ifname=name)
            # Apart from the name: the kernel applies a MAC before a name given in the same
            # message, so a refused MAC would keep the name from being restored as well.
            if mac and str(link.get("address") or "").lower() != mac.lower():
                try:
                    ipr.link("set", index=index, address=mac)
                except NetlinkError as exc:
                    if exc.code in _MAC_REFUSAL_MAY_PASS:
                        raise
                    raise MacRefusedError(
                        exc.code, f"host link {name} refused MAC {mac} ({os.strerror(exc.code)})"
                    ) from exc
        finally:
            if was_up:
                ipr.link("set", index=index, state="up")


async def restore_host_link(current: str, *, name: str, mac: str) -> None:
    """Rename host link ``current`` back to ``name``, then give it ``mac`` again (an empty ``mac``:
    left as it is). ``MacRefusedError`` when the link refuses that MAC: it is renamed all the same."""
    await asyncio.to_thread(_restore_host_link_blocking, current, name, mac)


@dataclass(frozen=True, slots=True)
class SandboxLink:
    """A link inside a sandbox's namespace, with what ties it to a host device: the parent device
    the kernel reports (``IFLA_PARENT_DEV_NAME`` and ``IFLA_PARENT_DEV_BUS_NAME``, Linux 5.14 on: a
    VF's PCI address on bus ``pci``; "" for a virtual link, or on an older kernel)."""

    name: str
    mac: str
    parent: str
    parent_bus: str


def _sandbox_link(msg: Any) -> SandboxLink:
    return SandboxLink(
        name=str(msg.get("ifname") or ""),
        mac=str(msg.get("address") or ""),
        parent=str(msg.get("IFLA_PARENT_DEV_NAME") or ""),
        parent_bus=str(msg.get("IFLA_PARENT_DEV_BUS_NAME") or ""),
    )


def _sandbox_links_blocking(path: str, identity: str) -> list[SandboxLink]:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)

    def links() -> list[SandboxLink]:
        with IPRoute() as ipr:
            return [_sandbox_link(msg) for msg in ipr.get_links()]

    return _in_netns(path, links, identity=identity)


async def sandbox_links(path: str, *, identity: str) -> list[SandboxLink]:
    """The links inside the namespace at ``path`` with their parent devices; ``NetnsGoneError`` if
    it is gone or holds another namespace than ``identity``, ``NetnsUnreadableError`` if it cannot
    be looked at (as ``list_links``)."""
    return await asyncio.to_thread(_sandbox_links_blocking, path, identity)


_FREE_NAME_PATTERN: Final = "dev%d"
"""What the kernel names a device it takes back from a dying namespace when its name is taken."""


def _move_home_blocking(path: str, identity: str, wanted: Callable[[SandboxLink], bool], name: str) -> str:
    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)
    from pyroute2.netlink.exceptions import NetlinkError

    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # this worker's: the host's

    def move() -> str:
        with IPRoute() as ipr:
            found = [msg for msg in ipr.get_links() if wanted(_sandbox_link(msg))]
            if len(found) != 1:
                return ""  # none, or more than one: none is provably the device
            index, was = found[0]["index"], str(found[0].get("ifname") or "")
            try:
                ipr.link("set", index=index, net_ns_fd=host, ifname=name)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise OSError(
                        exc.code, f"cannot move {was} out of {path}: {os.strerror(exc.code)}"
                    ) from exc
                # another host link has its name: moved under a free one, as the kernel would
                ipr.link("set", index=index, net_ns_fd=host, ifname=_FREE_NAME_PATTERN)
            return was

    try:
        return _in_netns(path, move, identity=identity)
    finally:
        os.close(host)


async def move_home(path: str, *, identity: str, wanted: Callable[[SandboxLink], bool], name: str) -> str:
    """Move the one link inside the namespace at ``path`` (given its recorded ``identity``) that
    ``wanted`` picks to the host namespace, named ``name`` there (``devN`` when another host link
    has that name); return the name it had, "" when no link, or more than one, was picked (nothing
    is moved). ``NetnsGoneError``/``NetnsUnreadableError`` as ``list_links``; ``OSError`` when
    netlink refuses the move. Found and moved in one visit: by index, never by a name looked up
    again."""
    return await asyncio.to_thread(_move_home_blocking, path, identity, wanted, name)


def _set_default_route_blocking(path: str, gateway: str, ifname: str) -> None:
    import ipaddress
    import socket

    IPRoute = lean_pyroute2.iproute()  # noqa: N806 (the class)

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
