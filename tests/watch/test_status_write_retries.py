"""A network-status write that failed at ADD is retried in the background until it lands or is moot,
across daemon restarts.

Real: the emulator over HTTP and its fault injection, the pod/NAD watches into SQLite, the engine
and its checkpoint, bridge + host-local in real netns. Before the retries, a write that failed
for ``status_deadline`` left the pod without network-status for its whole life; before the
checkpoint's mark (``status_unwritten``), so did a daemon restart while the write was pending. A
restart is the engine's retries stopped (what a stop or kill -9 leaves: nothing in memory) and a
new ``StatusRetries`` over the same database resuming (the daemon's own start-up: ``tests/e2e``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from app.attach.cluster import ClusterUnavailableError, InterfaceEvent
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.locks import SandboxLocks
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command
from app.attach.status_retries import StatusRetries, StatusRetrySettings
from app.metrics import REGISTRY
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Connection, Database
from app.store.mirror_records import CONFIG_SOURCE_ANNOTATION, PodRecord
from app.watch.settings import WatchSettings
from tests.attach.mirror_reads import MirrorReadAfter
from tests.watch.hotplug_node import Layout
from tests.watch.support import FAST_SETTINGS, NETWORKS, Running, eventually, pod_manifest

STATUS = "k8s.v1.cni.cncf.io/network-status"
SETTINGS = dataclasses.replace(FAST_SETTINGS, status_deadline=1.0, status_retry_delays=(0.01, 0.02))
RETRY = StatusRetrySettings(initial_delay=0.05, max_delay=0.2)
EVERY_WRITE = 100_000
BOOT = "status-retries-boot"


@pytest.fixture
def settings() -> WatchSettings:
    return SETTINGS


def fail_status_writes(emulator: KubeApiEmulator, *, status: int = 503) -> None:
    """Every write of pod ``p``'s status (PATCH or PUT) answered ``status`` until the faults are cleared."""
    emulator.faults.fail_next(EVERY_WRITE, status=status, method="PATCH|PUT", path="/pods/p/status")


def pod_whose_status_writes_fail(emulator: KubeApiEmulator) -> dict[str, Any]:
    """Pod ``p`` selecting ``net-a``, every write of whose status fails (``fail_status_writes``)."""
    pod = emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net-a"}))
    fail_status_writes(emulator)
    return pod


@pytest.fixture
def second_netns() -> Iterator[str]:
    name = f"mpw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
async def engine(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout
) -> AsyncIterator[AttachEngine]:
    emulator.create_nad("default", "net-a", layout.bridge_conf("net-a", "10.235.0.0/24", suffix="a"))
    await eventually(lambda: running.watchers.nads.get_nad("default", "net-a"), lambda nad: nad is not None)
    watchers = running.watchers
    engine = AttachEngine(
        db=database,
        resolver=NetworkResolver(
            cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads, events=watchers.publisher)
        ),
        boot_id=BOOT,
        settings=EngineSettings(delegate_timeout=20, plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}),
        status=watchers.publisher,
        status_retry=RETRY,
    )
    yield engine
    emulator.faults.clear()
    assert engine.status_retries is not None
    await engine.status_retries.stop()


def _status_of(emulator: KubeApiEmulator, name: str) -> str | None:
    annotations = emulator.get_pod("default", name)["metadata"].get("annotations") or {}
    return annotations.get(STATUS)


def _status_writes(emulator: KubeApiEmulator, name: str, since: int) -> list[tuple[str, int | None]]:
    return [
        (record.method, record.status)
        for record in emulator.requests(since=since)
        if record.path.split("?")[0].endswith(f"/pods/{name}/status")
    ]


def _addresses(status: str | None) -> set[str]:
    return {ip for entry in json.loads(status or "[]") for ip in entry.get("ips", [])}


def _result_addresses(result: Any) -> set[str]:
    return {ip["address"].split("/")[0] for ip in result.get("ips", [])}


def _retries(engine: AttachEngine) -> StatusRetries:
    assert engine.status_retries is not None
    return engine.status_retries


async def _value(value: Any) -> Any:
    return value


def _marked_ids(connection: Connection) -> list[str]:
    query = "SELECT container_id FROM sandboxes WHERE status_unwritten ORDER BY created_at"
    return [str(row[0]) for row in connection.execute(query)]


