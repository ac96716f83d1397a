"""``metricsPort`` bound by another process: the daemon serves on without ``/metrics``.

The metrics endpoint's start raised ``OSError`` out of the daemon's start-up: it exited with a
traceback before it served a single CNI request, and restarted into the same port for ever (a
node without pod networking over its metrics; upstream's daemon serves on).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from app.daemon import metrics_server


@pytest.fixture
def held_port() -> Iterator[int]:
    """A TCP port on the loopback address that another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_a_metrics_port_another_process_holds_is_logged_and_not_served(
    held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.daemon.metrics_server"):
        runner = await metrics_server.start(held_port, host="127.0.0.1")
    assert runner is None
    assert f"metricsPort {held_port}: cannot listen on 127.0.0.1:{held_port}" in caplog.text


async def test_a_free_metrics_port_serves_the_registry() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = await metrics_server.start(port, host="127.0.0.1")
    assert runner is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"# TYPE multus_server_request_total counter" in answer
