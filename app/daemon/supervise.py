"""The one guard every long-lived task of the daemon runs under, and the "every N seconds" loop.

``app.daemon.startup`` starts the watchers, the mirror-synced and readiness-indicator followers,
the ``00-multus.conf`` keeper, garbage collection and history retention through ``Supervisor``.
A task that raises is logged with its traceback (and counted in
``multus_py_task_crashes_total``) and started again after a pause that doubles from
``Timeouts.task_restart_initial`` up to ``task_restart_max`` (reset once it ran that long without
crashing), while the daemon serves on. A task marked ``essential`` cannot be restarted: its crash
stops the daemon cleanly (staged shutdown, exit status 1). A task that returns is done. Never
swallows cancellation: ``stop`` cancels what is still running and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

from app import metrics

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

    def spawn(self, name: str, run: Callable[[], Awaitable[None]], *, essential: bool = False) -> None:
        """Run ``run()`` (a fresh call per start) under the guard, as task ``name``."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} already runs")
        self._tasks[name] = asyncio.create_task(self._guard(name, run, essential=essential), name=name)

    def every(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step()`` now and then every ``interval`` seconds until the daemon stops (guarded)."""

        async def loop() -> None:
            while not self._stopping.is_set():
                await step()
                await self.pause(interval)

        self.spawn(name, loop)

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

    async def _guard(self, name: str, run: Callable[[], Awaitable[None]], *, essential: bool) -> None:
        pause: float | None = None
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await run()
                return
            except Exception:
                metrics.TASK_CRASHES.labels(name).inc()
                if essential:
                    log.critical("task %s crashed and cannot be restarted: stopping", name, exc_info=True)
                    self._on_fatal(name)
                    return
                pause = self._backoff.after(pause, ran_for=time.monotonic() - started)
                log.error("task %s crashed; restarting it in %.1fs", name, pause, exc_info=True)
            await self.pause(pause)
