"""Readiness as requests see it: an awaitable kept in step with the daemon's flags, bounded waits."""

from __future__ import annotations

import asyncio

from app.daemon.server import Readiness


async def test_a_waiter_is_released_when_the_last_condition_is_met() -> None:
    readiness = Readiness(store_open=True)
    waiter = asyncio.ensure_future(readiness.wait_ready(60))
    readiness.recovered = True
    readiness.extra_conditions["the mirrors"] = False
    await asyncio.sleep(0)
    assert not waiter.done()

    readiness.extra_conditions["the mirrors"] = True

    assert await waiter is True


async def test_a_condition_turning_false_makes_waiters_wait_again() -> None:
    readiness = Readiness(store_open=True, recovered=True)
    assert await readiness.wait_ready(60) is True

    readiness.extra_conditions["the indicator"] = False

    assert readiness.reason == "waiting for the indicator"
    assert await readiness.wait_ready(0.01) is False


async def test_the_wait_is_bounded_and_refused_at_once_when_stopping() -> None:
    readiness = Readiness()
    assert await readiness.wait_ready(0.01) is False
    assert await readiness.wait_store_open(0.01) is False

    readiness.stopping = True
    assert await readiness.wait_ready(3600) is False


async def test_del_only_waits_for_the_store_even_while_stopping() -> None:
    readiness = Readiness()
    waiter = asyncio.ensure_future(readiness.wait_store_open(60))

    readiness.store_open = True
    readiness.stopping = True

    assert await waiter is True
    assert await readiness.wait_store_open(3600) is True
    assert not readiness.ready


async def test_a_held_request_is_let_go_when_the_daemon_starts_stopping() -> None:
    readiness = Readiness(store_open=True)
    waiter = asyncio.ensure_future(readiness.wait_ready(3600))
    await asyncio.sleep(0)

    readiness.stopping = True

    assert await waiter is False
    assert not readiness.ready_event.is_set()
