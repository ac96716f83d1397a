"""What the asyncio task machinery does not say outright: whether a cancellation was asked for.

Used by the daemon's task supervisor (``app.daemon.supervise``) and the watchers (``app.watch``),
which both treat a ``CancelledError`` their own task was not asked for (one raised out of a future
another party cancelled) as a crash, not as the end they were told to make. Standard library only,
no state.
"""

from __future__ import annotations

import asyncio


def cancel_requested() -> bool:
    """Whether the running task was asked to cancel (``Task.cancel``: a stop, its TaskGroup, a
    timeout), rather than handed a ``CancelledError`` by something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
