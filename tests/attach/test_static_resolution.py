"""Static-mode resolution from ``confDir``: the networks a request names, each conf file read once;
and the configuration's inline ``delegates``.

Real conf files in a temporary directory and the resolver the engine uses; nothing is executed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from app.attach.netconf import MultusNetConf
from app.attach.networks import FILE_CACHE_PRUNE_AT, NetworkResolver
from app.attach.requests import Command, SandboxRequest
from app.cni import conf as cniconf
from app.cni.types import CniError, ContainerId, ErrorCode, IfName, NetworkConfigList
from app.store.records import PodIdentity
from tests.cni.support import descriptors_exhausted


def write_conflist(conf_dir: Path, file_name: str, network: str) -> None:
    document = {"cniVersion": "1.0.0", "name": network, "plugins": [{"type": "bridge", "bridge": network}]}
    (conf_dir / file_name).write_text(json.dumps(document))


def request(conf_dir: Path, cluster_network: str, default_networks: tuple[str, ...]) -> SandboxRequest:
    conf = MultusNetConf(
        name="multus",
        cni_version="1.0.0",
        stdin_cni_version="1.0.0",
        cluster_network=cluster_network,
        default_networks=default_networks,
        conf_dir=str(conf_dir),
    )
    return SandboxRequest(
        command=Command.ADD,
        container_id=ContainerId("c0ffee"),
        netns="/var/run/netns/none",
        ifname=IfName("eth0"),
        cni_args=(),
        pod=PodIdentity("default", "web", ""),
        conf=conf,
    )


class CountingResolver(NetworkResolver):
    """The resolver, counting how often each conf file is loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: Counter[str] = Counter()

    def _load_file(self, path: str) -> NetworkConfigList:
        self.loads[Path(path).name] += 1
        return super()._load_file(path)


async def test_a_request_naming_four_conf_files_loads_each_once_and_gets_each_by_name(tmp_path: Path) -> None:
    for index in range(4):
        write_conflist(tmp_path, f"{10 + index}-net{index}.conflist", f"net{index}")
    write_conflist(tmp_path, "90-unused.conflist", "unused")
    resolver = CountingResolver()

    resolution = await resolver.resolve(request(tmp_path, "net0", ("net3", "net1", "net2")))

    assert [plan.network_name for plan in resolution.plans] == ["net0", "net3", "net1", "net2"]
    assert [plan.net.plugins[0]["bridge"] for plan in resolution.plans] == ["net0", "net3", "net1", "net2"]
    assert resolver.loads == Counter({f"{10 + index}-net{index}.conflist": 1 for index in range(4)})


async def test_the_next_request_reads_the_directory_again(tmp_path: Path) -> None:
    write_conflist(tmp_path, "10-net0.conflist", "net0")
    write_conflist(tmp_path, "20-net1.conflist", "net1")
    resolver = CountingResolver()
    await resolver.resolve(request(tmp_path, "net0", ("net1",)))
    write_conflist(tmp_path, "15-net1.conflist", "net1")  # lexically first now: it wins

    resolution = await resolver.resolve(request(tmp_path, "net0", ("net1",)))

    assert resolution.plans[1].net.raw == (tmp_path / "15-net1.conflist").read_bytes()


async def test_an_unloadable_file_before_the_match_is_the_error_as_without_the_reading(
    tmp_path: Path,
) -> None:
    write_conflist(tmp_path, "10-net0.conflist", "net0")
    (tmp_path / "20-broken.conflist").write_text("{not json")
    write_conflist(tmp_path, "30-net1.conflist", "net1")

    with pytest.raises(CniError) as caught:
        await CountingResolver().resolve(request(tmp_path, "net0", ("net1",)))
    with pytest.raises(CniError) as directly:
        cniconf.find_by_name(str(tmp_path), "net1")

    assert caught.value.code == directly.value.code == ErrorCode.DECODING_FAILURE
    assert "20-broken.conflist" in caught.value.msg


async def test_a_conf_file_read_while_out_of_descriptors_is_code_11_and_read_again_once_they_are_back(
    tmp_path: Path,
) -> None:
    """In a burst at the open-files limit the read failed with code 5 (an I/O failure); it is a
    shortage that passes, and its error must not stay cached for the unchanged file."""
    path = tmp_path / "10-net0.conf"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "net0", "type": "bridge"}))
    resolver = NetworkResolver()

    with descriptors_exhausted(), pytest.raises(CniError) as caught:
        await resolver.resolve(request(tmp_path, str(path), ()))
    resolution = await resolver.resolve(request(tmp_path, str(path), ()))

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert str(path) in caught.value.msg
    assert [plan.network_name for plan in resolution.plans] == ["net0"]


async def test_a_conf_directory_listed_while_out_of_descriptors_is_code_11(tmp_path: Path) -> None:
    write_conflist(tmp_path, "10-net0.conflist", "net0")

    with descriptors_exhausted(), pytest.raises(CniError) as caught:
        await NetworkResolver().resolve(request(tmp_path, "net0", ()))

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert f"error reading directory {tmp_path}" in caught.value.msg


async def test_an_inline_delegate_with_a_type_is_that_one_plugin_whatever_plugins_it_also_holds(
    tmp_path: Path,
) -> None:
    # Upstream's LoadNetConf reads each of "delegates" with LoadDelegateNetConf: a top-level type
    # makes it one plugin. The "plugins" beside it were run instead.
    delegate = {"cniVersion": "1.0.0", "name": "inline", "type": "bridge", "plugins": [{"type": "tuning"}]}
    given = request(tmp_path, "", ())
    conf = MultusNetConf(name="multus", cni_version="1.0.0", stdin_cni_version="1.0.0", delegates=(delegate,))
    resolution = await NetworkResolver().resolve(dataclasses.replace(given, conf=conf))

    [plan] = resolution.plans
    assert plan.net.is_single_conf
    assert plan.net.plugin_types == ["bridge"]
    assert "plugins" not in json.loads(plan.net.raw)


async def test_conf_files_removed_do_not_stay_cached_and_those_kept_stay_parsed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conf file is looked up only while its directory lists it: one removed must not keep its
    parsed network in the resolver for the daemon's life (files renamed, networks come and go)."""
    parsed: Counter[str] = Counter()
    load_file = cniconf.load_file

    def counted(path: str) -> NetworkConfigList:
        parsed[Path(path).name] += 1
        return load_file(path)

    monkeypatch.setattr(cniconf, "load_file", counted)
    write_conflist(tmp_path, "10-kept.conflist", "kept")
    resolver = NetworkResolver()
    for index in range(5 * FILE_CACHE_PRUNE_AT):
        passing = tmp_path / f"20-passing{index}.conflist"
        write_conflist(tmp_path, passing.name, f"passing{index}")
        await resolver.resolve(request(tmp_path, "kept", (f"passing{index}",)))
        passing.unlink()

    assert len(resolver._file_cache) <= FILE_CACHE_PRUNE_AT + 1
    assert parsed["10-kept.conflist"] == 1
