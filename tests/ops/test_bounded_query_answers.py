"""A whole-history answer costs the daemon a page of lines, not the history.

``GET /v1/history?limit=0`` (``multusctl history --limit 0``) once built every matching line as a
document, then the whole JSON text, in the daemon: with ``historyMaxRows`` at a million, one
request held a million documents at once. The same for a huge explicit ``limit`` and for ``show``
of a container with a long history. Measured deterministically, in process: every history document
the query API builds is counted while it is alive (CPython frees it as its last reference goes), so
the peak is the number of lines the daemon holds at once. The answer must stay the same document,
byte for byte, and multusctl must read a streamed one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient, TestServer

from app.cli import main as cli
from app.daemon.query_server import QueryServer
from app.store import filters, history, queries
from app.store.database import Database
from app.store.records import HistoryEntry, HistoryLine, PodIdentity
from app.store.records_sql import cursor_of

LINES = 3_000
START = datetime(2026, 1, 1, tzinfo=UTC)
"""The first line's time; line N is N seconds later."""
HELD_AT_ONCE = 500
"""README "Operating": the query API holds at most this many history lines of an answer at once."""
LONG_LIVED = "c" * 64
"""A container with more lines than a page: a DEL retried by every GC pass for days looks so."""


class _Counted(dict[str, Any]):
    """A history document that counts itself while it is alive."""

    alive = 0
    peak = 0

    def __init__(self, document: queries.HistoryDoc) -> None:
        super().__init__(document)
        _Counted.alive += 1
        _Counted.peak = max(_Counted.peak, _Counted.alive)

    def __del__(self) -> None:
        _Counted.alive -= 1


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[_Counted]:
    built = queries.history_doc

    def counting(line: HistoryLine) -> queries.HistoryDoc:
        return _Counted(built(line))  # type: ignore[return-value]

    _Counted.alive = _Counted.peak = 0
    monkeypatch.setattr(queries, "history_doc", counting)
    return _Counted


