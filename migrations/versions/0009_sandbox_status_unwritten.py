"""Whether a running sandbox's network-status is not written yet, so a restarted daemon writes it.

Set when an ADD's network-status write failed (the ADD still succeeds; the write is retried in the
background), cleared when a background retry wrote it; a DEL removes the row with it. At start-up
the daemon hands every sandbox so marked to the background retries. Added with a constant default
(0: written, or a sandbox recorded before this revision, whose failed write the daemon then kept in
memory only), which SQLite does without rewriting the table. Safe to rerun after a kill -9: the
column is added only when missing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

previous_code_compatible = True
"""0008's code names its columns in every insert and select of ``sandboxes`` (this column then gets
its default, 0: nothing to retry, as 0008 never retried after a restart), and its start-up
does not look for this column."""


def _sandbox_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("sandboxes")}


def upgrade() -> None:
    if "status_unwritten" not in _sandbox_columns():
        op.add_column(
            "sandboxes",
            sa.Column("status_unwritten", sa.Boolean(), nullable=False, server_default=sa.false()),
        )


def downgrade() -> None:
    if "status_unwritten" in _sandbox_columns():
        # In place (SQLite 3.35+), never by batch's rebuild of the table: dropping ``sandboxes`` with
        # foreign_keys=ON would cascade to every recorded attachment.
        op.execute("ALTER TABLE sandboxes DROP COLUMN status_unwritten")
