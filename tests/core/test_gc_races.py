"""GC decides on a snapshot of the checkpoint; what it tears down must still be an orphan when it acts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from app.attach.engine import AttachEngine
from app.cni.invoke import DELEGATE_MARKER
from app.gc import collector
from app.gc.collector import GarbageCollector
from app.store.database import Database
from tests.core.support import Command, Node, Pods, new_container_id, pending, wait_for_file


@dataclass
class HeldAdd:
    """An ADD whose delegate waits at a rendezvous: the sandbox is recorded as ``adding`` until
    ``finish`` lets the delegate answer."""

    container: str
    task: asyncio.Task[Any]
    meeting: Path

    @classmethod
    async def start(cls, node: Node, engine: AttachEngine, tmp_path: Path) -> HeldAdd:
        meeting = tmp_path / "meeting"
        meeting.mkdir()
        conf = node.conf(
            node.recorder_network("cluster", rendezvous={"dir": str(meeting), "count": 2, "timeout": 30})
        )
        container = new_container_id()
        task = asyncio.create_task(engine.add(node.request(Command.ADD, container, node.new_netns(), conf)))
        await wait_for_file(meeting / "eth0")  # the delegate runs: the sandbox is recorded as ``adding``
        return cls(container, task, meeting)

    async def finish(self) -> None:
        await asyncio.to_thread((self.meeting / "go").touch)  # the delegate answers; the ADD commits
        await self.task


class PodsOnceTheAddFinished(Pods):
    """The pods GC is told of, told only once ``held`` has finished: GC read the checkpoint while the
    ADD was in flight, and looks at the sandbox after it answered."""

    def __init__(self, pods: Mapping[tuple[str, str], str], held: HeldAdd) -> None:
        super().__init__(pods)
        self.held = held

    async def pods_on_node(self) -> Mapping[tuple[str, str], str] | None:
        await self.held.finish()
        return self.pods


async def test_an_add_that_finishes_while_gc_examines_it_is_not_torn_down(node: Node, tmp_path: Path) -> None:
    """The ADD is in flight (state ``adding``) when GC reads the checkpoint and has answered by the time
    GC looks at its lock: the sandbox is a live pod's, not an unfinished ADD."""
    engine = node.engine()
    held = await HeldAdd.start(node, engine, tmp_path)
    container, adding = held.container, held.task

    gc = GarbageCollector(
        engine=engine, db=node.db, pods=PodsOnceTheAddFinished({("default", "pod-a"): "uid-a"}, held)
    )

    report = await gc.run_once()

    assert adding.done()
    assert adding.exception() is None
    assert report.collected == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]


class AddAfterFirstRead:
    """The store as GC reads it, with an ADD that runs to completion right after GC's first read of
    the recorded configurations and containers (as one may, while the sweep awaits its reads)."""

    def __init__(self, node: Node, add: Callable[[], Awaitable[object]]) -> None:
        self._db = node.db
        self._add = add
        self.added = False

    async def read(self, unit: Callable[..., Any]) -> Any:
        answer = await self._db.read(unit)
        if unit is collector._lease_evidence and not self.added:
            self.added = True
            await self._add()
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_a_lease_taken_by_an_add_during_the_lease_sweep_is_kept(node: Node) -> None:
    conf = node.conf(node.bridge_network("leased", subnet="10.99.7.0/24"))
    engine = node.engine()
    first, second = new_container_id(), new_container_id()
    await engine.add(node.request(Command.ADD, first, node.new_netns(), conf))  # the lease dir is known
    lease_dir = node.ipam_dir / "leased"
    netns = node.new_netns()
    store = AddAfterFirstRead(
        node, lambda: engine.add(node.request(Command.ADD, second, netns, conf, pod="pod-b"))
    )
    gc = GarbageCollector(engine=engine, db=cast(Database, store), pods=None)

    report = await gc.run_once()

    assert store.added
    assert pending(node.checkpoint(second)) == ["eth0"]
    assert report.leases_removed == []
    owners = {path.read_text().split()[0] for path in lease_dir.iterdir() if path.name.startswith("10.")}
    assert owners == {first, second}


async def test_an_add_that_finishes_while_gc_examines_it_waits_the_grace_for_the_apis_word(
    node: Node, tmp_path: Path
) -> None:
    """The ADD is in flight (``adding``) when GC reads the checkpoint and has answered by the time GC
    looks at it, while the API's word is that its pod is gone (a mirror pod deleted, an unlucky
    order of events). The re-check under the lock found the pod absent and tore the live pod's
    networks down at once, skipping ``gcPodGoneGraceSeconds``: a reason the pass did not decide on
    must not be taken under the lock, least of all one that only the grace confirms."""
    engine = node.engine()
    held = await HeldAdd.start(node, engine, tmp_path)
    container, adding = held.container, held.task

    gc = GarbageCollector(engine=engine, db=node.db, pods=PodsOnceTheAddFinished({}, held), pod_gone_grace=30)

    report = await gc.run_once()

    assert adding.exception() is None
    assert report.collected == []
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert [call[0] for call in node.calls()] == ["ADD"]


async def test_a_helper_process_of_an_add_that_finishes_while_gc_examines_it_is_not_killed(
    node: Node, tmp_path: Path
) -> None:
    """GC took the sandbox for a half-done ADD (``adding`` when it read the checkpoint) and, under
    its lock, killed every process carrying its attachments' marker before it looked again: by then
    the ADD had answered, and what it killed was a process the plugin left running for the live
    pod. Only a sandbox still half-done under the lock has leftover plugins to reap."""
    engine = node.engine()
    held = await HeldAdd.start(node, engine, tmp_path)
    container, adding = held.container, held.task
    helper = await asyncio.create_subprocess_exec(  # what the plugin leaves running for its pod
        "sleep",
        "300",
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", DELEGATE_MARKER: f"{container}/eth0"},
        start_new_session=True,
    )
    try:
        gc = GarbageCollector(
            engine=engine, db=node.db, pods=PodsOnceTheAddFinished({("default", "pod-a"): "uid-a"}, held)
        )

        report = await gc.run_once()

        assert adding.exception() is None
        assert report.collected == []
        assert pending(node.checkpoint(container)) == ["eth0"]
        assert helper.returncode is None, "the live pod's process was killed"
    finally:
        if helper.returncode is None:
            helper.kill()
        await helper.wait()
