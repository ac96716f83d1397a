"""What garbage collection collects (provably orphaned sandboxes, our stale leases) and what it must not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from app.attach.requests import NodeRequest
from app.cli.main import render_gc
from app.cni.types import Attachment, CniError, ContainerId, IfName
from app.gc.collector import GarbageCollector
from tests.core.privileges import without_dac_override
from tests.core.support import (
    Command,
    CrashAt,
    Crashed,
    Netns,
    Node,
    Pods,
    Point,
    delegate_lines,
    new_container_id,
    pending,
)


async def attached(node: Node, *, pod: str = "pod-a", uid: str = "uid-a", boot_id: str = "") -> str:
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()
    engine = node.engine(boot_id=boot_id)
    await engine.add(node.request(Command.ADD, container, node.new_netns(), conf, pod=pod, uid=uid))
    return container


async def test_a_live_sandbox_whose_pod_is_on_the_node_is_kept(node: Node) -> None:
    container = await attached(node)
    collector = GarbageCollector(
        engine=node.engine(), db=node.db, pods=Pods({("default", "pod-a"): "uid-a"}), pod_gone_grace=0
    )

    report = await collector.run_once()

    assert report.examined == 1
    assert report.orphans == []
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_nothing_is_collected_on_pod_evidence_while_the_mirror_is_not_synced(node: Node) -> None:
    container = await attached(node)
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=Pods(None), pod_gone_grace=0)

    report = await collector.run_once()

    assert report.orphans == []
    assert pending(node.checkpoint(container)) == ["eth0"]


@pytest.mark.parametrize(
    ("pods", "reason"),
    [({}, "pod-gone"), ({("default", "pod-a"): "uid-new"}, "pod-replaced")],
    ids=["pod-gone", "pod-replaced"],
)
async def test_a_sandbox_whose_pod_is_gone_or_replaced_is_collected(
    node: Node, pods: dict[tuple[str, str], str], reason: str
) -> None:
    container = await attached(node)
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=Pods(pods), pod_gone_grace=0)

    report = await collector.run_once()

    assert [(o.container_id, o.reason, o.pod) for o in report.orphans] == [
        (container, reason, "default/pod-a")
    ]
    assert [o.container_id for o in report.collected] == [container]
    assert node.checkpoint(container) is None
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "gc", "ok")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("absent", [{}, {("default", "pod-a"): "uid-new"}], ids=["pod-gone", "pod-replaced"])
async def test_a_pods_absence_is_taken_only_once_it_has_held_for_the_grace(
    node: Node, absent: dict[tuple[str, str], str]
) -> None:
    """A static pod's mirror pod deleted through the API leaves the pod running until the kubelet
    makes a new one: a pass in that gap collected the live pod's sandbox ("pod-gone"). The API's
    word now has to hold, pass after pass, for ``gcPodGoneGraceSeconds``; seen otherwise once, it
    starts again."""
    container = await attached(node)
    pods = Pods(absent)
    clock = Clock()
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=pods, clock=clock, pod_gone_grace=30)

    first = await collector.run_once()
    clock.now += 29
    second = await collector.run_once()
    pods.pods = {("default", "pod-a"): "uid-a"}  # the mirror pod is back
    clock.now += 5
    await collector.run_once()
    pods.pods = absent
    third = await collector.run_once()

    assert (first.orphans, second.orphans, third.orphans) == ([], [], [])
    assert [(u.container_id, u.confirmed_in_seconds) for u in second.unconfirmed] == [(container, 1)]
    assert [u.confirmed_in_seconds for u in third.unconfirmed] == [30], "seen otherwise once: again"
    assert second.as_json()["unconfirmed"] == [
        {
            "containerID": container,
            "reason": first.unconfirmed[0].reason,
            "pod": "default/pod-a",
            "confirmedInSeconds": 1,
        }
    ]
    assert pending(node.checkpoint(container)) == ["eth0"]
    table = render_gc(second.as_json())
    assert table[-2].split() == ["UNCONFIRMED", "POD", "REASON", "COLLECTED", "IN"]
    assert table[-1].split() == [container[:12], "default/pod-a", first.unconfirmed[0].reason, "1", "s"]

    clock.now += 30
    collected = await collector.run_once()

    assert [o.container_id for o in collected.collected] == [container]
    assert node.checkpoint(container) is None


STATIC_POD_UID = "6d1b0f0c3f3c8a4e9b2a7c5d1e0f9a8b"
"""What the kubelet names a static pod by (the MD5 of its manifest, in hex), never a UID the API
server issues: its mirror pod, when the API accepted one, has a UUID of its own."""


@pytest.mark.parametrize(
    "mirrored",
    [{}, {("default", "pod-a"): "5f0c7a4e-2b1d-4c3e-9a8f-7e6d5c4b3a21"}],
    ids=["no-mirror-pod", "another-pod-of-its-name"],
)
async def test_a_static_pods_sandbox_is_not_collected_on_the_apis_word_however_long_it_holds(
    node: Node, mirrored: dict[tuple[str, str], str]
) -> None:
    """A static pod runs from its manifest whether or not the API holds a mirror pod of it (one the
    API refused, in a namespace that does not exist or referring to a Secret, never comes), and the
    runtime names it by the kubelet's UID: the mirror's word that its pod is gone or replaced proves
    nothing about it. GC tore such a live pod's networks down once the grace had passed."""
    container = await attached(node, uid=STATIC_POD_UID)
    clock = Clock()
    collector = GarbageCollector(
        engine=node.engine(), db=node.db, pods=Pods(mirrored), clock=clock, pod_gone_grace=30
    )

    first = await collector.run_once()
    clock.now += 3600
    later = await collector.run_once()

    assert (first.orphans, later.orphans, later.unconfirmed) == ([], [], [])
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]

    node.netnses[-1].delete()  # what does prove it gone: the runtime removed the sandbox
    gone = await collector.run_once()

    assert [(o.container_id, o.reason) for o in gone.collected] == [(container, "netns-gone")]
    assert node.checkpoint(container) is None


