"""chrootDir at the library level: plugins found and run inside another root, with real plugins.

The root (``tests/hostroot.py``) is the machine's / plus an ``/opt`` only it has: a plugin there, or
a file there that a plugin reads, works with ``chroot_dir`` and fails with a clear error without it.
bridge, host-local and macvlan run through the chroot against real namespaces and leave nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cni import api, conf, invoke
from app.cni.types import (
    CniError,
    ContainerId,
    ErrorCode,
    IfName,
    NetworkConfigList,
    NotExecutedError,
    RuntimeConf,
)
from tests.cni.support import Netns, addresses, links, run, unique
from tests.hostroot import HostRoot, host_root

HOSTFILE_PLUGIN = r"""
import json, os, sys
config = json.loads(sys.stdin.buffer.read() or b"{}")
command = os.environ.get("CNI_COMMAND", "")
settings = config.get("hostfile", {})
try:
    with open(settings["path"]) as handle:
        content = handle.read().strip()
except OSError as err:
    print(json.dumps({"code": 11, "msg": f"cannot read {settings['path']}: {err.strerror}"}))
    sys.exit(1)
with open(settings["log"], "a") as log:
    env = {k: v for k, v in os.environ.items() if k.startswith(("CNI_", "MULTUS_PY_")) or k == "PATH"}
    log.write(json.dumps({"command": command, "content": content, "cwd": os.getcwd(), "env": env}) + "\n")
if command == "ADD":
    result = config.get("prevResult") or {"cniVersion": config["cniVersion"]}
    result["dns"] = {"domain": content}
    print(json.dumps(result))
