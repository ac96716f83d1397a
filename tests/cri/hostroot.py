"""Builds a "host root" out of bind mounts, then executes a command: the daemon's ``chrootDir``.

Run as ``unshare -m --propagation slave python hostroot.py ROOT [DIRECTORY...] -- COMMAND...`` by the
containerd test: in that fresh mount namespace it mounts the host's top-level directories at the same names
under ROOT (``/usr``, ``/etc``, ``/var``, ``/run``, ``/tmp``, ``/proc``, ``/sys``, ``/dev``; a top-level
symlink such as Debian's ``/bin -> usr/bin`` is recreated as the same symlink) and each DIRECTORY (the
test's own, when no top-level bind holds it already) at its own path, then replaces itself
with COMMAND, so the daemon keeps this process's pid and signals. Upstream's DaemonSet mounts the
node's ``/`` at ``/hostroot``; this is the same view of the same paths, built without touching the
host's mount table: the namespace is a slave of the host's, so nothing mounted here is seen outside,
while mounts the host makes later (containerd's ``/run/netns/cni-*``) still appear here and under
ROOT/run, where a chrooted delegate opens them. The mounts vanish with the namespace's last process.

ROOT must exist and hold nothing but what this script creates (directories and symlinks, whose
directories are empty outside this namespace).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DIRECTORIES = ("tmp", "usr", "etc", "var", "run", "proc", "sys", "dev")
"""Bound recursively (so /run/netns and /sys/fs/cgroup come along) at the same name; /tmp first, since
ROOT itself may lie under /tmp and its copy there should not carry the mounts made below."""
ALIASES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Merged-/usr symlinks on Debian; bound like the directories where they are real directories."""


def entries() -> list[tuple[str, str | None]]:
    """(name, symlink target or None for a bind mount) for every top-level entry to provide."""
    found: list[tuple[str, str | None]] = []
    for name in (*DIRECTORIES, *ALIASES):
        host = Path("/") / name
        if host.is_symlink():
            found.append((name, os.readlink(host)))
        elif host.is_dir():
            found.append((name, None))
    return found


def build(root: Path, extra: list[str]) -> None:
    """Create the mount points and symlinks under ``root`` and bind the host's directories there,
    then each ``extra`` directory (the test's own) at its own path unless a top-level bind holds it."""
    bound = set()
    for name, target in entries():
        path = root / name
        if target is not None:
            if not path.is_symlink():
                path.symlink_to(target)
            continue
        path.mkdir(exist_ok=True)
        subprocess.run(["mount", "--rbind", f"/{name}", str(path)], check=True)
        bound.add(name)
    for directory in extra:
        resolved = Path(directory).resolve()
        if resolved.parts[1] in bound:
            continue
        inside = root / resolved.relative_to("/")
        inside.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--rbind", str(resolved), str(inside)], check=True)


def main(argv: list[str]) -> None:
    """``ROOT [DIRECTORY...] -- COMMAND...``"""
    if "--" not in argv[1:] or argv.index("--") == len(argv) - 1:
        sys.exit("usage: hostroot.py ROOT [DIRECTORY...] -- COMMAND...")
    split = argv.index("--")
    build(Path(argv[0]), argv[1:split])
    command = argv[split + 1 :]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
