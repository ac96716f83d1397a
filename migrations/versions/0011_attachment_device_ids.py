"""Device IDs of recorded attachments recomputed with the rule the engine now records them by.

Before, an attachment's ``device_ids`` missed some of the PCI devices its delegate was handed: a
``runtimeConfig.deviceID`` replacing a ``pciBusID`` (only the configuration's was listed), a
conflist's second plugin's device, or an address whose PCI domain has five hex digits. A sandbox
recorded so kept that VF unclaimed until its DEL: another sandbox could be handed it (invariant 8b).
Every attachment's ``device_ids`` gets what the engine derives from its recorded configuration,
runtimeConfig, host device and result (``migrations.frozen.rules_0011``: ``app.cni.conf``,
``app.attach.vfs.pci_addresses`` and ``app.attach.result_facts.device_ids`` as main at 0e91690, the
last release to run this revision, ran them; a later release upgrading a 0010 store adds the same),
added to those it records: an id once recorded is never
dropped (recorded means possibly held). A configuration that no longer decodes adds nothing. Safe to
rerun after a kill -9: a row rewritten holds what a rerun derives again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations.frozen import rules_0011

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

previous_code_compatible = True
"""The same columns, holding more of the ids 0010's code records; it reads them as its own."""

_BATCH = 500


def upgrade() -> None:
    bind = op.get_bind()
    rows = sa.text(
        "SELECT id, config, capability_args, device, result, device_ids FROM attachments"
        " WHERE id > :after ORDER BY id LIMIT :batch"
    )
    update = sa.text("UPDATE attachments SET device_ids = :device_ids WHERE id = :id")
    after = -1
    while batch := bind.execute(rows, {"after": after, "batch": _BATCH}).all():
        after = batch[-1][0]
        changed = [change for change in map(_recomputed, batch) if change is not None]
        if changed:
            bind.execute(update, changed)


def _recomputed(row: Any) -> dict[str, object] | None:
    """The row's new ``device_ids`` (its own, then any the rule adds); None if unchanged."""
    row_id, config, capability_args, device, result, recorded = row
    own = _json(recorded)
    own_ids = [item for item in own if isinstance(item, str)] if isinstance(own, list) else []
    capabilities = _json(capability_args)
    capabilities = capabilities if isinstance(capabilities, dict) else {}
    try:
        handed = rules_0011.pci_addresses(bytes(config), capabilities)
    except (rules_0011.UndecodableConfigError, TypeError, ValueError, RecursionError):
        return None
    host_device = _json(device)
    document = _json(result)
    derived = rules_0011.device_ids(
        capability_args=capabilities,
        device=host_device if isinstance(host_device, dict) else None,
        result=document if isinstance(document, dict) else None,
        handed=handed,
    )
    merged = list(dict.fromkeys([*own_ids, *derived]))
    if merged == own_ids and own is not None:
        return None
    return {"id": row_id, "device_ids": json.dumps(merged)}


def _json(text: str | None) -> object:
    try:
        return json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None


def downgrade() -> None:
    """Nothing to undo: 0010's code reads these ids as its own."""
