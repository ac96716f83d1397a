"""A background network-status retry that finds its sandbox gone (moot) while a newer ADD of the pod
supersedes it: the newer ADD drops the pending entry (``StatusRetries.supersede``, called before it
waits for the pod's turn) while the retry, in that turn, reads the checkpoint. The retry then
removed the entry a second time: KeyError, logged with its traceback as a failed retry and counted
``failed`` instead of ``moot``.

Real: the SQLite checkpoint (nothing recorded under the retried container: its DEL removed it).
The newer ADD's ``supersede`` is made to land during the retry's read of the checkpoint, the one
moment it can come between the retry's check of its entry and its removal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeVar

import pytest

from app.attach.cluster import InterfaceEvent
from app.attach.locks import SandboxLocks
from app.attach.status_retries import StatusRetries, StatusRetrySettings
from app.metrics import REGISTRY
from app.store.database import Database, Work
from app.store.mirror_records import PodRecord

T = TypeVar("T")

POD = PodRecord(namespace="default", name="web", uid="u1")
DELETED = "a" * 64
"""The older sandbox of the pod whose status write was pending: DELed since, nothing recorded."""


class NoWrites:
    """A publisher the moot retry must never reach."""

    async def publish_network_status(self, pod: PodRecord, status_json: str) -> bool:
        raise AssertionError(f"a moot retry wrote {status_json} for {pod.name}")

    def emit_interface_events(self, pod: PodRecord, events: Sequence[InterfaceEvent]) -> None:
        pass


def _retried(outcome: str) -> float:
    return REGISTRY.get_sample_value("multus_py_network_status_retries_total", {"outcome": outcome}) or 0.0


async def test_a_moot_retry_superseded_while_it_reads_the_checkpoint_ends_quietly_as_moot(
    database: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    retries = StatusRetries(
        publisher=NoWrites(),
        db=database,
        locks=SandboxLocks(),
        boot_id="boot",
        settings=StatusRetrySettings(initial_delay=0.0),
    )
    real_read = database.read
    reads = 0

    async def read_while_a_newer_add_supersedes(work: Work[T]) -> T:
        nonlocal reads
        reads += 1
        retries.supersede(POD)  # the newer ADD of the pod, about to write its own status
        return await real_read(work)

    monkeypatch.setattr(database, "read", read_while_a_newer_add_supersedes)
    moot, failed = _retried("moot"), _retried("failed")

    retries.offer(container_id=DELETED, pod=POD)
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "network-status-retries"]
    async with asyncio.timeout(5):
        await task

    assert reads == 1
    assert retries.pending(POD) is None
    errors = [r.getMessage() for r in caplog.records if r.name == "app.attach.status_retries"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == [], errors
    assert (_retried("moot") - moot, _retried("failed") - failed) == (1, 0)
