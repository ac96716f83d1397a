"""Revisions 0004 and 0011 run frozen copies of main's rules at 0e91690: an old store upgraded gets its rows.

The last release to run 0004 and 0011 is main at 0e91690, with the rules of ``app.attach`` and
``app.cni`` it shipped; no revision imports those modules any longer (an import-linter contract
guards that), each runs its copy in ``migrations/frozen``. This test guards the copies' fidelity: a
store at the earliest revision the tests build (0001), holding attachments shaped to reach every
branch of the copied rules (results of each CNI version, malformed ones, runtime device ids, host
devices, host-device's own order, conflists of several devices, configurations that do and do not
decode, for each check ``load_network_list`` makes), is upgraded to head; it must hold exactly
``MAIN_ROWS``, what main's migrations (importing ``app.attach``/``app.cni``) wrote on it.
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


def _conflist(*plugins: object, **fields: object) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": list(plugins), **fields}).encode()


def _rich(version: str, **fields: object) -> str:
    return json.dumps({"cniVersion": version, **fields})


IFACES = [
    {"name": "cni0", "mac": "0a:00:00:00:00:01"},
    {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": NETNS},
]
DECLARING = {"capabilities": {"deviceID": True}}

CASES: dict[str, tuple[bytes | str, dict[str, object], dict[str, str | None] | None, str | None]] = {
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
    # results: the versions as read, and each 0.1.0/0.2.0 check
    "result-empty-object": (_conf(), {}, None, "{}"),
    "version-number-rich": (
        _conf(),
        {},
        None,
        json.dumps({"cniVersion": 1, "ips": [{"address": "10.11.0.1/8"}], "interfaces": IFACES}),
    ),
    "version-null": (
        _conf(),
        {},
        None,
        json.dumps({"cniVersion": None, "ips": [{"address": "10.11.0.2/8"}]}),
    ),
    "legacy-empty-version": (_conf(), {}, None, _rich("", ip4={"ip": "10.12.0.1/16"})),
    "legacy-interfaces-dropped": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.12.0.2/16"}, interfaces=IFACES, ips=[{"address": "10.99.0.1/8"}]),
    ),
    "legacy-ip4-not-object": (_conf(), {}, None, _rich("0.2.0", ip4="10.12.0.3/16")),
    "legacy-bad-gateway": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.12.0.4/16", "gateway": "10.12.0"}),
    ),
    "legacy-gateway-not-text": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.12.0.5/16", "gateway": 5})),
    "legacy-ipv6-gateway": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip6={"ip": "fd03::7/64", "gateway": "fd03::1"}),
    ),
    "legacy-prefix-beyond": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.12.0.6/33"})),
    "legacy-prefix-digits": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.12.0.7/0016"})),
    "legacy-zone": (_conf(), {}, None, _rich("0.2.0", ip6={"ip": "fe80::1%eth0/64"})),
    "legacy-routes-not-list": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.1/16", "routes": {"dst": "0.0.0.0/0"}}),
    ),
    "legacy-route-not-object": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.13.0.2/16", "routes": [5]})),
    "legacy-route-bad-dst": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.3/16", "routes": [{"dst": "0.0.0.0"}]}),
    ),
    "legacy-route-null-dst": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.4/16", "routes": [{"dst": None}]}),
    ),
    "legacy-route-bad-gw": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.5/16", "routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}),
    ),
    "legacy-route-full": (
        _conf(),
        {},
        None,
        _rich(
            "0.2.0",
            ip6={
                "ip": "fd04::7/64",
                "routes": [{"dst": "::/0", "gw": "", "mtu": 1500, "table": None, "scope": -1}],
            },
        ),
    ),
    "legacy-route-int-bool": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.6/16", "routes": [{"dst": "0.0.0.0/0", "mtu": True}]}),
    ),
    "legacy-route-int-beyond-go": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.13.0.7/16", "routes": [{"dst": "0.0.0.0/0", "priority": 2**63}]}),
    ),
    "legacy-dns-not-object": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.14.0.1/16"}, dns="x")),
    "legacy-dns-empty": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.14.0.2/16"}, dns={})),
    "legacy-dns-domain": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.14.0.3/16"}, dns={"domain": "example.org", "search": None}),
    ),
    "legacy-dns-bad-domain": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.14.0.4/16"}, dns={"domain": 5}),
    ),
    "legacy-dns-bad-item": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.14.0.5/16"}, dns={"domain": "a", "options": [None]}),
    ),
    "runtime-not-text": (_conf(), {"deviceID": 5}, None, None),
    "rich-pci-ids": (
        _conf(),
        {},
        {"pci": None, "ifname": "", "mac": ""},
        _rich("1.1.0", interfaces=[{"name": "a", "pciID": ""}, {"name": "b", "pciID": VF1}, 3]),
    ),
    # configurations: each check load_network_list makes
    "conf-not-json": (b'{"name":', {}, None, None),
    "conf-beyond-float64": (
        b'{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:83:00.2","mtu":1e999}',
        {},
        None,
        None,
    ),
    "conf-float": (
        b'{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:83:00.3","mtu":1500.0}',
        {},
        None,
        None,
    ),
    "conf-utf16": (_conf(type="sriov", deviceID="0000:83:00.4").decode().encode("utf-16"), {}, None, None),
    "conf-not-utf8": (
        b'{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:83:00.5","x":"\xff"}',
        {},
        None,
        None,
    ),
    "conf-not-object": (b"[1]", {}, None, None),
    "conf-name-not-text": (_conf(name=5, type="sriov", deviceID="0000:83:00.6"), {}, None, None),
    "conf-name-empty": (_conf(name="", type="sriov", deviceID="0000:83:00.7"), {}, None, None),
    "conf-no-type": (
        json.dumps({"cniVersion": "1.0.0", "name": "n", "deviceID": "0000:84:00.1"}).encode(),
        {},
        None,
        None,
    ),
    "conf-type-not-text": (_conf(type=5, deviceID="0000:84:00.2"), {}, None, None),
    "conf-type-empty": (_conf(type="", deviceID="0000:84:00.3"), {}, None, None),
    "conflist-plugins-not-list": (
        json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": {"type": "sriov"}}).encode(),
        {},
        None,
        None,
    ),
    "conflist-plugin-not-object": (
        _conflist({"type": "sriov", "deviceID": "0000:84:00.4"}, 5),
        {},
        None,
        None,
    ),
    "conflist-plugin-no-type": (_conflist({"deviceID": "0000:84:00.5"}), {}, None, None),
    "conflist-plugin-name-not-text": (
        _conflist({"type": "sriov", "deviceID": "0000:84:00.6", "name": 5}),
        {},
        None,
        None,
    ),
    "conflist-plugin-fields": (
        _conflist(
            {"type": "sriov", "deviceID": "0000:84:00.7", "name": "a", "cniVersion": None, "ipam": {}},
            {"type": "tuning", "capabilities": {"mac": True}, "prevResult": {}, "dns": {"domain": "d"}},
        ),
        {},
        None,
        None,
    ),
    "conf-capabilities-not-object": (
        _conf(type="sriov", deviceID="0000:85:00.1", capabilities=[True]),
        {},
        None,
        None,
    ),
    "conf-ipam-not-object": (_conf(type="sriov", deviceID="0000:85:00.2", ipam="static"), {}, None, None),
    "conf-ipam-type-not-text": (
        _conf(type="sriov", deviceID="0000:85:00.3", ipam={"type": 5}),
        {},
        None,
        None,
    ),
    "conf-prev-result-not-object": (
        _conf(type="sriov", deviceID="0000:85:00.4", prevResult=[]),
        {},
        None,
        None,
    ),
    "conf-dns-not-object": (_conf(type="sriov", deviceID="0000:85:00.5", dns=[]), {}, None, None),
    "conf-dns-domain-not-text": (
        _conf(type="sriov", deviceID="0000:85:00.6", dns={"domain": 5}),
        {},
        None,
        None,
    ),
    "conf-dns-item-not-text": (
        _conf(type="sriov", deviceID="0000:85:00.7", dns={"search": [5]}),
        {},
        None,
        None,
    ),
    "conf-version-not-text": (_conf(type="sriov", deviceID="0000:86:00.1", cniVersion=1), {}, None, None),
    "conf-no-version": (
        json.dumps({"name": "n", "type": "sriov", "deviceID": "0000:86:00.2"}).encode(),
        {},
        None,
        None,
    ),
    "conf-own-versions-list": (
        _conf(type="sriov", deviceID="0000:86:00.3", cniVersions="not read for a single conf"),
        {},
        None,
        None,
    ),
    "conflist-versions-not-list": (
        _conflist({"type": "sriov", "deviceID": "0000:86:00.4"}, cniVersions="1.0.0"),
        {},
        None,
        None,
    ),
    "conflist-versions-item-not-text": (
        _conflist({"type": "sriov", "deviceID": "0000:86:00.5"}, cniVersions=[1]),
        {},
        None,
        None,
    ),
    "conflist-versions-malformed": (
        _conflist({"type": "sriov", "deviceID": "0000:86:00.6"}, cniVersions=["x"]),
        {},
        None,
        None,
    ),
    "conflist-versions-declared": (
        _conflist({"type": "sriov", "deviceID": "0000:86:00.7"}, cniVersions=["", "2.0.0"]),
        {},
        None,
        None,
    ),
    "conf-flag-bool": (_conf(type="sriov", deviceID="0000:87:00.1", disableGC=True), {}, None, None),
    # the PCI devices a delegate takes: each plugin's rule, host-device's own order
    "sriov-not-pci": (_conf(type="sriov", deviceID="mlx5_0"), {}, None, None),
    "declared-handed-not-pci": (
        _conf(type="sriov", pciBusID=VF2, **DECLARING),
        {"deviceID": "mlx5_1"},
        None,
        None,
    ),
    "pci-bus-id-not-pci": (_conf(type="sriov", pciBusID="x"), {}, None, None),
    "conflist-same-device-twice": (
        _conflist({"type": "sriov", "deviceID": VF1}, {"type": "sriov", "pciBusID": VF1}),
        {},
        None,
        None,
    ),
    "host-device-granted-other": (
        _conf(
            type="host-device",
            capabilities={"mac": True},
            pciBusID="0000:88:00.1",
            runtimeConfig={"deviceID": VF2},
        ),
        {"mac": "0a:00:00:00:00:09"},
        None,
        None,
    ),
    "host-device-handed-not-text": (
        _conf(type="host-device", runtimeConfig={"deviceID": 5}, pciBusID="0000:88:00.2"),
        {},
        None,
        None,
    ),
    "host-device-handed-empty": (
        _conf(type="host-device", runtimeConfig={"deviceID": ""}, pciBusID="0000:88:00.3"),
        {},
        None,
        None,
    ),
    "host-device-runtime-config-not-object": (
        _conf(type="host-device", runtimeConfig=["x"], pciBusID="0000:88:00.4"),
        {},
        None,
        None,
    ),
    "host-device-not-pci": (_conf(type="host-device", pciBusID="auxdev0"), {}, None, None),
    "host-device-empty-netdev": (
        _conf(type="host-device", device="", pciBusID="0000:88:00.5"),
        {},
        None,
        None,
    ),
    "host-device-runtime-netdev": (
        _conf(type="host-device", hwaddr="0a:00:00:00:00:07", **DECLARING),
        {"deviceID": "0000:88:00.6"},
        None,
        None,
    ),
    "legacy-prefix-not-digits": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.15.0.1/x"})),
    "legacy-prefix-not-ascii": (_conf(), {}, None, _rich("0.2.0", ip4={"ip": "10.15.0.2/\u0661\u0666"})),
    "legacy-gateway-cidr": (
        _conf(),
        {},
        None,
        _rich("0.2.0", ip4={"ip": "10.15.0.3/16", "gateway": "10.15.0.1/16"}),
    ),
    "host-device-capabilities-not-granted": (
        _conf(
            type="host-device",
            capabilities={"deviceID": True, "mac": False},
            runtimeConfig={"deviceID": "0000:89:00.1"},
        ),
        {"mac": "0a:00:00:00:00:08"},
        None,
        None,
    ),
    "declared-handed-not-text": (
        _conf(type="sriov", pciBusID="0000:89:00.2", **DECLARING),
        {"deviceID": 7},
        None,
        None,
    ),
    "conf-flag-number": (_conf(type="sriov", deviceID="0000:89:00.3", disableCheck=1), {}, None, None),
    "conflist-versions-only": (
        json.dumps(
            {
                "name": "n",
                "cniVersions": ["1.0.0"],
                "plugins": [{"type": "sriov", "deviceID": "0000:89:00.4"}],
            }
        ).encode(),
        {},
        None,
        None,
    ),
    "config-stored-as-text": (_conf(type="sriov", deviceID="0000:88:00.7").decode(), {}, None, None),
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
    "result-empty-object": ([], [], []),
    "version-number-rich": (["10.11.0.1/8"], ["0a:58:0a:01:00:05"], []),
    "version-null": ([], [], []),
    "legacy-empty-version": (["10.12.0.1/16"], [], []),
    "legacy-interfaces-dropped": (["10.12.0.2/16"], [], []),
    "legacy-ip4-not-object": ([], [], []),
    "legacy-bad-gateway": ([], [], []),
    "legacy-gateway-not-text": ([], [], []),
    "legacy-ipv6-gateway": (["fd03::7/64"], [], []),
    "legacy-prefix-beyond": ([], [], []),
    "legacy-prefix-digits": ([], [], []),
    "legacy-zone": ([], [], []),
    "legacy-routes-not-list": ([], [], []),
    "legacy-route-not-object": ([], [], []),
    "legacy-route-bad-dst": ([], [], []),
    "legacy-route-null-dst": ([], [], []),
    "legacy-route-bad-gw": ([], [], []),
    "legacy-route-full": (["fd04::7/64"], [], []),
    "legacy-route-int-bool": ([], [], []),
    "legacy-route-int-beyond-go": ([], [], []),
    "legacy-dns-not-object": ([], [], []),
    "legacy-dns-empty": (["10.14.0.2/16"], [], []),
    "legacy-dns-domain": (["10.14.0.3/16"], [], []),
    "legacy-dns-bad-domain": ([], [], []),
    "legacy-dns-bad-item": ([], [], []),
    "runtime-not-text": ([], [], []),
    "rich-pci-ids": ([], [], ["0000:81:00.2"]),
    "conf-not-json": ([], [], []),
    "conf-beyond-float64": ([], [], []),
    "conf-float": ([], [], ["0000:83:00.3"]),
    "conf-utf16": ([], [], ["0000:83:00.4"]),
    "conf-not-utf8": ([], [], []),
    "conf-not-object": ([], [], []),
    "conf-name-not-text": ([], [], []),
    "conf-name-empty": ([], [], []),
    "conf-no-type": ([], [], []),
    "conf-type-not-text": ([], [], []),
    "conf-type-empty": ([], [], []),
    "conflist-plugins-not-list": ([], [], []),
    "conflist-plugin-not-object": ([], [], []),
    "conflist-plugin-no-type": ([], [], []),
    "conflist-plugin-name-not-text": ([], [], []),
    "conflist-plugin-fields": ([], [], ["0000:84:00.7"]),
    "conf-capabilities-not-object": ([], [], []),
    "conf-ipam-not-object": ([], [], []),
    "conf-ipam-type-not-text": ([], [], []),
    "conf-prev-result-not-object": ([], [], []),
    "conf-dns-not-object": ([], [], []),
    "conf-dns-domain-not-text": ([], [], []),
    "conf-dns-item-not-text": ([], [], []),
    "conf-version-not-text": ([], [], []),
    "conf-no-version": ([], [], ["0000:86:00.2"]),
    "conf-own-versions-list": ([], [], ["0000:86:00.3"]),
    "conflist-versions-not-list": ([], [], []),
    "conflist-versions-item-not-text": ([], [], []),
    "conflist-versions-malformed": ([], [], []),
    "conflist-versions-declared": ([], [], ["0000:86:00.7"]),
    "conf-flag-bool": ([], [], ["0000:87:00.1"]),
    "sriov-not-pci": ([], [], []),
    "declared-handed-not-pci": ([], [], ["mlx5_1", "0000:81:00.3"]),
    "pci-bus-id-not-pci": ([], [], []),
    "conflist-same-device-twice": ([], [], ["0000:81:00.2"]),
    "host-device-granted-other": ([], [], ["0000:88:00.1"]),
    "host-device-handed-not-text": ([], [], ["0000:88:00.2"]),
    "host-device-handed-empty": ([], [], ["0000:88:00.3"]),
    "host-device-runtime-config-not-object": ([], [], ["0000:88:00.4"]),
    "host-device-not-pci": ([], [], []),
    "host-device-empty-netdev": ([], [], ["0000:88:00.5"]),
    "host-device-runtime-netdev": ([], [], []),
    "legacy-prefix-not-digits": ([], [], []),
    "legacy-prefix-not-ascii": ([], [], []),
    "legacy-gateway-cidr": ([], [], []),
    "host-device-capabilities-not-granted": ([], [], ["0000:89:00.1"]),
    "declared-handed-not-text": ([], [], ["0000:89:00.2"]),
    "conf-flag-number": ([], [], []),
    "conflist-versions-only": ([], [], ["0000:89:00.4"]),
    "config-stored-as-text": ([], [], []),
}
"""What main's migrations (importing the app's rules) wrote on this store, generated at 0e91690."""


def test_an_old_store_upgraded_gets_the_rows_main_wrote(tmp_path: Path) -> None:
    rows = _an_upgraded_revision_0001_store(tmp_path / "state.db")

    assert rows == MAIN_ROWS
