"""A masquerading ``bridge`` (``ipMasq``) leaves no nat rule behind when its DEL cannot see the pod.

The reference plugin removes its chain and ``POSTROUTING`` rule only for the addresses it finds on
the pod's interface; a DEL run once the namespace is gone (a runtime DEL after the namespace was
removed, a GC of an orphan whose namespace went) succeeds and leaves them. The daemon then removes
them itself (``app.attach.masquerade``), with the node's ``iptables``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from app.attach import masquerade
from app.cni import conf as cniconf
from tests.e2e.conftest import Cluster, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon or emulator processes
    pytest.mark.usefixtures("premigrated_state"),  # the first start is not what these tests are about
]


def _nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def container() -> Iterator[str]:
    container_id = new_container_id()
    yield container_id
    chain = masquerade.chain_name("masq0", container_id)
    for rule in _nat_rules().splitlines():  # whatever a failing test left
        if chain in rule and rule.startswith("-A POSTROUTING"):
            subprocess.run(["iptables", "-t", "nat", *shlex.split(rule.replace("-A", "-D", 1))], check=False)
    subprocess.run(["iptables", "-t", "nat", "-F", chain], check=False, capture_output=True)
    subprocess.run(["iptables", "-t", "nat", "-X", chain], check=False, capture_output=True)


def _start_with_masquerading_network(cluster: Cluster, started: Any) -> None:
    masq = cluster.bridge_conflist("masq0", "10.243.0.0/24", default_route=False, bridge=f"{cluster.bridge}m")
    masq["plugins"][0]["ipMasq"] = True
    cluster.write_network(cluster.conf_dir, "20-masq0.conflist", masq)
    started(defaultNetworks=["masq0"])


@pytest.mark.parametrize("by", ["runtime-del", "gc"])
def test_a_del_that_cannot_see_the_pod_leaves_no_masquerade_rule(
    cluster: Cluster, started: Any, container: str, by: str
) -> None:
    _start_with_masquerading_network(cluster, started)
    netns = cluster.new_netns()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0
    chain = masquerade.chain_name("masq0", container)
    assert f"-j {chain}" in _nat_rules(), "the plugin masquerades the pod's address"

    netns.delete()  # the runtime removed it, or the pod's sandbox died without a DEL
    if by == "runtime-del":
        deleted = cluster.run_shim("DEL", container_id=container, netns=netns)
        assert deleted.returncode == 0, deleted.stdout
    else:
        status, report = cluster.post("/gc")
        assert status == 200, report
        assert json.loads(report)["collected"] == [container], report

    assert chain not in _nat_rules(), "neither the POSTROUTING rule nor the chain is left"
    assert cluster.leases() == []


def test_a_del_that_sees_the_pod_leaves_the_rules_to_the_plugin(
    cluster: Cluster, started: Any, container: str
) -> None:
    _start_with_masquerading_network(cluster, started)
    netns = cluster.new_netns()
    assert cluster.run_shim("ADD", container_id=container, netns=netns).returncode == 0

    assert cluster.run_shim("DEL", container_id=container, netns=netns).returncode == 0

    assert masquerade.chain_name("masq0", container) not in _nat_rules()


def test_removing_what_is_already_gone_is_no_failure_and_a_missing_iptables_is_one(tmp_path: Any) -> None:
    gone = [masquerade.MasqueradeChain(masquerade.chain_name("masq0", "c" * 64), "x", ("10.243.0.9",))]

    assert asyncio.run(masquerade.remove(gone, root="", context={})) == []
    failures = asyncio.run(masquerade.remove(gone, root=str(tmp_path), context={}))
    assert failures == [f"iptables not found in {tmp_path}"], "a root without iptables: said, not raised"


def test_an_ipv4_mapped_address_is_the_ipv4_one_as_go_takes_it() -> None:
    net = cniconf.load_network_list(
        json.dumps({"cniVersion": "1.0.0", "name": "masq0", "type": "bridge", "ipMasq": True}).encode(),
        source="test",
    )
    result = {"ips": [{"address": "::ffff:10.243.0.7/120"}, {"address": "fd00::7/64"}, {"address": "x"}]}

    [found] = masquerade.chains(net, container_id="c" * 64, result=result)

    assert found.addresses == ("10.243.0.7", "fd00::7")
