"""ADD records every delegate before answering; DEL replays the checkpoint, newest delegate first."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import threading
from collections.abc import Coroutine

import pytest

from app.cni import invoke, reaper
from app.cni.types import CniError, ErrorCode
from app.store import database
from tests.cni.support import blocked_reading_stdin, wait_until
from tests.core.support import Command, Node, delegate_lines, new_container_id, pending, request_lines


async def test_add_records_each_delegate_and_answers_with_the_cluster_networks_result(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()

    answer = await engine.add(node.request(Command.ADD, container, netns, conf))

    assert answer["cniVersion"] == "1.1.0"
    assert answer["ips"] == [{"address": "10.10.1.2/24", "interface": 0}]
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    assert [(a.ifname, a.network_name, a.state) for a in record.attachments] == [
        ("eth0", "cluster", "added"),
        ("net1", "extra", "added"),
    ]
    assert node.calls() == [("ADD", "cluster", "eth0"), ("ADD", "extra", "net1")]
    lines = node.history(container)
    assert delegate_lines(lines, "ADD") == [("eth0", "runtime", "ok"), ("net1", "runtime", "ok")]
    assert [line.outcome for line in request_lines(lines, "ADD")] == ["ok"]


async def test_delete_runs_the_recorded_delegates_newest_first_and_forgets_the_sandbox(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert node.checkpoint(container) is None
    assert node.calls()[2:] == [("DEL", "extra", "net1"), ("DEL", "cluster", "eth0")]
    assert delegate_lines(node.history(container), "DEL") == [
        ("net1", "runtime", "ok"),
        ("eth0", "runtime", "ok"),
    ]


async def test_delete_replays_the_recorded_config_after_the_network_files_are_gone(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))
    for path in node.conf_dir.iterdir():
        path.unlink()

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    added, deleted = node.recorder_entries("ADD")[0], node.recorder_entries("DEL")[0]
    assert {k: v for k, v in deleted["stdin"].items() if k != "prevResult"} == added["stdin"]
    assert deleted["stdin"]["prevResult"]["ips"] == [{"address": "10.10.1.2/24", "interface": 0}]
    assert deleted["env"]["CNI_ARGS"] == added["env"]["CNI_ARGS"]
    assert node.checkpoint(container) is None


async def test_delete_of_an_unknown_sandbox_succeeds_and_runs_nothing(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    container = new_container_id()

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == []
    assert [line.outcome for line in request_lines(node.history(container), "DEL")] == ["ok"]


async def test_a_failing_delegate_del_keeps_its_attachment_recorded_with_the_error(node: Node) -> None:
    conf = node.conf(
        node.recorder_network("cluster"),
        node.recorder_network("sticky", fail={"code": 11, "msg": "busy"}, failOn="DEL"),
    )
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))

    with pytest.raises(CniError) as refused:
        await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert refused.value.code == 11
    record = node.checkpoint(container)
    assert pending(record) == ["net1"]
    assert record is not None
    assert record.state == "deleting"
    assert "busy" in (record.attachments[0].last_error or "")


async def test_add_of_a_sandbox_already_attached_is_refused_and_changes_nothing(node: Node) -> None:
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    await engine.add(node.request(Command.ADD, container, netns, conf))

    with pytest.raises(CniError) as refused:
        await engine.add(node.request(Command.ADD, container, netns, conf))

    assert refused.value.code == 4
    assert "already attached" in refused.value.msg
    assert pending(node.checkpoint(container)) == ["eth0"]
    assert node.calls() == [("ADD", "cluster", "eth0")]


async def test_bridge_and_host_local_attach_a_real_interface_and_del_releases_its_lease(node: Node) -> None:
    prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}."
    conf = node.conf(node.bridge_network("pods", subnet=f"{prefix}0/24"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()

    answer = await engine.add(node.request(Command.ADD, container, netns, conf))

    assert "eth0" in netns.links()
    assert answer["ips"][0]["address"].startswith(prefix)
    leases = [p for p in (node.ipam_dir / "pods").iterdir() if p.name.startswith(prefix)]
    assert len(leases) == 1
    await engine.check(node.request(Command.CHECK, container, netns, conf))

    await engine.delete(node.request(Command.DEL, container, netns, conf))

    assert "eth0" not in netns.links()
    assert not leases[0].exists()
    assert node.checkpoint(container) is None


async def test_each_delegates_intent_is_on_disk_before_it_runs(node: Node) -> None:
    watch = {"checkpoint": str(node.state_db)}
    conf = node.conf(node.recorder_network("cluster", **watch), node.recorder_network("extra", **watch))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()

    await engine.add(node.request(Command.ADD, container, netns, conf))
    await engine.delete(node.request(Command.DEL, container, netns, conf))

    seen = [(entry["env"]["CNI_IFNAME"], entry["checkpoint"]) for entry in node.recorder_entries("ADD")]
    assert [(ifname, row["state"], row["sandbox_state"]) for ifname, row in seen] == [
        ("eth0", "intent", "adding"),
        ("net1", "intent", "adding"),
    ]
    for entry in node.recorder_entries("ADD"):
        assert json.loads(entry["checkpoint"]["config"]) == entry["stdin"]
    deleting = [
        (e["env"]["CNI_IFNAME"], e["checkpoint"]["sandbox_state"]) for e in node.recorder_entries("DEL")
    ]
    assert deleting == [("net1", "deleting"), ("eth0", "deleting")]


async def test_an_adds_two_commits_are_synced_and_a_dels_two_are_not(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADD: intents, then results (invariants 2 and 3). The intents are committed, then synced while
    the first plugin starts (``write_then_sync``); the results are committed with
    ``synchronous=FULL``. DEL: begin, then finish, not synced (``docs/state.md``): undone by a power
    loss, the sandbox is DELed again at start-up."""
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    commits: list[str] = []
    submit_write, write_then_sync = node.db.submit_write, node.db.write_then_sync

    def recording_durability(work: database.Work[object], *, durable: bool = True) -> asyncio.Future[object]:
        commits.append("durable" if durable else "unsynced")
        return submit_write(work, durable=durable)

    def recording_later_sync(
        work: database.Work[object],
    ) -> Coroutine[object, object, tuple[object, asyncio.Future[None]]]:
        commits.append("synced after")
        return write_then_sync(work)

    monkeypatch.setattr(node.db, "submit_write", recording_durability)
    monkeypatch.setattr(node.db, "write_then_sync", recording_later_sync)

    await engine.add(node.request(Command.ADD, container, netns, conf))
    assert commits == ["synced after", "durable"]
    await engine.delete(node.request(Command.DEL, container, netns, conf))
    assert commits == ["synced after", "durable", "unsynced", "unsynced"]
    assert node.checkpoint(container) is None