def _entry(serial: int, *, start: datetime) -> HistoryEntry:
    long_lived = serial % 2 == 0
    return HistoryEntry(
        command="DEL" if long_lived else "ADD",
        step="request",
        trigger="gc" if long_lived else "runtime",
        outcome="error" if long_lived else "ok",
        container_id=LONG_LIVED if long_lived else f"{serial:064x}",
        network_name=f"ns-{serial % 3}/net",
        pod=PodIdentity(f"ns-{serial % 3}", f"pod-{serial % 4}", f"uid-{serial % 4}"),
        error_code=7 if long_lived else None,
        error_msg="busy" if long_lived else None,
        at=start + timedelta(seconds=serial),
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bounded") / "state.db"
    entries = [_entry(serial, start=START) for serial in range(LINES)]
    db = Database.open(path)
    try:
        db.write_sync(lambda connection: history.append_all(connection, entries))
    finally:
        db.close()
    return path


@pytest.fixture
async def client(database: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    db = Database.open(database, read_only=True)
    app = QueryServer(db=db, context=None).application()  # type: ignore[arg-type]  # /v1/status unused
    try:
        async with TestClient(TestServer(app)) as test_client:
            yield test_client
    finally:
        db.close()


def _direct(database: Path, work: Any) -> Any:
    db = Database.open(database, read_only=True)
    try:
        return db.read_sync(work)
    finally:
        db.close()


def _history_direct(database: Path, params: dict[str, str]) -> list[Any]:
    where = filters.parse_history(params, now=datetime.now(UTC))
    return list(_direct(database, lambda connection: queries.history_lines(connection, where)))


async def test_a_whole_history_answer_holds_a_page_of_lines_at_once_not_the_history(
    client: TestClient[web.Request, web.Application], database: Path, counted: type[_Counted]
) -> None:
    response = await client.get("/v1/history", params={"limit": "0"})
    body = await response.read()

    assert response.status == 200
    assert counted.peak <= HELD_AT_ONCE, f"{counted.peak} of {LINES} lines held at once"
    assert body == json.dumps(_history_direct(database, {"limit": "0"})).encode(), "the same document"
    assert len(json.loads(body)) == LINES


@pytest.mark.parametrize(
    "params",
    [
        {"limit": str(2**63 - 1)},
        {"limit": "1234"},
        {"limit": "1000"},
        {"pod": "pod-1", "limit": "0"},
        {"failed": "true", "limit": "999999999"},
        {"since": "2026-01-01T00:25:00Z", "network": "net", "limit": "0"},
    ],
    ids=["largest-limit", "limit-across-pages", "limit-on-a-page-boundary", "pod", "failed", "since"],
)
async def test_a_huge_or_filtered_answer_is_read_a_page_at_a_time_and_is_the_same_document(
    client: TestClient[web.Request, web.Application],
    database: Path,
    counted: type[_Counted],
    params: dict[str, str],
) -> None:
    response = await client.get("/v1/history", params=params)
    body = await response.read()

    assert response.status == 200
    assert counted.peak <= HELD_AT_ONCE
    expected = _history_direct(database, params)
    assert body == json.dumps(expected).encode()
    ids = [line["id"] for line in json.loads(body)]
    assert ids == sorted(set(ids), reverse=True), "newest first, no line twice"


async def test_a_short_answer_is_still_sent_whole_with_its_length(
    client: TestClient[web.Request, web.Application], database: Path
) -> None:
    response = await client.get("/v1/history", params={"pod": "ns-1/pod-1"})
    body = await response.read()

    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Transfer-Encoding" not in response.headers
    assert body == json.dumps(_history_direct(database, {"pod": "ns-1/pod-1"})).encode()


async def test_show_of_a_container_with_a_long_history_holds_a_page_at_once(
    client: TestClient[web.Request, web.Application], database: Path, counted: type[_Counted]
) -> None:
    response = await client.get(f"/v1/sandboxes/{LONG_LIVED}")
    body = await response.read()

    assert response.status == 200
    assert counted.peak <= HELD_AT_ONCE, f"{counted.peak} lines held at once"
    expected = _direct(database, lambda connection: queries.sandbox(connection, LONG_LIVED))
    assert len(expected["history"]) == LINES // 2
    assert body == json.dumps(expected).encode(), "the same document, its history oldest first"


async def test_a_read_failing_mid_answer_leaves_the_body_incomplete_not_a_shorter_list(
    client: TestClient[web.Request, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = queries.history_page
    calls = []

    def failing_second(*args: Any, **kwargs: Any) -> list[queries.HistoryDoc]:
        calls.append(kwargs.get("before_id"))
        if len(calls) == 2:
            raise RuntimeError("disk I/O error")
        return pages(*args, **kwargs)

    monkeypatch.setattr(queries, "history_page", failing_second)
    response = await client.get("/v1/history", params={"limit": "0"})

    assert response.status == 200, "the stream had begun"
    with pytest.raises(ClientPayloadError):
        await response.read()


async def test_head_of_a_streamed_answer_sends_no_body(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.head("/v1/history", params={"limit": "0"})

    assert response.status == 200
    assert await response.read() == b""


def test_multusctl_decodes_a_streamed_whole_history(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def serve_and_ask() -> int:
        return await _ask_over_socket(database, tmp_path)

    code = asyncio.run(serve_and_ask())
    out, err = capsys.readouterr()

    assert code == 0, err
    assert err == "", "the daemon answered: no notice about reading the file"
    assert json.loads(out) == _history_direct(database, {"limit": "0"})


async def _ask_over_socket(database: Path, tmp_path: Path) -> int:
    sockets = tmp_path / "run"
    sockets.mkdir()
    db = Database.open(database, read_only=True)
    runner = web.AppRunner(QueryServer(db=db, context=None).application())  # type: ignore[arg-type]
    await runner.setup()
    try:
        await web.UnixSite(runner, str(sockets / "multus-query.sock")).start()
        argv = ["--socket-dir", str(sockets), "--state-dir", str(tmp_path), "history", "--limit", "0"]
        return await asyncio.to_thread(cli.main, [*argv, "-o", "json"])
    finally:
        await runner.cleanup()
        db.close()


def test_multusctl_limit_zero_reads_every_line_of_the_file_too(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--limit 0`` was dropped with the flags left unset (0 is falsy): 200 lines, not all."""
    sockets = tmp_path / "no-daemon"
    sockets.mkdir()
    argv = ["--socket-dir", str(sockets), "--state-dir", str(database.parent), "history", "--limit", "0"]

    code = cli.main([*argv, "-o", "json"])
    out, _err = capsys.readouterr()

    assert code == 0
    assert len(json.loads(out)) == LINES


@pytest.mark.parametrize(
    "params",
    [{"network": "net"}, {"pod": "pod-1"}, {"pod": "pod-1", "network": "net"}],
    ids=["bare-network-of-3-namespaces", "pod-in-3-namespaces", "both"],
)
def test_a_page_of_a_filter_matching_several_values_seeks_its_index_without_sorting_the_rest(
    database: Path, params: dict[str, str]
) -> None:
    """A filter that matches several recorded values (a bare network name in three namespaces, a
    pod name without its namespace) once read every remaining match and sorted it for each page
    (``USE TEMP B-TREE FOR ORDER BY``): a whole history so filtered cost CPU quadratic in the
    matches. Each page now reads at most a page per value, in index order."""
    where = filters.parse_history({**params, "limit": "0"}, now=datetime.now(UTC))

    def plan(connection: Any) -> list[str]:
        statement = history.page_statement(connection, where, before_id=LINES // 2, size=HELD_AT_ONCE)
        assert statement is not None
        explained = cursor_of(connection).execute(f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters)
        return [str(row[-1]) for row in explained.fetchall()]

    steps = _direct(database, plan)

    assert not [step for step in steps if "TEMP B-TREE" in step], steps
