"""The daemon with probes: ``python -m bench.traced_daemon --config FILE`` runs ``multus-daemon`` as
``app.daemon.main`` does, and records when each step of a request starts and ends.

Only ``bench.timeline`` starts it. Each probe appends (``time.perf_counter()``, step) to a list
in memory, which a thread writes out every half second to the file named by ``TRACE_FILE_ENV``
(the daemon is stopped with a signal, so nothing runs at its exit). ``perf_counter`` reads
``CLOCK_MONOTONIC``, one clock for every process of the machine: the client's own readings of when
it sent a request and had its answer are comparable with these.

The probes wrap the steps by name, so a renamed step fails here at once (``AttributeError``), never
silently; each costs a few microseconds, which the timeline includes.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

TRACE_FILE_ENV = "MULTUS_BENCH_TRACE_FILE"
FLUSH_INTERVAL = 0.5

_events: list[tuple[float, str]] = []


def mark(step: str) -> None:
    _events.append((time.perf_counter(), step))


def _probe_sync(owner: Any, name: str, step: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def probed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{step}+")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{step}-")

    setattr(owner, name, probed)


def _probe_async(owner: Any, name: str, step: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def probed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{step}+")
        try:
            return await original(*args, **kwargs)
        finally:
            mark(f"{step}-")

    setattr(owner, name, probed)


def _probe_before(owner: Any, name: str, step: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def probed(*args: Any, **kwargs: Any) -> Any:
        mark(step)
        return original(*args, **kwargs)

    setattr(owner, name, probed)


def _probe_submitted_write(database_class: Any) -> None:
    """``submit_write`` returns a future: its step ends when the loop sees the future done."""
    original = database_class.submit_write

    @functools.wraps(original)
    def probed(*args: Any, **kwargs: Any) -> Any:
        mark("submit+")
        future = original(*args, **kwargs)
        future.add_done_callback(lambda _done: mark("submit-"))
        return future

    database_class.submit_write = probed


def install_probes() -> None:
    """Wrap the steps of a CNI request: the connection and its bytes arriving (aiohttp), the route
    handler, the engine's ADD and DEL, the store's writes (on the loop: awaited, submitted; in the
    writer thread: each batch), the plugin's spawn and the loop's seeing it exit."""
    from aiohttp import web_protocol

    from app.attach import engine
    from app.cni import child
    from app.daemon import server
    from app.store import database

    _probe_before(web_protocol.RequestHandler, "connection_made", "connected")
    _probe_before(web_protocol.RequestHandler, "data_received", "bytes")
    _probe_async(server.CniServer, "handle", "handler")
    _probe_async(engine.AttachEngine, "add", "engine ADD")
    _probe_async(engine.AttachEngine, "delete", "engine DEL")
    _probe_async(database.Database, "write", "write")
    _probe_async(database.Database, "write_then_sync", "write then sync")
    _probe_submitted_write(database.Database)
    _probe_sync(database._Writer, "_run_batch", "writer batch")
    _probe_sync(child, "spawn", "spawn")
    _probe_sync(child.Child, "_on_exit", "plugin exit seen")


def _write_out(path: str) -> None:
    lines = "".join(f"{at:.7f} {step}\n" for at, step in list(_events))
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        out.write(lines)
    os.replace(temporary, path)


def _flush_forever(path: str) -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        _write_out(path)


def main() -> None:
    path = os.environ[TRACE_FILE_ENV]
    install_probes()
    threading.Thread(target=_flush_forever, args=(path,), name="trace-flush", daemon=True).start()
    sys.argv = ["multus-daemon", *sys.argv[1:]]
    runpy.run_module("app.daemon.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
