"""Fixtures for the Kubernetes side of the daemon: the emulator over real HTTP, the real
kubernetes_asyncio client (through a kubeconfig file), and a real SQLite state database.

Every fixture closes what it opened; the suite-wide leftover-task check
(tests/asyncio_hygiene.py) fails a test that leaves tasks running on its loop once they are torn down.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.watch import client
from app.watch.api import KubeApi
from app.watch.settings import WatchSettings
from tests.conftest import open_empty_state
from tests.watch.hotplug_node import Layout
from tests.watch.support import FAST_SETTINGS, NODE, Running


@pytest.fixture
async def emulator() -> AsyncIterator[KubeApiEmulator]:
    emulator = KubeApiEmulator(bookmark_interval=0.2, history_size=200)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def settings() -> WatchSettings:
    return FAST_SETTINGS


@pytest.fixture
async def api(emulator: KubeApiEmulator, tmp_path: Path, settings: WatchSettings) -> AsyncIterator[KubeApi]:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    access = client.find_access(kubeconfig=str(kubeconfig), environ={})
    assert access is not None
    kube_api = await client.connect(access, settings=settings)
    yield kube_api
    await kube_api.close()


@pytest.fixture
def database(tmp_path: Path, empty_state_template: Path) -> Iterator[Database]:
    """A new state database (a copy of the session's empty migrated one: see tests/conftest.py)."""
    database = open_empty_state(empty_state_template, tmp_path / "state.db")
    yield database
    database.close()


@pytest.fixture
async def running(api: KubeApi, database: Database, settings: WatchSettings) -> AsyncIterator[Running]:
    """A ``Watchers`` for node ``NODE``, running; started and stopped by the fixture."""
    async with Running.start(api=api, database=database, node_name=NODE, settings=settings) as started:
        yield started


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    """A node's plugin and conf layout with its cluster network written (``Layout``); the bridges of
    the cluster network and of ``net-a`` are deleted afterwards (a module needing more overrides it)."""
    layout = Layout(tmp_path, secrets.token_hex(3))
    layout.write_primary()
    yield layout
    for suffix in ("", "a"):
        subprocess.run(["ip", "link", "del", layout.bridge + suffix], check=False, capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own (a pod's sandbox), deleted afterwards."""
    name = f"mpw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=False)
