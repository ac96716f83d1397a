"""Fixtures for the emulator's tests: a running emulator and real kubernetes-asyncio clients against it.

Every emulator is stopped and every client session closed by its fixture; the suite-wide leftover-task
check (tests/asyncio_hygiene.py) fails a test that leaves tasks running on its loop after that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from app.sandbox.kubeapi import KubeApiEmulator

BOOKMARK_INTERVAL = 0.2
HISTORY_SIZE = 50


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
