"""The guard every background task runs under: crashes logged with a traceback and restarted,
essential tasks stop the daemon, stop waits and then cancels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from app import metrics
from app.daemon.supervise import Backoff, Supervisor

QUICK = Backoff(initial=0.001, maximum=0.01)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the conditions are plain lists the tasks fill
            await asyncio.sleep(0.001)


def supervisor(stopping: asyncio.Event, fatal: list[str] | None = None) -> Supervisor:
    return Supervisor(stopping=stopping, backoff=QUICK, on_fatal=(fatal if fatal is not None else []).append)


def crashing(runs: list[int], *, times: int) -> Callable[[], Awaitable[None]]:
    """A task body that raises PermissionError (as a conf-dir scan would) ``times`` times, then
    runs until cancelled."""

    async def run() -> None:
        runs.append(len(runs))
        if len(runs) <= times:
            raise PermissionError(13, "Permission denied", "/etc/cni/net.d")
        await asyncio.Event().wait()

    return run


async def test_a_crashing_task_is_logged_with_its_traceback_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping = asyncio.Event()
    tasks = supervisor(stopping)
    runs: list[int] = []
    ticks: list[int] = []

    async def tick() -> None:
        ticks.append(1)

    before = metrics.TASK_CRASHES.labels("autoconf")._value.get()
    with caplog.at_level(logging.ERROR, logger="app.daemon.supervise"):
        tasks.spawn("autoconf", crashing(runs, times=3))
        tasks.every("neighbour", 0.001, tick)
        await until(lambda: len(runs) == 4)
        ticked = len(ticks)
        await until(lambda: len(ticks) > ticked)  # the other task never stopped
    assert tasks.names == ["autoconf", "neighbour"]
    crashes = [record for record in caplog.records if "task autoconf crashed" in record.getMessage()]
    assert len(crashes) == 3
    assert all(record.exc_info and isinstance(record.exc_info[1], PermissionError) for record in crashes)
    assert "restarting it in" in crashes[0].getMessage()
    assert metrics.TASK_CRASHES.labels("autoconf")._value.get() == before + 3

    stopping.set()
    assert await tasks.stop(grace=0.01) == ["autoconf"]  # it ignores the stop event: cancelled
    assert tasks.names == []


async def test_an_essential_task_that_crashes_stops_the_daemon(caplog: pytest.LogCaptureFixture) -> None:
    stopping = asyncio.Event()
    fatal: list[str] = []
    tasks = supervisor(stopping, fatal)
    runs: list[int] = []
    with caplog.at_level(logging.CRITICAL, logger="app.daemon.supervise"):
        tasks.spawn("store-writer", crashing(runs, times=1), essential=True)
        await until(lambda: fatal == ["store-writer"])
    assert runs == [0]  # never restarted
    assert any(record.exc_info for record in caplog.records if "store-writer" in record.getMessage())
    assert await tasks.stop(grace=1) == []


async def test_every_runs_until_the_daemon_stops_and_stop_waits_for_the_current_step() -> None:
    stopping = asyncio.Event()
    tasks = supervisor(stopping)
    steps: list[str] = []
    finish = asyncio.Event()

    async def step() -> None:
        steps.append("start")
        if steps.count("start") == 3:
            stopping.set()
            await finish.wait()
        steps.append("end")

    tasks.every("gc", 0.001, step)
    await until(lambda: len(steps) == 5)
    stopper = asyncio.create_task(tasks.stop(grace=10))
    await asyncio.sleep(0)
    assert not stopper.done()  # the step in progress runs to its end
    finish.set()
    assert await stopper == []
    assert steps == ["start", "end", "start", "end", "start", "end"]


def test_backoff_doubles_up_to_its_bound_and_resets_after_a_long_run() -> None:
    backoff = Backoff(initial=0.5, maximum=4)
    assert backoff.after(None, ran_for=0) == 0.5
    assert backoff.after(0.5, ran_for=0.1) == 1
    assert backoff.after(2, ran_for=0.1) == 4
    assert backoff.after(4, ran_for=0.1) == 4
    assert backoff.after(4, ran_for=4) == 0.5
