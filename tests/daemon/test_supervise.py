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


async def test_a_long_lived_task_that_returns_while_the_daemon_runs_is_logged_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchers or hot-plug returning early ended their task silently: the daemon answered
    ADDs on a mirror nobody updated any more."""
    stopping = asyncio.Event()
    tasks = supervisor(stopping)
    runs: list[int] = []

    async def returns_twice() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            return
        await asyncio.Event().wait()

    before = metrics.TASK_CRASHES.labels("watchers")._value.get()
    with caplog.at_level(logging.ERROR, logger="app.daemon.supervise"):
        tasks.spawn("watchers", returns_twice, until_stopped=True)
        await until(lambda: len(runs) == 3)
    assert tasks.names == ["watchers"]
    ended = [
        record for record in caplog.records if "task watchers ended while the daemon runs" in record.message
    ]
    assert len(ended) == 2
    assert metrics.TASK_CRASHES.labels("watchers")._value.get() == before + 2

    stopping.set()
    assert await tasks.stop(grace=0.01) == ["watchers"]


async def test_a_task_ended_by_a_cancellation_it_was_not_asked_for_is_logged_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CancelledError raised out of something the task awaited (a future another party cancelled)
    ended the task as if the daemon had stopped it: no log line, no restart."""
    stopping = asyncio.Event()
    tasks = supervisor(stopping)
    runs: list[int] = []

    async def awaits_a_cancelled_future() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="app.daemon.supervise"):
        tasks.spawn("gc", awaits_a_cancelled_future)
        await until(lambda: len(runs) == 2)
    assert tasks.names == ["gc"]
    crashes = [record for record in caplog.records if "task gc crashed" in record.message]
    assert len(crashes) == 1
    assert crashes[0].exc_info
    assert isinstance(crashes[0].exc_info[1], asyncio.CancelledError)

    stopping.set()
    assert await tasks.stop(grace=0.01) == ["gc"]  # the stop's own cancellation still ends it


async def test_a_one_shot_task_that_returns_is_done() -> None:
    stopping = asyncio.Event()
    tasks = supervisor(stopping)
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    tasks.spawn("mirror-synced", once)
    await until(lambda: runs == [1] and tasks.names == [])
    assert await tasks.stop(grace=0.01) == []
    assert runs == [1]
