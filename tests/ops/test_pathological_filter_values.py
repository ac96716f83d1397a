"""Pathological filter values are a 400 naming the parameter (exit 2 in multusctl), never a crash.

Values that pass the first checks but overflow later: a ``limit`` of non-ASCII digits (``²``
passes ``str.isdigit`` but not ``int``), a ``limit`` beyond SQLite's INTEGER, a ``since`` duration
reaching before year 1, an RFC 3339 ``since`` whose offset takes it out of range in UTC. In process:
the query API on a test server over a read-only database, multusctl's file mode without a daemon.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.cli import main as cli
from app.cli import quickargs
from app.daemon.query_server import QueryServer
from app.store import filters, history
from app.store.database import Database
from app.store.records import HistoryEntry, PodIdentity
from tests.conftest import open_empty_state

PATHOLOGICAL = [
    ("limit", "\u00b2"),
    ("limit", "99999999999999999999999"),
    ("limit", "1" + "0" * 5000),
    ("since", "3000000d"),
    ("since", "9999999999d"),
    ("since", "1" * 400 + "s"),
    ("since", "0001-01-01T00:00:00+01:00"),
    ("since", "9999-12-31T23:59:59-01:00"),
]


@pytest.mark.parametrize(("name", "value"), PATHOLOGICAL)
def test_the_filters_refuse_them_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(filters.FilterError) as refused:
        filters.parse_history({name: value}, now=datetime.now(UTC))

    assert refused.value.parameter == name


def test_a_long_zero_limit_is_still_no_limit() -> None:
    assert filters.parse_history({"limit": "0" * 5000}, now=datetime.now(UTC)).limit == 0


def _database(tmp_path: Path, template: Path) -> Path:
    """A state database with one line, written into a copy of the session's empty migrated database
    (``template``: see tests/conftest.py)."""
    path = tmp_path / "state.db"
    db = open_empty_state(template, path)
    entry = HistoryEntry(
        command="ADD",
        step="request",
        trigger="runtime",
        outcome="ok",
        container_id="c" * 64,
        network_name="default/net",
        pod=PodIdentity("ns", "pod", "uid"),
    )
    db.write_sync(lambda connection: history.append(connection, entry))
    db.close()
    return path


@pytest.mark.parametrize(("name", "value"), PATHOLOGICAL)
async def test_the_query_api_answers_400_naming_the_parameter(
    tmp_path: Path, empty_state_template: Path, name: str, value: str
) -> None:
    db = Database.open(_database(tmp_path, empty_state_template), read_only=True)
    app = QueryServer(db=db, context=None).application()  # type: ignore[arg-type]  # /v1/status unused
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/v1/history", params={name: value})
            body = json.loads(await response.text())
    finally:
        db.close()

    assert response.status == 400, body
    assert body["parameter"] == name


@pytest.mark.parametrize(("name", "value"), PATHOLOGICAL)
def test_multusctl_file_mode_exits_2_naming_the_flag(
    tmp_path: Path, empty_state_template: Path, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    _database(tmp_path, empty_state_template)
    sockets = tmp_path / "no-daemon"
    sockets.mkdir()
    before = (tmp_path / "state.db").read_bytes()

    argv = ["--socket-dir", str(sockets), "--state-dir", str(tmp_path), "history", f"--{name}", value]
    try:
        code: object = cli.main(argv)
    except SystemExit as exc:  # argparse names a bad --limit itself
        code = exc.code

    assert code == 2
    assert f"--{name}:" in capsys.readouterr().err
    assert (tmp_path / "state.db").read_bytes() == before


def test_multusctl_and_the_filters_share_the_largest_limit() -> None:
    assert quickargs.MAX_LIMIT == filters.MAX_HISTORY_LIMIT
    assert quickargs.limit(str(filters.MAX_HISTORY_LIMIT)) == filters.MAX_HISTORY_LIMIT
