"""Plain SQL on a unit of work's connection: the cursor, and values stored as the tables' types store them.

Used by every store module the daemon runs, inside a unit of work (``app.store.database``): the
statements run on the ``sqlite3`` connection the store's thread hands the unit, in the transaction
(and, in the writer, the savepoint) the thread has begun on it. Values are stored exactly as the
SQLAlchemy column types of ``app.store.models`` store them (``stamp``: SQLite DATETIME text of a
naive UTC time; ``read_stamp`` reads it back), so the migrations, the tests' Core statements and
this plain SQL see the same rows. Never opens a connection, never begins or ends a transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any


def cursor_of(connection: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor of ``connection``, in the transaction its store thread has begun."""
    return connection.cursor()


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
