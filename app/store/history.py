"""The append-only history of CNI operations and delegate steps: appending, querying, pruning.

Appended by ``app.attach`` (ADD, DEL, CHECK, GC, rollback, recovery, spool replay) in the same
transaction as the checkpoint write it describes, so history and checkpoint never disagree. Read
by operator queries (``query``, through ``app.store.queries``) and by GC's lease sweep (an ADD
delegate of ours, ``app.store.lease_proofs``). Rows are
never updated; retention (``app.store.retention``) deletes whole rows, oldest first, in small
batches, and never touches another table.

Queries lean on the indexes of revision 0003 (pod, container, network, outcome, time): each ends
with the rowid, so "newest first" walks an index backwards. Distinct pod namespaces and network
names are found by skipping through an index (a loose index scan), never by reading every row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Row,
    Select,
    delete,
    func,
    literal_column,
    select,
    text,
    union_all,
)

from app.store.filters import HistoryFilter
from app.store.models import HISTORY
from app.store.records import HistoryEntry, HistoryLine, PodIdentity
from app.store.records_sql import cursor_of, json_list, stamp

_INSERT_SQL = (
    'INSERT INTO history (at, duration_ms, command, step, "trigger", outcome, container_id, netns, ifname,'
    " network_name, plugin_types, pod_namespace, pod_name, pod_uid, ips, macs, error_code, error_msg,"
    " error_details, node, device_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Plain SQL on the driver's connection (``records_sql``): history lines are written on every ADD/DEL."""


def append(connection: Connection, entry: HistoryEntry, node: str | None = None) -> None:
    """Append ``entry``; ``node``, if given, in place of ``entry.node``."""
    row = _row(entry, node)
    try:
        cursor_of(connection).execute(_INSERT_SQL, row)
    except UnicodeEncodeError:
        cursor_of(connection).execute(_INSERT_SQL, _storable(row))


def append_all(connection: Connection, entries: Sequence[HistoryEntry]) -> None:
    if entries:
        rows = [_row(entry) for entry in entries]
        try:
            cursor_of(connection).executemany(_INSERT_SQL, rows)
        except UnicodeEncodeError:  # nothing was inserted: the row that failed was never bound
            cursor_of(connection).executemany(_INSERT_SQL, [_storable(row) for row in rows])


def _storable(row: tuple[object, ...]) -> tuple[object, ...]:
    """``row`` with each lone surrogate written as its escape (``\\udcff``): SQLite holds UTF-8
    only, and a line naming a path or name read from a file we do not control (upstream's cache,
    as Python decodes it) must still be written, or the operation it records fails for ever. Only
    after the driver refused the row: a line of ordinary text costs nothing more."""
    return tuple(
        value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value
        for value in row
    )


def _row(entry: HistoryEntry, node: str | None = None) -> tuple[object, ...]:
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
        entry.node if node is None else node,
        json_list(entry.device_ids),
    )


def for_container(connection: Connection, container_id: str) -> list[HistoryEntry]:
    """Every history line of one container, oldest first."""
    rows = connection.execute(
        select(HISTORY).where(HISTORY.c.container_id == container_id).order_by(HISTORY.c.id)
    )
    return [_entry(row) for row in rows]


# ---- operator queries -----------------------------------------------------------------------------


def query(connection: Connection, where: HistoryFilter) -> list[HistoryLine]:
    """The lines matching every filter of ``where``, newest first, at most ``where.limit`` (0: all)."""
    return page(connection, where, before_id=None, size=where.limit)


def page(
    connection: Connection, where: HistoryFilter, *, before_id: int | None, size: int
) -> list[HistoryLine]:
    """At most ``size`` (0: all) of the lines matching ``where`` (but its ``limit``), newest first,
    older than line ``before_id`` when it is given: the next page after a page ending there.

    A keyset page: each seeks where the last ended (``id < before_id``, the rowid ending every
    history index), so reading a whole history page by page costs one pass, not a pass per page."""
    statement = page_statement(connection, where, before_id=before_id, size=size)
    if statement is None:
        return []
    return [HistoryLine(row.id, _entry(row)) for row in connection.execute(statement)]


MERGED_ALTERNATIVES = 64
"""Most values a filter may match (pod namespaces times networks) for a page to be read as a merge
of one ordered index seek per value; beyond, one ``IN`` query (sorted: rare, and still correct)."""


