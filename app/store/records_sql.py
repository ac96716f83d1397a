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


def cursor_of(session: Session) -> sqlite3.Cursor:
    """A cursor of the SQLite connection behind ``session``'s current transaction."""
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"the state database runs on SQLite, not {type(driver).__name__}")
    return driver.cursor()


def stamp(moment: datetime) -> str:
    """``moment`` as ``UtcDateTime`` stores it: naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
