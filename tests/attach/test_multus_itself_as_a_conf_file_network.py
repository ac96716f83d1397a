"""A network read from a conf file (the cluster network, a default network, an inline delegate, a
NAD without ``spec.config`` falling back to confDir) whose plugin is Multus itself is refused when the
ADD resolves its networks, as a NAD's ``spec.config`` naming it is (``app.attach.nad_config``).

On a node ``multus-shim`` is in ``binDir``: run as a delegate, it would ask this daemon to ADD the very
sandbox whose ADD runs it, and wait behind that ADD's lock until the delegate timeout killed it. The
usual way there is a ``clusterNetwork`` naming the conf Multus writes itself (``multus-cni-network``).

Real conf files in a temporary directory and the resolver the engine uses; nothing is executed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from app.attach.netconf import MultusNetConf
from app.attach.networks import NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni.types import CniError, ContainerId, ErrorCode, IfName
from app.store.records import PodIdentity


def write(conf_dir: Path, file_name: str, document: dict[str, Any]) -> Path:
    path = conf_dir / file_name
    path.write_text(json.dumps(document))
    return path


def request(conf_dir: Path, **fields: Any) -> SandboxRequest:
    conf = MultusNetConf(
        name="multus", cni_version="1.0.0", stdin_cni_version="1.0.0", conf_dir=str(conf_dir)
    )
    conf = dataclasses.replace(conf, **fields)
    return SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", ""),
        conf=conf,
    )


MULTUS_CONF = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim", "socketDir": "/x"}
BRIDGE_CONF = {"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "bridge", "bridge": "cni0"}]}


async def resolve_refused(req: SandboxRequest) -> CniError:
    with pytest.raises(CniError) as refused:
        await NetworkResolver().resolve(req)
    assert refused.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "Multus cannot be a delegate of itself" in refused.value.msg
    return refused.value


async def test_a_cluster_network_naming_the_conf_multus_writes_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "00-multus.conf", MULTUS_CONF)
    write(tmp_path, "10-pods.conflist", BRIDGE_CONF)

    refused = await resolve_refused(request(tmp_path, cluster_network="multus-cni-network"))

    assert '"type" is "multus-shim"' in refused.msg
    assert 'network "multus-cni-network"' in refused.msg


async def test_a_cluster_network_given_by_path_and_a_default_network_are_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path, "00-multus.conf", MULTUS_CONF)
    write(tmp_path, "10-pods.conflist", BRIDGE_CONF)
    chained = {"cniVersion": "1.0.0", "name": "chained", "plugins": [{"type": "bridge"}, {"type": "multus"}]}
    write(tmp_path, "20-chained.conflist", chained)

    await resolve_refused(request(tmp_path, cluster_network=str(path)))
    refused = await resolve_refused(request(tmp_path, cluster_network="pods", default_networks=("chained",)))
    assert '"plugins[1].type" is "multus"' in refused.msg


async def test_an_inline_delegate_of_type_multus_or_with_multus_as_ipam_is_refused(tmp_path: Path) -> None:
    multus = {"cniVersion": "1.0.0", "name": "m", "type": "multus"}
    await resolve_refused(request(tmp_path, delegates=(multus,)))
    ipam = {"cniVersion": "1.0.0", "name": "b", "type": "bridge", "ipam": {"type": "multus-shim"}}
    refused = await resolve_refused(request(tmp_path, delegates=(ipam,)))
    assert '"ipam.type" is "multus-shim"' in refused.msg


async def test_networks_of_other_plugins_still_resolve(tmp_path: Path) -> None:
    write(tmp_path, "00-multus.conf", MULTUS_CONF)
    write(tmp_path, "10-pods.conflist", BRIDGE_CONF)

    resolution = await NetworkResolver().resolve(request(tmp_path, cluster_network="pods"))

    assert [plan.network_name for plan in resolution.plans] == ["pods"]
