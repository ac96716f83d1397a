"""``python -m app.demo``: one pod gets real interfaces through multus-py, then everything is undone.

What a node does, in miniature and for real: a bridge network as the cluster network and a
macvlan network (on a veth parent) as a default network, the daemon started from a
daemon-config.json that generates the shim's 00-multus.conf, the shim installed into a CNI bin
dir, and the runtime's part played by this script: a network namespace for the pod, then the
shim executed with the generated conf on stdin for ADD, CHECK and DEL. It prints the CNI result,
the pod's interfaces as the kernel reports them, and the checkpoint the daemon recorded.
Run as root; it leaves nothing behind (``--keep`` keeps the run directory for a look).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from app.shim.install import install_shim

CNI_PLUGIN_DIR = Path("/usr/lib/cni")
PLUGINS = ("bridge", "macvlan", "host-local", "static", "tuning", "loopback")


def say(title: str, body: str = "") -> None:
    print(f"\n=== {title}")
    if body:
        print(body.rstrip())


@contextmanager
def demo_node(root: Path, tag: str) -> Iterator[dict[str, Any]]:
    """Directories, networks and host links for the demo; removed on exit."""
    bridge, parent, peer = f"mdemo{tag}", f"mdv{tag}a", f"mdv{tag}b"
    subprocess.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "link", "set", parent, "up"], check=True)
    try:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for plugin in PLUGINS:
            (bin_dir / plugin).symlink_to(CNI_PLUGIN_DIR / plugin)
        net_d, conf_d = root / "net.d", root / "multus.d"
        net_d.mkdir()
        conf_d.mkdir()
        ipam = {"type": "host-local", "dataDir": str(root / "ipam")}
        primary = {
            "cniVersion": "1.0.0",
            "name": "demo-cluster",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipam": {
                        **ipam,
                        "ranges": [[{"subnet": "10.88.0.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
            ],
        }
        macvlan = {
            "cniVersion": "1.0.0",
            "name": "demo-macvlan",
            "type": "macvlan",
            "master": parent,
            "mode": "bridge",
            "ipam": {**ipam, "ranges": [[{"subnet": "10.89.0.0/24"}]]},
        }
        (net_d / "10-demo-cluster.conflist").write_text(json.dumps(primary, indent=2))
        (conf_d / "20-demo-macvlan.conf").write_text(json.dumps(macvlan, indent=2))
        config = {
            "cniVersion": "1.0.0",
            "socketDir": str(root / "run"),
            "daemonSocketDir": str(root / "run"),
            "stateDir": str(root / "state"),
            "binDir": str(bin_dir),
            "confDir": str(conf_d),
            "cniConfigDir": str(net_d),
            "multusAutoconfigDir": str(net_d),
            "multusConfigFile": "auto",
            "defaultNetworks": ["demo-macvlan"],
            "logLevel": "verbose",
            "logFile": str(root / "daemon.log"),
        }
        (root / "daemon-config.json").write_text(json.dumps(config, indent=2))
        yield {
            "bin_dir": bin_dir,
            "net_d": net_d,
            "config": root / "daemon-config.json",
            "socket": root / "run",
        }
    finally:
        for link in (bridge, parent):
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


@contextmanager
def daemon_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONASYNCIODEBUG"}
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.daemon.main", "--config", str(config)],
            stdout=output,
            stderr=output,
            env=env,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(path: Path, what: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (path.suffix != ".sock" or _answers(path)):
            return
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited with status {process.returncode} before {what}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _answers(socket_path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(32).split()[1] == b"200"
    except (OSError, IndexError):
        return False
    finally:
        sock.close()


def run_shim(shim: Path, command: str, conf: bytes, *, container_id: str, netns: str, bin_dir: Path) -> str:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=demo-pod;"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
    }
    started = time.perf_counter()
    proc = subprocess.run([str(shim)], input=conf, env=env, capture_output=True)
    elapsed = (time.perf_counter() - started) * 1000
    print(
        f"$ CNI_COMMAND={command} multus-shim < 00-multus.conf  -> exit {proc.returncode} in {elapsed:.1f} ms"
    )
    if proc.returncode != 0:
        raise SystemExit(f"shim {command} failed: {proc.stdout.decode()}{proc.stderr.decode()}")
    return proc.stdout.decode()


def pod_interfaces(netns_path: str) -> str:
    from pyroute2 import IPRoute

    lines = []
    with IPRoute(netns=netns_path, flags=0) as ipr:
        addresses: dict[int, list[str]] = {}
        for addr in ipr.get_addr(family=socket.AF_INET):
            addresses.setdefault(addr["index"], []).append(f"{addr.get('address')}/{addr['prefixlen']}")
        for link in ipr.get_links():
            kind = link.get(("linkinfo", "kind")) or "-"
            ips = ", ".join(addresses.get(link["index"], [])) or "-"
            lines.append(f"  {link.get('ifname'):6} {kind:8} {link.get('address')}  {ips}")
    return "\n".join(lines)


def checkpoint_rows(state_db: Path, container_id: str) -> str:
    import sqlite3

    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as connection:
        sandboxes = connection.execute(
            "SELECT state, netns, pod_namespace || '/' || pod_name FROM sandboxes WHERE container_id = ?",
            (container_id,),
        ).fetchall()
        attachments = connection.execute(
            "SELECT position, ifname, network_name, plugin_types, state, "
            "json_extract(result, '$.ips[0].address') "
            "FROM attachments WHERE container_id = ? ORDER BY position",
            (container_id,),
        ).fetchall()
        history = connection.execute(
            "SELECT command, step, trigger, outcome, ifname, network_name, round(duration_ms, 1) "
            "FROM history WHERE container_id = ? ORDER BY id",
            (container_id,),
        ).fetchall()
    out = [f"  sandbox: {row}" for row in sandboxes]
    out += [f"  attachment: {row}" for row in attachments]
    out += [f"  history: {row}" for row in history]
    return "\n".join(out) or "  (nothing recorded)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the demo creates a network namespace, a bridge and a veth pair")
    tag = secrets.token_hex(2)
    root = Path(tempfile.mkdtemp(prefix="multus-demo-"))
    netns = f"multus-demo-{tag}"
    container_id = secrets.token_hex(32)
    say("run directory", str(root))
    try:
        with demo_node(root, tag) as node:
            shim = install_shim(str(node["bin_dir"]))
            say("shim installed", f"{shim}\n{shim.read_text().splitlines()[0]}")
            with daemon_process(node["config"], root / "daemon.log") as daemon:
                wait_for(node["socket"] / "multus.sock", "the daemon to be ready", daemon)
                shim_conf = node["net_d"] / "00-multus.conf"
                wait_for(shim_conf, "00-multus.conf", daemon)
                say("generated 00-multus.conf (the runtime's stdin for the shim)", shim_conf.read_text())
                subprocess.run(["ip", "netns", "add", netns], check=True)
                netns_path = f"/var/run/netns/{netns}"
                try:
                    conf = shim_conf.read_bytes()
                    say("ADD")
                    result = run_shim(
                        shim,
                        "ADD",
                        conf,
                        container_id=container_id,
                        netns=netns_path,
                        bin_dir=node["bin_dir"],
                    )
                    say("CNI result printed by the shim", result)
                    say(
                        "the pod's interfaces (read with pyroute2 inside its netns)",
                        pod_interfaces(netns_path),
                    )
                    say(
                        "checkpoint and history recorded by the daemon",
                        checkpoint_rows(root / "state" / "state.db", container_id),
                    )
                    say("CHECK")
                    run_shim(
                        shim,
                        "CHECK",
                        conf,
                        container_id=container_id,
                        netns=netns_path,
                        bin_dir=node["bin_dir"],
                    )
                    say("DEL")
                    run_shim(
                        shim,
                        "DEL",
                        conf,
                        container_id=container_id,
                        netns=netns_path,
                        bin_dir=node["bin_dir"],
                    )
                    say("the pod's interfaces after DEL", pod_interfaces(netns_path))
                    leases = [
                        p.name for p in (root / "ipam").rglob("*") if p.is_file() and p.name[0].isdigit()
                    ]
                    say("host-local leases left", ", ".join(leases) or "  none")
                    say("checkpoint after DEL", checkpoint_rows(root / "state" / "state.db", container_id))
                finally:
                    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
    finally:
        if args.keep:
            say("kept", str(root))
        else:
            with suppress(OSError):
                shutil.rmtree(root)
    say("done: the demo cleaned up after itself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