@pytest.mark.parametrize(
    "mirrored", [{}, {("default", "pod-a"): "uid-new"}], ids=["pod-gone", "pod-replaced"]
)
async def test_the_mirrors_word_is_taken_only_once_the_api_asked_for_the_pod_confirms_it(
    node: Node, mirrored: dict[tuple[str, str], str]
) -> None:
    """A mirror of another node's pods (a node name that is not this node's) has said for the
    grace that every live pod here is gone: GC tore them all down. The API is asked for the pod
    itself first, after the grace only; while it still has the pod the sandbox is kept, reported as
    disputed, and asked about again on the next pass."""
    container = await attached(node)
    pods = Pods(mirrored, api={("default", "pod-a"): "uid-a"})
    clock = Clock()
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=pods, clock=clock, pod_gone_grace=30)

    during_the_grace = await collector.run_once()
    clock.now += 30
    after_it = await collector.run_once()

    assert pods.asked == [("default", "pod-a")], "not asked while the grace runs"
    assert (during_the_grace.orphans, after_it.orphans, after_it.collected) == ([], [], [])
    reason = during_the_grace.unconfirmed[0].reason
    assert after_it.as_json()["disputed"] == [
        {"containerID": container, "reason": reason, "pod": "default/pod-a"}
    ]
    assert render_gc(after_it.as_json())[-1] == (
        f"kept {container[:12]} (default/pod-a): the mirror says {reason}, the API still has the pod"
        " (is MULTUS_NODE_NAME right?)"
    )
    assert pending(node.checkpoint(container)) == ["eth0"]

    pods.api = mirrored  # the API agrees now: the pod is gone (or another one) there too
    confirmed = await collector.run_once()

    assert [o.container_id for o in confirmed.collected] == [container]
    assert node.checkpoint(container) is None


async def test_a_sandbox_whose_netns_is_gone_is_collected_even_without_a_mirror(node: Node) -> None:
    container = await attached(node)
    node.netnses[-1].delete()
    collector = GarbageCollector(engine=node.engine(), db=node.db)

    report = await collector.run_once()

    assert [(o.container_id, o.reason) for o in report.orphans] == [(container, "netns-gone")]
    assert node.checkpoint(container) is None


@dataclass
class _NetnsAt(Netns):
    at: Path = Path()

    @property
    def path(self) -> str:
        return str(self.at)


