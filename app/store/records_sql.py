"""Plain SQL on a unit of work's own SQLite connection, for the reads and writes of the ADD/DEL hot path.

Used by ``app.store.checkpoints``, ``app.store.history`` and ``app.store.mirror`` inside a unit of
work: the statements run on the driver's connection behind the unit's SQLAlchemy ``Connection``
(and so in the transaction and savepoint the store's thread has begun on it), and store values
exactly as the tables' column types do (``stamp``: SQLAlchemy's SQLite DATETIME text of a naive
UTC time; ``read_stamp`` reads it back), so Core statements and plain SQL see the same rows. Never
opens a connection; begins a transaction only where SQLAlchemy would (a connection outside one).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

_CURSOR = "multus_py.cursor"
"""``Connection.info`` key (kept with the driver's connection): (that driver connection, a cursor of
it), so each unit of work does not open a cursor of its own."""


def cursor_of(connection: Connection) -> sqlite3.Cursor:
    """A cursor of the SQLite connection behind ``connection``, in its current transaction.

    A connection outside a transaction begins one first, as its own ``execute`` would (the
    store's threads always hand their units a connection already in one)."""
    if not connection.in_transaction():
        connection.begin()
    driver = connection.connection.driver_connection
    cached = connection.info.get(_CURSOR)
    if cached is not None and cached[0] is driver:
        cursor: sqlite3.Cursor = cached[1]
        return cursor
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"the state database runs on SQLite, not {type(driver).__name__}")
    cursor = driver.cursor()
    connection.info[_CURSOR] = (driver, cursor)
    return cursor


def stamp(moment: datetime) -> str:
    """``moment`` as ``UtcDateTime`` stores it: naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def read_stamp(stored: str) -> datetime:
    """A ``stamp`` read back as ``UtcDateTime`` reads it: an aware UTC datetime."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)


_ENCODE = json.JSONEncoder().encode
_ENCODE_SORTED = json.JSONEncoder(sort_keys=True).encode


def json_list(values: Iterable[Any]) -> str:
    """``values`` as a JSON list, as ``json.dumps`` writes it (the empty list without encoding)."""
    items = list(values)
    return _ENCODE(items) if items else "[]"


def json_object(mapping: Mapping[str, Any]) -> str:
    """``mapping`` as a JSON object with sorted keys, as ``json.dumps(..., sort_keys=True)`` writes it."""
    return _ENCODE_SORTED(dict(mapping))