def page_statement(
    connection: Connection, where: HistoryFilter, *, before_id: int | None, size: int
) -> Select[Any] | CompoundSelect[Any] | None:
    """The query of ``page``; None when a filter names something never recorded.

    A filter matching several recorded values (a bare network name recorded in three namespaces,
    a pod name without its namespace) is read as a ``UNION ALL`` of one query per value, ordered
    by id: SQLite merges their ordered index seeks and stops at ``size``, where one ``IN`` query
    would read every remaining match and sort it for each page (a whole history so filtered would
    cost CPU quadratic in its matches)."""
    alternatives = _alternatives(connection, where)
    if alternatives is None:
        return None
    keyset = [] if before_id is None else [HISTORY.c.id < before_id]
    if len(alternatives) == 1 or len(alternatives) > MERGED_ALTERNATIVES:
        merged = _conditions(where, _merged(alternatives))
        statement: Select[Any] | CompoundSelect[Any] = (
            select(HISTORY).where(*merged, *keyset).order_by(HISTORY.c.id.desc())
        )
    else:
        statement = union_all(
            *(select(HISTORY).where(*_conditions(where, choice), *keyset) for choice in alternatives)
        ).order_by(literal_column("id").desc())
    return statement.limit(size) if size else statement


def lines_of_container(
    connection: Connection,
    container_id: str,
    *,
    after_id: int | None = None,
    up_to_id: int | None = None,
    size: int = 0,
) -> list[HistoryLine]:
    """The lines of one container (full ID), oldest first: every one, or a keyset page of at most
    ``size`` lines after line ``after_id`` and up to line ``up_to_id`` (each bound when given)."""
    statement = select(HISTORY).where(HISTORY.c.container_id == container_id)
    if after_id is not None:
        statement = statement.where(HISTORY.c.id > after_id)
    if up_to_id is not None:
        statement = statement.where(HISTORY.c.id <= up_to_id)
    statement = statement.order_by(HISTORY.c.id)
    if size:
        statement = statement.limit(size)
    return [HistoryLine(row.id, _entry(row)) for row in connection.execute(statement)]


def newest_of_container(connection: Connection, container_id: str) -> int | None:
    """The id of the container's newest line (one seek in ``ix_history_container_id``)."""
    statement = select(func.max(HISTORY.c.id)).where(HISTORY.c.container_id == container_id)
    value = connection.execute(statement).scalar()
    return None if value is None else int(value)


def pod_of_container(connection: Connection, container_id: str) -> PodIdentity:
    """The pod named by the container's newest line that names one (empty when none does)."""
    statement = (
        select(HISTORY.c.pod_namespace, HISTORY.c.pod_name, HISTORY.c.pod_uid)
        .where(HISTORY.c.container_id == container_id)
        .where((HISTORY.c.pod_name != "") | (HISTORY.c.pod_namespace != ""))
        .order_by(HISTORY.c.id.desc())
        .limit(1)
    )
    row = connection.execute(statement).first()
    return PodIdentity() if row is None else PodIdentity(row[0], row[1], row[2])


def containers_with_prefix(connection: Connection, prefix: str, *, limit: int) -> list[str]:
    """Distinct container IDs of the history starting with ``prefix`` (at most ``limit``)."""
    statement = (
        select(HISTORY.c.container_id)
        .where(_prefix_of(HISTORY.c.container_id, prefix))
        .group_by(HISTORY.c.container_id)
        .limit(limit)
    )
    return [str(value) for value in connection.execute(statement).scalars()]


def pod_namespaces(connection: Connection) -> list[str]:
    """Every distinct pod namespace in the history (a skip through ``ix_history_pod``)."""
    return _distinct(connection, "pod_namespace")


def network_names(connection: Connection) -> list[str]:
    """Every distinct network name in the history (a skip through ``ix_history_network``)."""
    return _distinct(connection, "network_name")


def matching_networks(names: Sequence[str], network: str) -> list[str]:
    """The recorded network names ``network`` selects: itself, and ``*/network`` if it is bare."""
    if "/" in network:
        return [network] if network in names else []
    return [name for name in names if name == network or name.endswith("/" + network)]


def summary(connection: Connection) -> tuple[int, datetime | None, datetime | None]:
    """(rows, time of the oldest line, time of the newest line)."""
    rows = connection.execute(select(func.count()).select_from(HISTORY)).scalar_one()
    oldest = connection.execute(select(HISTORY.c.at).order_by(HISTORY.c.id).limit(1)).scalar()
    newest = connection.execute(select(HISTORY.c.at).order_by(HISTORY.c.id.desc()).limit(1)).scalar()
    return int(rows), oldest, newest


@dataclass(frozen=True, slots=True)
class _Choice:
    """The values of the multi-valued filters one query of a page selects (None: not filtered)."""

    pod_namespaces: tuple[str, ...] | None
    networks: tuple[str, ...] | None


def _alternatives(connection: Connection, where: HistoryFilter) -> list[_Choice] | None:
    """One choice per combination of the values ``where``'s pod and network filters match (one
    choice, unfiltered, when they are not given); None when a filter matches nothing recorded."""
    namespaces: list[str | None] = [None]
    if where.pod is not None:
        namespaces = [where.namespace] if where.namespace is not None else list(pod_namespaces(connection))
    networks: list[str | None] = [None]
    if where.network is not None:
        networks = list(matching_networks(network_names(connection), where.network))
    if not namespaces or not networks:
        return None
    return [
        _Choice(None if namespace is None else (namespace,), None if network is None else (network,))
        for namespace in namespaces
        for network in networks
    ]


