"""Installing on a node as the DaemonSet does, running pods through it, and removing it again.

Each test runs the manifests' own container commands (``multus-install ...``, ``multus-daemon ...``)
against a node root in a temporary directory, with a real daemon, the installed shim executed the
way a runtime does, real bridge/host-local plugins and real network namespaces.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.cli import install
from app.shim.install import launcher_text
from tests import hostless
from tests.conftest import child_environment
from tests.deploy.conftest import NODE_PYTHON, Node, tree
from tests.e2e.conftest import new_container_id

pytestmark = pytest.mark.slow  # starts daemon or emulator processes

VERSION_REPLY = (
    b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)


def _left_by_others(node: Node, kubelet_dirs: list[Path], entry: str) -> bool:
    """What may remain after uninstall besides the node's own files: the directories the kubelet
    created for the DaemonSet's hostPath volumes (and their parents), and host-local's bookkeeping
    of the primary network (its lock and last-reserved files; DEL released the lease itself)."""
    path = node.root / entry
    if path.is_dir() and any(directory == path or path in directory.parents for directory in kubelet_dirs):
        return True
    networks = node.path("/var/lib/cni/networks")
    return path == networks or (networks in path.parents and (path.is_dir() or not path.name[0].isdigit()))


def test_install_add_and_uninstall_leave_the_node_as_it_was(node: Node) -> None:
    before = tree(node.root)
    kubelet_dirs = node.kubelet_creates_host_directories()

    installed = node.install()
    assert installed.returncode == 0, installed.stderr
    launcher = node.bin_dir / "multus-shim"
    # the shim's own runtime, patched for the bin dir's path on the node
    assert re.fullmatch(
        r"#!/opt/cni/bin/\.multus-shim\.d/runtime-[^/]+/bin/python3\.\d+ -ISXutf8",
        launcher.read_text().splitlines()[0],
    )
    plugin = node.bin_dir / "passthru"
    assert os.access(plugin, os.X_OK), "the auxiliary chain's passthru is installed next to the shim"
    node.start_daemon()
    generated = node.conf_dir / "00-multus.conf"
    node.wait_for(generated.exists, "00-multus.conf")
    assert node.runtime_conf() == generated
    assert json.loads(generated.read_text())["type"] == "multus-shim"

    netns, container_id = node.new_netns(), new_container_id()
    added = node.runtime_call("ADD", netns, container_id)
    assert added.returncode == 0, added.stdout + added.stderr + node.daemon_log()
    assert [ip["address"].startswith("10.246.0.") for ip in added.json()["ips"]] == [True]
    assert "eth0" in netns.links()
    deleted = node.runtime_call("DEL", netns, container_id)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "eth0" not in netns.links()

    refused = node.uninstall()
    assert refused.returncode == 1
    assert "answers on" in refused.stderr
    assert launcher.exists()
    assert generated.exists()

    assert node.stop_daemon() == 0
    assert generated.exists()  # kept while the daemon is away: the node never loses its CNI conf
    removed = node.uninstall()
    assert removed.returncode == 0, removed.stderr

    after = tree(node.root)
    assert {entry: after.get(entry) for entry in before} == before
    leftovers = sorted(
        entry for entry in set(after) - set(before) if not _left_by_others(node, kubelet_dirs, entry)
    )
    assert leftovers == []


def test_a_shim_executed_during_reinstalls_runs_the_old_or_the_new_version(node: Node) -> None:
    interpreters = ["/usr/bin/python3", f"/usr/bin/{NODE_PYTHON}"]
    assert all(os.access(path, os.X_OK) for path in interpreters)
    assert node.install("--interpreter", interpreters[0]).returncode == 0
    launcher = node.bin_dir / "multus-shim"
    versions = {launcher_text(interpreter) for interpreter in interpreters}
    failures: list[str] = []
    runs: list[tuple[float, float]] = []
    installs: list[tuple[float, float]] = []
    stop = threading.Event()

    def execute_repeatedly() -> None:
        while not stop.is_set():
            start = time.monotonic()
            done = subprocess.run(
                [str(launcher)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30, check=False
            )
            runs.append((start, time.monotonic()))
            if done.returncode != 0 or done.stdout != VERSION_REPLY:
                failures.append(f"exit {done.returncode}: {done.stdout!r} {done.stderr!r}")

    runner = threading.Thread(target=execute_repeatedly, name="shim-runner")
    runner.start()
    try:
        for round_number in range(20):
            start = time.monotonic()
            reinstalled = node.install("--interpreter", interpreters[round_number % 2])
            installs.append((start, time.monotonic()))
            assert reinstalled.returncode == 0, reinstalled.stderr
            assert launcher.read_text() in versions
    finally:
        stop.set()
        runner.join(timeout=60)

    assert failures == []  # no torn launcher or module, no "Text file busy"
    overlapping = [run for run in runs if any(run[0] < end and start < run[1] for start, end in installs)]
    assert overlapping, "no shim execution overlapped a reinstall"


def test_uninstall_leaves_a_foreign_shim_and_the_conf_that_calls_it(node: Node) -> None:
    foreign = node.bin_dir / "multus-shim"
    foreign.write_bytes(b"\x7fELF upstream's Go shim")
    foreign.chmod(0o755)
    foreign_passthru = node.bin_dir / "passthru"
    foreign_passthru.write_bytes(b"\x7fELF upstream's Go passthru")
    conf = node.conf_dir / "00-multus.conf"
    conf.write_text('{"cniVersion":"1.0.0","name":"multus-cni-network","type":"multus-shim"}')

    removed = node.uninstall()

    assert removed.returncode == 0, removed.stderr
    assert foreign.read_bytes() == b"\x7fELF upstream's Go shim"
    assert foreign_passthru.read_bytes() == b"\x7fELF upstream's Go passthru"
    assert conf.exists()


def _static_conf_mode(node: Node, indicator: str) -> bytes:
    """daemon-config with a conf file instead of ``auto``, and a readiness indicator; the conf's bytes."""
    shim_conf = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": "/run/multus",
        }
    ).encode()
    (node.config_dir / "00-multus.conf").write_bytes(shim_conf)
    config = json.loads((node.config_dir / "daemon-config.json").read_text())
    config["multusConfigFile"] = str(node.config_dir / "00-multus.conf")
    config["readinessindicatorfile"] = indicator
    (node.config_dir / "daemon-config.json").write_text(json.dumps(config))
    return shim_conf


