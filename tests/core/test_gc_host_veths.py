"""GC's sweep of host-side veths named in the results of the sandboxes it collected.

A DEL that runs without a namespace (its path gone, the namespace itself still held elsewhere)
leaves the host end of a bridge's veth on the bridge for as long as that namespace lives. GC
removes it after the teardown, but only the link it can tie to the collected sandbox (the name
and the MAC its result recorded: the bridge plugin names host veths at random, and a name can come
back on another sandbox's veth), and tries again on later passes when a removal fails; never one
a recorded sandbox's result names, nor while an ADD that may have made one runs (name and MAC
can come back together). Real namespaces, the real bridge plugin, real veths.
"""

from __future__ import annotations

import asyncio
import errno
import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from app.attach import netns
from app.attach.netns import HostVeth, HostVethRemoval
from app.gc.collector import GarbageCollector, host_veths
from tests.core.support import Command, Netns, Node, new_container_id, wait_for_file


async def bridged(node: Node, namespace: Netns) -> tuple[str, HostVeth]:
    """A sandbox attached to a fresh bridge in ``namespace``, and the host veth its result names."""
    conf = node.conf(node.bridge_network("cluster", subnet="10.99.0.0/24"))
    container = new_container_id()
    await node.engine().add(node.request(Command.ADD, container, namespace, conf))
    record = node.checkpoint(container)
    assert record is not None
    [veth] = host_veths(record)
    assert host_link(veth.name) is not None
    return container, veth


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True)


def host_link(name: str) -> dict[str, str] | None:
    """``{"kind", "mac"}`` of the host link ``name``, or None when there is none."""
    shown = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    [link] = json.loads(shown.stdout)
    return {"kind": link.get("linkinfo", {}).get("info_kind", ""), "mac": link["address"]}


@contextmanager
def outliving_its_path(namespace: Netns, pin: Path) -> Iterator[None]:
    """Remove ``namespace``'s path while a bind mount at ``pin`` keeps the namespace alive (as a
    process still in it would), so its interfaces stay; the namespace goes when the block ends."""
    pin.touch()
    subprocess.run(["mount", "--bind", namespace.path, str(pin)], check=True)
    try:
        namespace.delete()
        yield
    finally:
        subprocess.run(["umount", str(pin)], check=False)


async def gone(name: str) -> None:
    """Return once the host has no link ``name`` (the kernel removes a dead namespace's veths in
    its own time); fail after about 20 s."""
    for _ in range(400):
        if await asyncio.to_thread(host_link, name) is None:
            return
        await asyncio.sleep(0.05)  # the kernel tells nobody when its namespace cleanup has run
    raise AssertionError(f"host link {name} is still there")


async def test_gc_removes_the_host_veth_of_a_collected_sandbox_whose_namespace_outlives_its_path(
    node: Node, tmp_path: Path
) -> None:
    namespace = node.new_netns()
    container, veth = await bridged(node, namespace)

    with outliving_its_path(namespace, tmp_path / "pin"):
        report = await GarbageCollector(engine=node.engine(), db=node.db).run_once()

        assert [orphan.container_id for orphan in report.collected] == [container]
        assert report.host_links_removed == [veth.name]
        assert host_link(veth.name) is None


async def test_gc_leaves_another_sandboxs_veth_that_took_the_name_of_a_collected_host_veth(
    node: Node,
) -> None:
    """The bridge plugin's random name came back on a live sandbox's veth: same name, another MAC."""
    namespace = node.new_netns()
    container, veth = await bridged(node, namespace)
    namespace.delete()
    await gone(veth.name)
    peer = f"mpycp{secrets.token_hex(4)}"
    ip("link", "add", veth.name, "type", "veth", "peer", "name", peer)
    node.host_links.append(veth.name)
    reused = host_link(veth.name)
    assert reused is not None
    assert reused["mac"] != veth.mac.lower()

    report = await GarbageCollector(engine=node.engine(), db=node.db).run_once()

    assert [orphan.container_id for orphan in report.collected] == [container]
    assert report.host_links_removed == []
    assert host_link(veth.name) == reused


async def test_a_host_veth_removal_that_failed_is_tried_again_on_the_next_pass(
    node: Node, tmp_path: Path
) -> None:
    """The checkpoint forgets the sandbox with its teardown: after a failed removal, only GC's
    own list still names the veth, so dropping it would leave it on the bridge for good."""
    namespace = node.new_netns()
    container, veth = await bridged(node, namespace)
    tries: list[list[HostVeth]] = []

    async def refused_once(veths: list[HostVeth]) -> HostVethRemoval:
        tries.append(veths)
        if len(tries) == 1:  # what netlink answers when it cannot take the request now
            return HostVethRemoval(failed=[(v, OSError(errno.ENOBUFS, "no buffer space")) for v in veths])
        return await netns.delete_host_veths(veths)

    with outliving_its_path(namespace, tmp_path / "pin"):
        collector = GarbageCollector(engine=node.engine(), db=node.db, remove_host_veths=refused_once)
        first = await collector.run_once()
        assert [orphan.container_id for orphan in first.collected] == [container]
        assert first.host_links_removed == []
        assert host_link(veth.name) is not None

        second = await collector.run_once()
        third = await collector.run_once()

        assert second.host_links_removed == [veth.name]
        assert host_link(veth.name) is None
        assert third.host_links_removed == []
        assert tries == [[veth], [veth]], "tried again once, then forgotten"


