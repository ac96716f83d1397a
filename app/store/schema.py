"""Bringing a state database to this release's schema with alembic, or refusing it.

Called by ``Database.open`` before anything reads or writes. A database stamped with a revision
this release does not know (written by a newer multus-py) is refused with both versions named:
running on it could corrupt the checkpoint, and the checkpoint is the only record of what to
clean up. Alembic is imported here only, and only when the database is not already current.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import Connection, inspect, text

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


class SchemaError(RuntimeError):
    """The database cannot be used by this release (newer schema, failed migration)."""


@cache
def _known_revisions() -> tuple[str, tuple[str, ...]]:
    """(head, all revisions) read from the migration scripts."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    heads = script.get_heads()
    if len(heads) != 1:
        raise SchemaError(f"migrations have {len(heads)} heads, expected one: {heads}")
    return heads[0], tuple(rev.revision for rev in script.walk_revisions())


def head_revision() -> str:
    return _known_revisions()[0]


def known_revisions() -> tuple[str, ...]:
    return _known_revisions()[1]


def refuse_if_unknown(current: str | None) -> None:
    """Raise ``SchemaError`` when ``current`` is a revision this release does not know."""
    head, known = _known_revisions()
    if current is not None and current not in known:
        raise SchemaError(
            f"state database schema revision {current!r} is newer than this multus-py understands "
            f"(newest known: {head!r}); upgrade multus-py, or move the database aside after cleaning up"
        )


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, None for an empty database."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def migrate(connection: Connection) -> str:
    """Upgrade the database behind ``connection`` to head; return the revision it ends at."""
    head = head_revision()
    current = current_revision(connection)
    refuse_if_unknown(current)
    if current == head:
        return head
    _run_alembic_upgrade(connection)
    return head


def _run_alembic_upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
