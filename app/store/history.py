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
Every statement is plain SQL on the unit's cursor (``app.store.records_sql.cursor_of``), storing
values as the table's column types in ``app.store.models`` do; a filter's WHERE is built from
fixed fragments, each value bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from app.store.database import Connection
from app.store.filters import HistoryFilter
from app.store.records import HistoryEntry, HistoryLine, PodIdentity
from app.store.records_sql import cursor_of, json_list, read_stamp, stamp

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
        except UnicodeEncodeError:
            # The rows before the one that failed were inserted (the driver binds and steps one row
            # at a time); that one was never bound: write it and the rest, escaped, after them.
            refused = next((index for index, row in enumerate(rows) if not _encodable(row)), None)
            if refused is None:
                raise
            cursor_of(connection).executemany(_INSERT_SQL, [_storable(row) for row in rows[refused:]])


def _encodable(row: tuple[object, ...]) -> bool:
    """Whether the driver can bind ``row``: every text of it encodable as UTF-8."""
    try:
        for value in row:
            if isinstance(value, str):
                value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


_COLUMNS = (
    'id, at, duration_ms, command, step, "trigger", outcome, container_id, netns, ifname, network_name,'
    " plugin_types, pod_namespace, pod_name, pod_uid, ips, macs, error_code, error_msg, error_details, node,"
    " device_ids"
)
"""Every column of a line, in the table's order (``_entry`` reads them so)."""
_SELECT = f"SELECT {_COLUMNS} FROM history"
_FOR_CONTAINER = f"{_SELECT} WHERE container_id = ? ORDER BY id"
_OF_CONTAINER = f"{_SELECT} WHERE container_id = ?"
_NEWEST_OF_CONTAINER = "SELECT max(id) FROM history WHERE container_id = ?"
_POD_OF_CONTAINER = (
    "SELECT pod_namespace, pod_name, pod_uid FROM history"
    " WHERE container_id = ? AND (pod_name != '' OR pod_namespace != '') ORDER BY id DESC LIMIT 1"
)
_CONTAINERS_WITH_PREFIX = (
    "SELECT container_id FROM history WHERE container_id >= ? AND container_id < ?"
    " GROUP BY container_id LIMIT ?"
)
_COUNT = "SELECT count(*) FROM history"
_OLDEST_AT = "SELECT at FROM history ORDER BY id LIMIT 1"
_NEWEST_AT = "SELECT at FROM history ORDER BY id DESC LIMIT 1"
_PREFIX_END = "\U0010ffff"
"""Appended to a prefix, the end of the range of the strings starting with it (short of that code point)."""


def for_container(connection: Connection, container_id: str) -> list[HistoryEntry]:
    """Every history line of one container, oldest first."""
    return [_entry(row) for row in cursor_of(connection).execute(_FOR_CONTAINER, (container_id,))]


# ---- operator queries -----------------------------------------------------------------------------


class PageQuery(NamedTuple):
    """The SQL of a page of history lines (every column, in the table's order) and its bound values."""

    sql: str
    parameters: tuple[object, ...]


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
    rows = cursor_of(connection).execute(statement.sql, statement.parameters)
    return [HistoryLine(row[0], _entry(row)) for row in rows]


MERGED_ALTERNATIVES = 64
"""Most values a filter may match (pod namespaces times networks) for a page to be read as a merge
of one ordered index seek per value; beyond, one ``IN`` query (sorted: rare, and still correct)."""


def page_statement(
    connection: Connection, where: HistoryFilter, *, before_id: int | None, size: int
) -> PageQuery | None:
    """The query of ``page``; None when a filter names something never recorded.

    A filter matching several recorded values (a bare network name recorded in three namespaces,
    a pod name without its namespace) is read as a ``UNION ALL`` of one query per value, ordered
    by id: SQLite merges their ordered index seeks and stops at ``size``, where one ``IN`` query
    would read every remaining match and sort it for each page (a whole history so filtered would
    cost CPU quadratic in its matches)."""
    alternatives = _alternatives(connection, where)
    if alternatives is None:
        return None
    keyset = _Where() if before_id is None else _Where(["id < ?"], [before_id])
    selects = [_conditions(where, choice).extended(keyset) for choice in alternatives]
    sql = " UNION ALL ".join(_SELECT + select.sql() for select in selects) + " ORDER BY id DESC"
    parameters = [value for select in selects for value in select.values]
    if size:
        sql += " LIMIT ?"
        parameters.append(size)
    return PageQuery(sql, tuple(parameters))


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
    sql, parameters = _OF_CONTAINER, list[object]([container_id])
    if after_id is not None:
        sql += " AND id > ?"
        parameters.append(after_id)
    if up_to_id is not None:
        sql += " AND id <= ?"
        parameters.append(up_to_id)
    sql += " ORDER BY id"
    if size:
        sql += " LIMIT ?"
        parameters.append(size)
    return [HistoryLine(row[0], _entry(row)) for row in cursor_of(connection).execute(sql, parameters)]


