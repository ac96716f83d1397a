"""A DEL of a sandbox upstream Multus attached (no checkpoint) replays libcni's result caches."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.attach import device_info
from app.attach.requests import Trigger
from app.cni.types import CniError, JsonObject
from tests.core.support import Command, Netns, Node, delegate_lines, new_container_id


def recorder_conf(node: Node, name: str, **behaviour: object) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "recorder",
        "recorder": {"log": str(node.recorder_log), **behaviour},
    }


async def test_del_without_a_checkpoint_replays_upstreams_cache_newest_first_then_removes_it(
    node: Node,
) -> None:
    container = new_container_id()
    netns = node.new_netns()
    cluster, extra = recorder_conf(node, "upstream-cluster"), recorder_conf(node, "upstream-extra")
    cached_result = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.5/24"}]}
    caches = [
        node.write_upstream_cache(container, network=cluster, ifname="eth0", netns=netns.path),
        node.write_upstream_cache(
            container, network=extra, ifname="net1", netns=netns.path, result=cached_result
        ),
    ]
    scratch = node.write_upstream_scratch(container, [cluster, extra])
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, netns, conf))

    assert node.calls() == [("DEL", "upstream-extra", "net1"), ("DEL", "upstream-cluster", "eth0")]
    extra_del = node.recorder_entries("DEL")[0]
    assert extra_del["stdin"]["prevResult"] == cached_result
    assert extra_del["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=old-pod"
    assert extra_del["env"]["CNI_NETNS"] == netns.path
    assert not any(path.exists() for path in [*caches, scratch])
    assert delegate_lines(node.history(container), "DEL") == [
        ("net1", "runtime", "ok"),
        ("eth0", "runtime", "ok"),
    ]


async def test_without_the_scratch_file_the_cluster_network_is_deleted_last(node: Node) -> None:
    container = new_container_id()
    for ifname, name in (("net2", "b"), ("eth0", "a"), ("net1", "c")):
        node.write_upstream_cache(container, network=recorder_conf(node, name), ifname=ifname, netns="")
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert [ifname for _, _, ifname in node.calls()] == ["net2", "net1", "eth0"]


async def test_a_failing_cached_del_keeps_upstreams_cache_for_the_next_del(node: Node) -> None:
    container = new_container_id()
    failing = recorder_conf(node, "upstream-cluster", fail={"code": 11, "msg": "later"})
    cache = node.write_upstream_cache(container, network=failing, ifname="eth0", netns="")
    conf = node.conf(node.recorder_network("cluster"))

    with pytest.raises(CniError) as refused:
        await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert refused.value.code == 11
    assert cache.exists()
    assert node.checkpoint(container) is None


async def test_an_unreadable_cache_file_is_skipped_and_the_rest_is_released(node: Node) -> None:
    container = new_container_id()
    node.write_upstream_cache(container, network=recorder_conf(node, "good"), ifname="eth0", netns="")
    (node.cni_dir / "results" / f"bad-{container}-net1").write_text("{ not json")
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "good", "eth0")]


@pytest.mark.parametrize(
    "result",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "not-an-address"}]},
        {"cniVersion": "1.0.0", "interfaces": "eth0"},
        ["not", "an", "object"],
    ],
    ids=["bad-address", "bad-interfaces", "not-an-object"],
)
async def test_a_cached_result_that_does_not_parse_does_not_fail_the_del_for_ever(
    node: Node, result: object
) -> None:
    """Invariant 5b: a cached result that can never be read back is no reason that may pass."""
    container = new_container_id()
    cache = node.write_upstream_cache(
        container,
        network=recorder_conf(node, "upstream-cluster"),
        ifname="eth0",
        netns="",
        result=result,  # type: ignore[arg-type]  # a list, as a corrupt cache may hold
    )
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert not cache.exists()
    assert [(ifname, outcome) for ifname, _, outcome in delegate_lines(node.history(container), "DEL")] == [
        ("eth0", "error")
    ]


def attach_bridge_like_upstream(node: Node, container: str, netns: Netns, *, subnet: str) -> None:
    """Run a bridge + host-local ADD as upstream's libcni would, and leave its result cache."""
    network = json.loads(
        (node.conf_dir / f"{node.bridge_network('upstream-br', subnet=subnet)}.conflist").read_text()
    )
    plugin = {**network["plugins"][0], "cniVersion": network["cniVersion"], "name": network["name"]}
    added = subprocess.run(
        [str(node.bin_dir / "bridge")],
        input=json.dumps(plugin),
        capture_output=True,
        text=True,
        check=True,
        env={
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": container,
            "CNI_NETNS": netns.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(node.bin_dir),
        },
    )
    result: JsonObject = json.loads(added.stdout)
    node.write_upstream_cache(container, network=network, ifname="eth0", netns=netns.path, result=result)