async def test_a_netns_that_cannot_be_looked_at_is_not_taken_as_gone(node: Node, tmp_path: Path) -> None:
    """Only a missing netns proves the sandbox dead; one whose path answers EACCES may be a live pod's."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "ns").symlink_to(node.new_netns().path)
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, _NetnsAt("unused", locked / "ns"), conf))
    collector = GarbageCollector(
        engine=engine, db=node.db, pods=Pods({("default", "pod-a"): "uid-a"}), pod_gone_grace=0
    )

    locked.chmod(0)
    try:
        with without_dac_override():
            report = await collector.run_once()
    finally:
        locked.chmod(0o755)

    assert report.orphans == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]


async def test_sandboxes_of_an_earlier_boot_and_half_done_adds_are_collected(node: Node) -> None:
    old = await attached(node, boot_id="boot-0")
    half = new_container_id()
    conf = node.conf(node.recorder_network("cluster"))
    crashing = node.engine(crash=CrashAt(Point.ADD_AFTER_EXEC))
    with pytest.raises(Crashed):
        await crashing.add(node.request(Command.ADD, half, node.new_netns(), conf))
    collector = GarbageCollector(engine=node.engine(), db=node.db)

    report = await collector.run_once()

    assert sorted((o.container_id, o.reason) for o in report.orphans) == sorted(
        [(old, "earlier-boot"), (half, "unfinished-add")]
    )
    assert node.checkpoint(old) is None
    assert node.checkpoint(half) is None


async def test_a_sandbox_with_an_operation_in_flight_is_not_touched(node: Node) -> None:
    container = await attached(node)
    engine = node.engine()
    collector = GarbageCollector(engine=engine, db=node.db, pods=Pods({}), pod_gone_grace=0)

    async with engine.locks.hold(container):
        report = await collector.run_once()

    assert report.orphans == []
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_a_pass_told_the_daemon_is_stopping_begins_no_further_teardown(node: Node) -> None:
    """A pass went on tearing orphans down after the daemon began to stop, until the shutdown's
    grace cancelled it in the middle of one; what it leaves is the next daemon's to collect."""
    first, second = await attached(node, pod="pod-a"), await attached(node, pod="pod-b")
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=Pods({}), pod_gone_grace=0)

    def stop() -> bool:  # the daemon begins to stop while the first orphan is torn down
        return bool(node.recorder_entries("DEL"))

    report = await collector.run_once(stop=stop)

    assert len(report.orphans) == 2
    assert len(report.collected) == 1
    assert sorted(pending(node.checkpoint(c)) for c in (first, second)) == [[], ["eth0"]]
    assert len(node.recorder_entries("DEL")) == 1


async def test_a_dry_run_reports_orphans_and_tears_nothing_down(node: Node) -> None:
    container = await attached(node)
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=Pods({}), pod_gone_grace=0)

    report = await collector.run_once(dry_run=True)

    assert [o.container_id for o in report.orphans] == [container]
    assert report.collected == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]


async def test_a_failing_teardown_is_reported_and_the_sandbox_stays_recorded(node: Node) -> None:
    conf = node.conf(node.recorder_network("stuck", fail={"code": 11, "msg": "stuck"}, failOn="DEL"))
    container = new_container_id()
    await node.engine().add(node.request(Command.ADD, container, node.new_netns(), conf))
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=Pods({}), pod_gone_grace=0)

    report = await collector.run_once()

    assert [(cid, error.code) for cid, error in report.failed] == [(container, 11)]
    assert report.collected == []
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_only_stale_leases_of_containers_we_handled_are_removed(node: Node) -> None:
    lease_dir = node.ipam_dir / "leased"
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
    conf = node.conf("leased")
    engine = node.engine()
    live, gone, stranger = new_container_id(), new_container_id(), new_container_id()
    netns = node.new_netns()
    await engine.add(node.request(Command.ADD, live, netns, conf))
    await engine.add(node.request(Command.ADD, gone, netns, conf, pod="pod-b"))
    await engine.delete(node.request(Command.DEL, gone, netns, conf, pod="pod-b"))
    lease_dir.mkdir(parents=True)
    leases = {}
    for address, container in (("10.9.0.2", live), ("10.9.0.3", gone), ("10.9.0.4", stranger)):
        leases[container] = lease_dir / address
        leases[container].write_text(f"{container}\r\neth0")
    collector = GarbageCollector(
        engine=engine, db=node.db, pods=Pods({("default", "pod-a"): "uid-a"}), pod_gone_grace=0
    )

    dry = await collector.run_once(dry_run=True)
    assert dry.leases_removed == [str(leases[gone])]
    assert leases[gone].exists()

    report = await collector.run_once()

    assert report.leases_removed == [str(leases[gone])]
    assert not leases[gone].exists()
    assert leases[live].exists()
    assert leases[stranger].exists()


async def test_cni_gc_keeps_the_attachments_the_runtime_lists_and_deletes_the_rest(node: Node) -> None:
    keep, drop = await attached(node), await attached(node, pod="pod-b")
    engine = node.engine()
    conf = node.conf("cluster")
    valid = (Attachment(ContainerId(keep), IfName("eth0")),)

    await engine.gc(NodeRequest(command=Command.GC, conf=conf, valid_attachments=valid))

    assert pending(node.checkpoint(keep)) == ["eth0"]
    assert node.checkpoint(drop) is None


