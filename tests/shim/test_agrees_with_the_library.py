"""The shim's result conversion agrees with ``app.cni.results``.

The shim cannot import the library (it runs standalone under ``python -IS``), so it carries its
own conversion of the daemon's 1.1.0 result into the runtime's version. This property test keeps
the two implementations from drifting apart: for any 1.1.0 result and any target version, both
produce the same JSON (up to the printing rule for an empty ``dns``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cni import results
from app.cni.types import CniError
from app.shim import shim

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def _v4(draw: Any) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(draw(st.integers(min_value=0x0A000001, max_value=0x0AFFFFFE)))


def _v6(draw: Any) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFD00 << 112) + draw(st.integers(min_value=1, max_value=2**32)))


@st.composite
def addresses(draw: Any) -> tuple[str, int]:
    if draw(st.booleans()):
        return str(_v4(draw)), draw(st.integers(min_value=8, max_value=32))
    return str(_v6(draw)), draw(st.integers(min_value=48, max_value=128))


@st.composite
def cidrs(draw: Any) -> str:
    address, prefix = draw(addresses())
    return str(ipaddress.ip_interface(f"{address}/{prefix}").network)


@st.composite
def interfaces(draw: Any) -> dict[str, Any]:
    interface: dict[str, Any] = {"name": draw(st.sampled_from(["eth0", "net1", "br0", "veth1234"]))}
    if draw(st.booleans()):
        interface["mac"] = draw(st.sampled_from(["0a:58:0a:01:00:05", "02:00:00:00:00:09"]))
    if draw(st.booleans()):
        interface["sandbox"] = "/var/run/netns/x"
    for key, strategy in (
        ("mtu", st.integers(min_value=1, max_value=9000)),
        ("socketPath", st.just("/run/vhost.sock")),
        ("pciID", st.just("0000:00:1f.0")),
    ):
        if draw(st.booleans()):
            interface[key] = draw(strategy)
    return interface


@st.composite
def result_1_1(draw: Any) -> dict[str, Any]:
    ifaces = draw(st.lists(interfaces(), max_size=3))
    ips = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        address, prefix = draw(addresses())
        ip: dict[str, Any] = {"address": f"{address}/{prefix}"}
        if draw(st.booleans()):
            ip["gateway"] = str(_v4(draw) if ":" not in address else _v6(draw))
        if ifaces and draw(st.booleans()):
            ip["interface"] = draw(st.integers(min_value=0, max_value=len(ifaces) - 1))
        ips.append(ip)
    routes = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        route: dict[str, Any] = {"dst": draw(cidrs())}
        for key, strategy in (
            ("mtu", st.integers(min_value=1, max_value=9000)),
            ("advmss", st.integers(min_value=1, max_value=9000)),
            ("priority", st.integers(min_value=1, max_value=1000)),
            ("table", st.integers(min_value=0, max_value=255)),
            ("scope", st.integers(min_value=0, max_value=255)),
        ):
            if draw(st.booleans()):
                route[key] = draw(strategy)
        routes.append(route)
    dns: dict[str, Any] = {}
    if draw(st.booleans()):
        dns["nameservers"] = ["10.96.0.10"]
        dns["search"] = ["svc.cluster.local"]
    result: dict[str, Any] = {"cniVersion": "1.1.0", "interfaces": ifaces, "ips": ips, "routes": routes}
    if dns:
        result["dns"] = dns
    return {key: value for key, value in result.items() if value != []}


def _normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """Printing rules aside (an empty ``dns`` is printed by 0.x, omitted by 1.x), the same JSON."""
    return {key: value for key, value in obj.items() if not (key == "dns" and value == {})}


def _shim_convert(result: dict[str, Any], version: str) -> dict[str, Any] | CniError:
    decoded = shim.decode_add_response(json.dumps({"Result": result}).encode())
    try:
        return shim.convert_result(decoded, version)
    except shim.CniError as error:
        return CniError(error.code, error.msg)


@settings(max_examples=150, deadline=None)
@given(result=result_1_1(), version=st.sampled_from(VERSIONS))
def test_shim_and_library_convert_a_daemon_result_the_same_way(result: dict[str, Any], version: str) -> None:
    try:
        expected: dict[str, Any] | CniError = results.convert(result, version)
    except CniError as error:
        expected = error
    converted = _shim_convert(result, version)

    if isinstance(expected, CniError):
        assert isinstance(converted, CniError)
        assert converted.code == expected.code
        return
    assert not isinstance(converted, CniError), converted
    assert _normalised(json.loads(json.dumps(converted))) == _normalised(expected)


@pytest.mark.parametrize("version", VERSIONS)
def test_shim_and_library_agree_on_a_bridge_result(version: str) -> None:
    bridge = {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "0a:58:0a:01:00:01"},
            {"name": "veth1", "mac": "0a:58:0a:01:00:02"},
            {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"},
        ],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {},
    }
    converted = _shim_convert(bridge, version)
    assert isinstance(converted, dict), converted
    assert _normalised(converted) == _normalised(results.convert(bridge, version))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "mapped", ["::ffff:10.1.0.5/120", "::FFFF:a01:5/120", "0:0:0:0:0:ffff:10.1.0.5/120", "0::ffff:a01:5/104"]
)
def test_ipv4_mapped_addresses_are_ipv4_for_the_shim_too(version: str, mapped: str) -> None:
    """Go's ``To4() != nil``: an IPv4-mapped IPv6 address is IPv4 (``version`` "4", ``ip4``, its routes
    under ``ip4``), as ``app.cni.results`` decides; a plain IPv6 address next to it stays IPv6."""
    result = {
        "cniVersion": "1.1.0",
        "ips": [{"address": mapped}, {"address": "fd00::5/64"}, {"address": "10.1.0.6/24"}],
        "routes": [{"dst": "::ffff:0.0.0.0/96"}, {"dst": "fd00::/8"}],
    }
    converted = _shim_convert(result, version)
    assert isinstance(converted, dict), converted
    assert _normalised(json.loads(json.dumps(converted))) == _normalised(results.convert(result, version))