def leases(node: Node, network: str) -> list[str]:
    return [p.name for p in (node.ipam_dir / network).iterdir() if p.name[0].isdigit()]


async def test_a_cached_netns_left_as_a_plain_file_does_not_fail_the_del_for_ever(node: Node) -> None:
    """The netns unmounted, its file left behind: plugins refuse to enter it, so the DEL runs without
    it (as from the checkpoint) and still releases the lease, instead of failing on every retry."""
    container = new_container_id()
    netns = node.new_netns()
    attach_bridge_like_upstream(node, container, netns, subnet="10.99.9.0/24")
    assert leases(node, "upstream-br") != []
    await asyncio.to_thread(subprocess.run, ["umount", netns.path], check=True)  # its file stays
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, netns, conf))

    assert leases(node, "upstream-br") == []
    assert list((node.cni_dir / "results").iterdir()) == []
    assert delegate_lines(node.history(container), "DEL") == [("eth0", "runtime", "ok")]


async def test_a_network_attached_twice_is_deleted_in_reverse_of_upstreams_add_order(node: Node) -> None:
    """Upstream names the delegate at position ``i`` of its scratch file ``net<i>`` (or its
    ``ifnameRequest``): two attachments of one network are told apart by that, not by name."""
    container = new_container_id()
    cluster, twice = recorder_conf(node, "upstream-cluster"), recorder_conf(node, "twice")
    for ifname, network in (("eth0", cluster), ("net1", twice), ("net2", twice), ("blue", twice)):
        node.write_upstream_cache(container, network=network, ifname=ifname, netns="")
    scratch: list[dict[str, object]] = [{"Conf": network} for network in (cluster, twice, twice)]
    scratch.append({"Conf": twice, "ifnameRequest": "blue"})
    (node.cni_dir / container).write_text(json.dumps(scratch))
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert [ifname for _, _, ifname in node.calls()] == ["blue", "net2", "net1", "eth0"]


def with_device_info_file(cache: Path, path: Path) -> None:
    """Give a cached delegate the runtimeConfig upstream hands one with a device, and create the file."""
    document = json.loads(cache.read_text())
    document["capabilityArgs"] = {"deviceID": "0000:00:07.1", "CNIDeviceInfoFile": str(path)}
    cache.write_text(json.dumps(document))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:00:07.1"}}')


@pytest.fixture
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The device-info spec's directory, where upstream puts its files, moved under the test's dir."""
    moved = tmp_path / "devinfo"
    monkeypatch.setattr(device_info, "DEFAULT_DIR", str(moved))
    return moved


async def test_del_from_upstreams_cache_removes_the_device_info_file_upstream_made_for_a_delegate(
    node: Node, spec_dir: Path
) -> None:
    """Upstream's DEL removes ``<spec dir>/cni/<network>-<containerID>_<ifname>`` after a delegate's
    DEL, as the device-info spec asks: left in place, every pod with a device leaked one."""
    container = new_container_id()
    sriov = node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-sriov"), ifname="net1", netns=""
    )
    upstreams = spec_dir / "cni" / f"upstream-sriov-{container}_net1"
    with_device_info_file(sriov, upstreams)
    cluster = node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-cluster"), ifname="eth0", netns=""
    )
    # a cache naming a file elsewhere (with the right name): never removed, whatever the cache says
    elsewhere = node.root / "elsewhere" / f"upstream-cluster-{container}_eth0"
    with_device_info_file(cluster, elsewhere)
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "upstream-sriov", "net1"), ("DEL", "upstream-cluster", "eth0")]
    assert not upstreams.exists()
    assert elsewhere.exists()


async def test_a_failing_cached_del_keeps_its_device_info_file_until_it_succeeds(
    node: Node, spec_dir: Path
) -> None:
    container = new_container_id()
    failing = recorder_conf(node, "upstream-sriov", fail={"code": 11, "msg": "later"})
    cache = node.write_upstream_cache(container, network=failing, ifname="net1", netns="")
    upstreams = spec_dir / "cni" / f"upstream-sriov-{container}_net1"
    with_device_info_file(cache, upstreams)
    conf = node.conf(node.recorder_network("cluster"))

    with pytest.raises(CniError):
        await node.engine().delete(node.request(Command.DEL, container, None, conf))
    assert upstreams.exists(), "the retried DEL is handed the same file"
    with_device_info_file(
        node.write_upstream_cache(
            container, network=recorder_conf(node, "upstream-sriov"), ifname="net1", netns=""
        ),
        upstreams,
    )
    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert not upstreams.exists()


async def test_dels_of_unknown_sandboxes_keep_no_compiled_pattern_per_container(node: Node) -> None:
    """Every DEL without a checkpoint looks for upstream's caches of its container: the look must
    not leave a compiled pattern behind per container ID (a glob did, in fnmatch's and re's caches,
    so a daemon's memory grew with every repeated DEL and every DEL after a failed ADD)."""
    node.write_upstream_cache(
        new_container_id(), network=recorder_conf(node, "someone-else"), ifname="eth0", netns=""
    )
    conf = node.conf(node.recorder_network("cluster"))
    engine = node.engine()
    for _ in range(5):  # whatever the first DELs compile once for good
        await engine.delete(node.request(Command.DEL, new_container_id(), None, conf))
    patterns_before = compiled_patterns()

    for _ in range(200):
        await engine.delete(node.request(Command.DEL, new_container_id(), None, conf))

    assert compiled_patterns() - patterns_before < 5
    assert node.calls() == []


def compiled_patterns() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, re.Pattern))


