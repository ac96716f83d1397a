"""Sandboxes come in the order they were recorded, whatever the wall clock did between two ADDs
(invariant 12): the newest sandbox of a pod is the one recorded last.

Hot-plug attaches to a pod's newest ready sandbox, and a restarted daemon writes the network-status
of a pod's newest sandbox only (never an older one's over it). Both were chosen by ``created_at``,
a UTC timestamp: once the clock stepped back (NTP correcting a clock that ran ahead), the sandbox
recorded before the step passed for the newer one. Real SQLite file, no daemon; only the time the
checkpoint stamps its rows with is stepped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from app.store import checkpoints
from app.store.database import Connection, Database
from app.store.records import PodIdentity, SandboxIntent, SandboxSummary
from tests.store.builders import record_running

BEFORE_THE_STEP = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AFTER_THE_STEP = BEFORE_THE_STEP - timedelta(hours=1)
"""The clock ran an hour ahead, and was stepped back between the two ADDs."""


def _running(connection: Connection, container_id: str, pod: str) -> None:
    """A sandbox of pod ``ns/pod`` whose ADD answered (one attachment, state ``ready``)."""
    record_running(
        connection,
        SandboxIntent(
            container_id, "/var/run/netns/x", "eth0", "1.0.0", PodIdentity("ns", pod, "uid"), "boot"
        ),
    )


def _record_across_a_clock_step(db: Database, monkeypatch: pytest.MonkeyPatch, pod: str = "p") -> None:
    """Sandbox ``older`` of ``pod`` recorded, the clock stepped back an hour, then ``newer``."""
    monkeypatch.setattr(checkpoints, "_now", lambda: BEFORE_THE_STEP)
    db.write_sync(partial(_running, container_id="older", pod=pod))
    monkeypatch.setattr(checkpoints, "_now", lambda: AFTER_THE_STEP)
    db.write_sync(partial(_running, container_id="newer", pod=pod))


def _ids(sandboxes: list[SandboxSummary]) -> list[str]:
    return [sandbox.container_id for sandbox in sandboxes]


def test_a_pods_newest_sandbox_is_the_one_recorded_last_though_the_clock_stepped_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_across_a_clock_step(db, monkeypatch)

    of_pod = db.read_sync(partial(checkpoints.sandboxes_of_pod, namespace="ns", name="p"))

    assert _ids(of_pod) == ["older", "newer"], "hot-plug would attach to the older sandbox"


def test_only_the_sandbox_recorded_last_has_its_status_retried_though_the_clock_stepped_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_across_a_clock_step(db, monkeypatch)
    for container_id in ("older", "newer"):
        db.write_sync(partial(checkpoints.mark_status_unwritten, container_id=container_id))

    retried = db.read_sync(partial(checkpoints.status_unwritten, limit=10))

    assert _ids(retried) == ["newer"], "the older sandbox's status would be written over the newer's"


@pytest.mark.parametrize(
    "listing",
    [
        checkpoints.list_sandboxes,
        partial(checkpoints.list_unsettled, boot_id="another boot"),
    ],
    ids=["list_sandboxes", "list_unsettled"],
)
def test_sandboxes_are_listed_oldest_recorded_first_though_the_clock_stepped_back(
    db: Database, monkeypatch: pytest.MonkeyPatch, listing: Callable[[Connection], list[SandboxSummary]]
) -> None:
    _record_across_a_clock_step(db, monkeypatch)

    assert _ids(db.read_sync(listing)) == ["older", "newer"]