async def _marked(database: Database) -> list[str]:
    """The sandboxes whose network-status the checkpoint marks as not written yet."""
    return await database.read(_marked_ids)


def _restarted_engine(engine: AttachEngine, running: Running, database: Database) -> AttachEngine:
    """An engine of a daemon started again on the same state database: its own locks and retries."""
    watchers = running.watchers
    return AttachEngine(
        db=database,
        resolver=NetworkResolver(
            cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads, events=watchers.publisher)
        ),
        boot_id=engine.boot_id,
        settings=EngineSettings(delegate_timeout=20, plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}),
        status=watchers.publisher,
        status_retry=RETRY,
    )


def _next_run(running: Running, database: Database) -> StatusRetries:
    """The retries of a daemon started again on the same state database (nothing in memory)."""
    return StatusRetries(
        publisher=running.watchers.publisher, db=database, locks=SandboxLocks(), boot_id=BOOT, settings=RETRY
    )


async def _a_restart_writes_nothing(emulator: KubeApiEmulator, running: Running, database: Database) -> None:
    """A daemon started again on the same state database offers no status write of pod ``p`` to its
    retries, and makes none."""
    since = emulator.last_request_seq
    next_run = _next_run(running, database)
    try:
        assert await next_run.resume(running.watchers.pods) == 0
        assert len(next_run) == 0
    finally:
        await next_run.stop()
    assert _status_writes(emulator, "p", since) == []


def _assert_status_is_the_newer_sandboxs(
    emulator: KubeApiEmulator, newer_result: Any, older_result: Any
) -> None:
    """Pod ``p``'s network-status holds the newer sandbox's addresses and none of the older's."""
    status = _status_of(emulator, "p")
    assert _result_addresses(newer_result) <= _addresses(status)
    assert not _result_addresses(older_result) & _addresses(status), "the older sandbox's status landed last"


async def test_a_status_write_failing_past_the_deadline_lands_once_the_api_recovers(
    engine: AttachEngine, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    since = emulator.last_request_seq

    result = await engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=netns))

    assert _status_of(emulator, "p") is None
    failed_at_add = len(_status_writes(emulator, "p", since))
    await eventually(  # the background retries keep trying while the API fails
        lambda: _value(len(_status_writes(emulator, "p", since))), lambda n: n > failed_at_add + 1
    )
    assert _status_of(emulator, "p") is None
    emulator.faults.clear()
    status = await eventually(lambda: _value(_status_of(emulator, "p")), lambda s: s is not None)
    assert [e["interface"] for e in json.loads(status or "[]")] == ["eth0", "net1"]
    assert _result_addresses(result) <= _addresses(status)
    await eventually(lambda: _value(len(_retries(engine))), lambda n: n == 0)
    assert _retries(engine).written == 1


def _retried(outcome: str) -> float:
    return REGISTRY.get_sample_value("multus_py_network_status_retries_total", {"outcome": outcome}) or 0.0


async def test_a_retry_that_finds_the_pod_deleted_counts_as_moot_not_written(
    engine: AttachEngine, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """The retry's PATCH answered 404 (the pod deleted before the runtime's DEL came) writes
    nothing: it ends the retry, counted ``moot``; it was counted, and logged, as written."""
    pod = pod_whose_status_writes_fail(emulator)
    await engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=netns))
    assert len(_retries(engine)) == 1
    written, moot = _retried("written"), _retried("moot")
    since = emulator.last_request_seq

    emulator.delete_pod("default", "p")
    emulator.faults.clear()
    await eventually(lambda: _value(len(_retries(engine))), lambda n: n == 0)

    assert 404 in {status for _, status in _status_writes(emulator, "p", since)}
    assert _retries(engine).written == 0
    assert (_retried("written") - written, _retried("moot") - moot) == (0, 1)


