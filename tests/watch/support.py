"""Helpers for the watch tests: manifests, fast settings, a running ``Watchers``, and waiting on state."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.attach.cluster import StatusPublisher
from app.attach.engine import AttachEngine, EngineSettings
from app.attach.netconf import MultusNetConf
from app.attach.networks import NetworkResolver
from app.sandbox.kubeapi import KubeApiEmulator
from app.sandbox.resources import NETWORK_ATTACHMENT_DEFINITIONS, PODS
from app.store import mirror
from app.store.database import Database
from app.store.mirror_records import NadRecord, PodRecord, WatchState
from app.watch import client
from app.watch.api import KubeApi
from app.watch.settings import WatchSettings
from app.watch.watchers import Watchers

RECORDER = Path(__file__).parent.parent / "plugins" / "recorder.py"
"""The recording CNI plugin (``tests/plugins/recorder.py``): logs what it was given, answers as told."""

NODE = "node-a"
OTHER_NODE = "node-b"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
T = TypeVar("T")

FAST_SETTINGS = WatchSettings(
    request_timeout=2.0,
    watch_server_timeout=30,
    watch_inactivity_timeout=5.0,
    list_page_size=3,
    resume_settle=0.3,
    position_persist_interval=0.2,
    backoff_initial=0.02,
    backoff_max=0.2,
    pod_wait=0.5,
    nad_sync_wait=1.0,
    status_retry_delays=(0.01, 0.02, 0.04),
    event_queue_size=4,
    event_rate=50.0,
    event_burst=5,
    event_timeout=2.0,
)


def pod_manifest(
    name: str,
    *,
    node: str = NODE,
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }


def nad_config(name: str) -> str:
    return f'{{"cniVersion":"1.0.0","name":"{name}","type":"macvlan"}}'


@dataclass
class Running:
    """A ``Watchers`` whose ``run`` is a task of the test."""

    watchers: Watchers
    task: asyncio.Task[None]

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        api: KubeApi,
        database: Database,
        node_name: str = NODE,
        settings: WatchSettings,
        nad_namespaces: Sequence[str] | None = None,
        wait_synced: bool = True,
    ) -> AsyncIterator[Running]:
        watchers = Watchers(
            api=api, database=database, node_name=node_name, settings=settings, nad_namespaces=nad_namespaces
        )
        task = asyncio.create_task(watchers.run(), name="test.watchers")
        try:
            if wait_synced:
                async with asyncio.timeout(5):
                    await watchers.wait_synced()
            yield cls(watchers, task)
        finally:
            watchers.stop()
            async with asyncio.timeout(5):
                await task


async def eventually(
    check: Callable[[], Awaitable[T]], predicate: Callable[[T], bool], *, within: float = 5.0
) -> T:
    """Poll ``check`` until ``predicate`` holds for its value; fail with the last value at the deadline."""
    value = await check()
    try:
        async with asyncio.timeout(within):
            while not predicate(value):
                await asyncio.sleep(0.01)
                value = await check()
    except TimeoutError:
        raise AssertionError(f"condition not reached within {within} s; last value: {value!r}") from None
    return value


def mirrored_pods(database: Database) -> Callable[[], Awaitable[dict[tuple[str, str], PodRecord]]]:
    async def read() -> dict[tuple[str, str], PodRecord]:
        return {pod.key: pod for pod in await database.read(mirror.list_pods)}

    return read


def mirrored_nads(database: Database) -> Callable[[], Awaitable[dict[tuple[str, str], NadRecord]]]:
    async def read() -> dict[tuple[str, str], NadRecord]:
        return {nad.key: nad for nad in await database.read(mirror.list_nads)}

    return read


def watch_state(database: Database, key: str) -> Callable[[], Awaitable[WatchState | None]]:
    async def read() -> WatchState | None:
        return await database.read(lambda session: mirror.get_watch_state(session, key))

    return read


def expected_pods(emulator: KubeApiEmulator, node: str = NODE) -> set[tuple[str, str, str]]:
    """(namespace, name, uid) of the emulator's pods on ``node``."""
    return {
        (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])
        for pod in emulator.list_objects(PODS)
        if pod.get("spec", {}).get("nodeName") == node
    }


