"""Prometheus ``/metrics`` over TCP on ``metricsPort`` (upstream's key); off when it is unset.

Serves ``app.metrics.REGISTRY`` in the text exposition format. Never on the CNI socket: upstream
answers 404 there for ``/metrics``, and so do we.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.daemon.server import CLOSE_ANSWER_SECONDS


async def _metrics(_request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start(port: int, host: str = "0.0.0.0") -> web.AppRunner:  # upstream listens on ":port"
    """Listen on ``host:port``; return the runner to stop it with."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_ANSWER_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
