"""Revision 0004: every attachment carries the IPs, MACs and device IDs the engine derives, backfilled."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.store import checkpoints, schema
from app.store.database import Database
from app.store.records import AttachmentRecord, DelegateFacts, DelegateIntent, PodIdentity, SandboxIntent

NETNS = "/var/run/netns/x"
RICH_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "0a:00:00:00:00:01"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": NETNS},
    ],
    "ips": [{"address": "10.1.0.5/24", "interface": 1}],
}
DECLARING_DEVICE_ID = b'{"cniVersion":"1.0.0","name":"n","type":"x","capabilities":{"deviceID":true}}'
"""A plugin handed the runtimeConfig ``deviceID`` (a PCI address it takes: a device id)."""
LEGACY_RESULT = {"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.7/16"}}
VF_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "net2", "mac": "0a:58:0a:03:00:09", "sandbox": NETNS, "pciID": "0000:81:00.3"}],
    "ips": [{"address": "10.3.0.9/24", "interface": 0}],
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def _intent(
    ifname: str,
    position: int,
    *,
    capability_args: Mapping[str, Any] | None = None,
    device: Mapping[str, str] | None = None,
    config: bytes = b'{"cniVersion":"1.0.0"}',
) -> DelegateIntent:
    return DelegateIntent(
        container_id="c1",
        ifname=ifname,
        position=position,
        is_master=position == 0,
        network_name=f"net-{ifname}",
        plugin_types=("bridge",),
        config=config,
        cni_args=(),
        capability_args=capability_args or {},
        cni_path=("/opt/cni/bin",),
        device=device,
    )


def _a_revision_0003_database(db_path: Path) -> None:
    """Attachments recorded by a release before 0004: results, but no fact columns."""
    db = Database.open(db_path)
    sandbox = SandboxIntent("c1", NETNS, "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot")
    intents = [
        _intent("eth0", 0),
        _intent("net1", 1),
        _intent("net2", 2, capability_args={"deviceID": "0000:81:00.2"}, device={"pci": "0000:81:00.2"}),
        _intent("net3", 3, capability_args={"deviceID": "0000:81:00.4"}, config=DECLARING_DEVICE_ID),
    ]
    results = {"eth0": RICH_RESULT, "net1": LEGACY_RESULT, "net2": VF_RESULT}
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, sandbox))
        for intent in intents:
            db.write_sync(partial(checkpoints.record_intent, intent=intent))
        for ifname, result in results.items():
            db.write_sync(
                partial(
                    checkpoints.record_result, container_id="c1", ifname=ifname, result=json.dumps(result)
                )
            )
    finally:
        db.close()
    with sqlite3.connect(db_path) as raw:
        for column in ("ips", "macs", "device_ids"):
            raw.execute(f"ALTER TABLE attachments DROP COLUMN {column}")
        raw.execute("UPDATE alembic_version SET version_num = '0003'")


def _attachments(db_path: Path) -> dict[str, AttachmentRecord]:
    db = Database.open(db_path)
    try:
        assert db.read_sync(schema.current_revision) == schema.head_revision()
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "c1"))
    finally:
        db.close()
    assert record is not None
    return {attachment.ifname: attachment for attachment in record.attachments}


EXPECTED = {
    "eth0": DelegateFacts(ips=("10.1.0.5/24",), macs=("0a:58:0a:01:00:05",)),
    "net1": DelegateFacts(ips=("10.2.0.7/16",)),
    "net2": DelegateFacts(
        ips=("10.3.0.9/24",), macs=("0a:58:0a:03:00:09",), device_ids=("0000:81:00.2", "0000:81:00.3")
    ),
    "net3": DelegateFacts(device_ids=("0000:81:00.4",)),
}


def test_the_migration_derives_the_facts_of_every_recorded_attachment(db_path: Path) -> None:
    _a_revision_0003_database(db_path)

    attachments = _attachments(db_path)

    assert {ifname: attachment.facts for ifname, attachment in attachments.items()} == EXPECTED
    assert attachments["net3"].state == "intent"


def test_the_backfill_rerun_after_a_crash_finishes_the_rows_it_had_not_reached(db_path: Path) -> None:
    _a_revision_0003_database(db_path)
    _attachments(db_path)
    with sqlite3.connect(db_path) as raw:  # killed after eth0's batch: net2 not derived, not stamped
        raw.execute("UPDATE attachments SET ips = NULL, macs = NULL, device_ids = NULL WHERE ifname = 'net2'")
        raw.execute("UPDATE alembic_version SET version_num = '0003'")

    attachments = _attachments(db_path)

    assert {ifname: attachment.facts for ifname, attachment in attachments.items()} == EXPECTED
