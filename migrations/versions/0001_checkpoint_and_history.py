"""Checkpoint (sandboxes, attachments) and history.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("container_id", sa.String(), primary_key=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("netns", sa.String(), nullable=False),
        sa.Column("netns_id", sa.String(), nullable=False),
        sa.Column("ifname", sa.String(), nullable=False),
        sa.Column("cni_version", sa.String(), nullable=False),
        sa.Column("pod_namespace", sa.String(), nullable=False),
        sa.Column("pod_name", sa.String(), nullable=False),
        sa.Column("pod_uid", sa.String(), nullable=False),
        sa.Column("boot_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("state IN ('adding', 'ready', 'deleting')", name="ck_sandboxes_state"),
        if_not_exists=True,
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "container_id",
            sa.String(),
            sa.ForeignKey("sandboxes.container_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ifname", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("is_master", sa.Boolean(), nullable=False),
        sa.Column("network_name", sa.String(), nullable=False),
        sa.Column("plugin_types", sa.String(), nullable=False),
        sa.Column("config", sa.LargeBinary(), nullable=False),
        sa.Column("cni_args", sa.Text(), nullable=False),
        sa.Column("capability_args", sa.Text(), nullable=False),
        sa.Column("cni_path", sa.Text(), nullable=False),
        sa.Column("device", sa.Text(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("container_id", "ifname", name="uq_attachments_container_ifname"),
        sa.CheckConstraint("state IN ('intent', 'added', 'deleting')", name="ck_attachments_state"),
        if_not_exists=True,
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("command", sa.String(), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("container_id", sa.String(), nullable=False),
        sa.Column("netns", sa.String(), nullable=False),
        sa.Column("ifname", sa.String(), nullable=False),
        sa.Column("network_name", sa.String(), nullable=False),
        sa.Column("plugin_types", sa.String(), nullable=False),
        sa.Column("pod_namespace", sa.String(), nullable=False),
        sa.Column("pod_name", sa.String(), nullable=False),
        sa.Column("pod_uid", sa.String(), nullable=False),
        sa.Column("ips", sa.Text(), nullable=False),
        sa.Column("macs", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_msg", sa.Text(), nullable=True),
        sa.Column("error_details", sa.Text(), nullable=True),
        if_not_exists=True,
    )
    op.create_index("ix_history_container_id", "history", ["container_id"], if_not_exists=True)
    op.create_index("ix_history_pod", "history", ["pod_namespace", "pod_name"], if_not_exists=True)
    op.create_index("ix_history_at", "history", ["at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("history")
    op.drop_table("attachments")
    op.drop_table("sandboxes")
