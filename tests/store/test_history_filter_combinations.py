"""A pod filter and a bare network filter that each match many recorded values cost what their
values cost, not their product: a tenant per namespace, each with a NAD of the same name and a pod
of the same name (``web-0`` of a StatefulSet), is an ordinary multi-tenant node. The page's query is
built in the daemon (the query API's reader thread) on every page of ``multusctl history``."""

from __future__ import annotations

import tracemalloc
from functools import partial

from app.store import history
from app.store.database import Connection, Database
from app.store.filters import HistoryFilter
from app.store.records import HistoryEntry, PodIdentity

TENANTS = 300
"""Namespaces, each with pod ``web`` on network ``<namespace>/net``: 90,000 combinations."""
MEMORY_BOUND = 1024 * 1024
"""Bytes building one page's query may take: its values are a few hundred short strings. The
product of the two filters' values took some 14 MiB here (1.3 GiB and 12 s with 3,000 tenants)."""


def _tenant_line(index: int) -> HistoryEntry:
    namespace = f"tenant-{index:04d}"
    return HistoryEntry(
        command="ADD",
        step="delegate",
        trigger="runtime",
        outcome="ok",
        container_id=f"c{index:063d}",
        network_name=f"{namespace}/net",
        pod=PodIdentity(namespace, "web", "uid"),
    )


def test_a_pod_and_a_network_found_in_many_namespaces_are_not_multiplied(db: Database) -> None:
    db.write_sync(partial(history.append_all, entries=[_tenant_line(index) for index in range(TENANTS)]))
    where = HistoryFilter(pod="web", network="net", limit=10)

    def statement_memory(connection: Connection) -> tuple[int, history.PageQuery | None]:
        tracemalloc.start()
        try:
            statement = history.page_statement(connection, where, before_id=None, size=where.limit)
            return tracemalloc.get_traced_memory()[1], statement
        finally:
            tracemalloc.stop()

    peak, statement = db.read_sync(statement_memory)
    lines = db.read_sync(partial(history.query, where=where))

    assert statement is not None
    assert peak < MEMORY_BOUND, f"building one page's query took {peak} bytes"
    assert [line.entry.pod.namespace for line in lines] == [
        f"tenant-{index:04d}" for index in range(TENANTS - 1, TENANTS - 11, -1)
    ]