def _merged(alternatives: Sequence[_Choice]) -> _Choice:
    """One choice selecting what every one of ``alternatives`` selects (an ``IN`` per filter)."""
    first = alternatives[0]
    return _Choice(
        None
        if first.pod_namespaces is None
        else tuple(
            dict.fromkeys(namespace for choice in alternatives for namespace in choice.pod_namespaces or ())
        ),
        None
        if first.networks is None
        else tuple(dict.fromkeys(network for choice in alternatives for network in choice.networks or ())),
    )


def _conditions(where: HistoryFilter, choice: _Choice) -> list[ColumnElement[bool]]:
    """SQL conditions for ``where``, its pod namespaces and networks as ``choice`` selects them."""
    conditions: list[ColumnElement[bool]] = []
    if where.pod is not None and choice.pod_namespaces is not None:
        conditions.append(HISTORY.c.pod_name == where.pod)
        conditions.append(_one_of(HISTORY.c.pod_namespace, choice.pod_namespaces))
    elif where.namespace is not None:
        conditions.append(HISTORY.c.pod_namespace == where.namespace)
    if where.container is not None:
        conditions.append(_prefix_of(HISTORY.c.container_id, where.container))
    if choice.networks is not None:
        conditions.append(_one_of(HISTORY.c.network_name, choice.networks))
    if where.since is not None:
        conditions.append(HISTORY.c.at >= where.since)
    if where.failed:
        conditions.append(HISTORY.c.outcome == "error")
    if where.command is not None:
        conditions.append(HISTORY.c.command == where.command)
    if where.trigger is not None:
        conditions.append(HISTORY.c.trigger == where.trigger)
    return conditions


def _one_of(column: object, values: Sequence[str]) -> ColumnElement[bool]:
    typed = cast("ColumnElement[str]", column)
    return typed == values[0] if len(values) == 1 else typed.in_(list(values))


def _prefix_of(column: object, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range the column's index can seek."""
    typed = cast("ColumnElement[str]", column)
    return (typed >= prefix) & (typed < prefix + "\U0010ffff")


_DISTINCT_COLUMNS = ("pod_namespace", "network_name")


def _distinct(connection: Connection, column: Literal["pod_namespace", "network_name"]) -> list[str]:
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
    return [str(value) for value in connection.execute(statement).scalars()]


# ---- retention ------------------------------------------------------------------------------------


def last_id_if_any_before(connection: Connection, cutoff: datetime) -> int | None:
    """The id of the last line recorded (the highest) when any line is dated before ``cutoff``;
    None when none is (a seek in ``ix_history_at``, one in the rowids).

    Not the id of the newest line before ``cutoff``: after the clock stepped back, a line dated
    earlier may have been recorded after it, and must go in the same pass."""
    any_before = select(HISTORY.c.id).where(HISTORY.c.at < cutoff).exists()
    value = connection.execute(select(func.max(HISTORY.c.id)).where(any_before)).scalar()
    return None if value is None else int(value)


def last_id_beyond(connection: Connection, max_rows: int) -> int | None:
    """The id up to which lines must go so that at most ``max_rows`` remain; None if none must."""
    rows = int(connection.execute(select(func.count()).select_from(HISTORY)).scalar_one())
    excess = rows - max_rows
    if excess <= 0:
        return None
    statement = select(HISTORY.c.id).order_by(HISTORY.c.id).offset(excess - 1).limit(1)
    value = connection.execute(statement).scalar()
    return None if value is None else int(value)


def delete_oldest(
    connection: Connection, *, up_to_id: int, before: datetime | None = None, batch: int
) -> int:
    """Delete at most ``batch`` of the oldest lines with ``id <= up_to_id`` (and, when ``before``
    is given, dated before it); return how many went. Touches the history table only.

    With ``before``, the oldest by date, walking ``ix_history_at``: in id order, lines dated in the
    future (recorded while the clock ran ahead) may come before them, and every batch would walk
    those again before finding one to delete (invariant 12)."""
    oldest = select(HISTORY.c.id).where(HISTORY.c.id <= up_to_id)
    if before is None:
        oldest = oldest.order_by(HISTORY.c.id)
    else:
        oldest = oldest.where(HISTORY.c.at < before).order_by(HISTORY.c.at, HISTORY.c.id)
    oldest = oldest.limit(batch)
    result = connection.execute(delete(HISTORY).where(HISTORY.c.id.in_(oldest.scalar_subquery())))
    return int(getattr(result, "rowcount", 0))


def _entry(row: Row[Any]) -> HistoryEntry:
    """An entry from a row of the history table."""
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
