"""Revisions 0004 and 0011 run their own frozen rules: an old store upgraded today gets the rows it got.

A store at the earliest revision the tests build (0001), holding attachments shaped like every case
the engine's rules of 0004 and 0011 handle (results of each CNI version, malformed ones, runtime
device ids, host devices, conflists of several devices, configurations that no longer decode), is
upgraded to head. ``MAIN_ROWS`` is what the migrations importing ``app.attach``/``app.cni`` (main at
0e91690) wrote on it; the frozen ones must write the same, but where the app's rules had already
changed since the revision was written: there the rows are what the revision's release wrote
(``FROZEN_AT_REVISION``, each case saying why), as ``migrations/frozen`` explains.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from app.store import checkpoints
from app.store.database import Database
from app.store.records import PodIdentity, SandboxIntent
from tests.store.migrating import migrate

NETNS = "/var/run/netns/x"
VF1, VF2, VMD = "0000:81:00.2", "0000:81:00.3", "10000:00:02.0"


def _conf(**fields: object) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge", **fields}).encode()


def _conflist(*plugins: dict[str, object], **fields: object) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": list(plugins), **fields}).encode()


def _rich(version: str, **fields: object) -> str:
    return json.dumps({"cniVersion": version, **fields})


IFACES = [
    {"name": "cni0", "mac": "0a:00:00:00:00:01"},
    {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": NETNS},
]
DECLARING = {"capabilities": {"deviceID": True}}

CASES: dict[str, tuple[bytes, dict[str, object], dict[str, str] | None, str | None]] = {
    # name: (config, capability_args, device, result)
    "rich-1.0.0": (
        _conf(),
        {},
        None,
        _rich("1.0.0", interfaces=IFACES, ips=[{"address": "10.1.0.5/24", "interface": 1}]),
    ),
    "rich-0.4.0": (
        _conf(),
        {},
        None,
        _rich("0.4.0", interfaces=IFACES, ips=[{"address": "fd00::5/64", "version": "6"}]),
    ),
    "rich-1.1.0-pci": (
        _conf(),
        {},
        None,
        _rich("1.1.0", interfaces=[{"name": "net1", "mac": "0a:01", "sandbox": NETNS, "pciID": VF2}], ips=[]),
    ),
    "rich-no-sandbox-mac": (
        _conf(),
        {},
        None,
        _rich("1.0.0", interfaces=[{"name": "x", "mac": "0a:02", "sandbox": ""}]),
    ),
    "rich-empty-mac": (
        _conf(),
        {},
        None,
        _rich("1.0.0", interfaces=[{"name": "x", "mac": "", "sandbox": NETNS}]),
    ),
    "rich-future-version": (_conf(), {}, None, _rich("9.9.9", ips=[{"address": "10.9.0.1/8"}])),
    "rich-ips-not-objects": (_conf(), {}, None, _rich("1.0.0", ips=["10.0.0.1/8", 5], interfaces=[7])),
    "rich-ips-null": (_conf(), {}, None, _rich("1.0.0", ips=None, interfaces=None)),
    "rich-ips-number": (_conf(), {}, None, _rich("1.0.0", ips=5, interfaces=True)),
    "rich-ips-text": (_conf(), {}, None, _rich("1.0.0", ips="10.0.0.1/8", interfaces={"a": 1})),
    "legacy-0.2.0": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.2.0.7/16", "gateway": "10.2.0.1"}, ip6={"ip": "fd02::7/64"}),
    ),
    "legacy-0.1.0-routes-dns": (
        _conf(),
        {},
        None,
        _rich(
            "0.1.0",
            ip4={"ip": "10.3.0.7/16", "routes": [{"dst": "0.0.0.0/0", "gw": "10.3.0.1"}]},
            dns={"nameservers": ["1.1.1.1"]},
        ),
    ),
    "legacy-no-version": (_conf(), {}, None, json.dumps({"ip4": {"ip": "10.4.0.7/16"}})),
    "legacy-null-ip6": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.5.0.7/16"}, ip6=None)),
    "legacy-bad-cidr": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.6.0.7"})),
    "legacy-missing-ip": (_conf(), {}, None, _rich("0.2.0", ip4={"gateway": "10.6.0.1"})),
    "legacy-bad-dns": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.7.0.7/16"}, dns={"search": "a"})),
    "legacy-bad-route": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.8.0.7/16", "routes": [{"gw": "10.8.0.1"}]}),
    ),
    "legacy-route-int": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.8.1.7/16", "routes": [{"dst": "0.0.0.0/0", "mtu": "x"}]}),
    ),
    "unsupported-version": (_conf(), {}, None, _rich("0.2.5", ip4={"ip": "10.9.0.7/16"})),
    "unparsable-version": (_conf(), {}, None, _rich("v1", ips=[{"address": "10.9.1.7/16"}])),
    "version-not-text": (_conf(), {}, None, json.dumps({"cniVersion": 0.2, "ip4": {"ip": "10.9.2.7/16"}})),
    "result-not-json": (_conf(), {}, None, "{not json"),
    "result-not-object": (_conf(), {}, None, "[1, 2]"),
    "no-result": (_conf(), {}, None, None),
    "runtime-name-not-pci": (_conf(), {"deviceID": "mlx5_0"}, None, None),
    "runtime-pci-declared": (_conf(**DECLARING), {"deviceID": VF1}, None, None),
    "host-device-recorded": (
        _conf(type="sriov", deviceID=VF1),
        {},
        {"pci": VF1, "ifname": "ens1f0v2", "mac": ""},
        None,
    ),
    "sriov-vmd": (_conf(type="sriov", deviceID=VMD), {}, None, None),
    "sriov-upper-case": (_conf(type="sriov", deviceID="0000:81:0A.1"), {}, None, None),
    "conflist-two-devices": (
        _conflist({"type": "sriov", "deviceID": VF1}, {"type": "host-device", "pciBusID": VF2}),
        {},
        {"pci": VF1, "ifname": "ens1f0v2", "mac": ""},
        None,
    ),
    "pci-bus-id-replaced": (_conf(type="sriov", pciBusID=VF2, **DECLARING), {"deviceID": VF1}, None, None),
    "host-device-runtime": (_conf(type="host-device", **DECLARING), {"deviceID": VF1}, None, None),
    "conf-not-decodable": (
        b'{"cniVersion":"1.0.0","type":"sriov","deviceID":"0000:81:00.5"}',
        {},
        None,
        None,
    ),
    "conf-bad-version": (_conf(cniVersion="7.0.0", type="sriov", deviceID="0000:81:00.6"), {}, None, None),
    "conf-nan": (
        b'{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:81:00.7","mtu":NaN}',
        {},
        None,
        None,
    ),
    "conf-bad-capabilities": (
        _conf(type="sriov", deviceID="0000:82:00.1", capabilities={"deviceID": 1}),
        {},
        None,
        None,
    ),
    "conflist-versions": (
        _conflist({"type": "sriov", "deviceID": "0000:82:00.2"}, cniVersions=["0.4.0", "1.0.0"]),
        {},
        None,
        None,
    ),
    "conflist-no-supported-version": (
        _conflist({"type": "sriov", "deviceID": "0000:82:00.3"}, cniVersion="", cniVersions=["2.0.0"]),
        {},
        None,
        None,
    ),
    "conflist-empty": (_conflist(), {}, None, None),
    "conf-flag": (_conf(type="sriov", deviceID="0000:82:00.4", disableCheck="TRUE"), {}, None, None),
    "conf-bad-flag": (_conf(type="sriov", deviceID="0000:82:00.5", disableGC="yes"), {}, None, None),
    "conf-bad-name": (_conf(name="bad name", type="sriov", deviceID="0000:82:00.6"), {}, None, None),
    "conf-ipam-dns": (
        _conf(type="sriov", deviceID="0000:82:00.7", ipam={"type": "static"}, dns={"nameservers": [None]}),
        {},
        None,
        None,
    ),
    "conf-bad-dns": (_conf(type="sriov", deviceID="0000:83:00.1", dns={"options": "x"}), {}, None, None),
    # the rules had changed since the revision was written (FROZEN_AT_REVISION)
    "runtime-pci-undeclared": (_conf(), {"deviceID": VF1}, None, None),
    "host-device-names-netdev": (_conf(type="host-device", device="ens1f0v3", pciBusID=VF2), {}, None, None),
    "host-device-own-runtime-config": (
        _conf(type="host-device", runtimeConfig={"deviceID": VF2}),
        {},
        None,
        None,
    ),
    "rich-null-address": (
        _conf(),
        {},
        None,
        _rich(
            "1.0.0",
            ips=[{"address": None}, {}],
            interfaces=[{"name": "a", "mac": None, "sandbox": NETNS, "pciID": None}],
        ),
    ),
    "legacy-empty-gateway": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.10.0.7/16", "gateway": ""})),
}

Row = tuple[list[str], list[str], list[str]]
"""(ips, macs, device_ids) of an attachment, as its columns hold them."""


def _an_upgraded_revision_0001_store(db_path: Path) -> dict[str, Row]:
    """Every case recorded as an attachment, the store taken down to 0001 and upgraded to head."""
    db = Database.open(db_path)
    sandbox = SandboxIntent("c1", NETNS, "eth0", "1.0.0", PodIdentity("ns", "pod", "uid"), "boot")
    try:
        db.write_sync(lambda s: checkpoints.begin_add(s, sandbox))
    finally:
        db.close()
    with sqlite3.connect(db_path) as raw:
        raw.executemany(
            "INSERT INTO attachments (container_id, ifname, position, is_master, network_name, plugin_types,"
            " config, cni_args, capability_args, cni_path, device, state, result, created_at, updated_at)"
            " VALUES ('c1', ?, ?, 0, 'n', 'x', ?, '[]', ?, '[]', ?, 'added', ?, '2026-01-01', '2026-01-01')",
            [
                (
                    name,
                    position,
                    config,
                    json.dumps(capabilities),
                    None if device is None else json.dumps(device),
                    result,
                )
                for position, (name, (config, capabilities, device, result)) in enumerate(CASES.items())
            ],
        )
    migrate(db_path, down_to="0001")
    with sqlite3.connect(db_path) as raw:
        assert "device_ids" not in {row[1] for row in raw.execute("PRAGMA table_info(attachments)")}
    migrate(db_path)
    with sqlite3.connect(db_path) as raw:
        rows = raw.execute(
            "SELECT ifname, ips, macs, device_ids FROM attachments ORDER BY position"
        ).fetchall()
    return {
        name: (json.loads(ips), json.loads(macs), json.loads(device_ids))
        for name, ips, macs, device_ids in rows
    }


MAIN_ROWS: dict[str, Row] = {
    "rich-1.0.0": (["10.1.0.5/24"], ["0a:58:0a:01:00:05"], []),
    "rich-0.4.0": (["fd00::5/64"], ["0a:58:0a:01:00:05"], []),
    "rich-1.1.0-pci": ([], ["0a:01"], ["0000:81:00.3"]),
    "rich-no-sandbox-mac": ([], [], []),
    "rich-empty-mac": ([], [], []),
    "rich-future-version": (["10.9.0.1/8"], [], []),
    "rich-ips-not-objects": ([], [], []),
    "rich-ips-null": ([], [], []),
    "rich-ips-number": ([], [], []),
    "rich-ips-text": ([], [], []),
    "legacy-0.2.0": (["10.2.0.7/16", "fd02::7/64"], [], []),
    "legacy-0.1.0-routes-dns": (["10.3.0.7/16"], [], []),
    "legacy-no-version": (["10.4.0.7/16"], [], []),
    "legacy-null-ip6": (["10.5.0.7/16"], [], []),
    "legacy-bad-cidr": ([], [], []),
    "legacy-missing-ip": ([], [], []),
    "legacy-bad-dns": ([], [], []),
    "legacy-bad-route": ([], [], []),
    "legacy-route-int": ([], [], []),
    "unsupported-version": ([], [], []),
    "unparsable-version": ([], [], []),
    "version-not-text": ([], [], []),
    "result-not-json": ([], [], []),
    "result-not-object": ([], [], []),
    "no-result": ([], [], []),
    "runtime-name-not-pci": ([], [], ["mlx5_0"]),
    "runtime-pci-declared": ([], [], ["0000:81:00.2"]),
    "host-device-recorded": ([], [], ["0000:81:00.2"]),
    "sriov-vmd": ([], [], ["10000:00:02.0"]),
    "sriov-upper-case": ([], [], ["0000:81:0A.1"]),
    "conflist-two-devices": ([], [], ["0000:81:00.2", "0000:81:00.3"]),
    "pci-bus-id-replaced": ([], [], ["0000:81:00.2"]),
    "host-device-runtime": ([], [], ["0000:81:00.2"]),
    "conf-not-decodable": ([], [], []),
    "conf-bad-version": ([], [], []),
    "conf-nan": ([], [], []),
    "conf-bad-capabilities": ([], [], []),
    "conflist-versions": ([], [], ["0000:82:00.2"]),
    "conflist-no-supported-version": ([], [], []),
    "conflist-empty": ([], [], []),
    "conf-flag": ([], [], ["0000:82:00.4"]),
    "conf-bad-flag": ([], [], []),
    "conf-bad-name": ([], [], []),
    "conf-ipam-dns": ([], [], ["0000:82:00.7"]),
    "conf-bad-dns": ([], [], []),
    "runtime-pci-undeclared": ([], [], []),
    "host-device-names-netdev": ([], [], []),
    "host-device-own-runtime-config": ([], [], ["0000:81:00.3"]),
    "rich-null-address": ([], [], []),
    "legacy-empty-gateway": (["10.10.0.7/16"], [], []),
}
"""What main's migrations (importing the app's rules) wrote on this store, generated at 0e91690."""

FROZEN_AT_REVISION: dict[str, Row] = {
    # 0004 listed every runtimeConfig deviceID; today's rule drops a PCI one no plugin takes
    "runtime-pci-undeclared": ([], [], [VF1]),
    # 0011 read host-device as any plugin; today's takes no PCI device of one naming its netdev...
    "host-device-names-netdev": ([], [], [VF2]),
    # ... and reads the runtimeConfig of its own configuration, which 0011's did not
    "host-device-own-runtime-config": ([], [], []),
    # 0004 wrote what was not a text as Python writes it (null: "None"; a missing address: "")
    "rich-null-address": (["None", ""], [], ["None"]),
    # 0004's results rules read an empty gateway as no IP address: the 0.2.0 result was unreadable
    "legacy-empty-gateway": ([], [], []),
}
"""Where main's rows had already left what the revision wrote: the revision's rows."""


def test_an_old_store_upgraded_gets_the_rows_the_revisions_wrote(tmp_path: Path) -> None:
    rows = _an_upgraded_revision_0001_store(tmp_path / "state.db")

    assert rows == {**MAIN_ROWS, **FROZEN_AT_REVISION}
