"""``multus_server_request_total`` counts every request the daemon's socket answers, one whose
handler failed unexpectedly too (the CNI server in process: real store, GC and plugins)."""

from __future__ import annotations

from app import metrics
from app.store.database import Database
from tests.core.support import Node
from tests.core.test_server_protocol import Serve, ready, serve  # noqa: F401 - the fixture


async def test_an_operator_gc_that_fails_unexpectedly_is_answered_a_cni_error_and_counted(
    node: Node,
    serve: Serve,  # noqa: F811 - the fixture imported above
) -> None:
    """An exception out of ``POST /gc`` (the state database closed under it) went past the request
    counter to aiohttp's own 500 (a plain-text one here, outside the daemon's connection class):
    ``multus_server_request_total`` missed it."""
    counted = metrics.labelled(metrics.SERVER_REQUESTS, "/gc", "500", "POST")
    before = counted._value.get()
    async with serve(ready(), with_collector=True) as client:
        node.db.close()
        try:
            answer = await client.post("/gc")
            error = await answer.json()
        finally:
            node.db = Database.open(node.state_db)

    assert answer.status == 500
    assert error["code"] == 999
    assert "RuntimeError" in error["msg"]
    assert counted._value.get() == before + 1
