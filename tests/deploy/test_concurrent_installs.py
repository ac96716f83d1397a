"""Two ``multus-install`` processes at once on one node take turns, and leave a complete install.

A DaemonSet's rolling update with ``maxSurge``, or an operator running the installer by hand during
one, starts a second installer while the first is writing the shim's runtime, its launcher and
``passthru``, or removing old runtimes. Each test runs real installer processes against a bin dir in
a temporary directory (``--host-root /``, so the launcher they write can be executed from here). The
first is stopped at a named step of its install (``MULTUS_PY_INSTALL_PAUSE_AT``: it sends itself
SIGSTOP there, holding whatever it holds), the second is started, and the first continued once the
second has either finished or said that it waits for the install lock. Whatever the order, the node
must end with a launcher that names a runtime that is there and answers VERSION, or, after an
uninstall, with nothing of ours.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli import install as install_cli
from app.sandbox.processes import wait_until
from app.shim import bundle
from app.shim.install import IMPL_DIR_NAME, INSTALL_LOCK_NAME, Step, is_our_launcher, runtime_of
from tests.conftest import child_environment
from tests.deploy.conftest import tree
from tests.shim.helpers import variant

pytestmark = pytest.mark.slow  # starts many installer processes

VERSION_REPLY = (
    b'{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
)
WAITING = "waiting for another multus-install to finish"
DEADLINE = 60.0
"""Generous: the machine running the tests is shared and loaded."""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three builds of the shim's runtime, each installed into a runtime directory of its own."""
    directory = tmp_path_factory.mktemp("bundles")
    built = directory / "built"
    bundle.build_bundle(built)
    return [variant(built, directory / tag, tag) for tag in ("a", "b", "c")]


@dataclass
class Node:
    """A node's CNI bin and conf dirs, and the installer processes a test started against them."""

    root: Path
    started: list[Installer]

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def impl_dir(self) -> Path:
        return self.bin_dir / IMPL_DIR_NAME

    @property
    def lock(self) -> Path:
        return self.bin_dir / INSTALL_LOCK_NAME

    def start(self, *arguments: str | Path, pause_at: Step | None = None) -> Installer:
        """``multus-install <arguments>`` for this node, in its own process group."""
        number = len(self.started)
        command = [
            sys.executable,
            "-m",
            "app.cli.install",
            *map(str, arguments),
            "--host-root",
            "/",
            "--cni-bin-dir",
            str(self.bin_dir),
            "--cni-conf-dir",
            str(self.root / "conf"),
        ]
        env = child_environment(**{install_cli.PAUSE_ENV: pause_at.value if pause_at else ""})
        stderr = self.root / f"installer-{number}.stderr"
        with stderr.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=sink, env=env, start_new_session=True
            )
        installer = Installer(process, stderr)
        self.started.append(installer)
        return installer

    def run(self, *arguments: str | Path) -> Installer:
        installer = self.start(*arguments)
        installer.finish()
        return installer

    def runtime_name(self, source: Path) -> str:
        """The runtime directory installing ``source`` into this bin dir creates."""
        return bundle.runtime_name(bundle.read_manifest(source), str(self.impl_dir))

    def runtimes(self) -> set[str]:
        return {path.name for path in bundle.installed_runtimes(self.impl_dir)}


