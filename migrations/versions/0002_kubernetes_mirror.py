"""Kubernetes mirror: this node's pods, NetworkAttachmentDefinitions, and per-watch state.

A cache of the API (INVARIANTS 1): dropping these tables costs a relist, never a leak. Safe to
rerun after a kill -9 (``if_not_exists`` everywhere), like 0001.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_pods",
        sa.Column("namespace", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("uid", sa.String(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("resource_version", sa.String(), nullable=False),
        sa.Column("annotations", sa.Text(), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "mirror_nads",
        sa.Column("namespace", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("uid", sa.String(), nullable=False),
        sa.Column("resource_version", sa.String(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("resource_name", sa.String(), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "watch_state",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("resource_version", sa.String(), nullable=False),
        sa.Column("synced_at", sa.DateTime(), nullable=True),
        sa.Column("last_event_at", sa.DateTime(), nullable=True),
        sa.Column("relists", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("watch_state")
    op.drop_table("mirror_nads")
    op.drop_table("mirror_pods")
