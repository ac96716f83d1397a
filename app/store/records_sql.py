"""Plain SQL on a Session's own SQLite connection, for the writes of the ADD/DEL hot path.

Used by ``app.store.checkpoints`` and ``app.store.history`` inside a unit of work: the statements
run on the connection (and so in the transaction and savepoint) the Session holds, and store values
exactly as the models' column types do (``stamp``: SQLAlchemy's SQLite DATETIME text of a naive UTC
time), so the ORM and Core reads see the same rows. Never opens a connection or a transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from sqlalchemy.orm import Session

_CURSOR = "multus_py.cursor"
"""``Session.info`` key: (the innermost transaction, a cursor of its connection), so a unit asks the
Session for its connection once; a new savepoint asks again, which is what makes SQLAlchemy emit it."""


def cursor_of(session: Session) -> sqlite3.Cursor:
    """A cursor of the SQLite connection behind ``session``'s current transaction."""
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
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
