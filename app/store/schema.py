"""Bringing a state database to this release's schema with alembic, running on a newer one that
says this release may use it, or refusing it.

Called by ``Database.open`` before anything reads or writes. A database stamped with a revision
this release does not know was written by a newer multus-py (a rollback): it runs on it, with a
warning naming both revisions, when the database's ``schema_compatibility`` record (written by
``migrations/env.py`` since revision 0010) says code as old as this release's head may use that
revision; without such a record it is refused with both versions named, as running on it could
corrupt the checkpoint, the only record of what to clean up. ``python -m app.store.schema
--downgrade-to REV PATH`` takes a database back to an older revision with this release's
migrations, under the daemon's lock, for a rollback past an incompatible revision. A file with no
revision stamp is migrated only when it is empty or holds nothing but multus-py's own tables, its
checkpoint among them (the stamp lost; every revision is safe to rerun, and refusing would strand
the checkpoint); anything else there is another program's database (a wrong path in
daemon-config) and is refused, read through a read-only connection so that not a byte of it
changes. Alembic and SQLAlchemy are imported here only, and only when the database is not already
current (or to downgrade it); the checks run plain SQL on the caller's ``sqlite3`` connection. For
the daemon a database file is then migrated by a child process (``python -m app.store.schema
PATH``), so it never keeps alembic's or SQLAlchemy's modules in its memory, even on first start;
a migration SQLite refuses (a full disk, an I/O error, a damaged file) fails in one line naming
the revision it stopped at and SQLite's error (every revision before it is committed).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import migrations

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection as AlembicConnection
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).parent


class SchemaError(RuntimeError):
    """The database cannot be used by this release (newer schema, failed migration)."""


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*=\s*(None|['\"]([^'\"]+)['\"])\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class _Revisions:
    """The revisions of one migrations directory: its head, and the chain from the first to it."""

    head: str
    chain: tuple[str, ...]


@cache
def _revisions_in(directory: Path) -> _Revisions:
    """The revisions of the migration scripts in ``directory``/versions, read from their
    ``revision``/``down_revision`` lines.

    Read as text rather than through alembic: a daemon starting on a current database then never
    imports alembic (about 14 MiB of memory it would keep for nothing). A test checks that this
    agrees with alembic's own view of the scripts.
    """
    parents: dict[str, str | None] = {}
    for script in sorted((directory / "versions").glob("*.py")):
        fields = {key: value for key, _, value in _REVISION_LINE.findall(script.read_text())}
        if fields.get("revision"):
            parents[fields["revision"]] = fields.get("down_revision") or None
    heads = sorted(set(parents) - {parent for parent in parents.values() if parent})
    if len(heads) != 1:
        raise SchemaError(f"migrations have {len(heads)} heads, expected one: {heads}")
    chain: list[str] = []
    revision: str | None = heads[0]
    while revision is not None and revision not in chain:
        chain.append(revision)
        revision = parents.get(revision)
    return _Revisions(head=heads[0], chain=tuple(reversed(chain)))


def _known_revisions() -> _Revisions:
    """This release's revisions (``MIGRATIONS_DIR``)."""
    return _revisions_in(MIGRATIONS_DIR)


def head_revision() -> str:
    return _known_revisions().head


def known_revisions() -> tuple[str, ...]:
    """This release's revisions, oldest first."""
    return _known_revisions().chain


