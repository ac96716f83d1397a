"""The append-only history of CNI operations and delegate steps.

Appended by ``app.attach`` (and later recovery and GC) in the same transaction as the checkpoint
write it describes, so history and checkpoint never disagree. Read by operator queries. Rows are
never updated; retention pruning deletes whole old rows only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from app.store.models import HistoryRow
from app.store.records import HistoryEntry, PodIdentity

HISTORY = cast(Table, HistoryRow.__table__)


_INSERT = insert(HISTORY)


def append(session: Session, entry: HistoryEntry) -> None:
    session.execute(_INSERT, _row(entry))


def append_all(session: Session, entries: Sequence[HistoryEntry]) -> None:
    if entries:
        session.execute(_INSERT, [_row(entry) for entry in entries])


def _row(entry: HistoryEntry) -> dict[str, object]:
    return dict(
        at=entry.at or datetime.now(UTC),
        duration_ms=entry.duration_ms,
        command=entry.command,
        step=entry.step,
        trigger=entry.trigger,
        outcome=entry.outcome,
        container_id=entry.container_id,
        netns=entry.netns,
        ifname=entry.ifname,
        network_name=entry.network_name,
        plugin_types=",".join(entry.plugin_types),
        pod_namespace=entry.pod.namespace,
        pod_name=entry.pod.name,
        pod_uid=entry.pod.uid,
        ips=json.dumps(list(entry.ips)),
        macs=json.dumps(list(entry.macs)),
        error_code=entry.error_code,
        error_msg=entry.error_msg,
        error_details=entry.error_details,
    )


_EVER_SEEN = select(HistoryRow.id).where(HistoryRow.container_id == bindparam("cid")).limit(1)


def has_seen(session: Session, container_id: str) -> bool:
    """True when any operation on ``container_id`` was ever recorded (it is ours, not another's)."""
    return session.execute(_EVER_SEEN, {"cid": container_id}).first() is not None


def for_container(session: Session, container_id: str) -> list[HistoryEntry]:
    """Every history line of one container, oldest first."""
    rows = session.execute(
        select(HistoryRow).where(HistoryRow.container_id == container_id).order_by(HistoryRow.id)
    ).scalars()
    return [_entry(row) for row in rows]


def _entry(row: HistoryRow) -> HistoryEntry:
    return HistoryEntry(
        command=row.command,
        step=row.step,
        trigger=row.trigger,
        outcome=row.outcome,
        container_id=row.container_id,
        netns=row.netns,
        ifname=row.ifname,
        network_name=row.network_name,
        plugin_types=tuple(filter(None, row.plugin_types.split(","))),
        pod=PodIdentity(row.pod_namespace, row.pod_name, row.pod_uid),
        duration_ms=row.duration_ms,
        ips=tuple(json.loads(row.ips)),
        macs=tuple(json.loads(row.macs)),
        error_code=row.error_code,
        error_msg=row.error_msg,
        error_details=row.error_details,
        at=row.at,
    )
