"""The one guard every long-lived task of the daemon runs under, and the "every N seconds" loop.

``app.daemon.startup`` starts the watchers, the mirror-synced and readiness-indicator followers,
the ``00-multus.conf`` keeper, garbage collection and history retention through ``Supervisor``.
A task that raises is logged with its traceback (and counted in
``multus_py_task_crashes_total``) and started again after a pause that doubles from
``Timeouts.task_restart_initial`` up to ``task_restart_max`` (reset once it ran that long without
crashing), while the daemon serves on. A task marked ``essential`` cannot be restarted: its crash
stops the daemon cleanly (staged shutdown, exit status 1). Two other ends count as crashes, so no
task dies silently and leaves a daemon that answers ADDs but no longer watches, collects or
replays: a ``until_stopped`` task (one meant to run as long as the daemon: the watchers, hot-plug,
every ``every`` loop) that returns while the daemon is not stopping, and a task ended by a
``CancelledError`` that no ``cancel`` of its own asked for (one raised from a future something else
cancelled). Any other task that returns is done. Never swallows the cancellation ``stop`` asks
for: it cancels what is still running and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

from app import aiotasks, metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float
    maximum: float

    def after(self, previous: float | None, *, ran_for: float) -> float:
        """The pause before the next restart, given the previous pause and how long the run lasted."""
        if previous is None or ran_for >= self.maximum:
            return self.initial
        return min(previous * 2, self.maximum)


class Supervisor:
    """Runs named tasks under the guard; ``stopping`` is the daemon's stop event."""

    def __init__(self, *, stopping: asyncio.Event, backoff: Backoff, on_fatal: Callable[[str], None]) -> None:
        self._stopping = stopping
        self._backoff = backoff
        self._on_fatal = on_fatal
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def names(self) -> list[str]:
        """The tasks still running."""
        return [name for name, task in self._tasks.items() if not task.done()]

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        essential: bool = False,
        until_stopped: bool = False,
    ) -> None:
        """Run ``run()`` (a fresh call per start) under the guard, as task ``name``. ``until_stopped``:
        it must not return before the daemon stops (a return then is handled as a crash)."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} already runs")
        guarded = self._guard(name, run, essential=essential, until_stopped=until_stopped)
        self._tasks[name] = asyncio.create_task(guarded, name=name)

    def every(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step()`` now and then every ``interval`` seconds until the daemon stops (guarded)."""

        async def loop() -> None:
            while not self._stopping.is_set():
                await step()
                await self.pause(interval)

        self.spawn(name, loop, until_stopped=True)

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until the daemon stops, whichever comes first."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, *, grace: float) -> list[str]:
        """Wait up to ``grace`` seconds for the tasks to end on their own (the stop event is set),
        then cancel the rest and wait for them; return the names of those cancelled."""
        running = [task for task in self._tasks.values() if not task.done()]
        if running:
            await asyncio.wait(running, timeout=grace)
        late = [task for task in running if not task.done()]
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        return [task.get_name() for task in late]

    async def _guard(
        self, name: str, run: Callable[[], Awaitable[None]], *, essential: bool, until_stopped: bool
    ) -> None:
        pause: float | None = None
        while not self._stopping.is_set():
            started = time.monotonic()
            failure: BaseException | None = None
            try:
                await run()
            except asyncio.CancelledError as cancelled:
                if aiotasks.cancel_requested():
                    raise  # ``stop``, or whoever owns the task: it ends cancelled
                how, failure = "crashed (a cancellation nobody asked it for)", cancelled
            except Exception as crash:
                how, failure = "crashed", crash
            else:
                if not until_stopped or self._stopping.is_set():
                    return
                how = "ended while the daemon runs"
            metrics.TASK_CRASHES.labels(name).inc()
            if essential:
                log.critical("task %s %s and cannot be restarted: stopping", name, how, exc_info=failure)
                self._on_fatal(name)
                return
            pause = self._backoff.after(pause, ran_for=time.monotonic() - started)
            log.error("task %s %s; restarting it in %.1fs", name, how, pause, exc_info=failure)
            del failure  # its traceback holds the crashed run's frames: not kept through the pause
            await self.pause(pause)