@pytest.fixture
def pod_process(node: Node) -> Iterator[str]:
    """The ``/proc/<pid>/ns/net`` path of a process running in a namespace of its own (a live pod's)."""
    netns = node.new_netns()
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "sh", "-c", "echo entered; exec sleep 600"],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"entered\n"
        yield f"/proc/{process.pid}/ns/net"
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    "spelling", ["{}", "/{}", "{}/", "/proc/./{}"], ids=["plain", "//", "trailing-/", "/./"]
)
async def test_a_cached_process_namespace_the_runtime_does_not_name_is_not_entered(
    node: Node, pod_process: str, spelling: str
) -> None:
    """cri-dockerd names a sandbox's namespace through its process. After a reboot, or once that
    process is gone, the cached PID may be another pod's: a DEL entering it would remove that pod's
    interface of the same name. The runtime's DEL (here without a namespace: the sandbox is dead)
    says where to run. However the path is spelt, the kernel takes it for the same file."""
    container = new_container_id()
    cached = spelling.format(
        pod_process.removeprefix("/proc/") if spelling.startswith("/proc/./") else pod_process
    )
    node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-extra"), ifname="net1", netns=cached
    )
    conf = node.conf(node.recorder_network("cluster"))

    await node.engine().delete(node.request(Command.DEL, container, None, conf))

    assert node.calls() == [("DEL", "upstream-extra", "net1")]
    assert node.recorder_entries("DEL")[0]["env"].get("CNI_NETNS", "") == ""


async def test_a_cached_process_namespace_the_runtime_names_too_is_entered(
    node: Node, pod_process: str
) -> None:
    container = new_container_id()
    node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-extra"), ifname="net1", netns=pod_process
    )
    conf = node.conf(node.recorder_network("cluster"))
    request = node.request(Command.DEL, container, None, conf)

    await node.engine().delete(dataclasses.replace(request, netns=pod_process))

    assert node.recorder_entries("DEL")[0]["env"]["CNI_NETNS"] == pod_process


async def test_a_spooled_del_does_not_enter_a_process_namespace_even_one_it_names(
    node: Node, pod_process: str
) -> None:
    """The shim spooled the DEL and answered success, so the runtime went on to remove the sandbox:
    by the replay its process is gone, and its PID may be a live pod's."""
    container = new_container_id()
    node.write_upstream_cache(
        container, network=recorder_conf(node, "upstream-extra"), ifname="net1", netns=pod_process
    )
    conf = node.conf(node.recorder_network("cluster"))
    request = node.request(Command.DEL, container, None, conf, trigger=Trigger.SPOOL)

    await node.engine().delete(dataclasses.replace(request, netns=pod_process))

    assert node.calls() == [("DEL", "upstream-extra", "net1")]
    assert node.recorder_entries("DEL")[0]["env"].get("CNI_NETNS", "") == ""
