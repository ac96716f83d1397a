"""A VF's host name and MAC are recorded as they are once its previous holder's DEL is done.

DEL gets a VF back to the name and MAC recorded at ADD (``app.attach.vfs``). They used to be looked
at before the commit that proves no other sandbox records the VF (invariant 8b): a VF whose holder's
DEL finished in between was recorded as that DEL left it in passing, under its in-pod name (which
the new sandbox's DEL then "restored" it to) or inside the holder's namespace (an empty name, so a
VF the new sandbox's DEL leaves in its namespace went unnoticed). They are learnt after that commit
now, and committed before any delegate runs.

The window is made certain, not raced for: the store's writer (which runs the commit holding the
check) is kept busy by a unit that ends the holder's DEL (its records forgotten, as its last commit
does) once the test has seen the new ADD hand its intents to the writer and has put the VF back as
the holder's DEL does. No SR-IOV hardware here: the VF is a veth registered under its PCI address
in a fake sysfs tree, and the recorder plugin stands in for sriov-cni.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from app.cni.types import IfName
from app.store import checkpoints, lease_proofs
from app.store.database import Connection
from tests.core.support import Command, Node, new_container_id
from tests.core.vf_support import FakeVf, fake_vf, hotplug_plan, vf_network

PCI = "0000:00:05.2"
IN_PASSING = ["back-under-its-in-pod-name", "still-in-the-holders-namespace"]


@pytest.fixture
def vf(node: Node) -> FakeVf:
    return fake_vf(node, PCI)


def leave_in_passing(node: Node, vf: FakeVf, in_passing: str) -> Callable[[], None]:
    """Put the VF where its holder's DEL has it for a moment; return what puts it back at rest."""
    if in_passing == "back-under-its-in-pod-name":
        in_pod_name = f"mpdv{secrets.token_hex(3)}"
        node.host_links.append(in_pod_name)
        subprocess.run(
            ["ip", "link", "set", vf.name, "name", in_pod_name, "address", "02:11:22:33:44:55"], check=True
        )
        (vf.names / vf.name).rename(vf.names / in_pod_name)

        def restored() -> None:
            subprocess.run(["ip", "link", "set", in_pod_name, "name", vf.name, "address", vf.mac], check=True)
            (vf.names / in_pod_name).rename(vf.names / vf.name)

        return restored
    hidden = node.root / "hidden-vf"
    (vf.names / vf.name).rename(hidden)  # sysfs lists no netdev: it is in some namespace

    def back() -> None:
        hidden.rename(vf.names / vf.name)

    return back


def noting_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, seen: asyncio.Event) -> None:
    """Set ``seen`` when ``owner.name`` (a coroutine method) is called, before it runs."""
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    async def noted(*args: Any, **kwargs: Any) -> Any:
        seen.set()
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, noted)


def holders_del_held(node: Node, holder: str) -> tuple[threading.Event, asyncio.Future[None]]:
    """The writer kept busy by the holder's last DEL commit (its records forgotten) until the
    returned event is set; the future is done once that commit is."""
    may_end = threading.Event()

    def holders_last_commit(connection: Connection) -> None:
        if not may_end.wait(30):
            raise TimeoutError("the test never let the holder's DEL end")
        checkpoints.remove_attachments(connection, container_id=holder, ifnames=["eth0", "net1"])
        checkpoints.finish_delete(connection, holder)

    return may_end, node.db.submit_write(holders_last_commit)


async def taken_while_the_holder_lets_go(
    *,
    node: Node,
    holder: str,
    at_rest: Callable[[], None],
    intents_committed_by: str,
    monkeypatch: pytest.MonkeyPatch,
    take: Awaitable[Any],
) -> None:
    """Run ``take`` (an ADD or hot-plug handed the VF) while the holder's DEL ends: once ``take``
    has handed its intents to the writer (``Database.<intents_committed_by>``), the VF is put
    ``at_rest`` and the holder's records forgotten, before ``take``'s commit is run."""
    may_end, holder_forgotten = holders_del_held(node, holder)
    handed_over = asyncio.Event()
    noting_calls(monkeypatch, node.db, intents_committed_by, handed_over)
    taking = asyncio.ensure_future(take)
    try:
        await asyncio.wait_for(handed_over.wait(), 30)
        await asyncio.to_thread(at_rest)  # the holder's DEL got the VF back; its last commit follows
    finally:
        may_end.set()
    await holder_forgotten
    await taking


