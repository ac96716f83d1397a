"""The network-status writes of one pod take turns (``hotplug.OrderedStatusPublisher``): what the
reconciler writes is decided in its turn, and an ADD's write that comes meanwhile lands after it,
so an older sandbox's interfaces never land over what a newer sandbox's ADD wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.attach.cluster import InterfaceEvent
from app.attach.hotplug import OrderedStatusPublisher
from app.store.mirror_records import PodRecord

POD = PodRecord(namespace="default", name="web", uid="u1")
OTHER = PodRecord(namespace="default", name="db", uid="u2")


class HeldPublisher:
    """Records each write once done; a write of ``hold_value`` waits for ``release`` first."""

    def __init__(self, hold_value: str) -> None:
        self.hold_value = hold_value
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.done: list[tuple[str, str]] = []

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        if status_json == self.hold_value:
            self.holding.set()
            await self.release.wait()
        self.done.append((pod.name, status_json))
        return True

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        pass


async def _value(value: str | None) -> str | None:
    return value


async def test_an_adds_write_that_comes_during_the_reconcilers_lands_after_it() -> None:
    inner = HeldPublisher("old sandbox")
    ordered = OrderedStatusPublisher(inner)
    reconciler = asyncio.create_task(ordered.publish_if(POD, lambda: _value("old sandbox")))
    await asyncio.wait_for(inner.holding.wait(), 5)

    add = asyncio.create_task(ordered.publish_network_status(POD, "new sandbox"))
    other_pod = asyncio.create_task(ordered.publish_network_status(OTHER, "db's"))
    await asyncio.wait_for(other_pod, 5)  # another pod's write does not wait
    inner.release.set()
    assert await asyncio.wait_for(reconciler, 5) is True
    await asyncio.wait_for(add, 5)

    assert inner.done == [("db", "db's"), ("web", "old sandbox"), ("web", "new sandbox")]


async def test_nothing_is_written_when_the_reconciler_finds_its_sandbox_superseded() -> None:
    inner = HeldPublisher("")
    ordered = OrderedStatusPublisher(inner)

    assert await ordered.publish_if(POD, lambda: _value(None)) is False
    assert inner.done == []


async def test_what_follows_the_reconcilers_write_comes_before_any_other_write_of_the_pod() -> None:
    """Clearing the sandbox's ``status_unwritten`` mark follows the reconciler's write in its turn:
    an ADD's write (which marks the sandbox when it fails) cannot come between."""
    inner = HeldPublisher("")
    ordered = OrderedStatusPublisher(inner)
    following = asyncio.Event()
    finish = asyncio.Event()
    seen: list[list[tuple[str, str]]] = []

    async def then() -> None:
        following.set()
        await finish.wait()
        seen.append(list(inner.done))

    reconciler = asyncio.create_task(ordered.publish_if(POD, lambda: _value("reconciler's"), then=then))
    await asyncio.wait_for(following.wait(), 5)
    add = asyncio.create_task(ordered.publish_network_status(POD, "ADD's"))
    finish.set()
    assert await asyncio.wait_for(reconciler, 5) is True
    await asyncio.wait_for(add, 5)

    assert seen == [[("web", "reconciler's")]]
    assert inner.done == [("web", "reconciler's"), ("web", "ADD's")]


async def test_nothing_follows_when_nothing_was_written() -> None:
    ordered = OrderedStatusPublisher(HeldPublisher(""))
    followed: list[bool] = []

    async def then() -> None:
        followed.append(True)

    assert await ordered.publish_if(POD, lambda: _value(None), then=then) is False
    assert followed == []
