"""Moving a test's state database between schema revisions with alembic, as the daemon connects."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.store.schema import MIGRATIONS_DIR, alembic_engine


def migrate(path: Path, *, down_to: str | None = None) -> None:
    """Upgrade the database at ``path`` to head, or downgrade it to ``down_to``, with the daemon's
    connection settings (foreign_keys=ON: a rebuild of ``sandboxes`` would cascade)."""
    engine = alembic_engine(path)
    try:
        with engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            if down_to is None:
                command.upgrade(config, "head")
            else:
                command.downgrade(config, down_to)
            connection.commit()
    finally:
        engine.dispose()
