"""Native hot-plug's network-status writes: whom they keep waiting, how often a refused one is sent.

Real: the emulator over HTTP (its request log, failures and pause), the pod/NAD watches into
SQLite, the reconciler and the engine, bridge + host-local in a real netns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.attach.hotplug import HotplugReconciler, ReconcilerSettings
from app.attach.requests import Command
from app.attach.status_retries import StatusRetrySettings
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from app.watch.settings import WatchSettings
from app.watch.watchers import Watchers
from tests.watch.hotplug_node import Layout, build
from tests.watch.support import FAST_SETTINGS, NODE, eventually, pod_manifest
from tests.watch.test_hotplug_native import Node, nads

PATIENT = dataclasses.replace(FAST_SETTINGS, request_timeout=60.0, status_deadline=60.0)
"""A status write held by the emulator stays in flight for the whole test, not a client timeout."""


@pytest.fixture
def settings() -> WatchSettings:
    return PATIENT


@pytest.fixture
def node_layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(tmp_path, secrets.token_hex(3))
    layout.write_primary()
    yield layout
    for suffix in ("", "a", "b", "d"):
        subprocess.run(["ip", "link", "del", layout.bridge + suffix], check=False, capture_output=True)


@asynccontextmanager
async def watching(*, api: Any, database: Database) -> AsyncIterator[Watchers]:
    """This node's watches."""
    watchers = Watchers(api=api, database=database, node_name=NODE, settings=PATIENT)
    task = asyncio.create_task(watchers.run(), name="test.watchers")
    try:
        async with asyncio.timeout(10):
            await watchers.wait_synced()
        for name in ("hot-a", "hot-b", "hot-dev"):
            await eventually(partial(watchers.nads.get_nad, "default", name), lambda nad: nad is not None)
        yield watchers
    finally:
        watchers.stop()
        async with asyncio.timeout(10):
            await task


@asynccontextmanager
async def reconciling(reconciler: HotplugReconciler, watchers: Watchers) -> AsyncIterator[None]:
    task = asyncio.create_task(reconciler.run(ready=watchers.wait_synced), name="test.hotplug")
    try:
        yield
    finally:
        reconciler.stop()
        async with asyncio.timeout(10):
            await task


async def _async(value: Any) -> Any:
    return value


async def hot_plug_left_unwritten(node: Node, watchers: Watchers, name: str) -> tuple[dict[str, Any], str]:
    """A running pod whose reconciler hot-plugged net3 and then stopped before any of its status
    writes got through (the API refused them all): the annotation still shows eth0 alone."""
    pod = node.emulator.create_pod(pod_manifest(name))
    container = secrets.token_hex(32)
    await node.engine.add(node.request(Command.ADD, pod, container))
    node.emulator.faults.fail_next(10_000, status=503, method="PATCH", path=f"/pods/{name}/status$")
    async with reconciling(node.reconciler, watchers):
        node.annotate(name, "hot-a@net3")
        await eventually(
            lambda: node.recorded(container), lambda got: got == {"eth0": "added", "net3": "added"}
        )
        await eventually(
            lambda: _async(dict(node.reconciler.pending)), lambda pending: ("default", name) in pending
        )
    node.emulator.faults.clear()
    assert node.status_interfaces(name) == ["eth0"]
    return pod, container


async def test_a_runtime_del_does_not_wait_for_the_reconcilers_network_status_write(
    api: Any, database: Database, emulator: KubeApiEmulator, node_layout: Layout, netns: str
) -> None:
    """The reconciler held the sandbox's lock across its network-status PATCH (up to
    ``status_deadline``): the runtime's DEL of that sandbox waited behind an API call. Here the
    emulator holds the PATCH; the DEL must finish while it is still in flight."""
    nads(emulator, node_layout)
    async with watching(api=api, database=database) as watchers:
        engine, reconciler = build(database=database, watchers=watchers, layout=node_layout)
        node = Node(engine, reconciler, emulator, node_layout, netns, database)
        pod, container = await hot_plug_left_unwritten(node, watchers, "leaving")
        # a restarted reconciler's first pass writes the status with no watch event to wait for, so
        # the emulator can hold every request from now on
        emulator.faults.pause()
        since = emulator.last_request_seq
        successor_engine, successor = build(database=database, watchers=watchers, layout=node_layout)
        try:
            async with reconciling(successor, watchers):
                async with asyncio.timeout(10):
                    patch = await emulator.wait_for_request(
                        since=since, method="PATCH", path="/pods/leaving/status$"
                    )
                passes = successor.passes

                try:
                    async with asyncio.timeout(20):
                        await successor_engine.delete(node.request(Command.DEL, pod, container))
                except TimeoutError:
                    raise AssertionError("the DEL is held behind the network-status PATCH") from None

                assert patch.status is None, "the DEL waited until the PATCH was answered"
                assert successor.passes == passes, "the DEL waited until the status write gave up"
                assert await node.links() == {"lo"}
                emulator.faults.resume()
                await eventually(lambda: _async(successor.passes), lambda done: done > passes, within=10)
        finally:
            emulator.faults.resume()


