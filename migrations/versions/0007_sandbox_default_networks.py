"""How many ``defaultNetworks`` attachments a sandbox's ADD made, so hot-plug never takes them for the
``networks`` annotation's when today's daemon-config lists other default networks (or none).

Nullable, without a default: NULL is a sandbox recorded before this revision, for which hot-plug
keeps counting today's ``defaultNetworks``. SQLite adds such a column without rewriting the table.
Safe to rerun after a kill -9: the column is added only when missing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _sandbox_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("sandboxes")}


def upgrade() -> None:
    if "default_networks" not in _sandbox_columns():
        op.add_column("sandboxes", sa.Column("default_networks", sa.Integer(), nullable=True))


def downgrade() -> None:
    if "default_networks" in _sandbox_columns():
        # In place (SQLite 3.35+), never by batch's rebuild of the table: dropping ``sandboxes`` with
        # foreign_keys=ON would cascade to every recorded attachment.
        op.execute("ALTER TABLE sandboxes DROP COLUMN default_networks")
