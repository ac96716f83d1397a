"""Downgrading 0006 (``sandboxes.parallel``) must keep every recorded attachment.

``attachments.container_id`` references ``sandboxes`` with ON DELETE CASCADE and every connection
has ``foreign_keys=ON``: a downgrade that rebuilds ``sandboxes`` (drop and re-create) deletes the
whole checkpoint's attachments, and with them the only record of what to DEL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from app.store.database import Database, configure_connection
from app.store.schema import MIGRATIONS_DIR


def _insert(connection: sqlite3.Connection, table: str, values: dict[str, object]) -> None:
    columns = list(connection.execute(f"PRAGMA table_info({table})"))
    row: dict[str, object] = {
        column[1]: 0 if any(kind in column[2].upper() for kind in ("INT", "BOOL")) else "x"
        for column in columns
    }
    row.update(values)
    connection.execute(
        f"INSERT INTO {table} ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values())
    )


def test_downgrading_the_parallel_column_keeps_the_attachments(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Database.open(path).close()
    with sqlite3.connect(path) as connection:
        _insert(connection, "sandboxes", {"container_id": "c1", "state": "ready"})
        _insert(connection, "attachments", {"container_id": "c1", "ifname": "eth0", "state": "added"})
    engine = create_engine(f"sqlite:///{path}")
    configure_connection(engine, read_only=False)
    try:
        with engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
            connection.commit()
    finally:
        engine.dispose()
    with sqlite3.connect(path) as connection:
        columns = {column[1] for column in connection.execute("PRAGMA table_info(sandboxes)")}
        attachments = connection.execute("SELECT container_id, ifname FROM attachments").fetchall()
    assert "parallel" not in columns
    assert attachments == [("c1", "eth0")]