def expected_nads(emulator: KubeApiEmulator) -> set[tuple[str, str, str]]:
    """(namespace, name, spec.config) of the emulator's NADs."""
    return {
        (nad["metadata"]["namespace"], nad["metadata"]["name"], nad.get("spec", {}).get("config", ""))
        for nad in emulator.list_objects(NETWORK_ATTACHMENT_DEFINITIONS)
    }


@asynccontextmanager
async def connected(
    emulator: KubeApiEmulator, directory: Path, settings: WatchSettings
) -> AsyncIterator[KubeApi]:
    """A ``KubeApi`` with ``settings`` of the test's own, through a kubeconfig file."""
    access = client.find_access(
        kubeconfig=str(emulator.write_kubeconfig(directory / "kubeconfig")), environ={}
    )
    assert access is not None
    api = await client.connect(access, settings=settings)
    try:
        yield api
    finally:
        await api.close()


def _lists_since(emulator: KubeApiEmulator, since: int) -> list[str]:
    """Paths of LIST requests (GET of a pod or NAD collection, not a watch) after request ``since``."""
    return [
        record.path
        for record in emulator.requests(since=since, method="GET")
        if ("/pods?" in record.path or "network-attachment-definitions?" in record.path)
        and "watch=true" not in record.path
    ]


def lists_since(emulator: KubeApiEmulator, since: int) -> list[str]:
    """Paths of full LISTs (relists: no resourceVersion asked) after request ``since``."""
    return [path for path in _lists_since(emulator, since) if "resourceVersion=" not in path]


def position_checks_since(emulator: KubeApiEmulator, since: int) -> list[str]:
    """Paths of the one-object LISTs at a resumed position after request ``since``."""
    return [path for path in _lists_since(emulator, since) if "resourceVersion=" in path]


def watches_since(emulator: KubeApiEmulator, since: int, resource: str) -> list[str]:
    return [
        record.path
        for record in emulator.requests(since=since, method="GET", path=resource)
        if "watch=true" in record.path
    ]


def install_recorder(bin_dir: Path) -> Path:
    """The recorder plugin as ``<bin_dir>/recorder``, run by this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    recorder = bin_dir / "recorder"
    recorder.write_text(f"#!{sys.executable} -IS\n" + RECORDER.read_text())
    recorder.chmod(0o755)
    return recorder


def recorder_net(name: str, log: Path, **extra: Any) -> dict[str, Any]:
    """A network conf running the recorder plugin, logging to ``log``."""
    return {"cniVersion": "1.0.0", "name": name, "type": "recorder", "recorder": {"log": str(log)}, **extra}


def recorder_engine(
    *, database: Database, resolver: NetworkResolver, status: StatusPublisher, sysfs: Path
) -> AttachEngine:
    """An in-process engine over the test's store and resolver, publishing through ``status``."""
    sysfs.mkdir(parents=True, exist_ok=True)
    return AttachEngine(
        db=database,
        resolver=resolver,
        boot_id="test-boot",
        settings=EngineSettings(delegate_timeout=20, sysfs_root=sysfs, plugin_env={"PATH": "/usr/bin:/bin"}),
        status=status,
    )


def recorder_multus_conf(*, conf_dir: Path, bin_dir: Path) -> MultusNetConf:
    """The merged Multus conf of a request: cluster network ``primary`` from ``conf_dir``."""
    return MultusNetConf(
        name="multus",
        cni_version="1.0.0",
        stdin_cni_version="1.0.0",
        cluster_network="primary",
        conf_dir=str(conf_dir),
        bin_dir=str(bin_dir),
        multus_namespace="kube-system",
    )