def test_a_static_shim_conf_is_installed_once_the_readiness_indicator_exists(node: Node) -> None:
    shim_conf = _static_conf_mode(node, "/run/primary-cni/ready")
    indicator = node.path("/run/primary-cni/ready")
    target = node.conf_dir / "00-multus.conf"
    command = node.container_command(node.documents, "multus-py", "install-shim")
    installer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node.wait_for((node.bin_dir / "multus-shim").exists, "the shim")
        assert installer.poll() is None  # waiting for the primary network
        assert not target.exists()
        indicator.parent.mkdir(parents=True)
        indicator.write_text("")
        _stdout, stderr = installer.communicate(timeout=30)
    finally:
        if installer.poll() is None:
            installer.kill()
            installer.wait()
    assert installer.returncode == 0, stderr
    assert target.read_bytes() == shim_conf
    assert (target.stat().st_mode & 0o777) == 0o600

    removed = node.uninstall()
    assert removed.returncode == 0, removed.stderr
    assert not target.exists()
    assert not (node.bin_dir / ".multus-shim.d").exists()


def test_a_static_shim_conf_is_not_installed_without_the_readiness_indicator(node: Node) -> None:
    _static_conf_mode(node, "/run/primary-cni/ready")

    installed = node.install("--readiness-timeout", "0.3")

    assert installed.returncode == 1
    assert "readiness indicator file /run/primary-cni/ready did not appear" in installed.stderr
    assert not (node.conf_dir / "00-multus.conf").exists()


def test_a_static_shim_conf_that_is_not_json_is_refused(node: Node) -> None:
    _static_conf_mode(node, "")
    (node.config_dir / "00-multus.conf").write_text("{not json")

    installed = node.install()

    assert installed.returncode == 1
    assert "is not JSON" in installed.stderr
    assert sorted(path.name for path in node.conf_dir.iterdir()) == ["10-primary.conflist"]


def test_purging_the_state_is_refused_while_a_daemon_holds_the_database(node: Node) -> None:
    assert node.install().returncode == 0
    lock = node.path("/var/lib/multus-py/state.db.lock")
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = node.uninstall()
    assert refused.returncode == 1
    assert "stop it before --purge-state" in refused.stderr
    assert (node.bin_dir / "multus-shim").exists()


def test_install_refuses_a_node_without_the_interpreter_it_is_told_to_use(node: Node) -> None:
    node.path("/usr/bin/python3").unlink()
    before = tree(node.bin_dir)

    installed = node.install("--interpreter", "/usr/bin/python3")

    assert installed.returncode == 1
    assert "the node has no /usr/bin/python3" in installed.stderr
    assert tree(node.bin_dir) == before


