"""A task of the ``Watchers`` that ends on its own is a crash, logged and restarted, never a silent end.

``Watchers.run`` runs each watch and the event poster as a child of one TaskGroup, and a TaskGroup
drops a child that ends cancelled without a word while the others and ``run`` go on: a
``CancelledError`` raised out of something a child awaited (a future another party cancelled, not a
``stop``) left that resource's mirror, or the event poster, dead for the rest of the daemon's life,
unseen by the daemon's supervisor. Real: the emulator over HTTP, the kubernetes_asyncio client, the
SQLite mirror; the cancellation is handed to the task through the API object it awaits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app import metrics
from app.sandbox.kubeapi import KubeApiEmulator
from app.store.database import Database
from app.store.mirror_records import PodRecord
from app.watch.api import KubeApi, Query, WatchStream
from app.watch.backoff import Backoff
from app.watch.settings import WatchSettings
from app.watch.watchers import keep_running
from tests.watch.support import NODE, Running, eventually, mirrored_pods, pod_manifest


async def cancelled_elsewhere() -> None:
    """Await a future some other party cancelled: its ``CancelledError`` reaches the awaiting task
    although nobody cancelled that task."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def test_a_pod_watch_ended_by_a_cancellation_nobody_asked_for_is_logged_and_the_mirror_kept_up(
    emulator: KubeApiEmulator,
    api: KubeApi,
    database: Database,
    settings: WatchSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    opened = api.watch
    pod_watches: list[str] = []

    @asynccontextmanager
    async def watch(path: str, query: Query) -> AsyncIterator[WatchStream]:
        if path == "/api/v1/pods":
            pod_watches.append(path)
            if len(pod_watches) == 1:
                await cancelled_elsewhere()
        async with opened(path, query) as stream:
            yield stream

    monkeypatch.setattr(api, "watch", watch)
    with caplog.at_level(logging.ERROR, logger="app.watch"):
        async with Running.start(api=api, database=database, settings=settings) as running:
            await eventually(lambda: asyncio.sleep(0, len(pod_watches)), lambda count: count >= 2)
            emulator.create_pod(pod_manifest("after"))

            pods = await eventually(mirrored_pods(database), lambda pods: ("default", "after") in pods)

            assert ("default", "after") in pods
            assert not running.task.done()
            assert running.watchers.pod_state.errors >= 1
            assert "CancelledError" in (running.watchers.pod_state.last_error or "")
    crashes = [record for record in caplog.records if "watch pods" in record.getMessage()]
    assert crashes
    assert crashes[0].exc_info is not None
    assert isinstance(crashes[0].exc_info[1], asyncio.CancelledError)


async def test_an_event_poster_ended_by_a_cancellation_nobody_asked_for_is_restarted(
    emulator: KubeApiEmulator,
    api: KubeApi,
    database: Database,
    settings: WatchSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.create_pod(pod_manifest("p"))
    uid = emulator.get_pod("default", "p")["metadata"]["uid"]
    pod = PodRecord("default", "p", uid, NODE, "1", {})
    sent = api.post
    posts: list[str] = []

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        posts.append(body["message"])
        if len(posts) == 1:
            await cancelled_elsewhere()
        return await sent(path, body)

    monkeypatch.setattr(api, "post", post)
    crashes_before = metrics.TASK_CRASHES.labels("watch.events")._value.get()
    with caplog.at_level(logging.ERROR, logger="app.watch.watchers"):
        async with Running.start(api=api, database=database, settings=settings) as running:
            poster = running.watchers.events
            poster.offer_event(pod, reason="Lost", warning=False, message="first")
            await eventually(lambda: asyncio.sleep(0, list(posts)), lambda seen: seen == ["first"])
            poster.offer_event(pod, reason="Kept", warning=False, message="second")

            async with asyncio.timeout(5):
                await poster.drained()
            events = await eventually(
                lambda: asyncio.sleep(0, emulator.events("default")), lambda events: len(events) >= 1
            )

            assert [event["message"] for event in events] == ["second"]
            assert not running.task.done()
    assert metrics.TASK_CRASHES.labels("watch.events")._value.get() == crashes_before + 1
    ended = [
        record for record in caplog.records if "task watch.events ended by a cancellation" in record.message
    ]
    assert len(ended) == 1


async def test_a_kept_task_that_returns_before_stop_is_logged_and_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    runs: list[int] = []

    async def returns_twice_then_stops() -> None:
        runs.append(len(runs))
        if len(runs) == 3:
            stop.set()

    backoff = Backoff(initial=0.001, maximum=0.01, jitter=0.0)
    with caplog.at_level(logging.ERROR, logger="app.watch.watchers"):
        async with asyncio.timeout(5):
            await keep_running("watch.test", returns_twice_then_stops, stop=stop, backoff=backoff)

    assert len(runs) == 3
    returned = [record for record in caplog.records if "returned while the watchers run" in record.message]
    assert len(returned) == 2


async def test_a_kept_task_asked_to_cancel_ends_cancelled_at_once() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    runs: list[int] = []

    async def waits_for_ever() -> None:
        runs.append(len(runs))
        started.set()
        await asyncio.Event().wait()

    backoff = Backoff(initial=0.001, maximum=0.01, jitter=0.0)
    task = asyncio.create_task(keep_running("watch.test", waits_for_ever, stop=stop, backoff=backoff))
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert runs == [0]
