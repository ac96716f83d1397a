"""History retention prunes old lines in batches and never the checkpoint; logs as JSON lines;
the Grafana dashboard queries only metrics the daemon exports, and charts every one of them."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app import metrics
from app import settings as settings_module
from app.store import retention
from app.store.database import Database
from tests.ops.conftest import Scenario, add, json_output, multusctl, new_pod, run

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

DASHBOARD = Path(__file__).parents[2] / "deployments" / "grafana-dashboard.json"


def _rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute(query).fetchall()


def _checkpoint(db: Path) -> list[list[tuple[Any, ...]]]:
    return [_rows(db, f"SELECT * FROM {table} ORDER BY 1, 2") for table in ("sandboxes", "attachments")]


def _prune(
    db_path: Path, limits: retention.Retention, *, now: datetime | None = None
) -> retention.PruneReport:
    db = Database.open(db_path)
    try:
        return asyncio.run(retention.prune(db, limits, now=now))
    finally:
        db.close()


def test_retention_by_rows_deletes_the_oldest_in_batches_and_never_the_checkpoint(
    scenario: Scenario, tmp_path: Path
) -> None:
    db = scenario.copy_database(tmp_path / "state")
    ids = [row[0] for row in _rows(db, "SELECT id FROM history ORDER BY id")]
    checkpoint = _checkpoint(db)
    excess = len(ids) - 5

    report = _prune(db, retention.Retention(max_age=None, max_rows=5, batch=3))

    assert [row[0] for row in _rows(db, "SELECT id FROM history ORDER BY id")] == ids[-5:]
    assert (report.deleted_by_rows, report.deleted_by_age) == (excess, 0)
    assert report.batches == math.ceil(excess / 3) + (excess % 3 == 0), "at most 3 lines per write"
    assert _checkpoint(db) == checkpoint
    assert checkpoint[0], "the scenario keeps sandboxes attached"


def test_retention_by_age_deletes_only_lines_recorded_before_the_cutoff(
    scenario: Scenario, tmp_path: Path
) -> None:
    assert scenario.split is not None
    db = scenario.copy_database(tmp_path / "state")
    checkpoint = _checkpoint(db)
    split = scenario.split.replace(tzinfo=None).isoformat(sep=" ")
    newer = _rows(db, f"SELECT id FROM history WHERE at >= '{split}' ORDER BY id")
    older = _rows(db, f"SELECT count(*) FROM history WHERE at < '{split}'")[0][0]

    report = _prune(
        db,
        retention.Retention(max_age=timedelta(hours=1), max_rows=None, batch=4),
        now=scenario.split + timedelta(hours=1),
    )

    assert _rows(db, "SELECT id FROM history ORDER BY id") == newer
    assert newer
    assert older
    assert (report.deleted_by_age, report.deleted_by_rows) == (older, 0)
    assert _checkpoint(db) == checkpoint


@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_the_daemon_prunes_in_the_background_and_keeps_attached_sandboxes_deletable(started: Any) -> None:
    cluster = started()
    kept, gone = new_pod(cluster, "team-r", "kept"), new_pod(cluster, "team-r", "gone")
    assert add(cluster, kept, networks=[]).returncode == 0
    assert add(cluster, gone, networks=[]).returncode == 0
    assert run(cluster, "DEL", gone).returncode == 0
    assert _rows(cluster.state_db, "SELECT count(*) FROM history") == [(6,)]
    cluster.stop_daemon()
    cluster.daemon_config["historyMaxRows"] = 3

    cluster.start_daemon()
    deadline = time.monotonic() + 15
    while _rows(cluster.state_db, "SELECT count(*) FROM history") != [(3,)]:
        assert time.monotonic() < deadline, "the retention pass did not run"
        time.sleep(0.05)
    status = json_output(
        multusctl("--config", str(cluster.root / "daemon-config.json"), "status", "-o", "json")
    )

    assert status["retention"]["maxRows"] == 3
    assert status["retention"]["lastPrune"]["deletedByRows"] == 3
    assert _rows(cluster.state_db, "SELECT container_id FROM sandboxes") == [(kept.container,)]
    assert run(cluster, "DEL", kept).returncode == 0, "its checkpoint survived the pruning"
    assert kept.netns.links() == {"lo"}


# ---- logs -----------------------------------------------------------------------------------------


def test_log_format_json_writes_one_object_per_line(scenario: Scenario) -> None:
    lines = [line for line in scenario.cluster.daemon_log.read_text().splitlines() if line.strip()]

    records = [json.loads(line) for line in lines]

    assert records
    assert all({"time", "level", "logger", "msg"} <= set(record) for record in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]) for record in records)
    assert any(record["logger"] == "app.daemon.query_server" for record in records)


@pytest.mark.parametrize(
    ("key", "value"),
    [("logFormat", "xml"), ("historyMaxAgeHours", -1), ("historyMaxRows", 1.5), ("historyMaxRows", "many")],
)
def test_bad_operating_keys_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(settings_module.SettingsError, match=key):
        settings_module.from_mapping({key: value})


def test_operating_keys_default_and_parse() -> None:
    default = settings_module.from_mapping({})
    chosen = settings_module.from_mapping(
        {"logFormat": "json", "historyMaxAgeHours": 0, "historyMaxRows": 10}
    )

    assert (default.log_format, default.history_max_age_hours, default.history_max_rows) == (
        "text",
        720,
        1_000_000,
    )
    assert (chosen.log_format, chosen.history_max_age_hours, chosen.history_max_rows) == ("json", 0, 10)
    assert retention.Retention.from_limits(max_age_hours=0, max_rows=10) == retention.Retention(None, 10)


# ---- dashboard ------------------------------------------------------------------------------------


def _exported_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def _charted_names(dashboard: dict[str, Any]) -> set[str]:
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    return {name for expr in expressions for name in re.findall(r"\bmultus_[a-z_]+", expr)}


def test_the_grafana_dashboard_queries_only_exported_metrics_and_shows_every_histogram() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = _charted_names(dashboard)
    histograms = {family.name for family in metrics.REGISTRY.collect() if family.type == "histogram"}

    assert dashboard["uid"] == "multus-py"
    assert used - _exported_names() == set()
    assert {name + "_bucket" for name in histograms} - used <= {"multus_py_store_batch_units_bucket"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_grafana_dashboard_charts_every_series_the_daemon_exports() -> None:
    """The README promises that the dashboard charts every series: a metric added to ``app.metrics``
    gets a panel too."""
    used = _charted_names(json.loads(DASHBOARD.read_text()))
    suffixes = ("", "_total", "_bucket", "_sum", "_count")

    uncharted = {
        family.name
        for family in metrics.REGISTRY.collect()
        if not any(family.name + suffix in used for suffix in suffixes)
    }

    assert uncharted == set()
