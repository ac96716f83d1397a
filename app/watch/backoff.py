"""Capped exponential backoff with jitter, and a token bucket: the two pacing tools of this package.

Used by the watch loops (reconnect delays), the status publisher (retry delays) and the event
poster (rate). Generic: no Kubernetes, no I/O beyond ``asyncio.sleep``; a test may pass its own
``random`` and ``clock``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable


class Backoff:
    """Delays ``initial, 2*initial, 4*initial, ...`` capped at ``maximum``, each jittered.

    ``reset`` starts over after a success; ``next_delay`` returns the delay to wait now. With
    ``reset_after``, an attempt that lasted that long (from ``started`` to ``next_delay``) counts
    as a success too: it ran without error, so the failure that ended it is a first one.
    """

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        jitter: float,
        reset_after: float = math.inf,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._reset_after = reset_after
        self._rng = rng
        self._clock = clock
        self._attempt = 0
        self._started_at: float | None = None

    @property
    def attempt(self) -> int:
        """Consecutive failures since the last reset."""
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0

    def started(self) -> None:
        """An attempt begins now."""
        self._started_at = self._clock()

    def next_delay(self) -> float:
        if self._started_at is not None and self._clock() - self._started_at >= self._reset_after:
            self._attempt = 0
        self._started_at = None
        base = min(self._maximum, self._initial * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        factor = 1.0 + self._jitter * (2.0 * self._rng() - 1.0)
        return base * factor


class TokenBucket:
    """At most ``burst`` at once, refilled at ``rate`` per second; ``acquire`` waits for a token."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self) -> None:
        while True:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self._rate)
