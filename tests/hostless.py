"""Run a program as on a node without Python: a private mount namespace in which the host's Python
interpreters, Python library directories, libpython, libc, libm and dynamic loader are hidden.

``unshare -m`` (util-linux) makes the namespace and executes a small Python helper in it, which
bind-mounts empty files and directories over what must be hidden (through ``ctypes``: Python 3.11 has
no ``os.mount``), optionally bind-mounts directories at node paths (``/opt/cni/bin`` of a node root),
and then replaces itself with the program: the program keeps the process id, so its
``/proc/<pid>/maps`` can be read from outside. Nothing changes outside the namespace.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HIDDEN_GLOBS = (
    "/usr/bin/python*",
    "/usr/local/bin/python*",
    "/usr/lib/python*",
    "/usr/local/lib/python*",
    "/usr/lib/*-linux-gnu/libpython*",
    "/usr/local/lib/libpython*",
    "/usr/lib/*-linux-gnu/libc.so*",
    "/usr/lib/*-linux-gnu/libm.so*",
    "/usr/lib/*-linux-gnu/libz.so*",
    "/usr/lib/*-linux-gnu/ld-linux*",
    "/lib64/ld-linux*",
)


def hidden_paths() -> list[str]:
    """Everything to hide, symlinks resolved (a bind mount covers the file a path leads to)."""
    paths = {os.path.realpath(path) for pattern in HIDDEN_GLOBS for path in glob.glob(pattern)}
    # the interpreter running the tests (a pyenv or venv Python lives outside /usr)
    paths.add(os.path.realpath(sys.base_prefix))
    paths.discard("/usr")
    existing = sorted(path for path in paths if os.path.exists(path))
    # what lies inside a hidden directory is hidden with it (and could not be mounted over)
    return [path for path in existing if not any(path.startswith(other + "/") for other in existing)]


HELPER = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
def mount(source, target, fstype, flags):
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)
plan = json.loads(sys.argv[1])
mount("none", "/", None, MS_REC | MS_PRIVATE)
for node_path, source in plan["binds"]:
    if not os.path.isdir(node_path):  # a tmpfs over its deepest existing ancestor makes room for it
        ancestor = os.path.dirname(node_path)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        if ancestor == "/":
            raise SystemExit(f"cannot make room for {node_path}")
        mount("tmpfs", ancestor, "tmpfs", 0)
        os.makedirs(node_path)
    mount(source, node_path, None, MS_BIND)
for path in plan["hide"]:
    mount(plan["empty_dir"] if os.path.isdir(path) else plan["empty_file"], path, None, MS_BIND)
os.execve(plan["argv"][0], plan["argv"], plan["env"])
"""


def command(
    argv: Sequence[str], *, env: Mapping[str, str], binds: Mapping[str, Path] | None = None
) -> tuple[list[str], Path]:
    """The command line that runs ``argv`` hostless, and a scratch directory for the caller to remove."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed"
    scratch = Path(tempfile.mkdtemp(prefix="hostless-"))
    (scratch / "empty-dir").mkdir()
    (scratch / "empty-file").write_bytes(b"")
    plan = {
        "binds": [[node_path, str(source)] for node_path, source in (binds or {}).items()],
        "hide": hidden_paths(),
        "empty_dir": str(scratch / "empty-dir"),
        "empty_file": str(scratch / "empty-file"),
        "argv": list(argv),
        "env": dict(env),
    }
    python = os.path.realpath(sys.executable)
    return [unshare, "-m", python, "-I", "-S", "-c", HELPER, json.dumps(plan)], scratch


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes = b"",
    binds: Mapping[str, Path] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` hostless to completion."""
    line, scratch = command(argv, env=env, binds=binds)
    try:
        return subprocess.run(line, input=stdin, capture_output=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
