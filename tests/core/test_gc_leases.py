"""GC's host-local lease sweep: a lease left behind by a container we attached is given back whatever
history retention pruned and whichever root the delegate ran in; a lease a live container holds, ours
or not, never is (invariant 10)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import NetworkResolver
from app.cni.types import CniError
from app.gc import leases
from app.gc.collector import GarbageCollector, GcReport
from app.store import lease_proofs
from app.store.retention import Retention, prune
from tests.core.support import Command, Netns, Node, new_container_id, pending
from tests.hostroot import HostRoot, host_root


def leases_of(directory: Path) -> dict[str, str]:
    """{address: container ID} of the leases host-local holds in ``directory``."""
    if not directory.is_dir():
        return {}
    return {
        path.name: path.read_text().splitlines()[0]
        for path in directory.iterdir()
        if path.name[0].isdigit() and path.is_file()
    }


def lease_of(directory: Path, container_id: str) -> Path:
    (address,) = [address for address, owner in leases_of(directory).items() if owner == container_id]
    return directory / address


async def delete_leaving_its_lease(
    node: Node, engine: AttachEngine, *, container_id: str, netns: Netns, conf: MultusNetConf, lease_dir: Path
) -> Path:
    """DEL a sandbox whose delegate DEL left its lease behind (as a plugin bug, or a power loss
    undoing host-local's unlink, may): the DEL succeeds, the lease file is still there."""
    lease = lease_of(lease_dir, container_id)
    content = lease.read_bytes()
    await engine.delete(node.request(Command.DEL, container_id, netns, conf, pod="pod-x"))
    assert not lease.exists()
    lease.write_bytes(content)
    assert pending(node.checkpoint(container_id)) == []
    return lease


async def test_a_leftover_lease_is_given_back_after_retention_pruned_its_containers_history(
    node: Node,
) -> None:
    conf = node.conf(node.bridge_network("leased", subnet="10.99.8.0/24"))
    engine = node.engine()
    live, gone = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, live, node.new_netns(), conf))
    gone_netns = node.new_netns()
    await engine.add(node.request(Command.ADD, gone, gone_netns, conf, pod="pod-x"))
    lease_dir = node.ipam_dir / "leased"
    leftover = await delete_leaving_its_lease(
        node, engine, container_id=gone, netns=gone_netns, conf=conf, lease_dir=lease_dir
    )
    month_later = datetime.now(UTC) + timedelta(days=31)
    await prune(node.db, Retention.from_limits(max_age_hours=720, max_rows=1_000_000), now=month_later)
    assert node.history(gone) == []

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once()

    assert report.leases_removed == [str(leftover)]
    assert set(leases_of(lease_dir).values()) == {live}
    assert node.db.read_sync(lease_proofs.removed) == []  # the proof went with the last lease


async def test_a_leftover_lease_is_given_back_when_no_recorded_sandbox_uses_its_network_any_more(
    node: Node,
) -> None:
    """The daemon restarted after the DEL: nothing it records names the lease's directory now."""
    conf = node.conf(node.bridge_network("leased", subnet="10.99.9.0/24"))
    engine = node.engine()
    gone, netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, gone, netns, conf, pod="pod-x"))
    lease_dir = node.ipam_dir / "leased"
    leftover = await delete_leaving_its_lease(
        node, engine, container_id=gone, netns=netns, conf=conf, lease_dir=lease_dir
    )
    node.restart()

    report = await GarbageCollector(engine=node.engine(), db=node.db, pods=None).run_once()

    assert report.leases_removed == [str(leftover)]
    assert leases_of(lease_dir) == {}


