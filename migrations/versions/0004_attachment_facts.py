"""Derived facts on attachments: the IPs, MACs and device IDs of each delegate, recorded once.

Adds ``ips``, ``macs`` and ``device_ids`` (JSON lists, NULL meaning "not derived yet") to
``attachments`` and backfills every row that lacks them with the engine's derivation
(``migrations.frozen.rules_0004``: ``app.attach.result_facts`` as main at 0e91690, the last release
to run this revision, ran it; a later release upgrading a 0003 store records the same), so queries
read the recorded facts and never re-parse CNI results.
Safe to rerun after a kill -9: a column is added only when missing, and the backfill touches only
rows whose facts are still NULL, one batch at a time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations.frozen import rules_0004

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("ips", "macs", "device_ids")
_BATCH = 500


def _attachment_columns() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("attachments")}


def upgrade() -> None:
    existing = _attachment_columns()
    for name in _COLUMNS:
        if name not in existing:
            op.add_column("attachments", sa.Column(name, sa.Text(), nullable=True))
    _backfill(op.get_bind())


def _backfill(bind: sa.Connection) -> None:
    pending = sa.text(
        "SELECT id, capability_args, device, result FROM attachments "
        "WHERE ips IS NULL OR macs IS NULL OR device_ids IS NULL ORDER BY id LIMIT :batch"
    )
    update = sa.text(
        "UPDATE attachments SET ips = :ips, macs = :macs, device_ids = :device_ids WHERE id = :id"
    )
    while rows := bind.execute(pending, {"batch": _BATCH}).all():
        bind.execute(update, [_facts_row(row) for row in rows])


def _facts_row(row: Any) -> dict[str, object]:
    row_id, capability_args, device, result = row
    try:
        document = json.loads(result) if result else None
    except ValueError:
        document = None
    ips, macs, device_ids = rules_0004.delegate_facts(
        capability_args=json.loads(capability_args or "{}"),
        device=json.loads(device) if device else None,
        result=document if isinstance(document, dict) else None,
    )
    return {
        "id": row_id,
        "ips": json.dumps(list(ips)),
        "macs": json.dumps(list(macs)),
        "device_ids": json.dumps(list(device_ids)),
    }


def downgrade() -> None:
    existing = _attachment_columns()
    with op.batch_alter_table("attachments") as batch:
        for name in _COLUMNS:
            if name in existing:
                batch.drop_column(name)
