"""Facts of a delegate's result (IPs, sandbox MACs, device ids): read from valid results, and never
an exception nor an invented text from a malformed one (the 0004 migration backfills from recorded
results, whatever they hold)."""

from __future__ import annotations

from typing import Any

import pytest

from app.attach import result_facts

BRIDGE_1_0 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "0a:58:0a:01:00:01"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x", "pciID": "0000:03:00.1"},
    ],
    "ips": [{"address": "10.1.0.5/24", "interface": 1}, {"address": "fd00::5/64", "interface": 1}],
}


def test_a_valid_result_gives_its_addresses_sandbox_macs_and_device_ids() -> None:
    facts = result_facts.delegate_facts(
        capability_args={"deviceID": "0000:03:00.1"},
        device={"pci": "0000:04:00.0"},
        result=BRIDGE_1_0,
        handed=["0000:03:00.1"],
    )

    assert facts.ips == ("10.1.0.5/24", "fd00::5/64")
    assert facts.macs == ("0a:58:0a:01:00:05",)
    assert facts.device_ids == ("0000:03:00.1", "0000:04:00.0")


def test_a_runtime_pci_device_no_plugin_takes_is_no_device_id_an_auxiliary_one_is() -> None:
    """host-device naming its netdev by ``device`` does not take the VF it is handed: recorded, that
    VF would be held against other sandboxes (invariant 8b)."""
    unused = result_facts.device_ids(capability_args={"deviceID": "0000:03:00.1"}, device=None, result=None)
    auxiliary = result_facts.device_ids(
        capability_args={"deviceID": "mlx5_core.sf.4"}, device=None, result=None
    )

    assert (unused, auxiliary) == ((), ("mlx5_core.sf.4",))


def test_a_legacy_result_gives_its_addresses() -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24"}, "ip6": {"ip": "fd00::5/64"}}

    assert result_facts.addresses(legacy) == (("10.1.0.5/24", "fd00::5/64"), ())


@pytest.mark.parametrize(
    "result",
    [
        {"cniVersion": "1.0.0", "ips": 5, "interfaces": 5},
        {"cniVersion": "1.0.0", "ips": True, "interfaces": 1.5},
        {"cniVersion": "1.0.0", "ips": [{"address": None}, {"address": 5}, "10.1.0.5/24"]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": None, "sandbox": "/x", "pciID": None}]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": 5, "sandbox": "/x", "pciID": 7}]},
        {"cniVersion": 5, "ips": 5},
        {"cniVersion": "0.2.0", "ip4": 5},
        {"cniVersion": "not a version"},
        ["10.1.0.5/24"],
        "10.1.0.5/24",
    ],
)
def test_a_malformed_result_gives_no_facts_and_raises_nothing(result: Any) -> None:
    facts = result_facts.delegate_facts(capability_args={"deviceID": None}, device=None, result=result)

    assert (facts.ips, facts.macs, facts.device_ids) == ((), (), ())
