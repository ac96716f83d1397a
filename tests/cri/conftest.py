"""Fixtures of the container-runtime test: one containerd for the session, a host root per test.

``containerd`` is Debian's containerd started on a config of its own under ``/tmp/mpc-*`` (root,
state, socket, CNI dirs; see ``tests.cri.runtime``); its CNI bin dir holds ``multus-shim`` installed
by ``multus-install`` (as the DaemonSet's init container does) and the reference ``loopback``, which
containerd's CRI plugin runs for every sandbox's ``lo``. Its CNI conf dir is empty until a test
hands it the daemon's conf (``Containerd.use_cni_conf``). Teardown removes any sandbox a failed test
left, stops containerd and removes its directory.

``host_root`` is an empty directory that ``tests/cri/hostroot.py`` fills with bind mounts inside the
daemon's own mount namespace (``cluster.daemon_wrapper``); the host never sees those mounts, so
teardown only removes empty directories and symlinks, and refuses to touch a mount point.
Re-exports the e2e fixtures ``cluster``, ``kube`` and ``started``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CNI_PLUGIN_DIR, child_environment
from tests.cri.runtime import Containerd
from tests.e2e.conftest import cluster, installed_shim, kube, started

__all__ = ["cluster", "installed_shim", "kube", "started"]  # re-exported fixtures

HOSTROOT_SCRIPT = Path(__file__).with_name("hostroot.py")


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (apt-get install containerd runc; ./dev.sh installs them)")
    return path


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    for program in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare"):
        _require(program)
    runtime = Containerd(Path(tempfile.mkdtemp(prefix="mpc-", dir="/tmp")))
    try:
        runtime.cni_bin_dir.mkdir(parents=True)
        installed = subprocess.run(
            [sys.executable, "-m", "app.cli.install", "install", "--cni-bin-dir", str(runtime.cni_bin_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_environment(),
        )
        assert installed.returncode == 0, installed.stderr
        (runtime.cni_bin_dir / "loopback").symlink_to(Path(CNI_PLUGIN_DIR) / "loopback")
        runtime.start()
        yield runtime
    finally:
        runtime.stop()
        runtime.remove()


def daemon_wrapper(root: Path, *directories: Path) -> list[str]:
    """The command the daemon runs under: a mount namespace of its own where ``root`` is a host root
    that also shows ``directories`` (the test's own) at their paths."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "slave",
        sys.executable,
        str(HOSTROOT_SCRIPT),
        str(root),
        *map(str, directories),
        "--",
    ]


@pytest.fixture
def host_root() -> Iterator[Path]:
    """An empty directory for ``hostroot.py`` to fill (in the daemon's mount namespace only)."""
    root = Path(tempfile.mkdtemp(prefix="mph-", dir="/tmp"))
    try:
        yield root
    finally:
        with open("/proc/self/mountinfo") as mountinfo:
            mounted = [line.split()[4] for line in mountinfo if line.split()[4].startswith(f"{root}/")]
        assert not mounted, f"mounted in the test's own namespace, left in place: {mounted}"
        for directory, subdirectories, files in os.walk(root, topdown=False):
            for name in files:  # only ever the symlinks hostroot.py made
                assert Path(directory, name).is_symlink(), f"{directory}/{name} in the host root"
                Path(directory, name).unlink()
            for name in subdirectories:
                entry = Path(directory, name)
                if entry.is_symlink():
                    entry.unlink()
                else:
                    entry.rmdir()  # an empty mount point: fails rather than empty a directory
        root.rmdir()
