"""Prometheus ``/metrics`` over TCP on ``metricsPort`` (upstream's key); off when it is unset.

Serves ``app.metrics.REGISTRY`` in the text exposition format. Never on the CNI socket: upstream
answers 404 there for ``/metrics``, and so do we. Started by ``app.daemon.startup`` once the CNI
socket serves; a port that cannot be bound (another process holds it) is logged and the daemon
serves on without ``/metrics``, as upstream's does: metrics serve operators, and a node must not
lose its pod networking over them.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.daemon.server import CLOSE_ANSWER_SECONDS

log = logging.getLogger(__name__)


async def _metrics(_request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start(port: int, host: str = "0.0.0.0") -> web.AppRunner | None:  # upstream listens on ":port"
    """Listen on ``host:port``; return the runner to stop it with, or None (logged) when the
    address cannot be bound."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_ANSWER_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        log.error(
            "metricsPort %d: cannot listen on %s:%d, serving without /metrics: %s", port, host, port, exc
        )
        return None
    return runner
