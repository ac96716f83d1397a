"""Which older releases may run on this database: for each revision migrated to, the oldest revision
whose code may still use its schema, so that a rolled-back daemon runs instead of refusing it.

``migrations/env.py`` writes a revision's row, from the ``previous_code_compatible`` declarations
of the migrations, in the transaction that stamps the revision; this migration creates the table
(its own row, then, says 0008: 0010 and 0009 both leave the schema usable by the code before them).
A release from this one on that finds a revision it does not know reads that row
(``app.store.schema``); releases before it cannot, and refuse any newer revision. Safe to rerun
after a kill -9: the table is created only when missing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

previous_code_compatible = True
"""A table 0009's code never reads."""


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("schema_compatibility"):
        op.create_table(
            "schema_compatibility",
            sa.Column("revision", sa.String(), primary_key=True),
            sa.Column("oldest_code_revision", sa.String(), nullable=False),
        )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS schema_compatibility")