def refuse_if_unknown(current: str | None, *, oldest_code_revision: str | None = None) -> None:
    """Raise ``SchemaError`` when ``current`` is a revision this release does not know, unless
    ``oldest_code_revision``, what the database records as the oldest revision whose code may use
    ``current``, is one this release knows (its head is then at or after it)."""
    revisions = _known_revisions()
    if current is None or current in revisions.chain:
        return
    if oldest_code_revision is None:
        raise SchemaError(
            f"state database schema revision {current!r} is unknown to this multus-py (newest known: "
            f"{revisions.head!r}) and records no older revision that may use it: written by a newer "
            "multus-py (upgrade it, or take the database back with that release: python -m "
            f"app.store.schema --downgrade-to {revisions.head} <state.db>, the daemon stopped), or not "
            "a multus-py database (check the database path in daemon-config)"
        )
    if oldest_code_revision not in revisions.chain:
        raise SchemaError(
            f"state database schema revision {current!r} was written by a newer multus-py and may be "
            f"used only by a multus-py whose schema revision is {oldest_code_revision!r} or later (this "
            f"one's newest: {revisions.head!r}): upgrade multus-py to such a release, or take the "
            "database back with the release that wrote it, the daemon stopped: python -m "
            f"app.store.schema --downgrade-to {revisions.head} <state.db> (docs/state.md)"
        )


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def recorded_oldest_code_revision(connection: sqlite3.Connection, revision: str) -> str | None:
    """What the database records as the oldest revision whose code may use ``revision``'s schema;
    None when it records nothing for it (a database before revision 0010)."""
    if not _has_table(connection, "schema_compatibility"):
        return None
    row = connection.execute(
        "SELECT oldest_code_revision FROM schema_compatibility WHERE revision = ?", (revision,)
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def check_revision(connection: sqlite3.Connection) -> str | None:
    """The database's revision (None: not stamped), once this release may use it: one it knows,
    or a newer one whose record says code of this release's head may use it (a rollback, logged as
    a warning naming both revisions). ``SchemaError`` otherwise."""
    current = current_revision(connection)
    if current is None or current in known_revisions():
        return current
    oldest = recorded_oldest_code_revision(connection, current)
    refuse_if_unknown(current, oldest_code_revision=oldest)
    log.warning(
        "state database schema revision %r is newer than this multus-py's (%r), written by a newer"
        " release; running on it, as the database records that code of revision %r or later may use"
        " it. Nothing is migrated: the newer release runs on it again as it left it",
        current,
        head_revision(),
        oldest,
    )
    return current


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
    from app.store.database import file_uri  # it imports this module

    try:
        with closing(sqlite3.connect(f"{file_uri(database)}?mode=ro", uri=True)) as raw:
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
    from app.store.models import METADATA  # SQLAlchemy, on this rare path only: an unstamped file

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


def current_revision(connection: sqlite3.Connection) -> str | None:
    """The revision stamped in the database, None for an empty database."""
    if not _has_table(connection, "alembic_version"):
        return None
    row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def migrate(connection: sqlite3.Connection, database: Path, *, in_child: bool = False) -> str:
    """Upgrade the database file at ``database`` (``connection`` is one of it, outside a transaction)
    to head, by a child process when ``in_child``; return the revision it ends at (a newer one, left
    as it is, when ``check_revision`` lets this release use it)."""
    head = head_revision()
    current = check_revision(connection)
    if current is not None and current not in known_revisions():
        return current
    if current == head:
        return head
    if in_child:
        _upgrade_in_child(str(database))
    else:
        _upgrade_file(str(database))
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
        raise SchemaError(f"migrating state database {database} failed: {_child_failure(done.stderr)}")


_ERROR_PREFIX = "error: "
"""How the migration child's last line of stderr starts when it names why it failed."""


def _child_failure(stderr: str) -> str:
    """Why the migration child failed: the line it ends with to say so, else the end of what it
    wrote (a traceback: a bug)."""
    lines = stderr.strip().splitlines()
    if lines and lines[-1].startswith(_ERROR_PREFIX):
        return lines[-1].removeprefix(_ERROR_PREFIX)
    return stderr.strip()[-2000:]


def alembic_engine(database: Path) -> Engine:
    """A SQLAlchemy engine for alembic on the database file at ``database``: its connections are the
    store's own (``app.store.database.connect``: the same pragmas, autocommit mode), each
    transaction begun with an explicit ``BEGIN``, as the store's threads do."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from app.store.database import connect  # it imports this module

    engine = create_engine(
        "sqlite://", creator=lambda: connect(database, read_only=False), poolclass=NullPool
    )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: AlembicConnection) -> None:
        connection.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]

    return engine


def _upgrade_file(database: str) -> None:
    """Upgrade the database file at ``database`` to head with alembic (the child's side of
    ``_upgrade_in_child``): the same connection settings as the daemon's."""
    engine = alembic_engine(Path(database))
    try:
        with engine.connect() as connection:
            _run_alembic_upgrade(connection)
            connection.commit()
    finally:
        engine.dispose()


def _run_alembic_upgrade(connection: AlembicConnection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _alembic_config(connection: AlembicConnection) -> Config:
    """Alembic's configuration for this release's migrations, run on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def downgrade_file(database: Path, target: str) -> str:
    """Take the database file at ``database`` back to revision ``target`` with this release's
    migrations (their ``downgrade`` functions, one transaction each with its stamp, so a rerun
    after a kill -9 goes on where it stopped), holding the daemon's lock; return the revision it
    was at. What the columns and tables dropped held is lost (docs/state.md).

    ``SchemaError`` when ``target`` is not a revision this release knows at or before the
    database's; ``DatabaseLockedError`` while a daemon has the database open."""
    from app.store.database import _lock_exclusively

    revisions = _known_revisions()
    if target not in revisions.chain:
        raise SchemaError(f"revision {target!r} is unknown to this multus-py (it knows {revisions.chain})")
    if not database.is_file():
        raise SchemaError(f"there is no state database at {database}")
    lock_fd = _lock_exclusively(database)
    try:
        refuse_if_foreign(database)
        engine = alembic_engine(database)
        try:
            with engine.connect() as connection:
                current = current_revision(connection.connection.driver_connection)  # type: ignore[arg-type]
                if current is None or current not in revisions.chain:
                    raise SchemaError(
                        f"state database {database} is at revision {current!r}, which this multus-py"
                        " does not know: downgrade it with the release that wrote it"
                    )
                if revisions.chain.index(target) > revisions.chain.index(current):
                    raise SchemaError(
                        f"state database {database} is at revision {current!r}, older than {target!r}:"
                        " the daemon of a release with that revision upgrades it"
                    )
                if current != target:
                    from alembic import command

                    command.downgrade(_alembic_config(connection), target)
                    connection.commit()
                return current
        finally:
            engine.dispose()
    finally:
        os.close(lock_fd)


def _stopped_at(database: Path) -> str:
    """Where a migration that failed left the database file, for its one-line error: the revision
    stamped in it, read through a read-only connection of its own (none for a file never migrated),
    or that it cannot be read (locked, not openable: not "None", which says never migrated)."""
    from app.store.database import file_uri  # it imports this module

    try:
        with closing(sqlite3.connect(f"{file_uri(database)}?mode=ro", uri=True)) as raw:
            row = raw.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return "at a schema revision that cannot be read"
    return f"at schema revision {None if row is None else str(row[0])!r}"


def main(argv: list[str] | None = None) -> int:
    """``python -m app.store.schema PATH``: upgrade the database file to head (the daemon's
    migration child); with ``--downgrade-to REV``: take it back to REV, for an operator."""
    parser = argparse.ArgumentParser(prog="python -m app.store.schema", description=main.__doc__)
    parser.add_argument("database", type=Path, help="the state database file (<stateDir>/state.db)")
    parser.add_argument("--downgrade-to", metavar="REV", help="the revision to take the database back to")
    arguments = parser.parse_args(argv)
    from sqlalchemy.exc import DBAPIError  # this process migrates: alembic runs on SQLAlchemy

    if arguments.downgrade_to is None:
        try:
            _upgrade_file(str(arguments.database))
        except DBAPIError as exc:  # SQLite's refusal (a full disk, an I/O error, a damaged file): no bug
            print(
                f"{_ERROR_PREFIX}stopped {_stopped_at(arguments.database)} on the way to"
                f" {head_revision()!r}: {exc.orig}",
                file=sys.stderr,
            )
            return 1
        return 0
    from app.store.database import DatabaseLockedError

    try:
        was = downgrade_file(arguments.database, arguments.downgrade_to)
    except (SchemaError, DatabaseLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:  # SQLite's refusal (a damaged file, a full disk): the operator's to see, no bug
        print(
            f"{_ERROR_PREFIX}stopped {_stopped_at(arguments.database)} on the way down to"
            f" {arguments.downgrade_to!r}: {exc.orig}",
            file=sys.stderr,
        )
        return 1
    print(f"state database {arguments.database}: schema revision {was} -> {arguments.downgrade_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