def newest_of_container(connection: Connection, container_id: str) -> int | None:
    """The id of the container's newest line (one seek in ``ix_history_container_id``)."""
    (value,) = cursor_of(connection).execute(_NEWEST_OF_CONTAINER, (container_id,)).fetchone()
    return None if value is None else int(value)


def pod_of_container(connection: Connection, container_id: str) -> PodIdentity:
    """The pod named by the container's newest line that names one (empty when none does)."""
    row = cursor_of(connection).execute(_POD_OF_CONTAINER, (container_id,)).fetchone()
    return PodIdentity() if row is None else PodIdentity(row[0], row[1], row[2])


def containers_with_prefix(connection: Connection, prefix: str, *, limit: int) -> list[str]:
    """Distinct container IDs of the history starting with ``prefix`` (at most ``limit``)."""
    rows = cursor_of(connection).execute(_CONTAINERS_WITH_PREFIX, (prefix, prefix + _PREFIX_END, limit))
    return [str(value) for (value,) in rows]


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
    cursor = cursor_of(connection)
    (rows,) = cursor.execute(_COUNT).fetchone()
    oldest = cursor.execute(_OLDEST_AT).fetchone()
    newest = cursor.execute(_NEWEST_AT).fetchone()
    return (
        int(rows),
        None if oldest is None else read_stamp(oldest[0]),
        None if newest is None else read_stamp(newest[0]),
    )


@dataclass(frozen=True, slots=True)
class _Choice:
    """The values of the multi-valued filters one query of a page selects (None: not filtered)."""

    pod_namespaces: tuple[str, ...] | None
    networks: tuple[str, ...] | None


@dataclass(slots=True)
class _Where:
    """Conditions ANDed together (fixed SQL fragments) and the values bound to their ``?``, in order."""

    fragments: list[str] = field(default_factory=list)
    values: list[object] = field(default_factory=list)

    def add(self, fragment: str, *values: object) -> None:
        self.fragments.append(fragment)
        self.values.extend(values)

    def extended(self, other: _Where) -> _Where:
        return _Where([*self.fragments, *other.fragments], [*self.values, *other.values])

    def sql(self) -> str:
        """`` WHERE ...``, or nothing when there is no condition."""
        return " WHERE " + " AND ".join(self.fragments) if self.fragments else ""


def _alternatives(connection: Connection, where: HistoryFilter) -> list[_Choice] | None:
    """The choices a page is read as: one per combination of the values ``where``'s pod and network
    filters match, or one selecting them all (an ``IN`` per filter) when that is a single one or more
    than ``MERGED_ALTERNATIVES``; one, unfiltered, when neither filter is given; None when a filter
    matches nothing recorded.

    The combinations are counted before any is made: a pod name and a bare network name each found
    in thousands of namespaces (a NAD of the same name in each tenant's) would otherwise make their
    product, millions of choices, on every page, in the daemon's memory."""
    namespaces: tuple[str, ...] | None = None
    if where.pod is not None:
        namespaces = (where.namespace,) if where.namespace is not None else tuple(pod_namespaces(connection))
    networks: tuple[str, ...] | None = None
    if where.network is not None:
        networks = tuple(matching_networks(network_names(connection), where.network))
    if namespaces == () or networks == ():
        return None
    combinations = len(namespaces or (None,)) * len(networks or (None,))
    if combinations == 1 or combinations > MERGED_ALTERNATIVES:
        return [_Choice(namespaces, networks)]
    return [
        _Choice(None if namespace is None else (namespace,), None if network is None else (network,))
        for namespace in namespaces or (None,)
        for network in networks or (None,)
    ]


def _conditions(where: HistoryFilter, choice: _Choice) -> _Where:
    """SQL conditions for ``where``, its pod namespaces and networks as ``choice`` selects them."""
    conditions = _Where()
    if where.pod is not None and choice.pod_namespaces is not None:
        conditions.add("pod_name = ?", where.pod)
        _one_of(conditions, "pod_namespace", choice.pod_namespaces)
    elif where.namespace is not None:
        conditions.add("pod_namespace = ?", where.namespace)
    if where.container is not None:
        conditions.add(
            "container_id >= ? AND container_id < ?", where.container, where.container + _PREFIX_END
        )
    if choice.networks is not None:
        _one_of(conditions, "network_name", choice.networks)
    if where.since is not None:
        conditions.add("at >= ?", stamp(where.since))
    if where.failed:
        conditions.add("outcome = ?", "error")
    if where.command is not None:
        conditions.add("command = ?", where.command)
    if where.trigger is not None:
        conditions.add('"trigger" = ?', where.trigger)
    return conditions


