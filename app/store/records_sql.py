"""Plain SQL on a Session's own SQLite connection, for the reads and writes of the ADD/DEL hot path.

Used by ``app.store.checkpoints`` and ``app.store.history`` inside a unit of work: the statements
run on the connection (and so in the transaction and savepoint) the Session holds, and store values
exactly as the models' column types do (``stamp``: SQLAlchemy's SQLite DATETIME text of a naive UTC
time; ``read_stamp`` reads it back), so the ORM and Core reads see the same rows. Never opens a
connection or a transaction. The store's own threads (``app.store.database``) lend their Sessions
the cursor of the connection they frame transactions on, so a unit that only runs plain SQL never
starts the Session's machinery at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

_LENT = "multus_py.lent_cursor"
"""``Session.info`` key: the cursor of the connection the Session is bound to, whose transaction (and
savepoint) the thread running the unit has begun itself (``lend_cursor``)."""
_CURSOR = "multus_py.cursor"
"""``Session.info`` key: (the innermost transaction, a cursor of its connection), so a unit asks the
Session for its connection once; a new savepoint asks again, which is what makes SQLAlchemy emit it."""


def lend_cursor(session: Session, cursor: sqlite3.Cursor) -> None:
    """Let units given ``session`` run plain SQL on ``cursor``: a cursor of the connection ``session``
    is bound to, on which the caller begins every unit's transaction or savepoint before the unit runs."""
    session.info[_LENT] = cursor


def cursor_of(session: Session) -> sqlite3.Cursor:
    """A cursor of the SQLite connection behind ``session``'s current transaction.

    A Session with a lent cursor and no transaction of its own yet answers with that cursor: no
    Session machinery runs. Once the unit has used the Session (it holds a savepoint of its own,
    maybe not emitted yet), the cursor comes from the Session's connection, which emits it."""
    lent = session.info.get(_LENT)
    if lent is not None and not session.in_transaction():
        lent_cursor: sqlite3.Cursor = lent
        return lent_cursor
    cached = session.info.get(_CURSOR)
    transaction = session.get_nested_transaction() or session.get_transaction()
    if cached is not None and transaction is not None and cached[0] is transaction:
        cursor: sqlite3.Cursor = cached[1]
        return cursor
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"the state database runs on SQLite, not {type(driver).__name__}")
    cursor = driver.cursor()
    session.info[_CURSOR] = (session.get_nested_transaction() or session.get_transaction(), cursor)
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
