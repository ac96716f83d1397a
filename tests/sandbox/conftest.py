"""Fixtures for the emulator's tests: a running emulator and real kubernetes-asyncio clients against it.

Every emulator is stopped and every client session closed by its fixture; an autouse fixture fails a
test that leaves tasks running on its loop after that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from app.sandbox.kubeapi import KubeApiEmulator

BOOKMARK_INTERVAL = 0.2
HISTORY_SIZE = 50


@pytest.fixture(autouse=True)
async def _no_tasks_left_on_the_loop() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running once its fixtures are torn down (this one goes last)."""
    yield
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for _ in range(10):  # cancelled tasks need a few loop turns to finish
        if not leftovers:
            break
        await asyncio.sleep(0)
        leftovers = [task for task in leftovers if not task.done()]
    assert not leftovers, f"tasks left running: {leftovers}"


@pytest.fixture
async def emulator() -> AsyncIterator[KubeApiEmulator]:
    emulator = KubeApiEmulator(bookmark_interval=BOOKMARK_INTERVAL, history_size=HISTORY_SIZE)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def api(emulator: KubeApiEmulator) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration(host=emulator.url)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)
