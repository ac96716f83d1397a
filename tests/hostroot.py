"""A "host root" for chrootDir tests: the machine's / plus a directory only the root has.

A holder process (``unshare --mount --propagation slave``) bind-mounts the machine's / (recursively)
on a temporary directory and mounts a tmpfs over its ``/opt``, holding ``<bin_dir>``: symlinks
to the reference plugins (absolute, as on a real host: they must be resolved inside the root) and
whatever a test writes there; and, when a test asks, a tmpfs over other directories too (``private``:
``/usr/local/sbin`` to give the root a command of its own, ``/run`` for lock files of its own). Those
mounts exist only in the holder's mount namespace, which is
reached from outside through ``/proc/<holder>/root``: that path is the ``chrootDir``. So, as with
upstream's ``/hostroot``, network namespaces and temporary files are the same inside and outside,
and ``<bin_dir>`` exists only inside. The namespace dies with the holder (it exits when its stdin
closes, also if the test process is killed), so nothing is left mounted.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import CNI_PLUGIN_DIR

PLUGINS = ("bridge", "host-local", "macvlan", "static", "tuning", "loopback", "portmap", "bandwidth", "ptp")
RECORDER_SOURCE = Path(__file__).resolve().parent / "plugins" / "recorder.py"

_HOLDER = r"""
set -e
root="$1"; bin="$2"; shift 2
mount --rbind / "$root"
mount -t tmpfs -o mode=0755 multus-py-hostroot "$root/opt"
for dir in $PRIVATE_DIRS; do mount -t tmpfs -o mode=0755 multus-py-hostroot "$root$dir"; done
mkdir -p "$root$bin"
for plugin in "$@"; do ln -s "$PLUGIN_DIR/$plugin" "$root$bin/$plugin"; done
echo ready
exec cat
"""


@dataclass(frozen=True)
class HostRoot:
    chroot_dir: str
    """What ``chrootDir`` is set to: ``/proc/<holder>/root/<directory>``."""
    bin_dir: str
    """A plugin directory that exists only inside the root (``/opt/multus-py-<tag>/bin``)."""
    private: tuple[str, ...] = ("/opt",)
    """Directories of the root that are its own (empty tmpfs mounts), not the machine's."""

    def inside(self, path: str) -> Path:
        """The path, from outside, of ``path`` as the root sees it."""
        return Path(self.chroot_dir) / path.lstrip("/")

    def install_script(self, name: str, source: str) -> str:
        """Put an executable Python script plugin into ``bin_dir`` (inside the root only)."""
        target = self.inside(f"{self.bin_dir}/{name}")
        target.write_text(f"#!{sys.executable} -IS\n{source}")
        target.chmod(0o755)
        return f"{self.bin_dir}/{name}"

    def write(self, path: str, text: str) -> None:
        """Write a file that only the root holds (``path`` must be under a ``private`` directory)."""
        target = self._private(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def symlink(self, path: str, target: str) -> None:
        """Make ``path`` (under a ``private`` directory) a symlink to ``target``, as the root reads it."""
        link = self._private(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    def _private(self, path: str) -> Path:
        assert any(path.startswith(f"{directory}/") for directory in self.private), (
            f"only {', '.join(self.private)} are private to the root"
        )
        return self.inside(path)


@contextmanager
def host_root(directory: Path, *, bin_dir: str = "", private: Sequence[str] = ()) -> Iterator[HostRoot]:
    """A host root under ``directory`` (created), alive for the ``with`` block; ``bin_dir``: its
    plugin directory (default: a new one), e.g. another root's, as the same host mounted again;
    ``private``: absolute directories (existing on the machine) that the root has empty, of its own."""
    mount_point = directory / "hostroot"
    mount_point.mkdir(parents=True)
    bin_dir = bin_dir or f"/opt/multus-py-{secrets.token_hex(4)}/bin"
    holder = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "sh",
            "-c",
            _HOLDER,
            "holder",
            str(mount_point),
            bin_dir,
            *PLUGINS,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PLUGIN_DIR": CNI_PLUGIN_DIR,
            "PRIVATE_DIRS": " ".join(private),
        },
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert holder.stderr is not None
    try:
        line = holder.stdout.readline()
        if line.strip() != b"ready":
            raise AssertionError(f"host root holder failed: {holder.stderr.read().decode()}")
        root = HostRoot(
            chroot_dir=f"/proc/{holder.pid}/root{mount_point}", bin_dir=bin_dir, private=("/opt", *private)
        )
        recorder = RECORDER_SOURCE.read_text()
        root.install_script("recorder", recorder)
        yield root
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
