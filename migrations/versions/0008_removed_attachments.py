"""GC's proof that a host-local lease is ours, kept apart from the history that retention prunes.

``removed_attachments`` holds a copy (container ID, interface, config bytes, root) of every
attachment removed from the checkpoint whose config names host-local, written by a trigger in the
very transaction that removes it (a DEL's finish, a hot-plug detach, a sandbox's cascade, a
delegate dropped before exec), whichever code path removes it. GC reads it to find the lease
directories and to prove a leftover lease ours, and deletes a row once no lease of its container
is left in them. Safe to rerun after a kill -9: table and trigger are created only when missing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGER = """
CREATE TRIGGER IF NOT EXISTS tr_attachments_removed AFTER DELETE ON attachments
WHEN instr(CAST(OLD.config AS TEXT), 'host-local') > 0
BEGIN
    INSERT INTO removed_attachments (container_id, ifname, config, root)
    VALUES (OLD.container_id, OLD.ifname, OLD.config, OLD.root);
END
"""


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("removed_attachments"):
        op.create_table(
            "removed_attachments",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("container_id", sa.String(), nullable=False),
            sa.Column("ifname", sa.String(), nullable=False),
            sa.Column("config", sa.LargeBinary(), nullable=False),
            sa.Column("root", sa.Text(), nullable=False, server_default=""),
        )
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tr_attachments_removed")
    op.execute("DROP TABLE IF EXISTS removed_attachments")
