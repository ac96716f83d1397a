"""The append-only history of CNI operations and delegate steps: appending, querying, pruning.

Appended by ``app.attach`` (ADD, DEL, CHECK, GC, rollback, recovery, spool replay) in the same
transaction as the checkpoint write it describes, so history and checkpoint never disagree. Read
by operator queries (``query``, through ``app.store.queries``) and by GC (``has_seen``). Rows are
never updated; retention (``app.store.retention``) deletes whole rows, oldest first, in small
batches, and never touches another table.

Queries lean on the indexes of revision 0003 (pod, container, network, outcome, time): each ends
with the rowid, so "newest first" walks an index backwards. Distinct pod namespaces and network
names are found by skipping through an index (a loose index scan), never by reading every row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Row, Table, bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from app.store.filters import HistoryFilter
from app.store.models import HistoryRow
from app.store.records import HistoryEntry, HistoryLine, PodIdentity
from app.store.records_sql import cursor_of, json_list, stamp

HISTORY = cast(Table, HistoryRow.__table__)


_INSERT_SQL = (
    'INSERT INTO history (at, duration_ms, command, step, "trigger", outcome, container_id, netns, ifname,'
    " network_name, plugin_types, pod_namespace, pod_name, pod_uid, ips, macs, error_code, error_msg,"
    " error_details, node, device_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Plain SQL on the session's connection (``records_sql``): history lines are written on every ADD/DEL."""


def append(session: Session, entry: HistoryEntry) -> None:
    cursor_of(session).execute(_INSERT_SQL, _row(entry))


def append_all(session: Session, entries: Sequence[HistoryEntry]) -> None:
    if entries:
        cursor_of(session).executemany(_INSERT_SQL, [_row(entry) for entry in entries])