async def test_cni_gc_reports_a_teardown_that_failed(node: Node) -> None:
    conf = node.conf(node.recorder_network("stuck", fail={"code": 11, "msg": "stuck"}, failOn="DEL"))
    container = new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, container, node.new_netns(), conf))

    with pytest.raises(CniError) as failed:
        await engine.gc(NodeRequest(command=Command.GC, conf=conf))

    assert failed.value.code == 11
    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_cni_gc_is_forwarded_to_the_cluster_networks_plugins_with_the_valid_attachments(
    node: Node,
) -> None:
    """CNI 1.1 GC: a plugin that delegates must forward GC to its delegates (libcni does so for the
    cluster network's list after its DELs), so that they can free what no attachment accounts for."""
    network = {
        "cniVersion": "1.1.0",
        "name": "cluster",
        "plugins": [{"type": "recorder", "recorder": {"log": str(node.recorder_log)}}],
    }
    node.write_network("cluster", network)
    conf = node.conf("cluster")
    keep = new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, keep, node.new_netns(), conf))
    valid = (Attachment(ContainerId(keep), IfName("eth0")),)

    await engine.gc(NodeRequest(command=Command.GC, conf=conf, valid_attachments=valid))

    forwarded = node.recorder_entries("GC")
    assert len(forwarded) == 1
    assert forwarded[0]["stdin"]["name"] == "cluster"
    assert forwarded[0]["stdin"]["cni.dev/valid-attachments"] == [{"containerID": keep, "ifname": "eth0"}]
    assert pending(node.checkpoint(keep)) == ["eth0"]


async def test_forwarded_gc_also_lists_every_attachment_still_recorded(node: Node) -> None:
    """The cluster network selected again as ``net1`` shares its IPAM: the runtime lists only
    ``eth0``, so the forwarded list keeps ``net1`` too (and anything whose DEL is still pending)."""
    network = {
        "cniVersion": "1.1.0",
        "name": "cluster",
        "plugins": [{"type": "recorder", "recorder": {"log": str(node.recorder_log)}}],
    }
    node.write_network("cluster", network)
    conf = node.conf("cluster", "cluster")
    keep = new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, keep, node.new_netns(), conf))
    valid = (Attachment(ContainerId(keep), IfName("eth0")),)

    await engine.gc(NodeRequest(command=Command.GC, conf=conf, valid_attachments=valid))

    [forwarded] = node.recorder_entries("GC")
    assert forwarded["stdin"]["cni.dev/valid-attachments"] == [
        {"containerID": keep, "ifname": "eth0"},
        {"containerID": keep, "ifname": "net1"},
    ]


async def test_a_dry_run_lists_only_the_leases_a_real_pass_would_remove(node: Node) -> None:
    """A stale lease of a container with an operation in flight is left by a real pass (checked
    under its lock): the dry run must not list it either."""
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
    conf = node.conf("leased")
    engine = node.engine()
    busy, idle = new_container_id(), new_container_id()
    netns = node.new_netns()
    lease_dir = node.ipam_dir / "leased"
    lease_dir.mkdir(parents=True)
    leases = {}
    for address, container in (("10.9.0.2", busy), ("10.9.0.3", idle)):
        await engine.add(node.request(Command.ADD, container, netns, conf))
        await engine.delete(node.request(Command.DEL, container, netns, conf))
        leases[container] = lease_dir / address
        leases[container].write_text(f"{container}\r\neth0")
    collector = GarbageCollector(engine=engine, db=node.db, pods=Pods({}), pod_gone_grace=0)

    async with engine.locks.hold(busy):
        dry = await collector.run_once(dry_run=True)
        real = await collector.run_once()

    assert dry.leases_removed == [str(leases[idle])]
    assert real.leases_removed == [str(leases[idle])]
    assert leases[busy].exists()


async def test_a_pass_asks_the_api_no_more_once_it_did_not_answer_nor_once_the_daemon_stops(
    node: Node,
) -> None:
    """Every sandbox the mirror's word had held for was asked about in turn, each waiting out the
    request timeout (10 s) while the API did not answer: a node of many such pods held the pass (and
    ``multusctl gc``, and a stopping daemon's grace) for minutes. One unanswered question is enough
    for the pass; and a daemon stopping asks nothing."""
    first, second = await attached(node, pod="pod-a"), await attached(node, pod="pod-b", uid="uid-b")
    pods = Pods({})
    pods.answering = False
    collector = GarbageCollector(engine=node.engine(), db=node.db, pods=pods, pod_gone_grace=0)

    unanswered = await collector.run_once()
    pods.answering = True
    stopping = await collector.run_once(stop=lambda: True)

    assert len(pods.asked) == 1
    assert sorted(u.container_id for u in unanswered.unanswered) == sorted([first, second])
    assert sorted(u.container_id for u in stopping.unanswered) == sorted([first, second])
    assert pending(node.checkpoint(first)) == pending(node.checkpoint(second)) == ["eth0"]
