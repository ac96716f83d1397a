"""One orphan's trouble does not hold GC up: a surprise in its teardown does not end the pass, a
teardown that failed is retried after growing (capped) intervals while the others are collected
on every pass, and a netns path that cannot be looked at is warned about once, not every pass."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.attach.engine import AttachEngine
from app.cli.main import render_gc
from app.cni.types import ErrorCode
from app.gc import collector as gc
from app.gc.collector import GarbageCollector
from app.metrics import REGISTRY
from tests.core.support import Command, Netns, Node, Pods, SurpriseAtFirstDel, new_container_id, pending

NO_PODS = Pods({})


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def orphan(node: Node, engine: AttachEngine, network: str, *, netns: Netns | None = None) -> str:
    """A sandbox attached to ``network`` whose pod the mirror no longer has (so an orphan)."""
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns or node.new_netns(), node.conf(network)))
    return container


def dels(node: Node, network: str) -> int:
    return sum(1 for command, name, _ in node.calls() if command == "DEL" and name == network)


def unexpected_gc_errors() -> float:
    value = REGISTRY.get_sample_value("multus_py_engine_unexpected_errors_total", {"step": "gc"})
    return value or 0.0


async def test_a_surprise_in_one_orphans_teardown_does_not_end_the_pass(node: Node) -> None:
    engine = node.engine(crash=SurpriseAtFirstDel())
    network = node.recorder_network("cluster")
    first, second = await orphan(node, engine, network), await orphan(node, engine, network)
    clock = Clock()
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS, clock=clock, pod_gone_grace=0)
    counted = unexpected_gc_errors()

    report = await collector.run_once()

    [(failed, error)] = report.failed
    assert error.code == ErrorCode.INTERNAL
    assert [o.container_id for o in report.collected] == [({first, second} - {failed}).pop()]
    assert pending(node.checkpoint(failed)) == ["eth0"], "still recorded: the next pass retries it"
    assert unexpected_gc_errors() == counted + 1

    clock.now += gc.RETRY_FIRST_SECONDS
    again = await collector.run_once()

    assert [o.container_id for o in again.collected] == [failed]
    assert node.checkpoint(first) is None
    assert node.checkpoint(second) is None


async def test_an_orphan_whose_teardown_failed_waits_growing_intervals_while_others_go_first(
    node: Node,
) -> None:
    engine = node.engine()
    broken_network = node.recorder_network("broken", fail={"code": 11, "msg": "stuck"}, failOn="DEL")
    network = node.recorder_network("cluster")
    broken = await orphan(node, engine, broken_network)
    clock = Clock()
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS, clock=clock, pod_gone_grace=0)

    first = await collector.run_once()
    assert [cid for cid, _ in first.failed] == [broken]
    assert dels(node, "broken") == 1

    fresh = await orphan(node, engine, network)
    waiting = await collector.run_once()
    assert dels(node, "broken") == 1, "not tried again at once"
    assert [(d.container_id, d.failures) for d in waiting.deferred] == [(broken, 1)]
    assert waiting.deferred[0].retry_in_seconds == pytest.approx(gc.RETRY_FIRST_SECONDS)
    assert [o.container_id for o in waiting.collected] == [fresh]
    assert {o.container_id for o in waiting.orphans} == {broken, fresh}

    clock.now += gc.RETRY_FIRST_SECONDS
    newer = await orphan(node, engine, network)
    retried = await collector.run_once()
    assert dels(node, "broken") == 2
    assert [o.container_id for o in retried.collected] == [newer]
    assert [(c, n) for c, n, _ in node.calls() if c == "DEL"][-2:] == [("DEL", "cluster"), ("DEL", "broken")]

    clock.now += gc.RETRY_FIRST_SECONDS
    assert [d.retry_in_seconds for d in (await collector.run_once()).deferred] == [
        pytest.approx(gc.RETRY_FIRST_SECONDS)
    ], "the second failure doubled the wait"
    clock.now += gc.RETRY_FIRST_SECONDS
    await collector.run_once()
    assert dels(node, "broken") == 3
    assert pending(node.checkpoint(broken)) == ["eth0"], "never given up"


def test_the_retry_interval_doubles_up_to_its_cap() -> None:
    delays = [gc.retry_delay(failures) for failures in range(1, 12)]

    assert delays[:3] == [gc.RETRY_FIRST_SECONDS, 2 * gc.RETRY_FIRST_SECONDS, 4 * gc.RETRY_FIRST_SECONDS]
    assert delays == sorted(delays)
    assert delays[-1] == gc.retry_delay(10_000) == gc.RETRY_MAX_SECONDS


async def test_a_dry_run_reports_a_deferred_orphan_and_moves_no_retry(node: Node) -> None:
    engine = node.engine()
    broken = await orphan(node, engine, node.recorder_network("broken", fail={"code": 11}, failOn="DEL"))
    clock = Clock()
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS, clock=clock, pod_gone_grace=0)
    await collector.run_once()

    dry = await collector.run_once(dry_run=True)
    clock.now += gc.RETRY_FIRST_SECONDS
    dry_when_due = await collector.run_once(dry_run=True)

    assert [o.container_id for o in dry.orphans] == [broken]
    assert dry.as_json()["deferred"] == [
        {"containerID": broken, "failures": 1, "retryInSeconds": gc.RETRY_FIRST_SECONDS}
    ]
    assert dry_when_due.deferred == []
    assert dry_when_due.failed == []
    assert dels(node, "broken") == 1
    await collector.run_once()
    assert dels(node, "broken") == 2, "due: the real pass tries it"


async def test_a_netns_that_cannot_be_looked_at_is_warned_about_once_until_it_changes(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = node.new_netns()
    via = tmp_path / "via"
    via.mkdir()
    (via / "ns").symlink_to(real.path)

    class Linked(Netns):
        @property
        def path(self) -> str:
            return str(via / "ns")

    engine = node.engine()
    container = new_container_id()
    await engine.add(
        node.request(Command.ADD, container, Linked(real.name), node.conf(node.recorder_network("c")))
    )
    collector = GarbageCollector(
        engine=engine, db=node.db, pods=Pods({("default", "pod-a"): "uid-a"}), pod_gone_grace=0
    )
    (via / "ns").unlink()
    via.rmdir()
    via.symlink_to("via")  # the path now answers ELOOP; the namespace lives on

    def warnings() -> int:
        return sum(
            1
            for r in caplog.records
            if r.name == "app.gc.collector" and r.levelno == logging.WARNING and str(via) in r.getMessage()
        )

    with caplog.at_level(logging.INFO, logger="app.gc.collector"):
        for _ in range(3):
            assert (await collector.run_once()).orphans == []
        assert warnings() == 1

        via.unlink()
        via.mkdir()
        (via / "ns").symlink_to(real.path)
        assert (await collector.run_once()).orphans == []
        (via / "ns").unlink()
        via.rmdir()
        via.symlink_to("via")
        await collector.run_once()
        await collector.run_once()
        assert warnings() == 2, "warned again once it changed"

    assert pending(node.checkpoint(container)) == ["eth0"]


async def test_an_operators_pass_tries_a_deferred_orphan_at_once(node: Node) -> None:
    engine = node.engine()
    broken_network = node.recorder_network("broken", fail={"code": 11, "msg": "stuck"}, failOn="DEL")
    broken = await orphan(node, engine, broken_network)
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS, clock=Clock(), pod_gone_grace=0)
    await collector.run_once()
    assert [d.container_id for d in (await collector.run_once()).deferred] == [broken]
    assert dels(node, "broken") == 1

    operators = await collector.run_once(retry_now=True)

    assert operators.deferred == []
    assert [cid for cid, _ in operators.failed] == [broken]
    assert dels(node, "broken") == 2, "the operator asked for a pass now: the deferred orphan is tried"
    assert pending(node.checkpoint(broken)) == ["eth0"]


async def test_multusctl_gc_shows_a_deferred_orphan_in_its_table(node: Node) -> None:
    engine = node.engine()
    broken = await orphan(
        node, engine, node.recorder_network("broken", fail={"code": 11, "msg": "x"}, failOn="DEL")
    )
    collector = GarbageCollector(engine=engine, db=node.db, pods=NO_PODS, clock=Clock(), pod_gone_grace=0)
    await collector.run_once()

    lines = render_gc(json.loads(json.dumps((await collector.run_once()).as_json())))

    assert f"deferred {broken[:12]}: 1 failed teardowns, next try in {gc.RETRY_FIRST_SECONDS:g} s" in lines


def test_multusctl_gc_shows_what_the_operator_pass_replayed_from_the_spool() -> None:
    """The answer carries ``spool`` since the operator pass replays it; the table showed none of it."""
    report = {
        "examined": 0,
        "spool": {
            "replayed": ["del-1-1-a.json", "del-2-1-b.json"],
            "failed": [{"entry": "del-2-1-b.json", "error": {"code": 11, "msg": "plugin busy"}}],
            "rejected": [{"entry": "del-3-1-c.json", "reason": "not a DEL"}],
            "superseded": [],
            "temporariesRemoved": [".del-4-1-d.json.tmp"],
            "kept": [{"entry": "del-5-1-e.json", "failures": 2, "retryInSeconds": 20.0}],
            "deferred": [{"entry": "del-6-1-f.json", "failures": 3, "retryInSeconds": 12.5}],
            "unreadable": [{"directory": "/var/lib/multus-py/spool", "reason": "Permission denied"}],
        },
    }

    lines = render_gc(report)

    assert (
        "spool: replayed 2 DELs (1 left work pending), rejected 1, meant for an earlier sandbox 0, "
        "abandoned temporaries removed 1"
    ) in lines
    assert "spool entry del-2-1-b.json left work pending: 11 plugin busy" in lines
    assert "spool entry del-3-1-c.json set aside: not a DEL" in lines
    assert (
        "spool entry del-5-1-e.json kept, its DEL failed (2 in a row): tried again in 20 s at the earliest"
        in lines
    )
    assert "spool entry del-6-1-f.json not tried, its DEL failed lately (3 in a row): due in 12 s" in lines
    assert "spool directory /var/lib/multus-py/spool cannot be read: Permission denied" in lines
    assert not [line for line in render_gc({**report, "spool": None}) if line.startswith("spool")]