async def test_no_status_write_follows_the_del_of_a_sandbox_whose_write_was_pending(
    engine: AttachEngine, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    container = secrets.token_hex(32)
    since = emulator.last_request_seq
    await engine.add(layout.request(Command.ADD, pod, container, netns=netns))
    failed_at_add = len(_status_writes(emulator, "p", since))
    await eventually(lambda: _value(len(_status_writes(emulator, "p", since))), lambda n: n > failed_at_add)

    await engine.delete(layout.request(Command.DEL, pod, container, netns=netns))
    after_del = emulator.last_request_seq
    emulator.faults.clear()  # the API would now take the write

    await eventually(lambda: _value(len(_retries(engine))), lambda n: n == 0)
    assert _status_writes(emulator, "p", after_del) == []
    assert _status_of(emulator, "p") is None


async def test_a_status_write_the_api_refuses_for_good_backs_off_past_the_outage_bound_logged_once(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """403 to both the PATCH and the PUT (the ClusterRole lacks them) was retried like an outage:
    every ``max_delay`` at least, for ever, with a warning at every try. Nothing changes until the
    cluster is fixed: the retries back off past ``max_delay`` (up to minutes), logging it once."""
    pod = emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net-a"}))
    record = PodRecord("default", "p", pod["metadata"]["uid"])
    fail_status_writes(emulator, status=403)
    since = emulator.last_request_seq
    await engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=netns))
    failed_at_add = len(_status_writes(emulator, "p", since))

    await eventually(  # an outage's next try is never further than max_delay away
        lambda: _value(_retries(engine).next_try(record)),
        lambda wait: wait is not None and wait > 2 * RETRY.max_delay,
    )

    tries = len(_status_writes(emulator, "p", since)) - failed_at_add
    assert tries >= 2, "the backoff grows from initial_delay as for an outage"
    logged = [r.getMessage() for r in caplog.records if r.name == "app.attach.status_retries"]
    assert [message for message in logged if "refuses it" in message] == logged
    assert len(logged) == 1
    assert _retries(engine).pending(record) is not None  # never given up: RBAC may be fixed
    assert _status_of(emulator, "p") is None


