"""Revision 0011: attachments recorded by the older rule get every device their delegate was handed.

Before, an attachment's ``device_ids`` listed its runtimeConfig ``deviceID``, its host device (the
first PCI address its configuration names) and its result's ``pciID``s: a conflist's second
device, or a VF whose PCI domain has five hex digits, was missing. Such a sandbox kept that VF
unclaimed until its DEL, so after an upgrade another sandbox's ADD could be handed it (invariant
8b). The migration recomputes them from the recorded configuration with the engine's rule, and
never drops an id a row records.
"""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from pathlib import Path

import pytest

from app.store import checkpoints
from app.store.database import Database
from app.store.records import DelegateIntent, PodIdentity, SandboxIntent

NETNS = "/var/run/netns/x"
FIRST, SECOND, VMD = "0000:81:00.2", "0000:81:00.3", "10000:00:02.0"
CONFLIST = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "two-vfs",
        "plugins": [{"type": "sriov", "deviceID": FIRST}, {"type": "host-device", "pciBusID": SECOND}],
    }
).encode()
VMD_CONF = json.dumps({"cniVersion": "1.0.0", "name": "vmd", "type": "sriov", "deviceID": VMD}).encode()
NOT_A_CONF = b'{"cniVersion":"1.0.0"}'


def _intent(ifname: str, position: int, config: bytes, device_ids: tuple[str, ...]) -> DelegateIntent:
    return DelegateIntent(
        container_id="old",
        ifname=ifname,
        position=position,
        is_master=position == 0,
        network_name=f"net-{ifname}",
        plugin_types=("sriov",),
        config=config,
        cni_args=(),
        capability_args={},
        cni_path=("/opt/cni/bin",),
        device={"pci": FIRST, "ifname": "ens1f0v2", "mac": ""} if config == CONFLIST else None,
        device_ids=device_ids,
    )


def _a_revision_0010_database(db_path: Path) -> None:
    """A sandbox recorded by the older rule: its device ids miss SECOND and VMD."""
    db = Database.open(db_path)
    sandbox = SandboxIntent("old", NETNS, "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot")
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, sandbox))
        for intent in (
            _intent("net1", 1, CONFLIST, (FIRST,)),
            _intent("net2", 2, VMD_CONF, ()),
            _intent("net3", 3, NOT_A_CONF, ("0000:81:00.7",)),
        ):
            db.write_sync(partial(checkpoints.record_intent, intent=intent))
    finally:
        db.close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0010'")
        raw.execute("DELETE FROM schema_compatibility WHERE revision > '0010'")


def test_an_upgrade_claims_every_device_an_older_release_recorded_a_sandbox_was_handed(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "state.db"
    _a_revision_0010_database(db_path)

    db = Database.open(db_path)
    try:
        record = db.read_sync(lambda s: checkpoints.load_sandbox(s, "old"))
        assert record is not None
        recorded = {attachment.ifname: attachment.facts.device_ids for attachment in record.attachments}
        assert recorded == {"net1": (FIRST, SECOND), "net2": (VMD,), "net3": ("0000:81:00.7",)}
        for device in (SECOND, VMD):
            with pytest.raises(checkpoints.DeviceInUseError):
                db.write_sync(
                    partial(checkpoints.check_devices_free, container_id="new", device_ids=[device])
                )
    finally:
        db.close()
