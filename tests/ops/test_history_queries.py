"""``multusctl history``: every filter includes what it names and excludes the rest, newest first.

The rows are the scenario's (tests/ops/conftest.py): real ADD, CHECK, DEL and a failed ADD with
its rollback, run through the real shim, daemon and plugins; multusctl asks the running daemon.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.store import filters, queries
from tests.ops.conftest import FAILURE, Scenario, json_output

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

HISTORY_KEYS = {
    "id",
    "at",
    "durationMs",
    "node",
    "command",
    "step",
    "trigger",
    "outcome",
    "pod",
    "namespace",
    "podName",
    "podUID",
    "container",
    "containerID",
    "netns",
    "interface",
    "network",
    "plugins",
    "ips",
    "macs",
    "deviceIDs",
    "error",
}


def _history(scenario: Scenario, *args: str) -> list[dict[str, Any]]:
    lines = json_output(scenario.ctl("history", "--limit", "0", *args, "-o", "json"))
    assert isinstance(lines, list)
    return lines


def _pods(lines: list[dict[str, Any]]) -> set[str]:
    return {line["pod"] for line in lines}


def test_the_pods_attach_shows_each_step_with_its_addresses_newest_first(scenario: Scenario) -> None:
    result = scenario.ctl("history", "--pod", "team-a/web")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["AGE", "COMMAND", "STEP", "TRIGGER", "OUTCOME"]
    steps = [(row.split()[1], row.split()[2], row.split()[7]) for row in rows]
    assert steps == [
        ("CHECK", "request", "eth0"),
        ("ADD", "request", "eth0"),
        ("ADD", "delegate", "net1"),
        ("ADD", "delegate", "eth0"),
    ]
    assert re.search(
        r"ADD\s+delegate.*net1\s+extra\s+bridge\s+\S+\s+10\.241\.0\.\d+/24\s+([0-9a-f]{2}:){5}", rows[2]
    )
    assert re.search(r"ADD\s+delegate.*eth0\s+primary\s+bridge\s+\S+\s+10\.240\.0\.\d+/24", rows[3])
    assert all(re.match(r"\d+[smhd] ", row) for row in rows), "AGE is relative: 0s, 12s, 3m, 2h, 4d"
    assert result.stderr == "", "the daemon answered: no notice about reading the file"


def test_lines_are_newest_first_and_keep_a_stable_json_schema(scenario: Scenario) -> None:
    lines = _history(scenario)

    assert [line["id"] for line in lines] == sorted((line["id"] for line in lines), reverse=True)
    assert all(set(line) == HISTORY_KEYS for line in lines)
    assert {line["step"] for line in lines} == {"request", "delegate"}
    for line in lines:
        assert datetime.fromisoformat(line["at"].replace("Z", "+00:00")).tzinfo is not None
        assert isinstance(line["durationMs"], float)
        assert line["container"] == line["containerID"][:12]
        assert line["pod"] == f"{line['namespace']}/{line['podName']}"


def test_pod_filter_takes_namespace_and_name_or_a_bare_name(scenario: Scenario) -> None:
    web = scenario.pods["web"]

    qualified = _history(scenario, "--pod", "team-a/web")
    bare = _history(scenario, "--pod", "web")
    elsewhere = _history(scenario, "--pod", "team-b/web")

    assert _pods(qualified) == {"team-a/web"}
    assert {line["containerID"] for line in qualified} == {web.container}
    assert {line["podUID"] for line in qualified} == {web.uid}
    assert bare == qualified
    assert elsewhere == []
    assert len(qualified) < len(_history(scenario)), "other pods' lines were not excluded"


def test_namespace_filter_keeps_that_namespaces_pods(scenario: Scenario) -> None:
    assert _pods(_history(scenario, "--namespace", "team-b")) == {"team-b/db", "team-b/api"}
    assert _pods(_history(scenario, "--namespace", "team-a")) == {"team-a/web", "team-a/broken"}
    assert _history(scenario, "--namespace", "nobody") == []


def test_container_filter_takes_an_id_or_a_prefix(scenario: Scenario) -> None:
    db = scenario.pods["db"]

    full = _history(scenario, "--container", db.container)
    short = _history(scenario, "--container", db.container[:12])
    shared_prefix = _history(scenario, "--container", db.container[:8])

    assert {line["containerID"] for line in full} == {db.container}
    assert [(line["command"], line["step"]) for line in full][:2] == [("DEL", "request"), ("DEL", "delegate")]
    assert short == full
    assert {line["pod"] for line in shared_prefix} == {"team-a/web", "team-b/db"}
    assert _history(scenario, "--container", "ffffffffffff0000") == []


def test_network_filter_takes_a_bare_name_and_excludes_other_networks(scenario: Scenario) -> None:
    extra = _history(scenario, "--network", "extra")
    failing = _history(scenario, "--network", "failing-net")

    assert {line["network"] for line in extra} == {"extra"}
    assert {line["interface"] for line in extra} == {"net1"}
    assert _pods(extra) == {"team-a/web", "team-b/db", "team-a/broken"}, "api has no extra network"
    assert {(line["command"], line["trigger"], line["outcome"]) for line in failing} == {
        ("ADD", "runtime", "error"),
        ("DEL", "rollback", "ok"),
    }
    assert _history(scenario, "--network", "other-namespace/extra") == []


def test_since_takes_a_time_or_a_duration(scenario: Scenario, tmp_path: Path) -> None:
    assert scenario.split is not None
    after_split = _history(scenario, "--since", scenario.split.isoformat().replace("+00:00", "Z"))
    last_hour = _history(scenario, "--since", "1h")
    # A duration counts back from the query's clock. The same query runs on a copy of the real rows
    # with its clock set 2 s past the newest row, instead of waiting for the rows to age.
    copy = scenario.copy_database(tmp_path)
    newest = max(_at(line) for line in _history_at(copy, "1h", now=datetime.now(UTC)))
    later = newest + timedelta(seconds=2)
    last_second = _history_at(copy, "1s", now=later)
    last_three_seconds = _history_at(copy, "3s", now=later)

    assert _pods(after_split) == {"team-b/api"}
    assert {"team-a/web", "team-b/db", "team-a/broken", "team-b/api"} <= _pods(last_hour)
    assert last_second == []
    assert last_three_seconds
    assert all(_at(line) >= later - timedelta(seconds=3) for line in last_three_seconds)
    assert newest in {_at(line) for line in last_three_seconds}


def _history_at(db: Path, since: str, *, now: datetime) -> list[Any]:
    """``history --since`` as the query API answers it, with its clock at ``now``."""
    where = filters.parse_history({"since": since, "limit": "0"}, now=now)
    lines, _ = queries.read_file(db, partial(queries.history_lines, where=where))
    return list(lines)


def _at(line: Any) -> datetime:
    return datetime.fromisoformat(str(line["at"]).replace("Z", "+00:00"))


def test_failed_shows_only_the_failed_steps_with_their_cni_errors(scenario: Scenario) -> None:
    failed = _history(scenario, "--failed")

    assert failed, "the broken pod's failure is missing"
    assert {line["outcome"] for line in failed} == {"error"}
    assert _pods(failed) == {"team-a/broken"}
    delegate = next(line for line in failed if line["step"] == "delegate")
    assert delegate["interface"] == "net2"
    assert delegate["network"] == "failing-net"
    assert delegate["error"]["code"] == FAILURE["code"]
    assert FAILURE["msg"] in delegate["error"]["msg"]
    assert delegate["error"]["details"] == FAILURE["details"]
    request = next(line for line in failed if line["step"] == "request")
    assert request["error"]["code"] == FAILURE["code"]
    assert all(line["error"] is None for line in _history(scenario) if line["outcome"] == "ok")


def test_command_and_trigger_filters_pick_one_kind_of_step(scenario: Scenario) -> None:
    checks = _history(scenario, "--command", "check")
    rollbacks = _history(scenario, "--trigger", "rollback")

    assert [(line["pod"], line["command"]) for line in checks] == [("team-a/web", "CHECK")]
    assert _pods(rollbacks) == {"team-a/broken"}
    assert [line["interface"] for line in rollbacks] == ["eth0", "net1", "net2"], (
        "newest first: eth0 last undone"
    )
    assert {line["command"] for line in rollbacks} == {"DEL"}


def test_filters_combine_and_limit_keeps_the_newest(scenario: Scenario) -> None:
    combined = _history(scenario, "--namespace", "team-a", "--network", "extra", "--command", "ADD")
    everything = _history(scenario)
    newest_two = json_output(scenario.ctl("history", "--limit", "2", "-o", "json"))

    assert {(line["pod"], line["interface"]) for line in combined} == {
        ("team-a/web", "net1"),
        ("team-a/broken", "net1"),
    }
    assert newest_two == everything[:2]


def test_the_table_is_aligned_under_its_headers(scenario: Scenario) -> None:
    result = scenario.ctl("history")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    assert len(rows) >= 10
    for row in rows:
        for start in starts[1:]:
            assert row[start - 1] == " ", f"column at {start} not aligned in {row!r}"
            assert row[start] != " ", f"empty cell at {start} in {row!r}"