def recorded_device(node: Node, container: str, ifname: str) -> Mapping[str, str] | None:
    record = node.checkpoint(container)
    assert record is not None
    attachment = record.attachment(ifname)
    assert attachment is not None
    return attachment.device


@pytest.mark.parametrize("in_passing", IN_PASSING)
async def test_a_vf_is_recorded_as_it_is_once_its_previous_holders_del_is_done(
    node: Node, vf: FakeVf, monkeypatch: pytest.MonkeyPatch, in_passing: str
) -> None:
    conf = node.conf(node.recorder_network("cluster"), vf_network(node, PCI))
    engine = node.engine(sysfs_root=vf.sysfs)
    holder, taker = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, holder, node.new_netns(), conf))

    await taken_while_the_holder_lets_go(
        node=node,
        holder=holder,
        at_rest=leave_in_passing(node, vf, in_passing),
        intents_committed_by="write_then_sync",
        monkeypatch=monkeypatch,
        take=engine.add(node.request(Command.ADD, taker, node.new_netns(), conf, pod="pod-b", uid="uid-b")),
    )

    assert recorded_device(node, taker, "net1") == {"pci": PCI, "ifname": vf.name, "mac": vf.mac}


@pytest.mark.parametrize("in_passing", IN_PASSING)
async def test_a_hot_plugged_vf_is_recorded_as_it_is_once_its_previous_holders_del_is_done(
    node: Node, vf: FakeVf, monkeypatch: pytest.MonkeyPatch, in_passing: str
) -> None:
    engine = node.engine(sysfs_root=vf.sysfs)
    holder, taker = new_container_id(), new_container_id()
    await engine.add(
        node.request(
            Command.ADD,
            holder,
            node.new_netns(),
            node.conf(node.recorder_network("cluster"), vf_network(node, PCI)),
        )
    )
    cluster_only = node.conf(node.recorder_network("cluster-b"))
    taker_netns = node.new_netns()
    await engine.add(node.request(Command.ADD, taker, taker_netns, cluster_only, pod="pod-b", uid="uid-b"))
    hotplug = replace(
        node.request(Command.ADD, taker, taker_netns, cluster_only, pod="pod-b", uid="uid-b"),
        ifname=IfName("net1"),
    )

    await taken_while_the_holder_lets_go(
        node=node,
        holder=holder,
        at_rest=leave_in_passing(node, vf, in_passing),
        intents_committed_by="write",  # a hot-plug's first write is its intent's commit
        monkeypatch=monkeypatch,
        take=engine.attach_delegate(hotplug, hotplug_plan(node, PCI)),
    )

    assert recorded_device(node, taker, "net1") == {"pci": PCI, "ifname": vf.name, "mac": vf.mac}


async def test_recording_a_vfs_name_and_mac_leaves_no_proof_of_a_removed_attachment(
    node: Node, vf: FakeVf
) -> None:
    """The device is recorded by an UPDATE of the intent: a row deleted and inserted again fired
    the trigger that keeps GC's proofs of removed host-local attachments (docs/state.md)."""
    ipam = {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": str(node.root / "ipam")}
    vf_network(node, PCI, "sriov-ipam", deviceID=PCI, ipam=ipam)
    engine = node.engine(sysfs_root=vf.sysfs)
    container = new_container_id()

    await engine.add(
        node.request(
            Command.ADD, container, node.new_netns(), node.conf(node.recorder_network("c"), "sriov-ipam")
        )
    )

    assert recorded_device(node, container, "net1") == {"pci": PCI, "ifname": vf.name, "mac": vf.mac}
    assert node.db.read_sync(lease_proofs.removed) == []