def take_lease_as_the_runtime_did(node: Node, *, network: str, container_id: str, netns: str) -> str:
    """Run host-local itself for a pod the runtime attached without us (before multus-py was
    installed, say): a real lease in the directory our cluster network's delegate uses."""
    conf = json.loads((node.conf_dir / f"{network}.conflist").read_text())
    stdin = {"cniVersion": "1.0.0", "name": network, "ipam": conf["plugins"][0]["ipam"]}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(node.bin_dir),
    }
    out = subprocess.run(
        [str(node.bin_dir / "host-local")],
        input=json.dumps(stdin).encode(),
        env=env,
        capture_output=True,
        check=True,
    )
    return str(json.loads(out.stdout)["ips"][0]["address"])


async def test_a_lease_of_a_live_pod_we_never_attached_is_kept_though_our_history_names_its_container(
    node: Node,
) -> None:
    """A CHECK (or a hot-plug, or a refused request) of a container we never attached writes a
    history line naming it; that proves nothing about its lease."""
    conf = node.conf(node.bridge_network("cluster", subnet="10.99.10.0/24"))
    engine = node.engine()
    ours, theirs = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, ours, node.new_netns(), conf))
    their_netns = node.new_netns()
    await asyncio.to_thread(
        take_lease_as_the_runtime_did, node, network="cluster", container_id=theirs, netns=their_netns.path
    )
    with pytest.raises(CniError):
        await engine.check(node.request(Command.CHECK, theirs, their_netns, conf, pod="pod-t"))
    assert node.history(theirs) != []
    lease_dir = node.ipam_dir / "cluster"

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once()

    assert report.leases_removed == []
    assert sorted(leases_of(lease_dir).values()) == sorted([ours, theirs])


@pytest.fixture
def hostroot(tmp_path: Path) -> Iterator[HostRoot]:
    with host_root(tmp_path / "root") as root:
        yield root


def chrooted_bridge(
    node: Node, hostroot: HostRoot, name: str, *, subnet: str, data_dir: str
) -> tuple[MultusNetConf, AttachEngine]:
    """A bridge network whose host-local leases go to ``data_dir`` (a path inside the root), and an
    engine running every delegate in ``hostroot``."""
    node.bridge_network(name, subnet=subnet)
    path = node.conf_dir / f"{name}.conflist"
    network = json.loads(path.read_text())
    network["plugins"][0]["ipam"]["dataDir"] = data_dir
    path.write_text(json.dumps(network))
    engine = AttachEngine(
        db=node.db,
        resolver=NetworkResolver(),
        boot_id=node.boot_id,
        settings=EngineSettings(delegate_timeout=20.0, node_name="node-a", chroot_dir=hostroot.chroot_dir),
    )
    return node.conf(name), engine


async def test_a_leftover_lease_of_a_delegate_run_in_chroot_dir_is_given_back(
    node: Node, hostroot: HostRoot
) -> None:
    """With ``chrootDir`` host-local keeps its leases inside that root, not in the daemon's."""
    data_dir = hostroot.bin_dir.rsplit("/", 1)[0] + "/ipam"  # exists only inside the root
    conf, engine = chrooted_bridge(node, hostroot, "chrooted", subnet="10.99.11.0/24", data_dir=data_dir)
    live, gone = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, live, node.new_netns(), conf))
    gone_netns = node.new_netns()
    await engine.add(node.request(Command.ADD, gone, gone_netns, conf, pod="pod-x"))
    lease_dir = hostroot.inside(data_dir) / "chrooted"
    leftover = await delete_leaving_its_lease(
        node, engine, container_id=gone, netns=gone_netns, conf=conf, lease_dir=lease_dir
    )

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once()

    assert report.leases_removed == [str(leftover)]
    assert set(leases_of(lease_dir).values()) == {live}