def _row(entry: HistoryEntry) -> tuple[object, ...]:
    pod = entry.pod
    return (
        stamp(entry.at or datetime.now(UTC)),
        entry.duration_ms,
        entry.command,
        entry.step,
        entry.trigger,
        entry.outcome,
        entry.container_id,
        entry.netns,
        entry.ifname,
        entry.network_name,
        ",".join(entry.plugin_types),
        pod.namespace,
        pod.name,
        pod.uid,
        json_list(entry.ips),
        json_list(entry.macs),
        entry.error_code,
        entry.error_msg,
        entry.error_details,
        entry.node,
        json_list(entry.device_ids),
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


# ---- operator queries -----------------------------------------------------------------------------


def query(session: Session, where: HistoryFilter) -> list[HistoryLine]:
    """The lines matching every filter of ``where``, newest first, at most ``where.limit`` (0: all)."""
    conditions = _conditions(session, where)
    if conditions is None:
        return []
    statement = select(HISTORY).where(*conditions).order_by(HISTORY.c.id.desc())
    if where.limit:
        statement = statement.limit(where.limit)
    return [HistoryLine(row.id, _entry(row)) for row in session.execute(statement)]


def lines_of_container(session: Session, container_id: str) -> list[HistoryLine]:
    """Every line of one container (full ID), oldest first."""
    statement = select(HISTORY).where(HISTORY.c.container_id == container_id).order_by(HISTORY.c.id)
    return [HistoryLine(row.id, _entry(row)) for row in session.execute(statement)]


def containers_with_prefix(session: Session, prefix: str, *, limit: int) -> list[str]:
    """Distinct container IDs of the history starting with ``prefix`` (at most ``limit``)."""
    statement = (
        select(HistoryRow.container_id)
        .where(_prefix_of(HistoryRow.container_id, prefix))
        .group_by(HistoryRow.container_id)
        .limit(limit)
    )
    return [str(value) for value in session.execute(statement).scalars()]


def pod_namespaces(session: Session) -> list[str]:
    """Every distinct pod namespace in the history (a skip through ``ix_history_pod``)."""
    return _distinct(session, "pod_namespace")


def network_names(session: Session) -> list[str]:
    """Every distinct network name in the history (a skip through ``ix_history_network``)."""
    return _distinct(session, "network_name")


def matching_networks(names: Sequence[str], network: str) -> list[str]:
    """The recorded network names ``network`` selects: itself, and ``*/network`` if it is bare."""
    if "/" in network:
        return [network] if network in names else []
    return [name for name in names if name == network or name.endswith("/" + network)]


def summary(session: Session) -> tuple[int, datetime | None, datetime | None]:
    """(rows, time of the oldest line, time of the newest line)."""
    rows = session.execute(select(func.count()).select_from(HISTORY)).scalar_one()
    oldest = session.execute(select(HISTORY.c.at).order_by(HISTORY.c.id).limit(1)).scalar()
    newest = session.execute(select(HISTORY.c.at).order_by(HISTORY.c.id.desc()).limit(1)).scalar()
    return int(rows), oldest, newest


def _conditions(session: Session, where: HistoryFilter) -> list[ColumnElement[bool]] | None:
    """SQL conditions for ``where``; None when a filter names something never recorded."""
    conditions: list[ColumnElement[bool]] = []
    if where.pod is not None:
        namespaces = [where.namespace] if where.namespace is not None else pod_namespaces(session)
        if not namespaces:
            return None
        conditions.append(HistoryRow.pod_name == where.pod)
        conditions.append(_one_of(HistoryRow.pod_namespace, namespaces))
    elif where.namespace is not None:
        conditions.append(HistoryRow.pod_namespace == where.namespace)
    if where.container is not None:
        conditions.append(_prefix_of(HistoryRow.container_id, where.container))
    if where.network is not None:
        networks = matching_networks(network_names(session), where.network)
        if not networks:
            return None
        conditions.append(_one_of(HistoryRow.network_name, networks))
    if where.since is not None:
        conditions.append(HistoryRow.at >= where.since)
    if where.failed:
        conditions.append(HistoryRow.outcome == "error")
    if where.command is not None:
        conditions.append(HistoryRow.command == where.command)
    if where.trigger is not None:
        conditions.append(HistoryRow.trigger == where.trigger)
    return conditions


def _one_of(column: object, values: Sequence[str]) -> ColumnElement[bool]:
    typed = cast("ColumnElement[str]", column)
    return typed == values[0] if len(values) == 1 else typed.in_(list(values))


def _prefix_of(column: object, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range the column's index can seek."""
    typed = cast("ColumnElement[str]", column)
    return (typed >= prefix) & (typed < prefix + "\U0010ffff")


_DISTINCT_COLUMNS = ("pod_namespace", "network_name")


def _distinct(session: Session, column: Literal["pod_namespace", "network_name"]) -> list[str]:
    """Distinct values of an indexed column: one index seek per value, not one read per row."""
    if column not in _DISTINCT_COLUMNS:
        raise ValueError(f"no loose index scan over {column!r}")
    statement = text(
        f"WITH RECURSIVE seen(value) AS ("
        f" SELECT min({column}) FROM history"
        f" UNION ALL"
        f" SELECT (SELECT min({column}) FROM history WHERE {column} > seen.value)"
        f" FROM seen WHERE seen.value IS NOT NULL"
        f") SELECT value FROM seen WHERE value IS NOT NULL"
    )
    return [str(value) for value in session.execute(statement).scalars()]


# ---- retention ------------------------------------------------------------------------------------


def last_id_before(session: Session, cutoff: datetime) -> int | None:
    """The id of the newest line recorded before ``cutoff`` (one seek in ``ix_history_at``)."""
    statement = (
        select(HISTORY.c.id).where(HISTORY.c.at < cutoff).order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
    )
    value = session.execute(statement.limit(1)).scalar()
    return None if value is None else int(value)


def last_id_beyond(session: Session, max_rows: int) -> int | None:
    """The id up to which lines must go so that at most ``max_rows`` remain; None if none must."""
    rows = int(session.execute(select(func.count()).select_from(HISTORY)).scalar_one())
    excess = rows - max_rows
    if excess <= 0:
        return None
    statement = select(HISTORY.c.id).order_by(HISTORY.c.id).offset(excess - 1).limit(1)
    value = session.execute(statement).scalar()
    return None if value is None else int(value)


def delete_oldest(session: Session, *, up_to_id: int, before: datetime | None = None, batch: int) -> int:
    """Delete at most ``batch`` of the oldest lines with ``id <= up_to_id`` (and, when ``before``
    is given, recorded before it); return how many went. Touches the history table only."""
    oldest = select(HISTORY.c.id).where(HISTORY.c.id <= up_to_id)
    if before is not None:
        oldest = oldest.where(HISTORY.c.at < before)
    oldest = oldest.order_by(HISTORY.c.id).limit(batch)
    result = session.execute(delete(HISTORY).where(HISTORY.c.id.in_(oldest.scalar_subquery())))
    return int(getattr(result, "rowcount", 0))


def _entry(row: HistoryRow | Row[Any]) -> HistoryEntry:
    """An entry from an ORM row or a Core row of the history table (same attribute names)."""
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
        ips=_strings(row.ips),
        macs=_strings(row.macs),
        error_code=row.error_code,
        error_msg=row.error_msg,
        error_details=row.error_details,
        at=row.at,
        node=row.node,
        device_ids=_strings(row.device_ids),
    )


def _strings(stored: str) -> tuple[str, ...]:
    """A JSON list column; the empty list (most lines' device IDs, failed steps' addresses) unparsed."""
    return () if stored == "[]" else tuple(json.loads(stored))
