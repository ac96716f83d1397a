"""An ADD refused "already attached" whose sandbox's spooled DEL a GC pass replays meanwhile.

The refused ADD runs the DELs spooled for its container ID (``spool.replay_for``) and is judged
again when one ran. A GC pass replays the same spool at the same time, outside that ADD's turn: it
may take the entry first (between the ADD's refusal and its own look at the spool), DEL the
sandbox and remove the entry. The ADD must then be judged again all the same: the sandbox that
refused it is gone. In process: real store, real plugins, the daemon's own server.
"""

from __future__ import annotations

from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import BaseRequest

from app.attach.requests import Command
from app.daemon import spool
from app.daemon.server import CniServer, Readiness
from tests.core.support import Node, new_container_id
from tests.core.test_server_protocol import body, daemon_config
from tests.core.test_spool_replay import spool_entry


class _GcPassFirst(CniServer):
    """A server on which a GC pass replays the spool between an ADD's refusal and that ADD's own
    replay of its container's entries (the pass got the event loop in between)."""

    gc_reports: list[spool.SpoolReport]

    async def _replay_spooled_dels_of(self, container_id: str) -> bool:
        assert self.spool_dir is not None
        self.gc_reports.append(
            await spool.replay(
                spool_dir=self.spool_dir,
                engine=self.engine,
                daemon_config=dict(self.daemon_config),
                shim_default_dir=self.spool_dir.parent / "shim-default",
            )
        )
        return await super()._replay_spooled_dels_of(container_id)


async def test_an_add_whose_sandboxs_spooled_del_a_gc_pass_ran_meanwhile_is_served(node: Node) -> None:
    container = new_container_id()
    cluster = node.recorder_network("cluster")
    first = node.new_netns()
    await node.engine().add(node.request(Command.ADD, container, first, node.conf(cluster)))
    spool_dir = node.root / "spool"
    entry = spool_entry(spool_dir, container)  # the runtime's DEL of it, spooled after its ADD
    cni_server = _GcPassFirst(
        engine=node.engine(),
        daemon_config=daemon_config(node, cluster),
        readiness=Readiness(store_open=True, recovered=True),
        spool_dir=spool_dir,
    )
    cni_server.gc_reports = []
    second = node.new_netns()
    client: TestClient[BaseRequest, None] = TestClient(RawTestServer(cni_server.handle))
    await client.start_server()
    try:
        answer = await client.post("/cni", data=body("ADD", container, second.path))
        text = await answer.text()
    finally:
        await client.close()

    assert [report.replayed for report in cni_server.gc_reports] == [[entry.name]]
    assert answer.status == 200, text
    recorded = node.checkpoint(container)
    assert recorded is not None
    assert recorded.netns == second.path
    assert [command for command, _, _ in node.calls()] == ["ADD", "DEL", "ADD"]
