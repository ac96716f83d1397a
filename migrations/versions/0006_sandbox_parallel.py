"""Whether a sandbox's delegates ran in parallel (``parallelDelegates``), so its DEL runs them so too.

Added with a constant default (0: one after another, what every existing sandbox did), which SQLite
does without rewriting the table. Safe to rerun after a kill -9: the column is added only when
missing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _sandbox_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("sandboxes")}


def upgrade() -> None:
    if "parallel" not in _sandbox_columns():
        op.add_column(
            "sandboxes", sa.Column("parallel", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    if "parallel" in _sandbox_columns():
        # In place (SQLite 3.35+), never by batch's rebuild of the table: dropping ``sandboxes`` with
        # foreign_keys=ON would cascade to every recorded attachment.
        op.execute("ALTER TABLE sandboxes DROP COLUMN parallel")