async def test_only_a_veth_with_the_recorded_name_and_mac_is_deleted(node: Node) -> None:
    """``netns.delete_host_veths`` alone: a recorded MAC in another case still ties; a link of the
    name with another MAC, another kind, or no MAC recorded is left; a missing one is not a failure."""
    names = [f"mpycv{secrets.token_hex(4)}" for _ in range(3)]
    node.host_links.extend(names)  # before they exist: a failure below leaves none behind
    for name in names[:2]:
        ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
    ip("link", "add", names[2], "type", "bridge")
    macs = [link["mac"] for name in names if (link := host_link(name)) is not None]

    outcome = await netns.delete_host_veths(
        [
            HostVeth(names[0], macs[0].upper()),
            HostVeth(names[1], "0a:58:00:00:00:01"),
            HostVeth(names[1], ""),
            HostVeth(names[2], macs[2]),
            HostVeth(f"mpycv{secrets.token_hex(4)}", "0a:58:00:00:00:02"),
        ]
    )

    assert outcome == HostVethRemoval(removed=[HostVeth(names[0], macs[0].upper())])
    assert [host_link(name) is not None for name in names] == [False, True, True]


async def test_a_recorded_result_that_does_not_parse_names_no_veth_and_hides_none_of_the_others(
    node: Node,
) -> None:
    """Its DEL forgot that attachment (it can never run); the other attachments' veths still go."""
    namespace = node.new_netns()
    container, veth = await bridged(node, namespace)
    record = node.checkpoint(container)
    assert record is not None
    broken = replace(record.attachments[0], ifname="net1", result="{not json")

    assert host_veths(replace(record, attachments=(broken, *record.attachments))) == [veth]


def a_pods_host_veth(node: Node) -> HostVeth:
    """A host veth named for its pod (as plugins that derive the name from the pod's name do) with
    the MAC it gets again under that name (as systemd's ``MACAddressPolicy=persistent`` gives a
    veth, or a plugin setting a fixed one): each sandbox of that pod has one like it."""
    veth = HostVeth(f"mpycv{secrets.token_hex(4)}", "0a:58:0a:63:00:07")
    node.host_links.append(veth.name)  # before it exists: a failure below leaves none behind
    ip("link", "add", veth.name, "address", veth.mac, "type", "veth", "peer", "name", veth.name + "p")
    return veth


def naming(node: Node, veth: HostVeth, name: str = "cluster", **behaviour: object) -> str:
    """A network whose ADD answers a result naming ``veth`` on the host side."""
    return node.recorder_network(
        name,
        result={
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": veth.name, "mac": veth.mac},
                {"name": "eth0", "mac": "0a:58:0a:63:00:08", "sandbox": "x"},
            ],
            "ips": [{"address": "10.99.0.8/24", "interface": 1}],
        },
        **behaviour,
    )


async def test_gc_leaves_the_host_veth_a_live_sandbox_of_the_same_pod_records(node: Node) -> None:
    """The pod was recreated on the node (a StatefulSet's ``web-0``): its new sandbox got the host
    veth of the same name and MAC as the old one, which GC collects once its namespace is gone.
    The sweep deleted the live sandbox's veth: name and MAC tie a link to a sandbox only while no
    recorded sandbox names that very veth."""
    veth = a_pods_host_veth(node)
    conf = node.conf(naming(node, veth))
    old, new = new_container_id(), new_container_id()
    old_namespace = node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, old, old_namespace, conf, uid="uid-1"))
    await engine.add(node.request(Command.ADD, new, node.new_netns(), conf, uid="uid-2"))
    old_namespace.delete()

    report = await GarbageCollector(engine=engine, db=node.db).run_once()
    later = await GarbageCollector(engine=engine, db=node.db).run_once()

    assert [(o.container_id, o.reason) for o in report.collected] == [(old, "netns-gone")]
    assert (report.host_links_removed, later.host_links_removed) == ([], [])
    assert host_link(veth.name) == {"kind": "veth", "mac": veth.mac}
    assert node.checkpoint(new) is not None


async def test_gc_leaves_a_host_veth_while_an_add_that_may_have_made_it_is_in_flight(
    node: Node, tmp_path: Path
) -> None:
    """As above, with the new sandbox's ADD still running when GC sweeps: its plugin has made the
    veth, its result is not recorded yet. The veth is left while such an ADD runs, and once its
    result names the veth, for good."""
    veth = a_pods_host_veth(node)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    old_conf = node.conf(naming(node, veth))
    new_conf = node.conf(
        naming(node, veth, "cluster-new", rendezvous={"dir": str(meeting), "count": 2, "timeout": 30})
    )
    old, new = new_container_id(), new_container_id()
    old_namespace = node.new_netns()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, old, old_namespace, old_conf, uid="uid-1"))
    old_namespace.delete()
    adding = asyncio.create_task(
        engine.add(node.request(Command.ADD, new, node.new_netns(), new_conf, uid="uid-2"))
    )
    try:
        await wait_for_file(meeting / "eth0")  # its plugin runs (and has made the veth)
        collector = GarbageCollector(engine=engine, db=node.db)

        report = await collector.run_once()

        assert [(o.container_id, o.reason) for o in report.collected] == [(old, "netns-gone")]
        assert report.host_links_removed == []
        assert host_link(veth.name) == {"kind": "veth", "mac": veth.mac}
    finally:
        await asyncio.to_thread((meeting / "go").touch)
        await adding
    later = await collector.run_once()

    assert later.host_links_removed == []
    assert host_link(veth.name) == {"kind": "veth", "mac": veth.mac}
