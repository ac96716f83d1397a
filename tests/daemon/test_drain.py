"""The graceful stop's drain: every operation in flight, including one that began during the drain
(DELs are still served while stopping, as upstream's), reaches its end within the grace period."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.daemon.server import CniServer, Readiness


async def test_an_operation_that_starts_during_the_drain_is_waited_for_within_the_grace() -> None:
    server = CniServer(engine=Any, daemon_config={}, readiness=Readiness(store_open=True, stopping=True))  # type: ignore[arg-type]
    finished: list[str] = []

    async def operation(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    add = asyncio.ensure_future(server._run_shielded(operation("add", 0.1), name="cni-ADD-a"))
    await asyncio.sleep(0)
    drain = asyncio.ensure_future(server.drain(grace=10))
    await asyncio.sleep(0.05)
    late_del = asyncio.ensure_future(server._run_shielded(operation("del", 0.3), name="cni-DEL-b"))

    remaining = await drain

    assert remaining == 0
    assert finished == ["add", "del"]
    assert server.in_flight() == []
    await asyncio.gather(add, late_del)


async def test_the_drain_still_ends_at_the_grace() -> None:
    server = CniServer(engine=Any, daemon_config={}, readiness=Readiness(store_open=True, stopping=True))  # type: ignore[arg-type]
    never = asyncio.ensure_future(server._run_shielded(asyncio.sleep(3600), name="cni-ADD-stuck"))
    await asyncio.sleep(0)

    async with asyncio.timeout(2):
        assert await server.drain(grace=0.1) == 1
    assert server.in_flight() == ["cni-ADD-stuck"]
    stuck = set(server._in_flight)
    for task in (never, *stuck):
        task.cancel()
    await asyncio.wait({never, *stuck})


async def test_the_stragglers_left_after_the_drain_are_cancelled_and_named() -> None:
    server = CniServer(engine=Any, daemon_config={}, readiness=Readiness(store_open=True, stopping=True))  # type: ignore[arg-type]
    stuck = asyncio.ensure_future(server._run_shielded(asyncio.sleep(3600), name="cni-DEL-stuck"))
    await asyncio.sleep(0)
    assert await server.drain(grace=0) == 1

    assert await server.abandon() == ["cni-DEL-stuck"]

    assert server.in_flight() == []
    with pytest.raises(asyncio.CancelledError):
        await stuck  # the request's handler: its connection is closed unanswered
    assert await server.abandon() == []