"""


@pytest.fixture
def hostroot(tmp_path: Path) -> Iterator[HostRoot]:
    with host_root(tmp_path) as root:
        yield root


def network(document: dict[str, Any]) -> NetworkConfigList:
    return conf.load_network_list(json.dumps(document).encode(), source="test")


def _rt(netns: str = "/var/run/netns/unused", ifname: str = "eth0") -> RuntimeConf:
    container_id = ContainerId(unique("ctr"))
    args = (("IgnoreUnknown", "1"),)
    return RuntimeConf(container_id=container_id, netns=netns, ifname=IfName(ifname), args=args)


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("only_in_root", ["the plugin", "a file the plugin reads"])
async def test_what_only_the_host_root_holds_works_with_chroot_and_fails_clearly_without(
    hostroot: HostRoot, tmp_path: Path, only_in_root: str
) -> None:
    host_file = hostroot.bin_dir.rsplit("/", 1)[0] + "/host.conf"
    hostroot.write(host_file, "from-the-host-root\n")
    if only_in_root == "the plugin":
        hostroot.install_script("hostfile", HOSTFILE_PLUGIN)
        path: tuple[str, ...] = (hostroot.bin_dir,)
    else:  # the plugin is in a directory both see; only the file it reads is the root's
        shared = tmp_path / "shared-bin"
        shared.mkdir()
        (shared / "hostfile").write_text(f"#!{__import__('sys').executable} -IS\n{HOSTFILE_PLUGIN}")
        (shared / "hostfile").chmod(0o755)
        path = (str(shared),)
    log = tmp_path / "hostfile.jsonl"
    net = network(
        {
            "cniVersion": "1.0.0",
            "name": "hostnet",
            "plugins": [{"type": "hostfile", "hostfile": {"path": host_file, "log": str(log)}}],
        }
    )
    rt = _rt()
    in_root = api.CniConfig(path=path, timeout=20.0, chroot_dir=hostroot.chroot_dir)
    outside = api.CniConfig(path=path, timeout=20.0)

    result = await api.add_network_list(cni=in_root, net=net, rt=rt)
    await api.del_network_list(cni=in_root, net=net, rt=rt, prev_result=result)

    assert result["dns"] == {"domain": "from-the-host-root"}
    entries = _log(log)
    assert [(e["command"], e["content"], e["cwd"]) for e in entries] == [
        ("ADD", "from-the-host-root", "/"),
        ("DEL", "from-the-host-root", "/"),
    ]
    expected_env = invoke.plugin_env(command="ADD", cni_path=path, base_env=in_root.base_env, rt=rt)
    assert entries[0]["env"] == expected_env  # the same environment as without a root
    assert entries[0]["env"]["MULTUS_PY_DELEGATE"] == f"{rt.container_id}/eth0"

    with pytest.raises(CniError) as add_failure:
        await api.add_network_list(cni=outside, net=net, rt=rt)
    with pytest.raises(ExceptionGroup) as del_failure:
        await api.del_network_list(cni=outside, net=net, rt=rt, prev_result=result)

    if only_in_root == "the plugin":
        expected = (ErrorCode.INVALID_NETWORK_CONFIG, f'failed to find plugin "hostfile" in path [{path[0]}]')
    else:
        expected = (ErrorCode.TRY_AGAIN_LATER, f"cannot read {host_file}: No such file or directory")
    assert add_failure.value.code == expected[0]
    assert add_failure.value.msg.endswith(expected[1])
    [del_error] = del_failure.value.exceptions
    assert isinstance(del_error, CniError)
    assert del_error.code == expected[0]
    assert del_error.msg.endswith(expected[1])
    assert len(_log(log)) == 2  # nothing ran outside the root


def test_plugins_are_looked_up_inside_the_root_and_named_by_their_path_there(hostroot: HostRoot) -> None:
    with pytest.raises(CniError) as caught:
        invoke.find_in_path("ghost", [hostroot.bin_dir], root=hostroot.chroot_dir)
    assert caught.value.msg == (
        f'failed to find plugin "ghost" in path [{hostroot.bin_dir}] inside chrootDir {hostroot.chroot_dir}'
    )
    # an absolute symlink in the root resolves inside the root and the path is the root's own
    assert invoke.find_in_path("bridge", [hostroot.bin_dir], root=hostroot.chroot_dir) == (
        f"{hostroot.bin_dir}/bridge"
    )
    with pytest.raises(CniError):  # the daemon's own root has no such directory
        invoke.find_in_path("bridge", [hostroot.bin_dir])
    # a link whose target the root lacks is not found, whatever the daemon's own root holds
    hostroot.inside(f"{hostroot.bin_dir}/dangling").symlink_to(f"{hostroot.bin_dir}/../missing/bridge")
    with pytest.raises(CniError):
        invoke.find_in_path("dangling", [hostroot.bin_dir], root=hostroot.chroot_dir)


@pytest.fixture
def chroot_netns() -> Iterator[Netns]:
    namespace = Netns(unique("mpc-"))
    subprocess.run(["ip", "netns", "add", namespace.name], check=True)
    try:
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace.name], check=False, capture_output=True)


async def test_bridge_host_local_and_macvlan_run_through_the_chroot_and_leave_nothing(
    hostroot: HostRoot, tmp_path: Path, chroot_netns: Netns, host_links: list[str]
) -> None:
    bridge, master = unique("mpcb"), unique("mpcm")
    host_links.extend([bridge, master])
    await run("ip", "link", "add", master, "type", "veth", "peer", "name", f"{master}p")
    await run("ip", "link", "set", master, "up")
    data_dir = tmp_path / "ipam"
    cni = api.CniConfig(path=(hostroot.bin_dir,), timeout=30.0, chroot_dir=hostroot.chroot_dir)
    bridged = network(
        {
            "cniVersion": "1.0.0",
            "name": "chroot-bridge",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipam": {"type": "host-local", "subnet": "10.97.0.0/24", "dataDir": str(data_dir)},
                },
                {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
            ],
        }
    )
    macvlan = network(
        {
            "cniVersion": "1.0.0",
            "name": "chroot-macvlan",
            "type": "macvlan",
            "master": master,
            "ipam": {"type": "host-local", "subnet": "10.96.0.0/24", "dataDir": str(data_dir)},
        }
    )
    eth0 = _rt(chroot_netns.path, "eth0")
    net1 = RuntimeConf(container_id=eth0.container_id, netns=chroot_netns.path, ifname=IfName("net1"))

    bridge_result = await api.add_network_list(cni=cni, net=bridged, rt=eth0)
    macvlan_result = await api.add_network_list(cni=cni, net=macvlan, rt=net1)
    inside = await links(chroot_netns)
    await api.check_network_list(cni=cni, net=bridged, rt=eth0, prev_result=bridge_result)
    leases_while_attached = sorted(p.name for p in data_dir.rglob("10.*"))

    assert bridge_result["ips"][0]["address"] in addresses(inside["eth0"])
    assert macvlan_result["ips"][0]["address"] in addresses(inside["net1"])
    assert inside["net1"]["link_type"] == "ether"
    assert len(leases_while_attached) == 2

    await api.del_network_list(cni=cni, net=macvlan, rt=net1, prev_result=macvlan_result)
    await api.del_network_list(cni=cni, net=bridged, rt=eth0, prev_result=bridge_result)

    assert set(await links(chroot_netns)) == {"lo"}
    assert list(data_dir.rglob("10.*")) == []


async def test_text_file_busy_inside_the_root_is_retried_then_reported_naming_the_root(
    hostroot: HostRoot,
) -> None:
    plugin = f"{hostroot.bin_dir}/busy"
    with hostroot.inside(plugin).open("w") as writer:  # still open for writing: exec fails with ETXTBSY
        writer.write("#!/bin/sh\n")
        writer.flush()
        hostroot.inside(plugin).chmod(0o755)
        with pytest.raises(CniError) as caught:
            await invoke.SubprocessExec(busy_retries=2, busy_delay=0.01).exec_plugin(
                plugin_path=plugin, stdin=b"", env={}, timeout=10, root=hostroot.chroot_dir
            )

    assert caught.value.code == ErrorCode.TRY_AGAIN_LATER
    assert (
        caught.value.msg
        == f"failed to execute plugin {plugin} inside chrootDir {hostroot.chroot_dir}: Text file busy"
    )


async def test_a_root_that_cannot_be_entered_is_an_error_naming_it(tmp_path: Path) -> None:
    gone = str(tmp_path / "no-such-root")

    with pytest.raises(CniError) as caught:
        await invoke.SubprocessExec().exec_plugin(
            plugin_path="/bin/true", stdin=b"", env={}, timeout=10, root=gone
        )

    assert caught.value.code == ErrorCode.INTERNAL
    assert caught.value.msg == f"failed to execute plugin /bin/true: cannot enter chrootDir {gone}"


async def test_gc_and_status_run_inside_the_root_too(hostroot: HostRoot, tmp_path: Path) -> None:
    host_file = hostroot.bin_dir.rsplit("/", 1)[0] + "/host.conf"
    hostroot.write(host_file, "node-state\n")
    hostroot.install_script("hostfile", HOSTFILE_PLUGIN)
    log = tmp_path / "hostfile.jsonl"
    net = network(
        {
            "cniVersion": "1.1.0",
            "name": "hostnet",
            "plugins": [{"type": "hostfile", "hostfile": {"path": host_file, "log": str(log)}}],
        }
    )
    cni = api.CniConfig(path=(hostroot.bin_dir,), timeout=20.0, chroot_dir=hostroot.chroot_dir)

    await api.status_network_list(cni=cni, net=net)
    await api.gc_network_list(cni=cni, net=net, valid_attachments=[])

    assert [(e["command"], e["content"], e["cwd"]) for e in _log(log)] == [
        ("STATUS", "node-state", "/"),
        ("GC", "node-state", "/"),
    ]


async def test_a_plugin_the_root_holds_but_cannot_execute_is_refused_at_lookup_naming_its_path(
    hostroot: HostRoot,
) -> None:
    # before: found (a regular file), so the ADD recorded its intent and then failed at exec with
    # 999 "Permission denied"; now refused at lookup, before anything is recorded
    plugin = f"{hostroot.bin_dir}/noexec"
    hostroot.inside(plugin).write_text("#!/bin/sh\necho '{}'\n")
    hostroot.inside(plugin).chmod(0o644)
    fallback = hostroot.bin_dir.rsplit("/", 1)[0] + "/fallback"
    hostroot.inside(fallback).mkdir()
    hostroot.inside(f"{fallback}/noexec").symlink_to(f"{hostroot.bin_dir}/recorder")
    cni = api.CniConfig(path=(hostroot.bin_dir,), timeout=20.0, chroot_dir=hostroot.chroot_dir)
    net = network({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "noexec"}]})

    with pytest.raises(NotExecutedError) as caught:
        api.preflight_add(cni=cni, net=net, rt=_rt())

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.endswith(
        f'plugin "noexec" found at {plugin} inside chrootDir {hostroot.chroot_dir} is not executable'
    )
    # passed over as a shell's lookup does: an executable one later on the path is the plugin
    assert invoke.find_in_path("noexec", [hostroot.bin_dir, fallback], root=hostroot.chroot_dir) == (
        f"{fallback}/noexec"
    )


def test_a_directory_named_as_the_plugin_is_not_a_plugin(hostroot: HostRoot) -> None:
    hostroot.inside(f"{hostroot.bin_dir}/adir").mkdir()

    with pytest.raises(NotExecutedError) as caught:
        invoke.find_in_path("adir", [hostroot.bin_dir], root=hostroot.chroot_dir)

    assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert caught.value.msg.startswith(f'failed to find plugin "adir" in path [{hostroot.bin_dir}]')


async def test_a_relative_symlink_climbing_out_of_the_root_stops_at_its_top_as_the_kernel_does(
    hostroot: HostRoot, tmp_path: Path
) -> None:
    # ``..`` past the root's top stays at its top: the lookup finds what the chrooted exec runs
    # (the root's own recorder), not a file of the daemon's root
    escape = "../" * 24 + hostroot.bin_dir.lstrip("/") + "/recorder"
    hostroot.inside(f"{hostroot.bin_dir}/climber").symlink_to(escape)
    log = tmp_path / "recorder.jsonl"
    cni = api.CniConfig(path=(hostroot.bin_dir,), timeout=20.0, chroot_dir=hostroot.chroot_dir)
    net = network(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "climber", "recorder": {"log": str(log)}}]}
    )

    await api.add_network_list(cni=cni, net=net, rt=_rt())

    assert invoke.find_in_path("climber", [hostroot.bin_dir], root=hostroot.chroot_dir) == (
        f"{hostroot.bin_dir}/climber"
    )
    assert log.exists()


def test_a_root_that_is_no_longer_a_directory_is_named_by_the_lookup(tmp_path: Path) -> None:
    gone, a_file = tmp_path / "unmounted", tmp_path / "a-file"
    a_file.write_text("")

    for root in (gone, a_file):
        with pytest.raises(NotExecutedError) as caught:
            invoke.find_in_path("bridge", ["/opt/cni/bin"], root=str(root))
        assert caught.value.code == ErrorCode.INVALID_NETWORK_CONFIG
        assert caught.value.msg == f'failed to find plugin "bridge": chrootDir {root} is not a directory'