async def test_a_leftover_lease_under_an_absolute_symlink_inside_chroot_dir_is_given_back(
    node: Node, hostroot: HostRoot
) -> None:
    """A host whose dataDir (or /var/lib/cni) is an absolute symlink: host-local, chrooted, follows
    it inside the root; GC must too, else it lists a directory of the daemon's own file system,
    finds no lease there, and forgets the proof, so the leftover lease is never given back."""
    private = hostroot.bin_dir.rsplit("/", 1)[0]  # exists only inside the root
    hostroot.inside(f"{private}/ipam-real").mkdir()
    hostroot.inside(f"{private}/ipam").symlink_to(f"{private}/ipam-real")  # absolute, as on a host
    conf, engine = chrooted_bridge(
        node, hostroot, "linked", subnet="10.99.12.0/24", data_dir=f"{private}/ipam"
    )
    gone, gone_netns = new_container_id(), node.new_netns()
    await engine.add(node.request(Command.ADD, gone, gone_netns, conf, pod="pod-x"))
    lease_dir = hostroot.inside(f"{private}/ipam-real") / "linked"
    leftover = await delete_leaving_its_lease(
        node, engine, container_id=gone, netns=gone_netns, conf=conf, lease_dir=lease_dir
    )

    report = await GarbageCollector(engine=engine, db=node.db, pods=None).run_once()

    assert report.leases_removed == [str(leftover)]
    assert leases_of(lease_dir) == {}


async def _gc_beside_an_odd_data_dir(node: Node, odd_data_dir: str) -> tuple[str, Path, GcReport]:
    """A live sandbox of network ``odd`` (host-local ``dataDir`` ``odd_data_dir``) and a lease
    another container of ours left in network ``leased``; one GC pass. (live ID, the leftover, the
    report)."""
    for name, data_dir in (("odd", odd_data_dir), ("leased", str(node.ipam_dir))):
        node.write_network(
            name,
            {
                "cniVersion": "1.0.0",
                "name": name,
                "type": "recorder",
                "recorder": {"log": str(node.recorder_log)},
                "ipam": {"type": "host-local", "dataDir": data_dir},
            },
        )
    engine = node.engine()
    live, gone = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, live, node.new_netns(), node.conf("odd")))
    netns = node.new_netns()
    await engine.add(node.request(Command.ADD, gone, netns, node.conf("leased"), pod="pod-b"))
    await engine.delete(node.request(Command.DEL, gone, netns, node.conf("leased"), pod="pod-b"))
    leftover = node.ipam_dir / "leased" / "10.9.0.3"
    leftover.parent.mkdir(parents=True)
    leftover.write_text(f"{gone}\r\neth0")
    report = await GarbageCollector(engine=engine, db=node.db).run_once()
    return live, leftover, report


async def test_a_host_local_data_dir_that_cannot_be_listed_does_not_stop_the_pass(
    node: Node, tmp_path: Path
) -> None:
    """A NAD whose host-local ``dataDir`` is a file (its directory can never exist) used to make
    every pass raise NotADirectoryError (the operator's ``multusctl gc`` got code 999): the other
    leftovers must still be given back."""
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")

    live, leftover, report = await _gc_beside_an_odd_data_dir(node, str(not_a_directory))

    assert report.leases_removed == [str(leftover)]
    assert not leftover.exists()
    assert pending(node.checkpoint(live)) == ["eth0"]


async def test_a_host_local_data_dir_with_a_lone_surrogate_does_not_stop_the_pass(
    node: Node, tmp_path: Path
) -> None:
    """A configuration may spell its ``dataDir`` with a ``\\udcff`` escape, which Go (so host-local)
    reads as U+FFFD: the ADD works. Its path, taken as Python decodes it, encodes to no bytes, and
    every pass raised UnicodeEncodeError: the other leftovers must still be given back, and the
    lease directory looked for is the one the plugin used."""
    live, leftover, report = await _gc_beside_an_odd_data_dir(node, f"{tmp_path}/odd\udcff")

    assert report.leases_removed == [str(leftover)]
    assert pending(node.checkpoint(live)) == ["eth0"]
    assert leases.host_local_dirs(node.checkpoint(live).attachments[0].config) == {  # type: ignore[union-attr]
        Path(f"{tmp_path}/odd\ufffd/odd")
    }
