"""Stale host-local IPAM leases: the last resort after a DEL could not release them.

A lease is a file named after the address in ``<dataDir>/<network>/`` (under the delegate's root,
``chrootDir``), holding the container ID and interface that took it. A lease is removed only when
it is provably ours and orphaned (invariant 10), or names no container at all (``remove_unwritten``:
a host-local killed between creating the file and writing it): its container has no sandbox in the checkpoint,
and an attachment of it with host-local left the checkpoint (``app.store.lease_proofs``: a
``removed_attachments`` row, which history retention never prunes; before revision 0008, a history
line of an ADD delegate of ours). Leases of containers we never attached (another CNI user of the
same data dir, a pod the runtime attached without us) are never touched, whatever else the history
says of them. Removal holds host-local's own lock file, so it cannot race an allocation.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app import rootpath
from app.attach import gojson, logcontext
from app.cni import conf as cniconf
from app.cni.types import CniError, NetworkConfigList

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


@dataclass(frozen=True, slots=True)
class Lease:
    path: Path
    container_id: str
    ifname: str


def host_local_dirs(config: bytes, root: str = "") -> set[Path]:
    """The ``<dataDir>/<network>`` directories a delegate configuration's host-local IPAM uses, as
    the daemon sees them: under ``root`` (the ``chrootDir`` the delegate ran in), if any, its
    symlinks resolved as the plugin saw them (an absolute link in the host's ``/var/lib/cni`` points
    into the host, not into the daemon's own file system); one that does not exist (yet) is the
    plain join. Spelt as the plugin read it (``gojson.as_go_reads``); one holding a NUL is none."""
    net = recorded_network(config)
    if net is None:
        return set()
    dirs = set()
    for plugin in net.plugins:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            data_dir = str(ipam.get("dataDir") or DEFAULT_DATA_DIR)
            wanted = gojson.as_go_reads(f"{data_dir.rstrip('/')}/{net.name}")
            try:
                seen = rootpath.resolve(root, wanted) if root else wanted
            except ValueError:  # a NUL: no plugin could have used it, nor can it be looked at
                continue
            dirs.add(Path(seen) if seen is not None else Path(root) / wanted.lstrip("/"))
    return dirs


def recorded_network(config: bytes) -> NetworkConfigList | None:
    """A recorded delegate configuration, parsed; None if it no longer parses (GC then skips it)."""
    try:
        return cniconf.load_network_list(config, source="checkpoint")
    except CniError:
        return None


def _read_lease(path: str) -> Lease | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return None  # released meanwhile
    except OSError as exc:
        log.warning("cannot read lease %s: %s", path, exc.strerror)
        return None
    container_id = lines[0].strip() if lines else ""
    ifname = lines[1].strip() if len(lines) > 1 else ""
    return Lease(path=Path(path), container_id=container_id, ifname=ifname)


class LeaseListings:
    """The leases of host-local directories, for GC passes that look at them again and again.

    A directory is listed again only when its mtime changed (a lease taken or released), and then
    a lease file is read again only when it is new or changed (another inode or mtime: host-local
    writes a lease by creating its file, and releases it by removing it); the others cost a
    ``stat``. Removal re-reads the file under host-local's lock in any case (``remove``)."""

    def __init__(self) -> None:
        self._directories: dict[Path, _Listing] = {}

    def leases(self, directory: Path) -> list[Lease]:
        """The leases in ``directory``; none when it cannot be read (a warning says why)."""
        try:
            stamp = directory.stat().st_mtime_ns
        except OSError as exc:
            self._directories.pop(directory, None)
            _unreadable(directory, exc)
            return []
        known = self._directories.get(directory)
        if known is not None and known.stamp == stamp:
            return known.leases
        listing = _Listing.read(directory, stamp, known.files if known is not None else {})
        if listing is None:
            self._directories.pop(directory, None)
            return []
        self._directories[directory] = listing
        return listing.leases

    def forget_all_but(self, directories: set[Path]) -> None:
        """Drop the listings of directories not in ``directories`` (no longer looked at)."""
        for directory in self._directories.keys() - directories:
            del self._directories[directory]


def current(directory: Path) -> list[Lease] | None:
    """The leases of ``directory`` as its files say now (no listing reused); None when it cannot
    be read (then nothing is known of what it holds)."""
    listing = _Listing.read(directory, 0, {})
    return None if listing is None else listing.leases


def _unreadable(directory: Path, exc: OSError) -> bool:
    """Whether ``exc`` (listing ``directory``) leaves its leases unknown; False when it proves there
    are none (no such directory: a configured ``dataDir`` under a file holds no lease either)."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return False
    log.warning("cannot read lease directory %s: %s", directory, exc.strerror or exc)
    return True


@dataclass(frozen=True, slots=True)
class _Listing:
    stamp: int
    files: dict[str, tuple[int, int, Lease]]
    """File name to (inode, mtime in ns, its lease)."""
    leases: list[Lease]

    @classmethod
    def read(cls, directory: Path, stamp: int, known: dict[str, tuple[int, int, Lease]]) -> _Listing | None:
        """The listing of ``directory``; None when it cannot be read."""
        files: dict[str, tuple[int, int, Lease]] = {}
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            if _unreadable(directory, exc):
                return None
            entries = []
        for entry in entries:
            before = known.get(entry.name)
            if before is None and not (entry.is_file() and _is_address(entry.name)):
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # released meanwhile (or it cannot be looked at: not listed)
            if before is not None and (before[0], before[1]) == (status.st_ino, status.st_mtime_ns):
                files[entry.name] = before
                continue
            if not stat.S_ISREG(status.st_mode):
                continue
            lease = _read_lease(entry.path)
            if lease is not None:
                files[entry.name] = (status.st_ino, status.st_mtime_ns, lease)
        return cls(stamp=stamp, files=files, leases=[lease for _, _, lease in files.values()])


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@contextmanager
def host_local_lock(directory: Path) -> Iterator[None]:
    """Hold host-local's lock of one network directory."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_unwritten(unwritten: Iterable[Lease], *, dry_run: bool = False) -> list[Lease]:
    """Delete lease files that name no container (``Lease.container_id`` empty), each found so again
    under host-local's lock; return those removed. host-local creates a lease file and then writes
    the container ID into it, both under that lock, so a file still empty while the lock is held
    is a dead allocation's: a host-local killed between the two (a kill -9 of the daemon's whole
    tree). No DEL can release it (host-local releases the files holding the container's ID), and
    no container was given its address (the plugin died before printing a result), so it is
    nobody's: left, it would keep the address from the pool for ever. A dry run deletes nothing."""
    removed = []
    for lease in unwritten:
        try:
            if dry_run:
                current = _read_lease(str(lease.path))
            else:
                with host_local_lock(lease.path.parent):
                    current = _read_lease(str(lease.path))
                    if current is not None and not current.container_id:
                        lease.path.unlink()
        except OSError as exc:
            log.warning("cannot remove unwritten lease %s: %s", lease.path, exc.strerror or exc)
            continue
        if current is None or current.container_id:
            continue  # released, or written after all (it was not looked at under the lock)
        removed.append(lease)
        if not dry_run:
            log.warning("removed lease %s, which names no container (its host-local was killed)", lease.path)
    return removed


def remove(leases: Iterable[Lease], *, dry_run: bool = False) -> list[Lease]:
    """Delete leases (re-checking each under host-local's lock); return those removed. A dry run
    re-checks each (without the lock, which it might have to create) and deletes nothing."""
    removed = []
    for lease in leases:
        if dry_run:
            current = _read_lease(str(lease.path))
            if current is not None and current.container_id == lease.container_id:
                removed.append(lease)
            continue
        try:
            with host_local_lock(lease.path.parent):
                current = _read_lease(str(lease.path))
                if current is None or current.container_id != lease.container_id:
                    continue  # released or re-allocated meanwhile
                lease.path.unlink()
        except OSError as exc:
            log.warning("cannot remove stale lease %s: %s", lease.path, exc.strerror or exc)
            continue
        removed.append(lease)
        log.info(
            "removed stale lease %s of container %s",
            lease.path,
            lease.container_id,
            extra=logcontext.fields(lease.container_id, command="GC", ifname=lease.ifname),
        )
    return removed