async def test_a_newer_sandboxs_add_supersedes_the_pending_write_of_an_older_one(
    engine: AttachEngine, emulator: KubeApiEmulator, layout: Layout, netns: str, second_netns: str
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    older = secrets.token_hex(32)
    older_result = await engine.add(layout.request(Command.ADD, pod, older, netns=netns))
    record = PodRecord("default", "p", pod["metadata"]["uid"])
    assert _retries(engine).pending(record) == older

    newer = secrets.token_hex(32)
    async with engine.locks.hold(older):  # the older write's retry cannot start before the newer ADD
        emulator.faults.clear()
        newer_result = await engine.add(layout.request(Command.ADD, pod, newer, netns=second_netns))
    assert _retries(engine).pending(record) is None

    status = _status_of(emulator, "p")
    assert _result_addresses(newer_result) <= _addresses(status)
    await eventually(lambda: _value(len(_retries(engine))), lambda n: n == 0)
    _assert_status_is_the_newer_sandboxs(emulator, newer_result, older_result)
    assert _retries(engine).written == 0


async def test_a_retry_in_flight_when_a_newer_add_supersedes_it_ends_as_written_not_as_a_crash(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    second_netns: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer ADD of the pod drops the pending write (``supersede``) and waits for the retry in
    flight; that retry, its write landed, removed its entry again: KeyError, logged as a failed
    retry, and the write it made not counted."""
    pod = emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net-a"}))
    record = PodRecord("default", "p", pod["metadata"]["uid"])
    fail_status_writes(emulator)
    await engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=netns))
    emulator.faults.clear()
    since = emulator.last_request_seq
    emulator.faults.pause()
    try:
        async with asyncio.timeout(10):
            await emulator.wait_for_request(since=since, method="PATCH", path="/pods/p/status")
        newer = asyncio.create_task(
            engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=second_netns))
        )
        await eventually(lambda: _value(_retries(engine).pending(record)), lambda pending: pending is None)
    finally:
        emulator.faults.resume()
    async with asyncio.timeout(20):
        await newer

    assert _retries(engine).written == 1
    retries_log = [r for r in caplog.records if r.name == "app.attach.status_retries"]
    assert [r.getMessage() for r in retries_log if r.levelno >= logging.ERROR] == []


async def test_pending_status_writes_are_bounded_dropping_the_oldest(
    database: Database, running: Running
) -> None:
    retries = StatusRetries(
        publisher=running.watchers.publisher,
        db=database,
        locks=SandboxLocks(),
        boot_id=BOOT,
        settings=StatusRetrySettings(initial_delay=3600.0, max_pending=2),
    )
    pods = [PodRecord(namespace="default", name=f"p{i}", uid=f"uid-{i}") for i in range(3)]
    try:
        for index, pod in enumerate(pods):
            retries.offer(container_id=f"c{index}", pod=pod)
        assert len(retries) == 2
        assert retries.dropped == 1
        assert [retries.pending(pod) for pod in pods] == [None, "c1", "c2"]
        retries.offer(container_id="c3", pod=pods[1])  # a newer write of p1 replaces its pending one
        assert len(retries) == 2
        assert [retries.pending(pod) for pod in pods] == [None, "c3", "c2"]
    finally:
        await retries.stop()


async def test_a_static_pods_status_write_that_failed_at_add_lands_once_the_api_recovers(
    engine: AttachEngine, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> None:
    """A static pod's runtime uid (``K8S_POD_UID``) is never its mirror pod's API uid: the retry
    took the sandbox for another pod's and gave the write up as moot."""
    pod = emulator.create_pod(
        pod_manifest("p", annotations={NETWORKS: "net-a", CONFIG_SOURCE_ANNOTATION: "file"})
    )
    as_the_kubelet_runs_it = {**pod, "metadata": {**pod["metadata"], "uid": str(uuid.uuid4())}}
    fail_status_writes(emulator)
    result = await engine.add(
        layout.request(Command.ADD, as_the_kubelet_runs_it, secrets.token_hex(32), netns=netns)
    )
    assert _status_of(emulator, "p") is None

    emulator.faults.clear()
    status = await eventually(lambda: _value(_status_of(emulator, "p")), lambda s: s is not None)
    assert _result_addresses(result) <= _addresses(status)
    await eventually(lambda: _value(_retries(engine).written), lambda written: written == 1)


async def test_a_status_write_that_failed_at_add_is_written_after_a_restart_without_a_new_add(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    container = secrets.token_hex(32)
    result = await engine.add(layout.request(Command.ADD, pod, container, netns=netns))
    assert await _marked(database) == [container]  # committed before the ADD answered

    await _retries(engine).stop()  # the daemon stops (or is killed): its pending writes are forgotten
    emulator.faults.clear()
    next_run = _next_run(running, database)
    try:
        assert await next_run.resume(running.watchers.pods) == 1
        status = await eventually(lambda: _value(_status_of(emulator, "p")), lambda s: s is not None)
        assert [e["interface"] for e in json.loads(status or "[]")] == ["eth0", "net1"]
        assert _result_addresses(result) <= _addresses(status)
        await eventually(lambda: _value(next_run.written), lambda written: written == 1)
        assert await _marked(database) == []  # cleared under the sandbox's lock, before it counted
    finally:
        await next_run.stop()


async def test_a_del_before_the_restart_leaves_no_status_write_to_retry(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    container = secrets.token_hex(32)
    await engine.add(layout.request(Command.ADD, pod, container, netns=netns))
    assert await _marked(database) == [container]
    await engine.delete(layout.request(Command.DEL, pod, container, netns=netns))
    await _retries(engine).stop()

    emulator.faults.clear()
    await _a_restart_writes_nothing(emulator, running, database)
    assert await _marked(database) == []
    assert _status_of(emulator, "p") is None


async def test_a_status_write_a_retry_made_is_not_made_again_after_a_restart(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    container = secrets.token_hex(32)
    await engine.add(layout.request(Command.ADD, pod, container, netns=netns))
    assert await _marked(database) == [container]
    emulator.faults.clear()
    await eventually(lambda: _value(_retries(engine).written), lambda written: written == 1)
    assert await _marked(database) == []  # cleared under the sandbox's lock, before it counted
    await _retries(engine).stop()

    await _a_restart_writes_nothing(emulator, running, database)


async def test_a_restart_never_writes_an_older_sandboxs_status_over_a_newer_ones(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    second_netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    older = secrets.token_hex(32)
    older_result = await engine.add(layout.request(Command.ADD, pod, older, netns=netns))
    newer = secrets.token_hex(32)
    async with engine.locks.hold(older):  # the older write's retry cannot start before the newer ADD
        emulator.faults.clear()
        newer_result = await engine.add(layout.request(Command.ADD, pod, newer, netns=second_netns))
    assert await _marked(database) == [older]  # a successful ADD's write adds no statement for it
    await _retries(engine).stop()

    await _a_restart_writes_nothing(emulator, running, database)
    _assert_status_is_the_newer_sandboxs(emulator, newer_result, older_result)


async def test_a_restart_never_writes_an_older_sandboxs_status_over_a_newer_one_added_while_it_resumed(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    second_netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    older = secrets.token_hex(32)
    older_result = await engine.add(layout.request(Command.ADD, pod, older, netns=netns))
    await _retries(engine).stop()  # the daemon stops (or is killed) with the write not made
    emulator.faults.clear()

    restarted = _restarted_engine(engine, running, database)
    retries = _retries(restarted)
    newer = secrets.token_hex(32)
    added: list[Any] = []

    async def newer_add() -> None:  # its write lands: nothing of the pod is pending after it
        added.append(await restarted.add(layout.request(Command.ADD, pod, newer, netns=second_netns)))

    try:
        await retries.resume(MirrorReadAfter(running.watchers.pods, newer_add))
        await eventually(lambda: _value(len(retries)), lambda pending: pending == 0)
    finally:
        await retries.stop()
    _assert_status_is_the_newer_sandboxs(emulator, added[0], older_result)


async def test_a_restart_leaves_the_status_of_a_pod_recreated_under_its_name_to_its_own_add(
    engine: AttachEngine,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
    running: Running,
    database: Database,
) -> None:
    pod = pod_whose_status_writes_fail(emulator)
    await engine.add(layout.request(Command.ADD, pod, secrets.token_hex(32), netns=netns))
    await _retries(engine).stop()
    emulator.faults.clear()
    emulator.delete_pod("default", "p")
    successor = emulator.create_pod(pod_manifest("p", annotations={NETWORKS: "net-a"}))
    await eventually(
        lambda: running.watchers.pods.mirrored_pod("default", "p"),
        lambda mirrored: mirrored is not None and mirrored.uid == successor["metadata"]["uid"],
    )

    await _a_restart_writes_nothing(emulator, running, database)


async def test_nothing_is_offered_once_the_retries_stopped(database: Database, running: Running) -> None:
    """The daemon stops its retries before its background tasks: start-up's resume, still offering,
    must not start a retry task that outlives them (and the database)."""
    retries = _next_run(running, database)
    await retries.stop()

    retries.offer(container_id="c1", pod=PodRecord(namespace="default", name="p", uid="uid-p"))

    assert len(retries) == 0
    assert [t for t in asyncio.all_tasks() if t.get_name() == "network-status-retries"] == []


class _Unanswered:
    """A publisher whose API server answers no network-status write until ``answering`` is set."""

    def __init__(self) -> None:
        self.tries = 0
        self.answering = False

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        self.tries += 1
        if not self.answering:
            raise ClusterUnavailableError("no answer")
        return True

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        pass

    def emit_network_not_found(self, pod: PodRecord, *, namespace: str, name: str, error: str) -> None:
        pass


async def test_a_status_write_failing_for_hours_is_still_retried_and_lands_once_the_api_answers(
    engine: AttachEngine,
    running: Running,
    database: Database,
    emulator: KubeApiEmulator,
    layout: Layout,
    netns: str,
) -> None:
    """Each failed retry doubled the delay from ``initial_delay`` as a float times ``2 **
    attempts``: past 1,024 attempts (some 17 hours of an API server that does not answer, at the
    minute's cap; a week of 403s at the refused cap) the int no longer converted to a float, and
    the ``OverflowError`` ended the retries' task: no pending write of any pod was retried any
    more, until an ADD's failed write started the task again, which met the same write first. Here
    the delays are zero, so the attempts pile up at once."""
    pod = pod_whose_status_writes_fail(emulator)
    container = secrets.token_hex(32)
    await engine.add(layout.request(Command.ADD, pod, container, netns=netns))
    mirrored = await running.watchers.pods.mirrored_pod("default", "p")
    assert mirrored is not None
    api = _Unanswered()
    retries = StatusRetries(
        publisher=api,
        db=database,
        locks=SandboxLocks(),
        boot_id=BOOT,
        settings=StatusRetrySettings(initial_delay=0.0, max_delay=0.0),
    )
    try:
        retries.offer(container_id=container, pod=mirrored)
        await eventually(lambda: _value(api.tries), lambda tries: tries > 1030, within=60)

        api.answering = True
        await eventually(lambda: _value(len(retries)), lambda pending: pending == 0)
        assert retries.written == 1
    finally:
        await retries.stop()