async def test_the_first_plugin_starts_while_the_intents_are_synced_and_reads_its_input_after(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 2: a delegate acts only on its input, which it gets once its intent is on disk."""
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()
    release = threading.Event()
    sync = database._WalSync.sync

    def held_sync(wal: database._WalSync) -> None:
        release.wait(30)
        sync(wal)

    monkeypatch.setattr(database._WalSync, "sync", held_sync)
    adding = asyncio.ensure_future(engine.add(node.request(Command.ADD, container, netns, conf)))
    try:
        marker = invoke.delegate_marker(container, "eth0")

        def first_plugin_waits_for_its_input() -> bool:
            leaders = [found.pid for found in reaper.find([marker]) if found.pid == found.pgid]
            return bool(leaders) and blocked_reading_stdin(leaders[0])

        await wait_until(first_plugin_waits_for_its_input, within=20)
        record = node.checkpoint(container)
        assert record is not None
        assert [a.state for a in record.attachments] == ["intent", "intent"]
        assert node.calls() == []  # started, committed, but nothing read yet
    finally:
        release.set()
    await adding
    assert node.calls() == [("ADD", "cluster", "eth0"), ("ADD", "extra", "net1")]


async def test_an_add_whose_intents_cannot_be_synced_fails_and_leaves_nothing(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = node.conf(node.recorder_network("cluster"), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    container = new_container_id()

    def failing_sync(wal: database._WalSync) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(database._WalSync, "sync", failing_sync)

    with pytest.raises(CniError) as caught:
        await engine.add(node.request(Command.ADD, container, netns, conf))
    # the state database's storage failed: an I/O failure naming it, as for a full disk, not code 999
    assert caught.value.code == ErrorCode.IO_FAILURE
    assert "state database" in caught.value.msg
    assert "Input/output error" in caught.value.msg
    assert node.calls() == []  # no plugin ever read its input
    assert node.checkpoint(container) is None
    assert not reaper.find([invoke.delegate_marker(container, "eth0")])
    assert [line.outcome for line in request_lines(node.history(container), "ADD")] == ["error"]


async def test_an_add_the_full_state_database_cannot_record_fails_as_an_io_failure_and_runs_nothing(
    node: Node,
) -> None:
    """A full disk under the checkpoint: the intents cannot be committed, so no delegate may run; the
    runtime hears an I/O failure naming the state database (not an internal error), though the
    history line of the refusal cannot be written either; once space is back, ADDs work again."""
    padding = "x" * 200_000  # a config needing pages the file does not have yet
    conf = node.conf(node.recorder_network("cluster", padding=padding), node.recorder_network("extra"))
    engine = node.engine()
    netns = node.new_netns()
    pages = node.db.write_sync(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    node.db.write_sync(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())
    container = new_container_id()

    with pytest.raises(CniError) as refused:
        await engine.add(node.request(Command.ADD, container, netns, conf))

    assert refused.value.code == 5, refused.value
    assert "state database" in refused.value.msg
    assert node.calls() == []
    assert node.checkpoint(container) is None
    node.db.write_sync(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone())
    again = new_container_id()
    await engine.add(node.request(Command.ADD, again, netns, conf))
    assert node.calls() == [("ADD", "cluster", "eth0"), ("ADD", "extra", "net1")]
