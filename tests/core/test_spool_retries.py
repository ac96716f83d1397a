"""Spooled DELs kept after a failed replay (invariants 5b and 7): retried under a backoff, never given
up, and reported. In process: real store, real plugins (the recorder), a clock the test moves.

Two kinds of entry stay spooled after their replay: the DEL of a sandbox only upstream Multus's
cache knows, when it fails (no checkpoint owns its retry), and one whose replay raised what no DEL
path expects (a bug, a failed write). Both were replayed on every GC pass for ever, a plugin run
and an error line each pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from app.daemon import spool
from app.gc import collector
from app.gc.collector import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, retry_delay
from app.metrics import REGISTRY
from tests.core.support import Node, SurpriseAtFirstDel, new_container_id
from tests.core.test_spool_entries import spooled_name
from tests.core.test_spool_replay import attached, daemon_config, spool_entry


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failing_upstream_network(node: Node, *, fail: bool = True) -> dict[str, Any]:
    recorder: dict[str, Any] = {"log": str(node.recorder_log)}
    if fail:
        recorder["fail"] = {"code": 11, "msg": "later"}
    return {"cniVersion": "1.0.0", "name": "upstream-cluster", "type": "recorder", "recorder": recorder}


def upstream_sandbox(node: Node, *, fail: bool = True) -> str:
    """A sandbox only upstream's cache knows, whose DEL fails (or not)."""
    container = new_container_id()
    network = failing_upstream_network(node, fail=fail)
    node.write_upstream_cache(container, network=network, ifname="eth0", netns="")
    return container


def dels(node: Node) -> int:
    return len(node.recorder_entries("DEL"))


async def replay(node: Node, directory: Path, **options: Any) -> spool.SpoolReport:
    return await spool.replay(
        spool_dir=directory,
        engine=options.pop("engine", None) or node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
        **options,
    )


async def test_a_failing_upstream_del_is_not_replayed_again_before_its_retry_is_due(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's replays (start-up, every GC pass) share one backoff: the entry's second pass
    runs nothing and logs nothing; an operator's pass (``retry_now``) tries it at once."""
    monkeypatch.setattr(collector, "retry_delay", lambda failures: 1e9)  # never due within this test
    directory = node.root / "spool"
    entry = spool_entry(directory, upstream_sandbox(node))

    first = await replay(node, directory)
    second = await replay(node, directory)

    assert dels(node) == 1, "the second pass ran the failing DEL again"
    assert [retry.entry for retry in first.kept] == [entry.name]
    assert (second.replayed, second.failed, second.kept) == ([], [], [])
    [deferred] = second.deferred
    assert (deferred.entry, deferred.failures) == (entry.name, 1)
    assert second.as_json()["deferred"] == [deferred.as_json()]
    assert entry.exists()

    operator = await replay(node, directory, retry_now=True)

    assert dels(node) == 2
    assert [(retry.entry, retry.failures) for retry in operator.kept] == [(entry.name, 2)]
    assert entry.exists()


async def test_a_kept_entry_waits_twice_as_long_after_each_failure_and_is_never_given_up(
    node: Node,
) -> None:
    clock = Clock()
    retries = spool.SpoolRetries(clock)
    directory = node.root / "spool"
    container = upstream_sandbox(node)
    entry = spool_entry(directory, container)
    waits = []

    for failures in range(1, 8):
        report = await replay(node, directory, retries=retries)
        [kept] = report.kept
        assert (kept.entry, kept.failures) == (entry.name, failures)
        waits.append(kept.retry_in_seconds)
        clock.now += kept.retry_in_seconds - 1
        assert [retry.entry for retry in (await replay(node, directory, retries=retries)).deferred] == [
            entry.name
        ]
        clock.now += 1

    assert waits == [retry_delay(failures) for failures in range(1, 8)]
    assert waits[0] == RETRY_FIRST_SECONDS
    assert waits[-1] == RETRY_MAX_SECONDS
    assert dels(node) == 7
    assert sorted(directory.iterdir()) == [entry], "kept as it is: neither dropped nor set aside"

    network = failing_upstream_network(node, fail=False)  # the DEL can succeed now
    node.write_upstream_cache(container, network=network, ifname="eth0", netns="")
    report = await replay(node, directory, retries=retries)

    assert report.replayed == [entry.name]
    assert not entry.exists()
    assert retries.failures(entry) == 0


def unexpected_spool_errors() -> float:
    value = REGISTRY.get_sample_value("multus_py_engine_unexpected_errors_total", {"step": "spool"})
    return value or 0.0


async def test_an_entry_kept_after_a_surprise_waits_for_its_retry_too(node: Node) -> None:
    clock = Clock()
    retries = spool.SpoolRetries(clock)
    directory = node.root / "spool"
    container = await attached(node)
    entry = spool_entry(directory, container, name=spooled_name(time.time_ns(), container))
    engine = node.engine(crash=SurpriseAtFirstDel())
    counted = unexpected_spool_errors()

    first = await replay(node, directory, engine=engine, retries=retries)
    second = await replay(node, directory, engine=engine, retries=retries)

    assert [retry.entry for retry in first.kept] == [entry.name]
    assert [retry.entry for retry in second.deferred] == [entry.name]
    assert unexpected_spool_errors() == counted + 1, "tried once"
    assert node.checkpoint(container) is not None

    clock.now += RETRY_FIRST_SECONDS
    third = await replay(node, directory, engine=engine, retries=retries)

    assert third.replayed == [entry.name]
    assert node.checkpoint(container) is None


async def test_entries_that_failed_lately_go_after_the_others(node: Node) -> None:
    """A kept entry whose DEL takes long (a plugin up to its timeout) holds back no fresh one."""
    clock = Clock()
    retries = spool.SpoolRetries(clock)
    directory = node.root / "spool"
    failing = upstream_sandbox(node)
    kept = spool_entry(directory, failing, name=spooled_name(time.time_ns(), failing))
    await replay(node, directory, retries=retries)
    fresh_container = await attached(node)  # spooled after the kept one: its name sorts after it
    fresh = spool_entry(directory, fresh_container, name=spooled_name(time.time_ns(), fresh_container))
    assert sorted([fresh.name, kept.name]) == [kept.name, fresh.name]
    clock.now += RETRY_FIRST_SECONDS

    report = await replay(node, directory, retries=retries)

    assert report.replayed == [fresh.name]
    assert [retry.entry for retry in report.kept] == [kept.name]
    last_two = [network for command, network, _ in node.calls() if command == "DEL"][-2:]
    assert last_two == [f"cluster-{fresh_container[:6]}", "upstream-cluster"]


async def test_an_entry_gone_between_two_replays_is_forgotten(node: Node) -> None:
    """Its backoff must not outlive it (nor apply to a later entry of its name)."""
    clock = Clock()
    retries = spool.SpoolRetries(clock)
    directory = node.root / "spool"
    entry = spool_entry(directory, upstream_sandbox(node))
    await replay(node, directory, retries=retries)
    assert retries.failures(entry) == 1

    entry.unlink()
    await replay(node, directory, retries=retries)

    assert retries.failures(entry) == 0
