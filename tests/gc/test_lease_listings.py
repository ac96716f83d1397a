"""GC's lease listings: a host-local directory listed again only when it changed, and then only its
new or changed lease files read again; what a listing returns is always what the files say."""

from __future__ import annotations

import os
from pathlib import Path

from app.gc.leases import Lease, LeaseListings, remove


def take(directory: Path, address: str, container_id: str, ifname: str = "eth0") -> Path:
    """A lease as host-local writes it: a new file named after the address."""
    path = directory / address
    path.write_text(f"{container_id}\r\n{ifname}")
    return path


def touch_directory(directory: Path) -> None:
    """Make the directory's mtime move (host-local's create or remove of a lease does)."""
    stamp = directory.stat().st_mtime_ns
    os.utime(directory, ns=(stamp + 1_000_000, stamp + 1_000_000))


def listed(listings: LeaseListings, directory: Path) -> dict[str, tuple[str, str]]:
    return {lease.path.name: (lease.container_id, lease.ifname) for lease in listings.leases(directory)}


def test_bookkeeping_files_are_not_leases_and_a_missing_directory_has_none(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    listings = LeaseListings()
    assert listings.leases(directory) == []
    directory.mkdir()
    take(directory, "10.0.0.2", "c1")
    take(directory, "fd00::2", "c2", "net1")
    (directory / "lock").write_text("")
    (directory / "last_reserved_ip.0").write_text("10.0.0.2")

    assert sorted(listings.leases(directory), key=lambda lease: lease.path.name) == [
        Lease(directory / "10.0.0.2", "c1", "eth0"),
        Lease(directory / "fd00::2", "c2", "net1"),
    ]


def test_taken_released_and_retaken_leases_are_seen_once_the_directory_changed(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    take(directory, "10.0.0.2", "c1")
    released = take(directory, "10.0.0.3", "c2")
    retaken = take(directory, "10.0.0.4", "c3")
    listings = LeaseListings()
    assert listed(listings, directory) == {
        "10.0.0.2": ("c1", "eth0"),
        "10.0.0.3": ("c2", "eth0"),
        "10.0.0.4": ("c3", "eth0"),
    }

    released.unlink()
    retaken.unlink()
    take(directory, "10.0.0.4", "c4", "net2")  # the same address, another container, another file
    take(directory, "10.0.0.5", "c5")
    touch_directory(directory)  # as the creates and removes do (their mtime may share a clock tick)

    assert listed(listings, directory) == {
        "10.0.0.2": ("c1", "eth0"),
        "10.0.0.4": ("c4", "net2"),
        "10.0.0.5": ("c5", "eth0"),
    }


def test_an_unchanged_lease_file_is_not_read_again_and_a_changed_one_is(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    kept = take(directory, "10.0.0.2", "c1")
    listings = LeaseListings()
    assert listed(listings, directory) == {"10.0.0.2": ("c1", "eth0")}

    # rewritten in place with its old mtime: same inode, same mtime, so the listing keeps what it read
    stamp = kept.stat().st_mtime_ns
    kept.write_text("rewritten\r\neth9")
    os.utime(kept, ns=(stamp, stamp))
    take(directory, "10.0.0.3", "c2")
    touch_directory(directory)
    assert listed(listings, directory) == {"10.0.0.2": ("c1", "eth0"), "10.0.0.3": ("c2", "eth0")}

    os.utime(kept, ns=(stamp + 1_000_000, stamp + 1_000_000))  # now it looks changed: read again
    touch_directory(directory)
    assert listed(listings, directory) == {"10.0.0.2": ("rewritten", "eth9"), "10.0.0.3": ("c2", "eth0")}


def test_an_unchanged_directory_is_not_listed_again(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    take(directory, "10.0.0.2", "c1")
    listings = LeaseListings()
    first = listings.leases(directory)
    stamp = directory.stat().st_mtime_ns

    take(directory, "10.0.0.3", "c2")
    os.utime(directory, ns=(stamp, stamp))  # a change the directory's mtime does not show

    assert listings.leases(directory) is first
    touch_directory(directory)
    assert listed(listings, directory) == {"10.0.0.2": ("c1", "eth0"), "10.0.0.3": ("c2", "eth0")}


def test_removal_rereads_each_lease_and_spares_one_released_or_taken_again(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    stale = take(directory, "10.1.0.2", "gone")
    retaken = take(directory, "10.1.0.3", "gone")
    released = take(directory, "10.1.0.4", "gone")
    seen = LeaseListings().leases(directory)
    take(directory, "10.1.0.3", "someone-else")  # re-allocated after the listing
    released.unlink()

    removed = remove(seen)

    assert sorted(lease.path for lease in removed) == [stale]
    assert not stale.exists()
    assert retaken.read_text().startswith("someone-else")
