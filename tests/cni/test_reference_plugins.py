"""The list verbs driving the real reference plugins (/usr/lib/cni) in real network namespaces.

Nothing is mocked: the plugins create veths, bridges and macvlans, host-local writes leases into a
temporary dataDir, and the tests look at the kernel (``ip -j``) and the filesystem afterwards.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.cni import api, conf
from app.cni.types import CniError, IfName, JsonObject, NetworkConfigList, RuntimeConf
from tests.cni.support import Netns, RecorderLog, addresses, links, run, unique


def network(document: dict[str, Any]) -> NetworkConfigList:
    return conf.load_network_list(json.dumps(document).encode(), source="test")


def bridge_plugin(*, bridge: str, data_dir: Path, subnet: str = "10.99.0.0/24") -> dict[str, Any]:
    return {
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(data_dir)},
    }


def lease_path(data_dir: Path, net: NetworkConfigList, result: JsonObject) -> Path:
    address: str = result["ips"][0]["address"]
    return data_dir / net.name / address.split("/")[0]


@pytest.fixture
def bridge(host_links: list[str]) -> str:
    name = unique("mpb")
    host_links.append(name)
    return name


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "ipam"


async def test_bridge_add_check_del_creates_then_removes_interface_and_lease(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, bridge: str, data_dir: Path
) -> None:
    net = network({"cniVersion": "1.0.0", "name": "brnet", **bridge_plugin(bridge=bridge, data_dir=data_dir)})

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    inside = await links(netns)
    address = result["ips"][0]["address"]
    assert address in addresses(inside["eth0"])
    assert result["interfaces"][result["ips"][0]["interface"]]["sandbox"] == netns.path
    assert bridge in await links()
    lease = lease_path(data_dir, net, result)
    assert rt.container_id in lease.read_text()

    await api.check_network_list(cni=cni, net=net, rt=rt, prev_result=result)
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert "eth0" not in await links(netns)
    assert not lease.exists()


async def test_del_twice_succeeds(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, bridge: str, data_dir: Path
) -> None:
    net = network({"cniVersion": "1.0.0", "name": "brnet", **bridge_plugin(bridge=bridge, data_dir=data_dir)})
    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert "eth0" not in await links(netns)


async def test_del_succeeds_after_the_netns_is_gone_and_still_releases_the_lease(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, bridge: str, data_dir: Path
) -> None:
    net = network({"cniVersion": "1.0.0", "name": "brnet", **bridge_plugin(bridge=bridge, data_dir=data_dir)})
    result = await api.add_network_list(cni=cni, net=net, rt=rt)
    lease = lease_path(data_dir, net, result)
    await run("ip", "netns", "del", netns.name)

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert not lease.exists()


async def test_check_reports_an_interface_removed_behind_the_plugins_back(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, bridge: str, data_dir: Path
) -> None:
    net = network({"cniVersion": "1.0.0", "name": "brnet", **bridge_plugin(bridge=bridge, data_dir=data_dir)})
    result = await api.add_network_list(cni=cni, net=net, rt=rt)
    await run("ip", "-n", netns.name, "link", "del", "eth0")

    with pytest.raises(CniError) as caught:
        await api.check_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert caught.value.msg.startswith('plugin type="bridge" name="brnet" failed (check): ')
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)


async def test_conflist_threads_the_bridge_result_through_tuning_to_the_last_plugin(
    cni: api.CniConfig,
    rt: RuntimeConf,
    netns: Netns,
    bridge: str,
    data_dir: Path,
    recorder_log: RecorderLog,
) -> None:
    mac = "02:42:ac:11:00:99"
    net = network(
        {
            "cniVersion": "1.0.0",
            "name": "chain",
            "plugins": [
                bridge_plugin(bridge=bridge, data_dir=data_dir),
                {"type": "tuning", "mac": mac},
                {"type": "recorder", "recorder": {"log": str(recorder_log.path)}},
            ],
        }
    )

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    [recorded] = recorder_log.entries()
    prev = recorded["stdin"]["prevResult"]
    assert prev == result  # the recorder echoes what it was given
    eth0 = next(interface for interface in prev["interfaces"] if interface["name"] == "eth0")
    assert eth0["mac"] == mac  # tuning's change to the bridge's result reached the next plugin
    assert (await links(netns))["eth0"]["address"] == mac

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)
    assert [entry["command"] for entry in recorder_log.entries()] == ["ADD", "DEL"]
    assert recorder_log.entries()[1]["stdin"]["prevResult"] == result


async def test_bridge_result_comes_back_in_a_legacy_list_version(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, bridge: str, data_dir: Path
) -> None:
    net = network(
        {"cniVersion": "0.2.0", "name": "oldnet", **bridge_plugin(bridge=bridge, data_dir=data_dir)}
    )

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    assert result["cniVersion"] == "0.2.0"
    assert result["ip4"]["ip"] in addresses((await links(netns))["eth0"])
    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)
    assert "eth0" not in await links(netns)


async def test_macvlan_on_a_veth_parent_with_static_ipam(
    cni: api.CniConfig, netns: Netns, rt: RuntimeConf, host_links: list[str]
) -> None:
    parent = unique("mpv")
    host_links.append(parent)
    await run("ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}p")
    await run("ip", "link", "set", parent, "up")
    net = network(
        {
            "cniVersion": "1.0.0",
            "name": "mvnet",
            "type": "macvlan",
            "master": parent,
            "mode": "bridge",
            "ipam": {
                "type": "static",
                "addresses": [{"address": "10.98.0.5/24", "gateway": "10.98.0.1"}],
                "routes": [{"dst": "10.96.0.0/16"}],
            },
        }
    )
    macvlan_rt = RuntimeConf(container_id=rt.container_id, netns=rt.netns, ifname=IfName("net1"))

    result = await api.add_network_list(cni=cni, net=net, rt=macvlan_rt)

    net1 = (await links(netns))["net1"]
    assert net1["link_type"] == "ether"
    assert "10.98.0.5/24" in addresses(net1)
    routes = json.loads(await run("ip", "-n", netns.name, "-j", "route"))
    assert any(route["dst"] == "10.96.0.0/16" and route["dev"] == "net1" for route in routes)
    assert result["routes"] == [{"dst": "10.96.0.0/16"}]

    await api.del_network_list(cni=cni, net=net, rt=macvlan_rt, prev_result=result)
    assert "net1" not in await links(netns)


async def test_ptp_creates_and_removes_a_veth_pair(
    cni: api.CniConfig, rt: RuntimeConf, netns: Netns, data_dir: Path, host_links: list[str]
) -> None:
    net = network(
        {
            "cniVersion": "0.4.0",
            "name": "ptpnet",
            "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.95.0.0/24", "dataDir": str(data_dir)},
        }
    )

    result = await api.add_network_list(cni=cni, net=net, rt=rt)

    host_side = result["interfaces"][0]["name"]
    host_links.append(host_side)
    assert result["ips"][0]["version"] == "4"
    assert host_side in await links()
    assert result["ips"][0]["address"] in addresses((await links(netns))["eth0"])

    await api.del_network_list(cni=cni, net=net, rt=rt, prev_result=result)

    assert host_side not in await links()
    assert "eth0" not in await links(netns)


def test_reference_plugins_are_installed() -> None:
    """A guard with a clear message rather than obscure failures above when the plugins are missing."""
    completed = subprocess.run(
        ["/usr/lib/cni/bridge"], input=b"", capture_output=True, env={"CNI_COMMAND": "VERSION"}, check=False
    )
    assert b"supportedVersions" in completed.stdout