def _status_writes(emulator: KubeApiEmulator, name: str, since: int) -> list[tuple[str, int | None]]:
    return [
        (record.method, record.status)
        for record in emulator.requests(since=since)
        if record.method in ("PATCH", "PUT") and record.path.split("?")[0].endswith(f"/pods/{name}/status")
    ]


async def one_more_pass(reconciler: HotplugReconciler, name: str) -> None:
    """Have the reconciler look at pod ``name`` once more, and wait until it has."""
    passes = reconciler.passes
    reconciler.pod_changed("default", name)
    await eventually(lambda: _async(reconciler.passes), lambda done: done > passes)


@pytest.mark.parametrize(("status", "held"), [(403, True), (503, False)], ids=["403-refused", "503-outage"])
async def test_a_status_write_the_api_refuses_for_good_is_not_sent_again_at_every_pass(
    api: Any,
    database: Database,
    emulator: KubeApiEmulator,
    node_layout: Layout,
    netns: str,
    caplog: pytest.LogCaptureFixture,
    status: int,
    held: bool,
) -> None:
    """The reconciler sent a write refused with 403 to both its PATCH and its PUT (RBAC missing)
    again at every pass of the pod (its backoff, capped at a minute, and every resync and pod event
    besides), logging it twice each time, for ever. Now no pass sends it again before its backoff,
    which grows to minutes, and it is logged once; an outage (503) is sent again at the next pass."""
    caplog.set_level(logging.WARNING, logger="app.attach.hotplug")
    nads(emulator, node_layout)
    async with watching(api=api, database=database) as watchers:
        engine, reconciler = build(
            database=database,
            watchers=watchers,
            layout=node_layout,
            reconciler_settings=ReconcilerSettings(backoff_initial=30.0, backoff_max=30.0, busy_retry=0.02),
        )
        node = Node(engine, reconciler, emulator, node_layout, netns, database)
        pod = emulator.create_pod(pod_manifest("refused"))
        await engine.add(node.request(Command.ADD, pod, secrets.token_hex(32)))
        emulator.faults.fail_next(10_000, status=status, method="PATCH|PUT", path="/pods/refused/status$")
        since = emulator.last_request_seq
        async with reconciling(reconciler, watchers):
            # the first pass writes the status a previous daemon may have left unwritten
            await eventually(
                lambda: _async(dict(reconciler.pending)), lambda pending: ("default", "refused") in pending
            )
            sent = len(_status_writes(emulator, "refused", since))
            for _ in range(3):  # what a resync or an edit of the pod does
                await one_more_pass(reconciler, "refused")
            sent_again = len(_status_writes(emulator, "refused", since)) - sent
        emulator.faults.clear()

    logged = [r.getMessage() for r in caplog.records if r.name == "app.attach.hotplug"]
    if held:
        assert sent_again == 0
        assert len(logged) == 1
        assert "refuses it" in logged[0]
    else:
        assert sent_again >= 3
        assert len(logged) >= 3


async def _marked(database: Database) -> list[str]:
    """The sandboxes whose network-status the checkpoint marks as not written yet."""
    summaries = await database.read(partial(checkpoints.status_unwritten, limit=100))
    return [summary.container_id for summary in summaries]


async def test_a_status_write_hot_plug_made_clears_the_mark_a_failed_add_write_left(
    api: Any, database: Database, emulator: KubeApiEmulator, node_layout: Layout, netns: str
) -> None:
    """The sandbox of an ADD whose status write failed is marked, so that a restart writes it. When
    the reconciler then wrote the pod's status, the mark stayed: a restart wrote it once more, and
    ``multusctl`` showed a status unwritten that the pod had. Its write now clears the mark too."""
    nads(emulator, node_layout)
    async with watching(api=api, database=database) as watchers:
        engine, reconciler = build(
            database=database,
            watchers=watchers,
            layout=node_layout,
            status_retry=StatusRetrySettings(initial_delay=3600.0),  # only the reconciler writes here
        )
        assert engine.status_retries is not None
        try:
            node = Node(engine, reconciler, emulator, node_layout, netns, database)
            pod = emulator.create_pod(pod_manifest("marked"))
            container = secrets.token_hex(32)
            emulator.faults.fail_next(10_000, status=503, method="PATCH|PUT", path="/pods/marked/status$")
            await engine.add(node.request(Command.ADD, pod, container))
            assert await _marked(database) == [container]
            emulator.faults.clear()

            async with reconciling(reconciler, watchers):
                node.annotate("marked", "hot-a@net3")
                await eventually(
                    lambda: _async(node.status_interfaces("marked")), lambda got: got == ["eth0", "net3"]
                )
                await eventually(lambda: _marked(database), lambda marked: marked == [])
        finally:
            await engine.status_retries.stop()
