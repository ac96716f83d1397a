"""How far each mirrored resource can be trusted: synced since start-up, and how fresh it is.

One ``MirrorState`` per watch, updated only by that watch's mirror writer and loop; read by the
daemon (``/readyz`` waits for ``synced``), the NAD source (waits for the first sync), GC (invariant
10 in docs/invariants.md: a mirror not synced since start-up is no proof that a pod is gone) and
operators (``status()``: lag, relists, errors). ``synced`` is never cleared: during an outage the
last known mirror keeps being served, and ``lag`` tells how old it is. No I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """A snapshot of one ``MirrorState`` for ``/readyz``, metrics and ``multusctl``."""

    key: str
    synced: bool
    synced_at: datetime | None
    resource_version: str
    last_event_at: datetime | None
    lag_seconds: float | None
    """Seconds since the stream last sent anything (event or bookmark); None before the first."""
    relists: int
    events: int
    errors: int
    last_error: str | None


class MirrorState:
    def __init__(self, key: str) -> None:
        self.key = key
        self.synced = asyncio.Event()
        self.synced_at: datetime | None = None
        self.resource_version = ""
        self.last_event_at: datetime | None = None
        self._last_seen: float | None = None
        self.relists = 0
        self.events = 0
        self.errors = 0
        self.last_error: str | None = None

    def mark_synced(self) -> None:
        self.synced_at = datetime.now(UTC)
        self.synced.set()

    def note_relist(self, resource_version: str) -> None:
        self.relists += 1
        self.resource_version = resource_version
        self._last_seen = time.monotonic()
        self.mark_synced()

    def note_progress(self, resource_version: str, *, events: int) -> None:
        """The stream delivered ``events`` events (0: a bookmark), written up to ``resource_version``."""
        self.resource_version = resource_version
        self._last_seen = time.monotonic()
        if events:
            self.events += events
            self.last_event_at = datetime.now(UTC)

    def note_error(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"

    def lag(self) -> float | None:
        return None if self._last_seen is None else time.monotonic() - self._last_seen

    def status(self) -> MirrorStatus:
        return MirrorStatus(
            key=self.key,
            synced=self.synced.is_set(),
            synced_at=self.synced_at,
            resource_version=self.resource_version,
            last_event_at=self.last_event_at,
            lag_seconds=self.lag(),
            relists=self.relists,
            events=self.events,
            errors=self.errors,
            last_error=self.last_error,
        )
