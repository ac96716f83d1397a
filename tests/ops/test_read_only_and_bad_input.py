"""Nothing multusctl or the query API does modifies the state database, and bad input is refused.

The query API answers 405 to every method but GET; with the daemon stopped multusctl reads the
file itself and says so; bad durations, unknown filters, a missing, locked or newer-schema
database each get a clear message and a non-zero exit, and the database file stays byte-for-byte
and mtime-for-mtime what it was.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import settings as settings_module
from app.attach.requests import Command, Trigger
from app.cli import main as cli
from app.cli import unixhttp
from app.store import schema
from tests.conftest import child_environment
from tests.ops.conftest import Scenario, add, json_output, multusctl, new_pod

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

READ_COMMANDS = (("attachments",), ("history",), ("status",))


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _offline(state_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """multusctl with no daemon to ask: an empty socket dir, the given state dir."""
    sockets = tmp_path / "no-daemon"
    sockets.mkdir(exist_ok=True)
    return multusctl("--socket-dir", str(sockets), "--state-dir", str(state_dir), *args)


# ---- the query API is read-only -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_query_api_refuses_every_method_but_get(scenario: Scenario, method: str) -> None:
    socket_path = scenario.cluster.socket_dir / "multus-query.sock"
    rows_before = scenario.history_rows()

    answers = [
        unixhttp.request(socket_path, method, path, body=b'{"limit": 1}')
        for path in ("/v1/history", "/v1/attachments", "/v1/status", "/v1/sandboxes/x", "/gc", "/nowhere")
    ]

    for answer in answers:
        assert answer.status == 405
        assert f"read-only: {method} is not allowed" in json.loads(answer.body)["error"]
    assert scenario.history_rows() == rows_before


def test_the_query_api_is_a_private_socket_and_names_unknown_endpoints_and_filters(
    scenario: Scenario,
) -> None:
    socket_path = scenario.cluster.socket_dir / "multus-query.sock"

    unknown_path = unixhttp.request(socket_path, "GET", "/v1/pods")
    unknown_filter = unixhttp.request(socket_path, "GET", "/v1/history?colour=red")
    bad_since = unixhttp.request(socket_path, "GET", "/v1/history?since=5x")
    index = unixhttp.request(socket_path, "GET", "/v1")

    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert unknown_path.status == 404
    assert "/v1/history" in json.loads(unknown_path.body)["error"]
    assert unknown_filter.status == 400
    assert json.loads(unknown_filter.body)["parameter"] == "colour"
    assert "unknown filter colour" in json.loads(unknown_filter.body)["error"]
    assert bad_since.status == 400
    assert "invalid duration '5x'" in json.loads(bad_since.body)["error"]
    assert index.status == 200
    assert "/v1/status" in json.loads(index.body)["endpoints"]


# ---- the file, when the daemon is down ------------------------------------------------------------


@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_with_the_daemon_stopped_multusctl_reads_the_file_says_so_and_changes_nothing(started: Any) -> None:
    cluster = started(default_networks=1)
    pod = new_pod(cluster, "team-x", "survivor")
    assert add(cluster, pod, networks=["extra0"]).returncode == 0
    cluster.stop_daemon()
    config = str(cluster.root / "daemon-config.json")
    before = _snapshot(cluster.state_db)

    history = multusctl("--config", config, "history", "--pod", "team-x/survivor", "-o", "json")
    attachments = multusctl("--config", config, "attachments", "-o", "json")
    shown = multusctl("--config", config, "show", pod.container[:12], "-o", "json")
    status = multusctl("--config", config, "status", "-o", "json")
    table = multusctl("--config", config, "history")
    status_table = multusctl("--config", config, "status")

    for result in (history, attachments, shown, status, table, status_table):
        assert result.returncode == 0, result.stderr
        notice = result.stderr.strip()
        assert "\n" not in notice, "the notice is one line"
        assert "the daemon is not answering" in notice
        assert f"reading {cluster.state_db} directly" in notice
    assert [(h["command"], h["step"], h["interface"]) for h in json_output(history)] == [
        ("ADD", "request", "eth0"),
        ("ADD", "delegate", "net1"),
        ("ADD", "delegate", "eth0"),
    ]
    assert [a["interface"] for a in json_output(attachments)] == ["eth0", "net1"]
    assert json_output(shown)["checkpoint"]["state"] == "ready"
    offline = json_output(status)
    assert (offline["source"], offline["ready"], offline["daemon"], offline["lastGc"]) == (
        "file",
        False,
        None,
        None,
    )
    assert offline["readyReason"] == "the daemon is not running"
    assert offline["store"]["sandboxes"] == {"ready": 1}
    assert "Source:       file" in status_table.stdout
    assert "Ready:        no (the daemon is not running)" in status_table.stdout
    assert _snapshot(cluster.state_db) == before


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "since", ["5x", "1h5", "-1h", "0s", "h", "", "2026-13-40T00:00:00Z", "2026-11-25T10:00:00"]
)
def test_a_bad_since_names_the_flag_and_exits_2(scenario: Scenario, tmp_path: Path, since: str) -> None:
    db = scenario.copy_database(tmp_path / "state")
    before = _snapshot(db)

    result = _offline(db.parent, tmp_path, "history", "--since", since)

    assert result.returncode == 2
    assert "--since" in result.stderr
    assert result.stdout == ""
    assert _snapshot(db) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("history", "--colour", "red"), "unrecognized arguments: --colour red"),
        (("history", "--pod", "a/b/c"), "--pod: invalid pod 'a/b/c'"),
        (
            ("history", "--pod", "team-a/web", "--namespace", "team-b"),
            "--pod: pod 'team-a/web' is not in namespace",
        ),
        (("history", "--limit", "ten"), "argument --limit: invalid limit 'ten'"),
        (("history", "--command", "ADDD"), "argument --command: invalid choice: 'ADDD'"),
        (("history", "--network", "/x"), "--network: invalid network '/x'"),
        (("attachments", "--since", "1h"), "unrecognized arguments: --since 1h"),
        (("show",), "the following arguments are required: CONTAINER_ID"),
        (("logs",), "invalid choice: 'logs'"),
    ],
)
def test_unknown_filters_and_bad_values_are_refused_before_anything_is_read(
    scenario: Scenario, tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    db = scenario.copy_database(tmp_path / "state")
    before = _snapshot(db)

    result = _offline(db.parent, tmp_path, *args)

    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "reading" not in result.stderr, "refused before looking for the daemon or the file"
    assert result.stdout == ""
    assert _snapshot(db) == before


def test_a_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    state = tmp_path / "state"

    results = [_offline(state, tmp_path, *command) for command in READ_COMMANDS]

    for result in results:
        assert result.returncode == 1
        assert f"there is no state database at {state / 'state.db'}" in result.stderr
    assert not state.exists()


def test_a_locked_database_is_reported_without_waiting_long_or_modifying_it(
    scenario: Scenario, tmp_path: Path
) -> None:
    db = scenario.copy_database(tmp_path / "state")
    before = _snapshot(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        results = [_offline(db.parent, tmp_path, "history")]
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    for result in results:
        assert result.returncode == 1
        assert f"state database {db} is locked by another process" in result.stderr
        assert result.stdout == ""
    assert _snapshot(db) == before


def test_a_database_from_a_newer_release_is_refused_naming_both_versions(
    scenario: Scenario, tmp_path: Path
) -> None:
    db = scenario.copy_database(tmp_path / "state")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_future'")
    before = _snapshot(db)

    results = [_offline(db.parent, tmp_path, *command) for command in (*READ_COMMANDS, ("show", "abc"))]

    for result in results:
        assert result.returncode == 1
        assert "9999_future" in result.stderr
        assert repr(schema.head_revision()) in result.stderr
        assert result.stdout == ""
    assert _snapshot(db) == before


def test_a_database_from_a_newer_release_that_records_this_one_may_use_it_is_read(
    scenario: Scenario, tmp_path: Path
) -> None:
    """After a rollback, the daemon runs on such a database (docs/state.md); multusctl reading the
    file itself refused it all the same."""
    db = scenario.copy_database(tmp_path / "state")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_future'")
        raw.execute(
            "INSERT INTO schema_compatibility (revision, oldest_code_revision) VALUES (?, ?)",
            ("9999_future", schema.head_revision()),
        )
    before = _snapshot(db)

    results = [_offline(db.parent, tmp_path, *command) for command in READ_COMMANDS]

    for result in results:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert _snapshot(db) == before


# ---- start-up ---------------------------------------------------------------------------------------


def _modules_after(*argv: str) -> set[str]:
    probe = (
        "import sys, contextlib, io\n"
        "from app.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main.main({list(argv)!r})\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=child_environment(), check=True
    )
    return set(result.stdout.split())


def test_help_and_daemon_answered_queries_never_import_the_store_or_the_settings(scenario: Scenario) -> None:
    config = str(scenario.config)
    heavy = {"sqlalchemy", "alembic", "aiohttp", "ssl"}

    for argv in (
        ("--help",),
        ("--config", config, "history", "--pod", "team-a/web"),
        ("--config", config, "attachments", "--namespace", "team-a"),
        ("--config", config, "status"),
    ):
        modules = _modules_after(*argv)
        assert not heavy & modules, argv
        assert not {name for name in modules if name.startswith(("app.store", "app.settings"))}, argv


def test_the_cli_knows_every_recorded_command_and_trigger() -> None:
    assert set(cli.COMMANDS) == {str(command) for command in Command}
    assert set(cli.TRIGGERS) == {str(trigger) for trigger in Trigger}


def test_the_clis_default_locations_are_the_daemons() -> None:
    defaults = settings_module.from_mapping({})

    assert cli.DEFAULT_CONFIG_PATH == settings_module.DEFAULT_CONFIG_PATH
    assert Path(cli.DEFAULT_SOCKET_DIR) == defaults.socket_dir
    assert Path(cli.DEFAULT_STATE_DIR) == defaults.state_dir
    assert (defaults.socket_path.name, defaults.query_socket_path.name) == (
        "multus.sock",
        "multus-query.sock",
    )
    assert defaults.database_path.name == "state.db"


@pytest.mark.parametrize(
    ("content", "named"),
    [(None, "cannot read daemon config"), ("{", "not valid JSON"), ('{"socketDir": 5}', "'socketDir'")],
)
def test_an_unusable_daemon_config_is_named(tmp_path: Path, content: str | None, named: str) -> None:
    config = tmp_path / "daemon-config.json"
    if content is not None:
        config.write_text(content)

    result = multusctl("--config", str(config), "history")

    assert result.returncode == 1
    assert named in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "content",
    [
        {"SocketDir": "/run/elsewhere", "STATEDIR": "/var/lib/elsewhere"},
        {"socketDir": None, "stateDir": None},
        {"socketDir": "/run/first", "SOCKETDIR": "/run/last", "\u017ftateDir": "/var/lib/long-s"},
    ],
    ids=["any-case", "null", "last-spelling-and-long-s"],
)
def test_multusctl_finds_the_sockets_and_the_state_where_the_daemon_reads_them(
    tmp_path: Path, content: dict[str, Any]
) -> None:
    """The daemon reads daemon-config as Go does (any case, the last spelling, null as absent);
    multusctl's quick read of the two keys must agree, or it looks elsewhere, or gives up."""
    config = tmp_path / "daemon-config.json"
    config.write_text(json.dumps(content))
    daemon = settings_module.load(config)

    where = cli.locations(argparse.Namespace(config=str(config), socket_dir=None, state_dir=None))

    assert (Path(where.query_socket), Path(where.database)) == (
        daemon.query_socket_path,
        daemon.database_path,
    )
