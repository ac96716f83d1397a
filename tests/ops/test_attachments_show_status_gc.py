"""``multusctl attachments``, ``show``, ``status`` and ``gc`` against a running daemon and real rows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.store import schema
from tests.ops.conftest import FAILURE, Scenario, add, json_output, new_pod

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

ATTACHMENT_KEYS = {
    "pod",
    "namespace",
    "podName",
    "podUID",
    "container",
    "containerID",
    "netns",
    "sandboxState",
    "interface",
    "position",
    "master",
    "network",
    "plugins",
    "state",
    "addresses",
    "ips",
    "macs",
    "deviceIDs",
    "lastError",
    "createdAt",
    "updatedAt",
}
SANDBOX_KEYS = {"containerID", "pod", "namespace", "podName", "podUID", "checkpoint", "history"}
CHECKPOINT_KEYS = {"state", "netns", "ifname", "cniVersion", "bootID", "createdAt", "updatedAt", "delegates"}
DELEGATE_KEYS = {
    "interface",
    "position",
    "master",
    "network",
    "plugins",
    "state",
    "ips",
    "macs",
    "deviceIDs",
    "device",
    "config",
    "cniArgs",
    "runtimeConfig",
    "cniPath",
    "result",
    "lastError",
    "createdAt",
    "updatedAt",
}
SPOOL_REPORT_KEYS = {
    "replayed",
    "failed",
    "kept",
    "deferred",
    "rejected",
    "superseded",
    "temporariesRemoved",
    "unreadable",
}
"""The ``spool`` of a GC pass that replayed (README, ``gc``)."""
GC_REPORT_KEYS = {
    "dryRun",
    "examined",
    "orphans",
    "collected",
    "deferred",
    "failed",
    "unconfirmed",
    "disputed",
    "unanswered",
    "hostLinksRemoved",
    "leasesRemoved",
    "durationMs",
    "spool",
}
STATUS_KEYS = {"source", "node", "ready", "readyReason", "daemon", "store", "mirror", "lastGc", "retention"}
STORE_KEYS = {"path", "bytes", "schemaRevision", "sandboxes", "attachments", "history"}


def _attachments(scenario: Scenario, *args: str) -> list[dict[str, Any]]:
    rows = json_output(scenario.ctl("attachments", *args, "-o", "json"))
    assert isinstance(rows, list)
    return rows


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(row["pod"], row["interface"], row["network"]) for row in rows]


# ---- attachments ----------------------------------------------------------------------------------


def test_attachments_are_what_is_attached_now_not_what_was(scenario: Scenario) -> None:
    rows = _attachments(scenario)

    assert _pairs(rows) == [
        ("team-a/web", "eth0", "primary"),
        ("team-a/web", "net1", "extra"),
        ("team-b/api", "eth0", "primary"),
    ], "db was deleted and broken rolled back: neither is attached"
    assert all(set(row) == ATTACHMENT_KEYS for row in rows)
    web_net1 = rows[1]
    assert web_net1["containerID"] == scenario.pods["web"].container
    assert web_net1["state"] == "added"
    assert web_net1["sandboxState"] == "ready"
    assert re.fullmatch(r"10\.241\.0\.\d+/24", web_net1["addresses"])
    assert web_net1["ips"] == [web_net1["addresses"]]
    assert len(web_net1["macs"]) == 1


def test_attachments_filters_include_and_exclude(scenario: Scenario) -> None:
    assert _pairs(_attachments(scenario, "--namespace", "team-b")) == [("team-b/api", "eth0", "primary")]
    assert [r["interface"] for r in _attachments(scenario, "--pod", "web")] == ["eth0", "net1"]
    assert [r["interface"] for r in _attachments(scenario, "--pod", "team-a/web")] == ["eth0", "net1"]
    assert _attachments(scenario, "--pod", "team-b/web") == []
    assert _pairs(_attachments(scenario, "--network", "extra")) == [("team-a/web", "net1", "extra")]
    assert _attachments(scenario, "--pod", "db") == []


def test_attachments_table_lists_addresses_aligned(scenario: Scenario) -> None:
    result = scenario.ctl("attachments")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "POD",
        "CONTAINER",
        "INTERFACE",
        "NETWORK",
        "PLUGINS",
        "STATE",
        "ADDRESSES",
        "MAC",
        "AGE",
    ]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    assert len(rows) == 3
    for row in rows:
        assert [match.start() for match in re.finditer(r"\S+", row)] == starts


# ---- show -----------------------------------------------------------------------------------------


def test_show_of_an_attached_sandbox_has_its_delegates_results_and_history(scenario: Scenario) -> None:
    web = scenario.pods["web"]

    shown = json_output(scenario.ctl("show", web.container[:12], "-o", "json"))

    assert set(shown) == SANDBOX_KEYS
    assert (shown["containerID"], shown["pod"], shown["podUID"]) == (web.container, "team-a/web", web.uid)
    checkpoint = shown["checkpoint"]
    assert set(checkpoint) == CHECKPOINT_KEYS
    assert (checkpoint["state"], checkpoint["netns"]) == ("ready", web.netns.path)
    delegates = checkpoint["delegates"]
    assert all(set(d) == DELEGATE_KEYS for d in delegates)
    assert [(d["interface"], d["network"], d["master"], d["state"]) for d in delegates] == [
        ("eth0", "primary", True, "added"),
        ("net1", "extra", False, "added"),
    ]
    assert delegates[1]["result"]["ips"][0]["address"] == delegates[1]["ips"][0]
    assert delegates[1]["config"]["name"] == "extra"
    assert ["K8S_POD_NAME", "web"] in delegates[1]["cniArgs"]
    assert [(h["command"], h["step"]) for h in shown["history"]] == [
        ("ADD", "delegate"),
        ("ADD", "delegate"),
        ("ADD", "request"),
        ("CHECK", "request"),
    ], "history of one sandbox is oldest first"


def test_show_of_a_failed_add_has_no_checkpoint_and_the_failed_delegate(scenario: Scenario) -> None:
    broken = scenario.pods["broken"]

    shown = json_output(scenario.ctl("show", broken.container, "-o", "json"))
    table = scenario.ctl("show", broken.container)

    assert shown["checkpoint"] is None, "a rolled-back ADD leaves nothing recorded as attached"
    failed = [h for h in shown["history"] if h["outcome"] == "error"]
    assert [(h["step"], h["interface"], h["network"]) for h in failed] == [
        ("delegate", "net2", "failing-net"),
        ("request", "eth0", ""),
    ]
    assert failed[0]["error"] == {
        "code": FAILURE["code"],
        "msg": failed[0]["error"]["msg"],
        "details": FAILURE["details"],
    }
    assert FAILURE["msg"] in failed[0]["error"]["msg"]
    assert [h["interface"] for h in shown["history"] if h["trigger"] == "rollback"] == [
        "net2",
        "net1",
        "eth0",
    ]
    assert table.returncode == 0, table.stderr
    assert "Checkpoint:  none" in table.stdout
    assert re.search(
        r"ADD\s+delegate\s+runtime\s+error\s+net2\s+failing-net\s+recorder.*11 .*no capacity", table.stdout
    )


def test_show_refuses_an_ambiguous_prefix_and_an_unknown_container(scenario: Scenario) -> None:
    web, db = scenario.pods["web"], scenario.pods["db"]
    shared = web.container[:8]
    assert db.container.startswith(shared)

    ambiguous = scenario.ctl("show", shared)
    unknown = scenario.ctl("show", "0123456789abcdef")

    assert ambiguous.returncode == 1
    assert "ambiguous" in ambiguous.stderr
    assert web.container in ambiguous.stderr
    assert db.container in ambiguous.stderr
    assert unknown.returncode == 1
    assert "no sandbox and no history for container '0123456789abcdef'" in unknown.stderr
    assert ambiguous.stdout == unknown.stdout == ""


# ---- status ---------------------------------------------------------------------------------------


def test_status_reports_readiness_store_history_counts_and_the_last_gc(scenario: Scenario) -> None:
    status = json_output(scenario.ctl("status", "-o", "json"))
    table = scenario.ctl("status")

    assert set(status) == STATUS_KEYS
    assert set(status["store"]) == STORE_KEYS
    assert (status["source"], status["ready"], status["readyReason"]) == ("daemon", True, None)
    assert scenario.cluster.daemon is not None
    assert status["daemon"]["pid"] == scenario.cluster.daemon.pid
    store = status["store"]
    assert store["path"] == str(scenario.cluster.state_db)
    assert store["bytes"] > 0
    assert store["schemaRevision"] == schema.head_revision()
    assert store["sandboxes"].get("ready") == 2
    assert store["attachments"].get("added") == 3
    assert store["history"]["rows"] == scenario.history_rows()
    assert status["lastGc"] is not None
    assert status["lastGc"]["trigger"] == "periodic"
    assert set(status["lastGc"]) == {"at", "trigger", "spool"} | GC_REPORT_KEYS
    assert set(status["lastGc"]["spool"]) == SPOOL_REPORT_KEYS
    assert status["retention"]["maxAgeHours"] == 720
    assert status["retention"]["maxRows"] == 1_000_000
    assert status["mirror"] == {"pods": 0, "nads": 0, "watches": []}
    assert table.returncode == 0, table.stderr
    assert re.search(r"^Ready:\s+yes$", table.stdout, re.MULTILINE)
    assert re.search(r"^Sandboxes:\s+ready 2$", table.stdout, re.MULTILINE)


# ---- gc -------------------------------------------------------------------------------------------


def test_gc_dry_run_reports_an_orphan_and_gc_collects_it(scenario: Scenario) -> None:
    node = scenario.cluster
    orphan = new_pod(node, "team-c", "orphan")
    assert add(node, orphan, networks=[]).returncode == 0
    orphan.netns.delete()

    dry = json_output(scenario.ctl("gc", "--dry-run", "-o", "json"))
    still = _attachments(scenario, "--pod", "team-c/orphan")
    collected = json_output(scenario.ctl("gc", "-o", "json"))
    last_gc = json_output(scenario.ctl("status", "-o", "json"))["lastGc"]
    json_output(scenario.ctl("gc", "--dry-run", "-o", "json"))
    last_gc_after_a_dry_run = json_output(scenario.ctl("status", "-o", "json"))["lastGc"]
    gone = _attachments(scenario, "--pod", "team-c/orphan")
    by_gc = json_output(scenario.ctl("history", "--trigger", "gc", "--pod", "team-c/orphan", "-o", "json"))

    assert set(dry) == GC_REPORT_KEYS
    assert dry["dryRun"] is True
    assert {(o["containerID"], o["reason"]) for o in dry["orphans"]} == {(orphan.container, "netns-gone")}
    assert dry["collected"] == []
    assert [row["interface"] for row in still] == ["eth0"], "a dry run removes nothing"
    assert collected["collected"] == [orphan.container]
    assert set(collected["spool"]) == SPOOL_REPORT_KEYS
    assert gone == []
    assert last_gc is not None
    assert {key: value for key, value in last_gc.items() if key != "at"} == {
        "trigger": "operator",
        **collected,
    }
    assert last_gc_after_a_dry_run == last_gc, "a dry run is not remembered as the last pass"
    assert [(h["command"], h["interface"], h["outcome"]) for h in by_gc] == [("DEL", "eth0", "ok")]


def test_gc_table_summarises_the_pass(scenario: Scenario) -> None:
    result = scenario.ctl("gc", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("GC dry run (nothing removed): examined ")


def test_gc_without_a_daemon_says_it_needs_one(scenario: Scenario, tmp_path: Path) -> None:
    gc = scenario.ctl("--socket-dir", str(tmp_path), "gc")

    assert gc.returncode == 1
    assert "gc needs the daemon" in gc.stderr
    assert str(tmp_path / "multus.sock") in gc.stderr
    assert gc.stdout == ""
