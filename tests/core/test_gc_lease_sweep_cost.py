"""What GC's lease sweep costs a pass, and where. The leases of other CNI users in a host-local
directory we use (a node migrated from upstream Multus, a data dir shared with another runtime) are
looked up in the history once, in one read, not once per lease on every pass (which flooded the
store's reader threads, shared with ADD and DEL, with thousands of queries every interval); a
container once unproven is still given its lease back once a removed attachment proves it ours.
The lease directories are listed and their files read in a worker thread, never on the event loop
that serves ADDs (a busy node's first pass reads thousands of them)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from app.gc import leases
from app.gc.collector import GarbageCollector
from app.store.database import Database
from tests.core.support import Command, Node, Pods, new_container_id

FOREIGN_LEASES = 40


class CountingReads:
    """The store as GC uses it, counting its reads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reads = 0

    async def read(self, work: Any) -> Any:
        self.reads += 1
        return await self.db.read(work)

    async def write(self, work: Any, **options: Any) -> Any:
        return await self.db.write(work, **options)

    def size_bytes(self) -> int:
        return self.db.size_bytes()


def take(directory: Path, address: str, container_id: str) -> Path:
    lease = directory / address
    lease.write_text(f"{container_id}\r\neth0")
    return lease


def leased_network(node: Node) -> Path:
    """A network whose delegate records host-local IPAM under ``ipam_dir`` (leases written by hand)."""
    node.write_network(
        "leased",
        {
            "cniVersion": "1.0.0",
            "name": "leased",
            "type": "recorder",
            "recorder": {"log": str(node.recorder_log)},
            "ipam": {"type": "host-local", "dataDir": str(node.ipam_dir)},
        },
    )
    lease_dir = node.ipam_dir / "leased"
    lease_dir.mkdir(parents=True)
    return lease_dir


async def test_leases_of_other_cni_users_cost_no_query_each_and_a_later_proof_still_counts(
    node: Node,
) -> None:
    lease_dir = leased_network(node)
    conf = node.conf("leased")
    engine = node.engine()
    await engine.add(node.request(Command.ADD, new_container_id(), node.new_netns(), conf))
    foreign = [take(lease_dir, f"10.9.1.{n}", new_container_id()) for n in range(2, 2 + FOREIGN_LEASES)]
    ours_later = new_container_id()
    late = take(lease_dir, "10.9.2.2", ours_later)
    store = CountingReads(node.db)
    collector = GarbageCollector(
        engine=engine,
        db=store,  # type: ignore[arg-type]  # the reads GC makes, counted
        pods=Pods({("default", "pod-a"): "uid-a"}),
    )

    for _ in range(2):
        store.reads = 0
        report = await collector.run_once()
        assert report.leases_removed == []
        assert store.reads < FOREIGN_LEASES // 4, "not a query per lease"

    netns = node.new_netns()
    await engine.add(node.request(Command.ADD, ours_later, netns, conf, pod="pod-b"))
    await engine.delete(node.request(Command.DEL, ours_later, netns, conf, pod="pod-b"))
    report = await collector.run_once()

    assert report.leases_removed == [str(late)]
    assert all(lease.exists() for lease in foreign)


async def test_lease_files_are_read_off_the_event_loop(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    lease_dir = leased_network(node)
    engine = node.engine()
    await engine.add(node.request(Command.ADD, new_container_id(), node.new_netns(), node.conf("leased")))
    take(lease_dir, "10.9.1.2", new_container_id())
    read_by: list[int] = []
    read_lease = leases._read_lease

    def spied(path: str) -> leases.Lease | None:
        read_by.append(threading.get_ident())
        return read_lease(path)

    monkeypatch.setattr(leases, "_read_lease", spied)
    collector = GarbageCollector(engine=engine, db=node.db, pods=Pods({("default", "pod-a"): "uid-a"}))

    await collector.run_once()

    assert read_by, "the lease was read"
    assert threading.get_ident() not in read_by


async def test_the_directory_of_a_network_no_longer_used_is_not_listed_on_every_later_pass(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NADs created and deleted under new names leave a host-local directory each: GC lists one
    while an attachment names it or it holds a lease of a container not live, not for its life."""
    lease_dir = leased_network(node)
    foreign = take(lease_dir, "10.9.1.2", new_container_id())  # another CNI user's
    conf = node.conf("leased")
    engine = node.engine()
    container, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    ours = take(lease_dir, "10.9.1.3", container)  # the recorder takes no lease: as host-local would
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    listed: list[Path] = []
    list_leases = leases.LeaseListings.leases

    def spied(listings: leases.LeaseListings, directory: Path) -> list[leases.Lease]:
        listed.append(directory)
        return list_leases(listings, directory)

    monkeypatch.setattr(leases.LeaseListings, "leases", spied)
    collector = GarbageCollector(engine=engine, db=node.db, pods=Pods({}))

    for _ in range(2):
        listed.clear()
        await collector.run_once()
        assert listed == [lease_dir], "named by the removed attachment, then holding the foreign lease"
    assert not ours.exists(), "removed by the first pass"
    assert foreign.exists()

    foreign.unlink()
    for _ in range(2):
        listed.clear()
        await collector.run_once()
    assert listed == [], "nothing names it, no lease is in it"

    await engine.add(node.request(Command.ADD, new_container_id(), node.new_netns(), conf, pod="pod-b"))
    listed.clear()
    await collector.run_once()
    assert listed == [lease_dir], "named again"
