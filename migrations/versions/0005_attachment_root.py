"""The root each delegate ran in (daemon-config ``chrootDir``), so DEL replays in that root.

Added with a constant default ("" = the daemon's own root, what every existing attachment used),
which SQLite does without rewriting the table. Safe to rerun after a kill -9: the column is added
only when missing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _attachment_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("attachments")}


def upgrade() -> None:
    if "root" not in _attachment_columns():
        op.add_column("attachments", sa.Column("root", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    if "root" in _attachment_columns():
        with op.batch_alter_table("attachments") as batch:
            batch.drop_column("root")
