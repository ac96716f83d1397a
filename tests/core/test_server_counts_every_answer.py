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


def _request_count(handler: str, code: str, method: str) -> float:
    """The sample of ``multus_server_request_total`` with exactly these label values, as scraped."""
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "multus_server_request"  # a counter's family drops "_total"
        for sample in family.samples
        if sample.name == "multus_server_request_total"
        and sample.labels == {"handler": handler, "code": code, "method": method}
    )


async def test_requests_are_counted_with_the_method_spelt_as_upstreams_promhttp_spells_it(
    serve: Serve,  # noqa: F811 - the fixture imported above
) -> None:
    """Upstream's counter comes from promhttp, which lower-cases the method (``method="post"``) and
    counts a method it does not know as ``unknown``: written ``POST`` and ``other``, the series a
    dashboard or alert made for upstream's daemon selects stayed empty."""
    before = {
        labels: _request_count(*labels)
        for labels in (("/cni", "400", "post"), ("/healthz", "200", "get"), ("/healthz", "405", "unknown"))
    }
    async with serve(ready()) as client:
        refused = await client.post("/cni", data=b"not json")
        healthy = await client.get("/healthz")
        webdav = await client.request("PROPFIND", "/healthz")  # HTTP parses it; promhttp knows no such

    assert (refused.status, healthy.status, webdav.status) == (400, 200, 405)
    assert {labels: _request_count(*labels) - count for labels, count in before.items()} == {
        ("/cni", "400", "post"): 1,
        ("/healthz", "200", "get"): 1,
        ("/healthz", "405", "unknown"): 1,
    }
