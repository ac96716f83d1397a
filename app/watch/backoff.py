"""Capped exponential backoff with jitter, and a token bucket: the two pacing tools of this package.

Used by the watch loops (reconnect delays), the status publisher (retry delays) and the event
poster (rate). Generic: no Kubernetes, no I/O beyond ``asyncio.sleep``; a test may pass its own
``random`` and ``clock``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


class Backoff:
    """Delays ``initial, 2*initial, 4*initial, ...`` capped at ``maximum``, each jittered.

    ``reset`` starts over after a success; ``next_delay`` returns the delay to wait now.
    """

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        jitter: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._rng = rng
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Consecutive failures since the last reset."""
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
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
