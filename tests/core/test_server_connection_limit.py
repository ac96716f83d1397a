"""``connectionLimit`` bounds the requests being served, not those held for the daemon's readiness.

DEL needs nothing but the checkpoint, so the daemon serves it as soon as its store is open; ADDs are
held until it is ready (start-up recovery done). An ADD held so took one of the ``connectionLimit``
slots while it waited: after a reboot, with the runtime re-creating its sandboxes while the daemon
recovers, the held ADDs took every slot and each DEL waited behind them for the daemon's readiness
(up to the shim's DEL deadline, then spooled) though it could have been served at once.
"""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest

from app.daemon.server import CniServer
from tests.core.support import Command, Node, new_container_id, pending
from tests.core.test_server_ordering import _WatchedReadiness
from tests.core.test_server_protocol import body, daemon_config

DEL_BOUND_SECONDS = 30.0
"""How long the test waits for the DEL before it fails (it is answered at once when it passes)."""


async def test_a_del_is_served_while_adds_held_for_readiness_fill_every_slot(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    added, held = new_container_id(), new_container_id()
    engine = node.engine()
    await engine.add(node.request(Command.ADD, added, node.new_netns(), conf))  # the last run's sandbox
    readiness = _WatchedReadiness(store_open=True, recovered=False)
    cni_server = CniServer(
        engine=engine,
        daemon_config=daemon_config(node, "cluster"),
        readiness=readiness,
        connection_limit=1,
        ready_hold=3600.0,  # held until recovery finishes below
    )
    client: TestClient[BaseRequest, None] = TestClient(RawTestServer(cni_server.handle))
    await client.start_server()
    try:
        add = asyncio.create_task(client.post("/cni", data=body("ADD", held, node.new_netns().path)))
        await readiness.holding.wait()

        deleted = await asyncio.wait_for(
            client.post("/cni", data=body("DEL", added, "")), timeout=DEL_BOUND_SECONDS
        )

        assert deleted.status == 200
        assert not add.done(), "the ADD is still held for readiness"
        readiness.recovered = True
        assert (await add).status == 200
    finally:
        readiness.recovered = True  # nothing left held, whatever failed
        await cni_server.drain(DEL_BOUND_SECONDS)
        await client.close()
    assert pending(node.checkpoint(added)) == []
    await engine.delete(node.request(Command.DEL, held, None, conf))