@dataclass
class Installer:
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def is_stopped(self) -> bool:
        """In the stopped state (SIGSTOP) now; not once it has exited."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except FileNotFoundError:  # reaped
            return False
        return stat.rpartition(")")[2].split()[0] in ("T", "t")

    def stopped(self) -> bool:
        """True once it has stopped itself at its pause step (fails if it exited instead)."""
        assert self.process.poll() is None, f"exited {self.process.returncode}: {self.stderr}"
        return self.is_stopped()

    def waits_or_went_on(self) -> bool:
        """True once it says it waits for the lock, or has gone past it (stopped at its pause step, or
        exited): whichever it does, starting it is over."""
        return WAITING in self.stderr or self.process.poll() is not None or self.is_stopped()

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def finish(self) -> int:
        return self.process.wait(timeout=DEADLINE)


@pytest.fixture
def node() -> Iterator[Node]:
    """Bin dir (holding a plugin of someone else's) and conf dir, under a short path: the launcher's
    ``#!`` line names the runtime's interpreter by its path, and Linux reads 256 bytes of it."""
    root = Path(tempfile.mkdtemp(prefix="minst-", dir="/tmp"))
    (root / "bin").mkdir()
    (root / "conf").mkdir()
    (root / "bin" / "bridge").write_bytes(b"\x7fELF not ours")
    (root / "bin" / "bridge").chmod(0o755)
    the_node = Node(root, [])
    try:
        yield the_node
    finally:
        for installer in the_node.started:
            if installer.process.poll() is None:
                os.killpg(installer.process.pid, signal.SIGKILL)  # its own group: it and a patchelf
                installer.process.wait()
        shutil.rmtree(root, ignore_errors=True)


def assert_installed(node: Node, source: Path) -> None:
    """A complete install of ``source``: the launcher names its runtime, which is there and runs the
    shim; ``passthru`` is there; no staging, set-aside or temporary file is left; at most the
    previous runtime is kept beside it."""
    launcher = node.bin_dir / "multus-shim"
    assert is_our_launcher(launcher)
    assert runtime_of(launcher) == node.runtime_name(source)
    assert bundle.installed_for(node.impl_dir / node.runtime_name(source)) == str(
        node.impl_dir / node.runtime_name(source)
    )
    done = subprocess.run(
        [str(launcher)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=DEADLINE, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_REPLY, b"")
    assert (node.bin_dir / "passthru").is_file()
    leftovers = [
        path.name
        for directory in (node.bin_dir, node.impl_dir)
        for path in directory.iterdir()
        if path.name.startswith((".staging-", ".old-")) or ".tmp-" in path.name
    ]
    assert leftovers == []
    assert node.runtime_name(source) in node.runtimes()
    assert len(node.runtimes()) <= 2


def assert_uninstalled(node: Node) -> None:
    assert sorted(path.name for path in node.bin_dir.iterdir()) == ["bridge"]


@pytest.mark.parametrize("second", ["install", "uninstall"])
@pytest.mark.parametrize("step", list(Step))
def test_an_installer_started_during_another_waits_for_it_and_the_node_ends_consistent(
    node: Node, bundles: list[Path], step: Step, second: str
) -> None:
    assert node.run("install", "--bundle", bundles[0]).returncode == 0
    first = node.start("install", "--bundle", bundles[1], pause_at=step)
    wait_until(first.stopped, what=f"the first installer stopped at {step}", timeout=DEADLINE)

    arguments = ("install", "--bundle", bundles[2]) if second == "install" else ("uninstall",)
    other = node.start(*arguments)
    wait_until(other.waits_or_went_on, what=f"the {second} waiting or done", timeout=DEADLINE)
    first.resume()

    assert first.finish() == 0, first.stderr
    assert other.finish() == 0, other.stderr
    if second == "install":
        assert_installed(node, bundles[2])
    else:
        assert_uninstalled(node)
    assert WAITING in other.stderr  # it took its turn after the first, which held the lock throughout


def test_installers_started_together_again_and_again_leave_a_complete_install(
    node: Node, bundles: list[Path]
) -> None:
    for _ in range(5):
        installers = [node.start("install", "--bundle", source) for source in bundles]
        for installer in installers:
            assert installer.finish() == 0, installer.stderr
        launcher_runtime = runtime_of(node.bin_dir / "multus-shim")
        last = [source for source in bundles if node.runtime_name(source) == launcher_runtime]
        assert len(last) == 1, launcher_runtime
        assert_installed(node, last[0])


def test_an_installer_killed_while_it_holds_the_lock_does_not_block_the_next(
    node: Node, bundles: list[Path]
) -> None:
    assert node.run("install", "--bundle", bundles[0]).returncode == 0
    killed = node.start("install", "--bundle", bundles[1], pause_at=Step.RUNTIME_INSTALLED)
    wait_until(killed.stopped, what="the installer stopped with its runtime in place", timeout=DEADLINE)
    os.killpg(killed.process.pid, signal.SIGKILL)
    assert killed.finish() == -signal.SIGKILL
    assert node.lock.exists()

    after = node.run("install", "--bundle", bundles[2], "--lock-timeout", str(DEADLINE))

    assert after.returncode == 0, after.stderr
    assert WAITING not in after.stderr  # the kernel released the killed one's lock
    assert_installed(node, bundles[2])
    # the killed one's runtime, which no launcher names, went with the next install
    assert node.runtimes() == {node.runtime_name(bundles[0]), node.runtime_name(bundles[2])}


def test_an_installer_gives_up_after_the_lock_timeout_naming_the_lock(
    node: Node, bundles: list[Path]
) -> None:
    assert node.run("install", "--bundle", bundles[0]).returncode == 0
    before = tree(node.bin_dir)
    with node.lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = node.run("install", "--bundle", bundles[1], "--lock-timeout", "0.2")

    assert refused.returncode == 1
    assert f"another multus-install has held the install lock {node.lock} for over 0.2 s" in refused.stderr
    assert tree(node.bin_dir) == before
    assert_installed(node, bundles[0])


def test_an_install_waiting_while_an_uninstall_removes_the_lock_file_still_excludes_the_next(
    node: Node, bundles: list[Path]
) -> None:
    """The uninstall removes the lock file it holds; the install that waited on that file must hold
    the one at the lock's path afterwards, or a third installer would lock a new file and run beside
    it."""
    assert node.run("install", "--bundle", bundles[0]).returncode == 0
    uninstall = node.start("uninstall", pause_at=Step.LOCKED)
    wait_until(uninstall.stopped, what="the uninstall stopped holding the lock", timeout=DEADLINE)
    waiting = node.start("install", "--bundle", bundles[1], pause_at=Step.RUNTIME_INSTALLED)
    wait_until(waiting.waits_or_went_on, what="the install waiting", timeout=DEADLINE)
    uninstall.resume()
    assert uninstall.finish() == 0, uninstall.stderr
    wait_until(waiting.stopped, what="the install stopped with its runtime in place", timeout=DEADLINE)

    third = node.start("install", "--bundle", bundles[2])
    wait_until(third.waits_or_went_on, what="the third installer waiting or done", timeout=DEADLINE)
    waiting.resume()

    assert waiting.finish() == 0, waiting.stderr
    assert third.finish() == 0, third.stderr
    assert WAITING in third.stderr
    assert_installed(node, bundles[2])


def test_a_shim_uninstalled_while_an_install_waits_for_the_primary_network_gets_no_conf(
    node: Node, bundles: list[Path]
) -> None:
    """The install lets the lock go while it waits for the readiness indicator (that wait is for the
    primary network, which may take long, not for another installer); an uninstall may run meanwhile,
    and then the conf calling the removed shim must not be written: the runtime would fail every pod."""
    shim_conf = node.root / "configmap" / "00-multus.conf"
    shim_conf.parent.mkdir()
    shim_conf.write_text('{"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim"}')
    indicator = node.root / "primary-ready"
    config = node.root / "configmap" / "daemon-config.json"
    config.write_text(
        json.dumps({"multusConfigFile": str(shim_conf), "readinessindicatorfile": str(indicator)})
    )
    first = node.start("install", "--bundle", bundles[0], "--daemon-config", config)
    wait_until(
        lambda: (node.bin_dir / "passthru").exists(), what="the shim and passthru installed", timeout=DEADLINE
    )

    removed = node.run("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert first.process.poll() is None  # still waiting for the primary network, holding no lock
    indicator.write_text("")

    assert first.finish() == 1
    assert f"{node.bin_dir}/multus-shim was removed (or replaced) while this install waited" in first.stderr
    assert list((node.root / "conf").iterdir()) == []
    assert_uninstalled(node)
