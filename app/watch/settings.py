"""Every timeout, bound and rate of the Kubernetes side of the daemon, in one frozen dataclass.

Built by ``app.daemon`` (defaults, or values from daemon-config.json) and handed to ``Watchers``;
modules of this package read their limits from it and never from the environment or globals.
Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Seconds unless the name says otherwise."""

    request_timeout: float = 10.0
    """Bound on one ordinary request (GET, LIST page, PATCH, POST), connection included."""
    watch_server_timeout: int = 300
    """``timeoutSeconds`` asked of the API server for one watch stream (jittered by up to 10%)."""
    watch_inactivity_timeout: float = 330.0
    """A stream that sends nothing (not even a bookmark) for this long is closed and reopened:
    it catches half-open connections the server will never end."""
    list_page_size: int = 100
    """Objects per LIST page: at most one page of raw objects is in memory at a time."""
    event_batch_size: int = 256
    """Most watch events written to the mirror in one transaction."""
    event_buffer_size: int = 1024
    """Watch events read ahead of the mirror writer before the reader waits (memory bound): a
    stream takes no more from its connection while this many complete events wait for the writer
    (one read of at most 64 KiB may overshoot); the connection's bounded read buffer fills, and
    TCP flow control holds the server back."""
    position_persist_interval: float = 5.0
    """How long a watch position reached without any mirrored change (bookmarks, echoes of our
    own status patches) may stay unwritten; a restart then replays a few harmless events."""
    resume_settle: float = 0.5
    """After resuming from a stored resourceVersion (once a LIST at it showed the server has
    reached it), the mirror counts as synced at the first bookmark, or once the stream has been
    quiet this long (the server's replay is over)."""

    backoff_initial: float = 0.2
    """First delay before reconnecting after an error; doubles up to ``backoff_max``."""
    backoff_max: float = 30.0
    """Longest delay before reconnecting; also the most of a server's ``Retry-After`` (429, 503)
    that is waited for (a shorter delay never is)."""
    backoff_jitter: float = 0.2
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    backoff_reset_after: float = 30.0
    """A watch that ran this long without error resets the backoff to ``backoff_initial``: the
    failure that ends it is waited for as a first one (a write to the mirror resets it too)."""

    pod_wait: float = 2.0
    """How long ``get_pod`` waits for the watch to bring a pod missing from the mirror before
    asking the API once."""
    nad_sync_wait: float = 5.0
    """How long ``get_nad`` waits for the first sync of the NAD mirror."""

    status_retry_delays: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    """Delays between attempts of the network-status PATCH (409, 429, 5xx, unreachable); their
    count is the number of retries."""
    status_deadline: float = 5.0
    """Bound on the whole network-status write, every attempt included."""

    event_queue_size: int = 256
    """``AddedInterface`` events waiting to be posted; more are dropped and counted."""
    event_rate: float = 20.0
    """Events posted per second at most (a token bucket of its own, never shared with the watches)."""
    event_burst: int = 20
    event_timeout: float = 5.0
    """Bound on one event POST."""
    event_delay: float = 0.005
    """How long an event offered to an idle poster waits before it is posted (those offered
    meanwhile go right after it): the ADD that offered it answers first, with no event's POST in
    its way. 0: post at once."""

    def __post_init__(self) -> None:
        positive = {
            "request_timeout": self.request_timeout,
            "watch_server_timeout": self.watch_server_timeout,
            "watch_inactivity_timeout": self.watch_inactivity_timeout,
            "list_page_size": self.list_page_size,
            "event_batch_size": self.event_batch_size,
            "event_buffer_size": self.event_buffer_size,
            "backoff_initial": self.backoff_initial,
            "backoff_max": self.backoff_max,
            "backoff_reset_after": self.backoff_reset_after,
            "event_queue_size": self.event_queue_size,
            "event_rate": self.event_rate,
            "event_burst": self.event_burst,
            "event_timeout": self.event_timeout,
            "status_deadline": self.status_deadline,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"WatchSettings.{name} must be positive, got {value}")
        if self.event_delay < 0:
            raise ValueError(f"WatchSettings.event_delay must not be negative, got {self.event_delay}")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError(f"WatchSettings.backoff_jitter must be in [0, 1), got {self.backoff_jitter}")
