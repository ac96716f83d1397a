"""The Multus configuration of a request: the shim's conf merged with daemon-config, its keys read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.attach import netconf
from app.attach.networks import NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni import conf as cniconf
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store.records import PodIdentity


def parse(stdin_conf: dict[str, Any], daemon_config: dict[str, Any]) -> netconf.MultusNetConf:
    return netconf.parse(netconf.merge(stdin_conf, daemon_config), stdin_cni_version="1.0.0")


def test_daemon_config_keys_override_the_shim_conf() -> None:
    conf = parse({"binDir": "/shim/bin", "clusterNetwork": "a"}, {"binDir": "/daemon/bin"})

    assert (conf.bin_dir, conf.cluster_network) == ("/daemon/bin", "a")


def test_keys_are_read_whatever_their_case_as_upstreams_decoder_reads_them() -> None:
    conf = parse(
        {"name": "multus-cni-network", "ClusterNetwork": "primary"},
        {"ConfDir": "/etc/x", "defaultnetworks": ["x"], "SYSTEMNAMESPACES": ["ops"], "CNIDir": "/var/x"},
    )

    assert conf.cluster_network == "primary"
    assert (conf.conf_dir, conf.default_networks, conf.system_namespaces) == ("/etc/x", ("x",), ("ops",))
    assert conf.cni_dir == "/var/x"


def test_of_several_spellings_the_last_in_sorted_order_wins_and_null_is_absent() -> None:
    # Go re-encodes the merged map with sorted keys ("ConfDir" < "confDir") before decoding it
    assert parse({"confDir": "/shim"}, {"ConfDir": "/daemon"}).conf_dir == "/shim"
    assert parse({"confDir": "/shim"}, {"confdir": "/daemon"}).conf_dir == "/daemon"
    assert parse({"confDir": "/shim"}, {"confdir": None}).conf_dir == "/shim"


def test_a_wrong_type_under_another_spelling_is_refused_naming_the_key() -> None:
    with pytest.raises(CniError) as caught:
        parse({}, {"DefaultNetworks": "sidecar"})

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "'defaultNetworks' must be a list of strings" in caught.value.msg


async def test_default_networks_spelled_otherwise_in_daemon_config_are_attached(tmp_path: Path) -> None:
    for name in ("primary", "sidecar"):
        document = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge", "bridge": name}]}
        (tmp_path / f"10-{name}.conflist").write_text(json.dumps(document))
    conf = parse(
        {"name": "multus-cni-network", "clusterNetwork": "primary"},
        {"DefaultNetworks": ["sidecar"], "ConfDir": str(tmp_path)},
    )
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", ""),
        conf=conf,
    )

    resolution = await NetworkResolver().resolve(request)

    assert [(plan.network_name, plan.ifname) for plan in resolution.plans] == [
        ("primary", "eth0"),
        ("sidecar", "net1"),
    ]


def test_empty_values_of_the_runtime_config_keys_upstream_reads_are_left_out() -> None:
    empty: dict[str, Any] = {
        "portMappings": None,
        "bandwidth": None,
        "ips": [],
        "mac": "",
        "infinibandGUID": "",
        "deviceID": "",
        "CNIDeviceInfoFile": "",
    }
    others = {"aliases": [], "dns": {}, "cgroupPath": ""}  # upstream drops them: handed on as given

    conf = parse({"runtimeConfig": {**empty, **others}}, {})

    assert conf.runtime_config == others
    kept = {
        "portMappings": [{"hostPort": 80, "containerPort": 8080}],
        "bandwidth": {},
        "mac": "0a:58:00:00:00:01",
    }
    assert parse({"runtimeConfig": kept}, {}).runtime_config == kept


async def test_a_delegate_keeps_its_own_runtime_config_when_the_runtime_sends_an_empty_capability(
    tmp_path: Path,
) -> None:
    """The runtime's ``"portMappings": []`` replaced the delegate's own ``runtimeConfig`` with
    ``{"portMappings": []}``; upstream leaves an empty capability out, so libcni keeps the conf's."""
    own = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    document = {
        "cniVersion": "1.0.0",
        "name": "primary",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": own,
    }
    (tmp_path / "10-primary.conf").write_text(json.dumps(document))
    conf = parse(
        {"name": "multus-cni-network", "clusterNetwork": "primary", "runtimeConfig": {"portMappings": []}},
        {"confDir": str(tmp_path)},
    )
    request = SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", ""),
        conf=conf,
    )

    [plan] = (await NetworkResolver().resolve(request)).plans
    stdin = cniconf.plugin_stdin(
        plan.net.plugins[0],
        name=plan.net.name,
        cni_version=plan.net.cni_version,
        capability_args=plan.capability_args,
    )

    assert json.loads(stdin)["runtimeConfig"] == own
