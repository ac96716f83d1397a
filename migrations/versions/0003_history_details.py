"""History details for operator queries: the node and device IDs of each step; network and outcome indexes.

``node`` and ``device_ids`` are added with constant defaults, which SQLite does without rewriting
the table (instant on a million rows). The new indexes serve ``multusctl history --network`` and
``--failed``; like the existing pod and container indexes they end, implicitly, with the rowid, so
"newest first" reads an index backwards and never sorts. Safe to rerun after a kill -9: a column
is added only when missing, indexes with ``if_not_exists``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEXES = {"ix_history_network": ["network_name"], "ix_history_outcome": ["outcome"]}


def _history_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("history")}


def upgrade() -> None:
    existing = _history_columns()
    if "node" not in existing:
        op.add_column("history", sa.Column("node", sa.String(), nullable=False, server_default=""))
    if "device_ids" not in existing:
        op.add_column("history", sa.Column("device_ids", sa.Text(), nullable=False, server_default="[]"))
    for name, columns in _INDEXES.items():
        op.create_index(name, "history", columns, if_not_exists=True)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, "history", if_exists=True)
    existing = _history_columns()
    with op.batch_alter_table("history") as batch:
        for column in ("device_ids", "node"):
            if column in existing:
                batch.drop_column(column)