def test_a_node_without_python_gets_the_shim_with_its_own_runtime(node: Node) -> None:
    for python in node.path("/usr/bin").glob("python*"):
        python.unlink()

    installed = node.install()

    assert installed.returncode == 0, installed.stderr
    done = hostless.run(
        ["/opt/cni/bin/multus-shim"], env={"CNI_COMMAND": "VERSION"}, binds={"/opt/cni/bin": node.bin_dir}
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_REPLY, b"")


def test_a_read_only_bin_dir_is_refused_and_the_previous_install_stays(node: Node) -> None:
    assert node.install().returncode == 0
    before = tree(node.bin_dir)
    script = (
        f"mount --bind {node.bin_dir} {node.bin_dir} && mount -o remount,bind,ro {node.bin_dir} && "
        + " ".join(node.container_command(node.documents, "multus-py", "install-shim"))
    )
    refused = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_environment(),
    )
    assert refused.returncode == 1
    assert f"the CNI bin dir {node.bin_dir} is not writable" in refused.stderr
    assert tree(node.bin_dir) == before


@pytest.mark.parametrize(
    ("links", "outcome"),
    [
        ({"python3": "python3.12", "python3.12": None}, "ok"),
        ({"python3": "python3.9", "python3.9": None}, "error: Python 3.9"),
        ({"python3": "/etc/alternatives/python3"}, "warning: cannot follow"),
        ({"python3": "/usr/libexec/python"}, "warning: cannot follow"),
        ({"python3": "../lib/python-3"}, "warning: cannot follow"),
        ({"python3": None}, "warning: cannot tell the Python version"),
        ({}, "error: the node has no /usr/bin/python3"),
    ],
)
def test_the_interpreter_is_checked_inside_the_host_root(
    tmp_path: Path, links: dict[str, str | None], outcome: str
) -> None:
    usr_bin = tmp_path / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    for name, target in links.items():
        if target is None:
            (usr_bin / name).write_bytes(b"")
            (usr_bin / name).chmod(0o755)
        else:
            (usr_bin / name).symlink_to(target)
    if outcome.startswith("error: "):
        with pytest.raises(install.InstallError, match=re.escape(outcome.removeprefix("error: "))):
            install.check_interpreter(tmp_path, "/usr/bin/python3")
        return
    warnings = install.check_interpreter(tmp_path, "/usr/bin/python3")
    if outcome == "ok":
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert outcome.removeprefix("warning: ") in warnings[0]


def test_the_interpreter_of_an_invisible_usr_is_not_checked(tmp_path: Path) -> None:
    assert install.check_interpreter(tmp_path, "/usr/bin/python3") == [
        f"cannot check the interpreter /usr/bin/python3: {tmp_path}/usr/bin is not visible here"
    ]


def test_the_installer_imports_neither_the_store_nor_the_kubernetes_client() -> None:
    code = "import sys, app.cli.install; print(' '.join(sorted(sys.modules)))"
    modules = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = [
        name
        for name in modules
        if name.split(".")[0] in {"sqlalchemy", "alembic", "kubernetes_asyncio", "aiohttp", "pyroute2"}
    ]
    assert heavy == []


def test_purging_removes_the_daemons_files_by_name_and_keeps_what_it_does_not_know(node: Node) -> None:
    assert node.install().returncode == 0
    state, spool, run = (
        node.path("/var/lib/multus-py"),
        node.path("/var/lib/multus-py/spool"),
        node.path("/run/multus"),
    )
    spool.mkdir(parents=True)
    run.mkdir(parents=True)
    daemon_files = [
        *(state / name for name in ("state.db", "state.db-wal", "state.db-shm", "state.db.lock")),
        *(
            spool / name
            for name in ("del-1-2-abc.json", "del-3-4-def.json.rejected", ".del-5-6-ghi.json.tmp")
        ),
        *(run / name for name in ("multus.sock", "multus.sock.lock", "multus-query.sock")),
        # what a daemon killed while it replaced the restart marker, or 00-multus.conf, left
        run / ".multus.restarting.k1ll3d",
        node.conf_dir / ".00-multus.conf.k1ll3d",
    ]
    for path in daemon_files:
        path.write_bytes(b"")
    operator_notes = state / "notes.txt"
    operator_notes.write_text("mine")
    not_a_temporary = node.conf_dir / ".00-multus.conf.d"  # a directory of a temporary's name made
    not_a_temporary.mkdir()  # the purge raise IsADirectoryError half way

    removed = node.uninstall()

    assert removed.returncode == 0, removed.stderr
    assert [path for path in daemon_files if path.exists()] == []
    assert not spool.exists()
    assert not run.exists()
    assert operator_notes.read_text() == "mine"  # and so its directory stays
    assert not_a_temporary.is_dir()
