"""Operator input at its edges: every filter value is either applied or refused naming it.

A repeated query parameter and a ``command`` or ``trigger`` the history never records were
answered with a half-applied or empty list, a bare ``?failed`` with every line; a ``since`` in
RFC 3339 with its lower-case ``z`` was refused; a multusctl value that is not UTF-8 was a
traceback. In process: the query API on a test server over a real read-only database file,
multusctl's ``main`` with no daemon to ask.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.attach.requests import Command, Trigger
from app.cli import main as cli
from app.daemon.query_server import QueryServer
from app.store import filters, history
from app.store.database import Database
from app.store.records import HistoryEntry, PodIdentity
from tests.conftest import open_empty_state

CONTAINER = "c" * 64


def _database(directory: Path, template: Path) -> Path:
    """A state database with two lines: a runtime ADD of ns/web and a GC DEL of ns/db (written into
    a copy of the session's empty migrated database, ``template``: see tests/conftest.py)."""
    path = directory / "state.db"
    db = open_empty_state(template, path)
    for command, trigger, pod in (("ADD", "runtime", "web"), ("DEL", "gc", "db")):
        entry = HistoryEntry(
            command=command,
            step="request",
            trigger=trigger,
            outcome="ok",
            container_id=CONTAINER,
            network_name="default/net",
            pod=PodIdentity("ns", pod, "uid"),
        )
        db.write_sync(partial(history.append, entry=entry))
    db.close()
    return path


@pytest.fixture
async def client(tmp_path: Path, empty_state_template: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    db = Database.open(_database(tmp_path, empty_state_template), read_only=True)
    app = QueryServer(db=db, context=None).application()  # type: ignore[arg-type]  # no /v1/status
    try:
        async with TestClient(TestServer(app)) as test_client:
            yield test_client
    finally:
        db.close()


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/history", "pod=ns/web&pod=ns/db"),
        ("/v1/history", "limit=1&limit=5"),
        ("/v1/history", "failed=false&failed=true"),
        ("/v1/attachments", "namespace=a&namespace=b"),
    ],
)
async def test_a_repeated_query_parameter_is_refused_naming_it_not_half_applied(
    client: TestClient,  # type: ignore[type-arg]
    path: str,
    query: str,
) -> None:
    response = await client.get(f"{path}?{query}")
    body = json.loads(await response.text())

    assert response.status == 400, body
    assert body["parameter"] == query.partition("=")[0]
    assert "more than once" in body["error"]


@pytest.mark.parametrize("query", ["failed", "failed=", "failed=%20"])
async def test_a_failed_filter_without_a_value_is_refused_not_read_as_false(
    client: TestClient,  # type: ignore[type-arg]
    query: str,
) -> None:
    response = await client.get(f"/v1/history?{query}")
    body = json.loads(await response.text())

    assert response.status == 400, body
    assert body["parameter"] == "failed"


@pytest.mark.parametrize(("query", "failed"), [("failed=true", True), ("failed=NO", False), ("", False)])
def test_failed_takes_true_or_false_and_defaults_to_false(query: str, failed: bool) -> None:
    params = dict([query.split("=")]) if query else {}

    assert filters.parse_history(params, now=datetime.now(UTC)).failed is failed


@pytest.mark.parametrize(("name", "value"), [("command", "DELETE"), ("command", "x"), ("trigger", "kubelet")])
async def test_a_command_or_trigger_never_recorded_is_refused_naming_it_not_answered_empty(
    client: TestClient,  # type: ignore[type-arg]
    name: str,
    value: str,
) -> None:
    response = await client.get("/v1/history", params={name: value})
    body = json.loads(await response.text())

    assert response.status == 400, body
    assert body["parameter"] == name
    assert "use one of" in body["error"]


async def test_command_and_trigger_still_take_either_case(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/v1/history", params={"command": "del", "trigger": "GC"})
    lines = json.loads(await response.text())

    assert response.status == 200, lines
    assert [(line["command"], line["trigger"], line["podName"]) for line in lines] == [("DEL", "gc", "db")]


def test_the_filters_know_every_recorded_command_and_trigger() -> None:
    assert set(filters.COMMANDS) == {str(command) for command in Command}
    assert set(filters.TRIGGERS) == {str(trigger) for trigger in Trigger}
    assert (cli.COMMANDS, cli.TRIGGERS) == (filters.COMMANDS, filters.TRIGGERS)


@pytest.mark.parametrize("designator", ["z", "Z"])
def test_since_takes_rfc3339s_utc_designator_in_either_case(designator: str) -> None:
    since = filters.parse_since(f"2026-11-25t10:00:00.5{designator}", now=datetime.now(UTC))

    assert since == datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC)


# ---- multusctl: values the command line cannot carry to the daemon -------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("history", "--pod", "ns/\udcff"),
        ("history", "--container", "ab\udcfe"),
        ("attachments", "--network", "\udcffnet"),
        ("show", "ab\udcff"),
    ],
)
def test_a_value_that_is_not_utf8_exits_2_naming_its_flag_without_a_traceback(
    tmp_path: Path, empty_state_template: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """argv bytes that are not UTF-8 reach Python as surrogate escapes, which neither a URL nor
    SQLite can carry: multusctl names the argument (exit 2) before it asks or reads anything."""
    _database(tmp_path, empty_state_template)
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    before = (tmp_path / "state.db").read_bytes()

    code = cli.main(["--socket-dir", str(sockets), "--state-dir", str(tmp_path), *args])

    error = capsys.readouterr().err
    assert code == 2, error
    assert "not valid UTF-8" in error
    assert (args[1] if args[0] != "show" else "CONTAINER_ID") in error
    assert "reading" not in error, "refused before looking for the daemon or the file"
    assert (tmp_path / "state.db").read_bytes() == before
