"""Requests on one container are served in arrival order, also while the daemon is not ready yet.

An ADD that arrives before readiness is held for it; a DEL of the same container that arrives
meanwhile (the runtime gave up on the ADD) must not overtake it: served first, it would find
nothing, and the held ADD would then attach a sandbox nobody ever deletes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest

from app.daemon.server import CniServer, Readiness
from tests.core.support import Node, new_container_id
from tests.core.test_server_protocol import body, daemon_config


@dataclass
class _WatchedReadiness(Readiness):
    """Readiness that tells when a request starts waiting for it."""

    holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_ready(self, seconds: float) -> bool:
        self.holding.set()
        return await super().wait_ready(seconds)


class _WatchedServer(CniServer):
    """A CNI server that tells when each operation is started (its name in ``started``)."""

    started: dict[str, asyncio.Event]

    async def _run_shielded(self, operation: Awaitable[Any], *, name: str) -> Any:
        self.started.setdefault(name, asyncio.Event()).set()
        return await super()._run_shielded(operation, name=name)


async def test_a_del_arriving_while_the_same_containers_add_is_held_for_readiness_waits_for_it(
    node: Node,
) -> None:
    netns = node.new_netns()
    container = new_container_id()
    readiness = _WatchedReadiness(store_open=True, recovered=False)
    cni_server = _WatchedServer(
        engine=node.engine(),
        daemon_config=daemon_config(node, node.recorder_network("cluster")),
        readiness=readiness,
        ready_hold=3600.0,  # held until recovery finishes below
    )
    cni_server.started = {}
    del_started = cni_server.started.setdefault(f"cni-DEL-{container[:12]}", asyncio.Event())
    client: TestClient[BaseRequest, None] = TestClient(RawTestServer(cni_server.handle))
    await client.start_server()
    try:
        add = asyncio.create_task(client.post("/cni", data=body("ADD", container, netns.path)))
        await readiness.holding.wait()
        delete = asyncio.create_task(client.post("/cni", data=body("DEL", container, netns.path)))
        # The DEL has arrived: its operation is started (before the held ADD's, or queued behind it).
        await del_started.wait()
        readiness.recovered = True
        added, deleted = await add, await delete
        assert (added.status, deleted.status) == (200, 200)
    finally:
        await client.close()

    assert node.calls() == [("ADD", "cluster", "eth0"), ("DEL", "cluster", "eth0")]
    assert node.checkpoint(container) is None
