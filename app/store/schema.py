"""Bringing a state database to this release's schema with alembic, or refusing it.

Called by ``Database.open`` before anything reads or writes. A database stamped with a revision
this release does not know (written by a newer multus-py) is refused with both versions named:
running on it could corrupt the checkpoint, and the checkpoint is the only record of what to
clean up. A file with no revision stamp is migrated only when it is empty or holds nothing but
multus-py's own tables, its checkpoint among them (the stamp lost; every revision is safe to
rerun, and refusing would strand the checkpoint); anything else there is another program's
database (a wrong path in daemon-config) and is refused, read through a read-only connection so
that not a byte of it changes. Alembic is imported here only, and only when the database is not
already current; for the daemon a database file is then migrated by a child process (``python -m
app.store.schema PATH``), so it never keeps alembic's modules (mako, every dialect's DDL) in its
memory, even on first start.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, create_engine, inspect, text

import migrations
from app.store.models import METADATA

MIGRATIONS_DIR = Path(migrations.__file__).parent


class SchemaError(RuntimeError):
    """The database cannot be used by this release (newer schema, failed migration)."""


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*=\s*(None|['\"]([^'\"]+)['\"])\s*$", re.MULTILINE)


@cache
def _known_revisions() -> tuple[str, tuple[str, ...]]:
    """(head, all revisions), read from the migration scripts' ``revision``/``down_revision`` lines.

    Read as text rather than through alembic: a daemon starting on a current database then never
    imports alembic (about 14 MiB of memory it would keep for nothing). A test checks that this
    agrees with alembic's own view of the scripts.
    """
    parents: dict[str, str | None] = {}
    for script in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        fields = {key: value for key, _, value in _REVISION_LINE.findall(script.read_text())}
        if fields.get("revision"):
            parents[fields["revision"]] = fields.get("down_revision") or None
    heads = sorted(set(parents) - {parent for parent in parents.values() if parent})
    if len(heads) != 1:
        raise SchemaError(f"migrations have {len(heads)} heads, expected one: {heads}")
    return heads[0], tuple(parents)


def head_revision() -> str:
    return _known_revisions()[0]


def known_revisions() -> tuple[str, ...]:
    return _known_revisions()[1]


def refuse_if_unknown(current: str | None) -> None:
    """Raise ``SchemaError`` when ``current`` is a revision this release does not know."""
    head, known = _known_revisions()
    if current is not None and current not in known:
        raise SchemaError(
            f"state database schema revision {current!r} is unknown to this multus-py (newest known: "
            f"{head!r}): written by a newer multus-py (upgrade it, or move the database aside after "
            "cleaning up), or not a multus-py database (check the database path in daemon-config)"
        )


_CHECKPOINT_COLUMNS = {
    "sandboxes": {"container_id", "state", "netns", "boot_id"},
    "attachments": {"container_id", "ifname", "position", "config", "cni_args"},
}
"""Columns revision 0001 gives the checkpoint's tables: an unstamped file must have them to be ours."""


def refuse_if_foreign(database: Path) -> None:
    """Raise ``SchemaError`` when the file at ``database`` is another program's SQLite database: it has
    no revision stamp yet holds tables or views multus-py's revisions do not create, or lacks its
    checkpoint's. A missing or empty file, or one of ours, passes. Read through a read-only
    connection of its own, before the daemon's connection switches the file to WAL."""
    try:
        if database.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as raw:
            names = {
                str(name)
                for (name,) in raw.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                    " AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
                )
            }
            if names <= {"alembic_version"} or _stamped(raw, names):
                return
            columns = {
                table: {str(row[1]) for row in raw.execute("SELECT * FROM pragma_table_info(?)", (table,))}
                for table in _CHECKPOINT_COLUMNS
            }
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"state database {database} cannot be used: {exc}") from exc
    foreign = sorted(names - set(METADATA.tables) - {"alembic_version"})
    missing = sorted(table for table, wanted in _CHECKPOINT_COLUMNS.items() if not wanted <= columns[table])
    if foreign or missing:
        what = (
            f"tables or views that are not multus-py's: {', '.join(foreign)}"
            if foreign
            else (f"no multus-py checkpoint ({', '.join(missing)})")
        )
        raise SchemaError(
            f"state database {database} is not a multus-py database (no schema revision, {what}); "
            "it was left unchanged: check the database path in daemon-config"
        )


def _stamped(raw: sqlite3.Connection, names: set[str]) -> bool:
    """Whether the database has a revision stamp (alembic's table, with its row)."""
    return "alembic_version" in names and raw.execute("SELECT 1 FROM alembic_version").fetchone() is not None


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, None for an empty database."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def migrate(connection: Connection, *, in_child: bool = False) -> str:
    """Upgrade the database behind ``connection`` to head (a file: by a child process when
    ``in_child``); return the revision it ends at."""
    head = head_revision()
    current = current_revision(connection)
    refuse_if_unknown(current)
    if current == head:
        return head
    database = connection.engine.url.database
    if in_child and database and database != ":memory:":
        _upgrade_in_child(database)
    else:
        _run_alembic_upgrade(connection)
    return head


def _upgrade_in_child(database: str) -> None:
    """Upgrade the database file at ``database`` to head in a child process (alembic stays out of the
    caller's memory); SchemaError with the child's last words if it fails.

    The child runs this process's code and migrations: their directory leads its path (``-P``: not
    the working directory, where another ``app`` or ``migrations`` may lie)."""
    root = str(MIGRATIONS_DIR.parent)
    paths = [root, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    done = subprocess.run(
        [sys.executable, "-P", "-m", "app.store.schema", database],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )
    if done.returncode != 0:
        raise SchemaError(f"migrating state database {database} failed: {done.stderr.strip()[-2000:]}")


def _upgrade_file(database: str) -> None:
    """The child's side of ``_upgrade_in_child``: the same connection settings as the daemon's."""
    from app.store.database import configure_connection

    engine = create_engine(f"sqlite:///{database}")
    configure_connection(engine, read_only=False)
    try:
        with engine.connect() as connection:
            _run_alembic_upgrade(connection)
            connection.commit()
    finally:
        engine.dispose()


def _run_alembic_upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


if __name__ == "__main__":
    _upgrade_file(sys.argv[1])