def _one_of(
    conditions: _Where, column: Literal["pod_namespace", "network_name"], values: Sequence[str]
) -> None:
    """``column`` is one of ``values``: ``= ?`` for one, else ``IN`` with one ``?`` per value."""
    if len(values) == 1:
        conditions.add(f"{column} = ?", values[0])
    else:
        conditions.add(f"{column} IN ({', '.join('?' * len(values))})", *values)


_DISTINCT = {
    column: (
        f"WITH RECURSIVE seen(value) AS ("
        f" SELECT min({column}) FROM history"
        f" UNION ALL"
        f" SELECT (SELECT min({column}) FROM history WHERE {column} > seen.value)"
        f" FROM seen WHERE seen.value IS NOT NULL"
        f") SELECT value FROM seen WHERE value IS NOT NULL"
    )
    for column in ("pod_namespace", "network_name")
}
"""A loose index scan per indexed column: one index seek per distinct value, not one read per row."""


def _distinct(connection: Connection, column: Literal["pod_namespace", "network_name"]) -> list[str]:
    """Distinct values of an indexed column: one index seek per value, not one read per row."""
    statement = _DISTINCT.get(column)
    if statement is None:
        raise ValueError(f"no loose index scan over {column!r}")
    return [str(value) for (value,) in cursor_of(connection).execute(statement)]


# ---- retention ------------------------------------------------------------------------------------

_LAST_ID_IF_ANY_BEFORE = "SELECT max(id) FROM history WHERE EXISTS (SELECT id FROM history WHERE at < ?)"
_NTH_ID = "SELECT id FROM history ORDER BY id LIMIT 1 OFFSET ?"
_DELETE_OLDEST = "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE id <= ? ORDER BY id LIMIT ?)"
_DELETE_OLDEST_BEFORE = (
    "DELETE FROM history WHERE id IN"
    " (SELECT id FROM history WHERE id <= ? AND at < ? ORDER BY at, id LIMIT ?)"
)


def last_id_if_any_before(connection: Connection, cutoff: datetime) -> int | None:
    """The id of the last line recorded (the highest) when any line is dated before ``cutoff``;
    None when none is (a seek in ``ix_history_at``, one in the rowids).

    Not the id of the newest line before ``cutoff``: after the clock stepped back, a line dated
    earlier may have been recorded after it, and must go in the same pass."""
    (value,) = cursor_of(connection).execute(_LAST_ID_IF_ANY_BEFORE, (stamp(cutoff),)).fetchone()
    return None if value is None else int(value)


def last_id_beyond(connection: Connection, max_rows: int) -> int | None:
    """The id up to which lines must go so that at most ``max_rows`` remain; None if none must."""
    cursor = cursor_of(connection)
    (rows,) = cursor.execute(_COUNT).fetchone()
    excess = int(rows) - max_rows
    if excess <= 0:
        return None
    row = cursor.execute(_NTH_ID, (excess - 1,)).fetchone()
    return None if row is None else int(row[0])


def delete_oldest(
    connection: Connection, *, up_to_id: int, before: datetime | None = None, batch: int
) -> int:
    """Delete at most ``batch`` of the oldest lines with ``id <= up_to_id`` (and, when ``before``
    is given, dated before it); return how many went. Touches the history table only.

    With ``before``, the oldest by date, walking ``ix_history_at``: in id order, lines dated in the
    future (recorded while the clock ran ahead) may come before them, and every batch would walk
    those again before finding one to delete (invariant 12)."""
    cursor = cursor_of(connection)
    if before is None:
        cursor.execute(_DELETE_OLDEST, (up_to_id, batch))
    else:
        cursor.execute(_DELETE_OLDEST_BEFORE, (up_to_id, stamp(before), batch))
    return max(cursor.rowcount, 0)


def _entry(row: Sequence[Any]) -> HistoryEntry:
    """An entry from a row of ``_COLUMNS``."""
    (
        _id,
        at,
        duration_ms,
        command,
        step,
        trigger,
        outcome,
        container_id,
        netns,
        ifname,
        network_name,
        plugin_types,
        pod_namespace,
        pod_name,
        pod_uid,
        ips,
        macs,
        error_code,
        error_msg,
        error_details,
        node,
        device_ids,
    ) = row
    return HistoryEntry(
        command=command,
        step=step,
        trigger=trigger,
        outcome=outcome,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        network_name=network_name,
        plugin_types=tuple(filter(None, plugin_types.split(","))),
        pod=PodIdentity(pod_namespace, pod_name, pod_uid),
        duration_ms=duration_ms,
        ips=_strings(ips),
        macs=_strings(macs),
        error_code=error_code,
        error_msg=error_msg,
        error_details=error_details,
        at=read_stamp(at),
        node=node,
        device_ids=_strings(device_ids),
    )


def _strings(stored: str) -> tuple[str, ...]:
    """A JSON list column; the empty list (most lines' device IDs, failed steps' addresses) unparsed."""
    return () if stored == "[]" else tuple(json.loads(stored))
