"""A host-local lease file naming no container is removed by GC, under host-local's lock.

host-local creates a lease file (``O_CREAT|O_EXCL``) and then writes the container ID and
interface into it, both under its directory's lock. A kill -9 of the daemon's whole tree between
the two leaves an empty file: no DEL releases it (host-local releases the files holding the
container's ID), and the address is lost to the pool for ever. ``bench.chaos`` found one
(``host-local lease left: .../ipam/fail/10.183.1.11``, an empty file). Seen empty while the lock
is held, no allocation is writing it: GC removes it; a lease that names a container is judged as
before (invariant 10).
"""

from __future__ import annotations

from app.gc.collector import GarbageCollector
from tests.core.support import Command, Node, new_container_id


async def test_an_empty_lease_file_is_removed_and_a_live_containers_lease_kept(node: Node) -> None:
    conf = node.conf(node.bridge_network("leased", subnet="10.99.9.0/24"))
    engine = node.engine()
    live, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, live, netns, conf))
    lease_dir = node.ipam_dir / "leased"
    [held] = [path for path in lease_dir.iterdir() if path.name.startswith("10.")]
    unwritten = lease_dir / "10.99.9.200"
    unwritten.touch()  # what a host-local killed between creating and writing it leaves

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once()

    assert report.leases_removed == [str(unwritten)]
    assert not unwritten.exists()
    assert held.read_text().splitlines()[0] == live
    await engine.delete(node.request(Command.DEL, live, netns, conf))


async def test_a_dry_run_lists_an_empty_lease_file_and_keeps_it(node: Node) -> None:
    conf = node.conf(node.bridge_network("leased", subnet="10.99.10.0/24"))
    engine = node.engine()
    live, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, live, netns, conf))
    unwritten = node.ipam_dir / "leased" / "10.99.10.200"
    unwritten.touch()

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once(dry_run=True)

    assert report.leases_removed == [str(unwritten)]
    assert unwritten.exists()
    await engine.delete(node.request(Command.DEL, live, netns, conf))
