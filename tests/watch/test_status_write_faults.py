"""An ADD whose network-status write meets an API fault: what the runtime hears, what is left behind.

Real: the emulator over HTTP (its request log, injected statuses, pauses and cut connections, its
256 KiB cap on a pod's annotations), the pod/NAD watches into SQLite, the engine and its
checkpoint, bridge + host-local in a real netns. The write failing never fails the ADD (the pod's
interfaces work; upstream fails the ADD and leaves them for the runtime's DEL), the ADD is
recorded, and its DEL makes no API request at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.attach.engine import AttachEngine, EngineSettings
from app.attach.networks import ClusterSources, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ErrorCode
from app.sandbox.kubeapi import KubeApiEmulator
from app.store import checkpoints
from app.store.database import Database
from app.watch.settings import WatchSettings
from tests.watch.hotplug_node import Layout
from tests.watch.support import FAST_SETTINGS, NETWORKS, Running, eventually, pod_manifest

STATUS = "k8s.v1.cni.cncf.io/network-status"
SETTINGS = dataclasses.replace(FAST_SETTINGS, status_deadline=3.0, status_retry_delays=(0.01, 0.02, 0.04))


@pytest.fixture
def settings() -> WatchSettings:
    return SETTINGS


@dataclass
class Node:
    engine: AttachEngine
    emulator: KubeApiEmulator
    layout: Layout
    netns: str
    database: Database
    running: Running

    def request(self, command: Command, pod: dict[str, Any], container: str) -> SandboxRequest:
        return self.layout.request(command, pod, container, netns=self.netns)

    def pod(self, name: str, **annotations: str) -> dict[str, Any]:
        return self.emulator.create_pod(pod_manifest(name, annotations={NETWORKS: "net-a", **annotations}))

    async def add(self, pod: dict[str, Any]) -> tuple[str, Any]:
        container = secrets.token_hex(32)
        result = await self.engine.add(self.request(Command.ADD, pod, container))
        return container, result

    async def recorded(self, container: str) -> dict[str, str]:
        record = await self.database.read(lambda s: checkpoints.load_sandbox(s, container_id=container))
        return {} if record is None else {a.ifname: a.state for a in record.attachments}

    async def links(self) -> set[str]:
        out = await asyncio.to_thread(
            subprocess.run,
            ["ip", "-n", Path(self.netns).name, "-o", "link", "show"],
            check=True,
            capture_output=True,
            text=True,
        )
        return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}

    def status_of(self, name: str) -> str | None:
        annotations = self.emulator.get_pod("default", name)["metadata"].get("annotations") or {}
        return annotations.get(STATUS)

    def status_writes(self, name: str, since: int) -> list[tuple[str, int | None]]:
        return [
            (record.method, record.status)
            for record in self.emulator.requests(since=since)
            if record.path.split("?")[0].endswith(f"/pods/{name}/status")
        ]

    async def delete_without_the_api(self, pod: dict[str, Any], container: str) -> None:
        """DEL with every API request held: it must finish, and ask the API nothing."""
        async with asyncio.timeout(10):
            await self.running.watchers.events.drained()  # the ADD's AddedInterface events
        since = self.emulator.last_request_seq
        self.emulator.faults.pause()
        try:
            async with asyncio.timeout(20):
                await self.engine.delete(self.request(Command.DEL, pod, container))
        finally:
            self.emulator.faults.resume()
        assert [r.path for r in self.emulator.requests(since=since) if "watch=true" not in r.path] == []
        assert await self.recorded(container) == {}
        assert await self.links() == {"lo"}


@pytest.fixture
async def node(
    running: Running, database: Database, emulator: KubeApiEmulator, layout: Layout, netns: str
) -> AsyncIterator[Node]:
    emulator.create_nad("default", "net-a", layout.bridge_conf("net-a", "10.234.0.0/24", suffix="a"))
    await eventually(lambda: running.watchers.nads.get_nad("default", "net-a"), lambda nad: nad is not None)
    watchers = running.watchers
    engine = AttachEngine(
        db=database,
        resolver=NetworkResolver(
            cluster=ClusterSources(pods=watchers.pods, nads=watchers.nads, events=watchers.publisher)
        ),
        boot_id="status-faults-boot",
        settings=EngineSettings(delegate_timeout=20, plugin_env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}),
        status=watchers.publisher,
    )
    yield Node(engine, emulator, layout, netns, database, running)
    emulator.faults.clear()


def _interfaces(status: str | None) -> list[str]:
    return [entry.get("interface", "") for entry in json.loads(status or "[]")]


@pytest.mark.parametrize(
    ("status", "count"),
    [(409, 100), (403, 1000), (500, 100), (503, 100), (429, 100)],
    ids=["409", "403", "500", "503", "429-without-retry-after"],
)
async def test_an_add_whose_status_write_fails_succeeds_recorded_with_bounded_attempts(
    node: Node, status: int, count: int
) -> None:
    pod = node.pod("p")
    node.emulator.faults.fail_next(count, status=status, method="PATCH|PUT", path="/pods/p/status")
    since = node.emulator.last_request_seq

    container, result = await node.add(pod)

    assert "eth0" in [i["name"] for i in result["interfaces"]]
    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}
    assert await node.links() == {"lo", "eth0", "net1"}
    assert node.status_of("p") is None
    attempts = 1 + len(SETTINGS.status_retry_delays)
    writes = node.status_writes("p", since)
    assert len(writes) <= 2 * attempts, writes
    node.emulator.faults.clear()
    await node.delete_without_the_api(pod, container)


async def test_an_add_rolled_back_for_a_failed_commit_announces_no_interface(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object, **__: object) -> None:
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    pod = node.pod("p")
    monkeypatch.setattr(checkpoints, "finish_add", disk_full)  # the ADD's last commit fails

    with pytest.raises(CniError) as caught:
        await node.add(pod)
    async with asyncio.timeout(10):
        await node.running.watchers.events.drained()

    assert caught.value.code == ErrorCode.IO_FAILURE
    assert await node.links() == {"lo"}  # rolled back
    reasons = [event["reason"] for event in node.emulator.events("default")]
    assert "AddedInterface" not in reasons


async def test_a_pod_deleted_while_its_sandbox_was_set_up_is_not_an_error(node: Node) -> None:
    pod = node.pod("p")
    node.emulator.faults.before_next(lambda: node.emulator.delete_pod("default", "p"), method="PATCH")

    container, _ = await node.add(pod)

    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}
    await node.delete_without_the_api(pod, container)


async def test_a_write_whose_answer_was_cut_off_is_sent_again_and_lands(node: Node) -> None:
    pod = node.pod("p")
    node.emulator.faults.cut_next(1, method="PATCH", path="/pods/p/status")
    since = node.emulator.last_request_seq

    container, _ = await node.add(pod)

    assert _interfaces(node.status_of("p")) == ["eth0", "net1"]
    assert [method for method, _ in node.status_writes("p", since)] == ["PATCH", "PATCH"]
    await node.delete_without_the_api(pod, container)


async def test_a_throttled_write_waits_the_retry_after_the_server_asked_for(node: Node) -> None:
    pod = node.pod("p")
    node.emulator.faults.fail_next(1, status=429, retry_after=1, method="PATCH", path="/pods/p/status")
    since = node.emulator.last_request_seq

    container, _ = await node.add(pod)

    assert node.status_writes("p", since) == [("PATCH", 429), ("PATCH", 200)]
    assert _interfaces(node.status_of("p")) == ["eth0", "net1"]
    await node.delete_without_the_api(pod, container)


async def test_a_status_the_pods_annotations_cannot_hold_removes_the_stale_one_and_says_why(
    node: Node,
) -> None:
    """A pod's annotations may hold 256 KiB in all: here its other annotations leave too little room
    (the API answers 422 naming metadata.annotations). The ADD succeeds; the previous sandbox's
    network-status, naming addresses the pod no longer has, is removed rather than left standing;
    a Warning event says why; and the refused value is not sent again."""
    stale = json.dumps([{"name": "primary", "interface": "eth0", "ips": ["10.230.0.99"], "dns": {}}])
    room = 256 * 1024 - len(NETWORKS + "net-a" + STATUS + stale + "filler") - 10
    pod = node.pod("p", filler="x" * room, **{STATUS: stale})
    since = node.emulator.last_request_seq

    container, _ = await node.add(pod)

    assert await node.recorded(container) == {"eth0": "added", "net1": "added"}
    assert node.status_of("p") is None
    assert node.status_writes("p", since) == [("PATCH", 422), ("PATCH", 200)]
    async with asyncio.timeout(10):
        await node.running.watchers.events.drained()
    warnings = [e for e in node.emulator.events("default") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["NetworkStatusTooLarge"]
    assert "262144 bytes" in warnings[0]["message"]
    assert node.running.watchers.publisher.too_large == 1
    await node.delete_without_the_api(pod, container)
