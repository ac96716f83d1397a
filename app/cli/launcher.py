"""``multusctl``'s launcher: a script run as ``#!<python> -IS``, without ``site``; and its writer.

A console script (what pip installs as ``multusctl``) runs Python with ``site``: it reads every
``.pth`` file of site-packages and, in an editable install, imports a meta-path finder, which is
about two thirds of the start-up of a daemon-answered query. The launcher is the shim's answer to
the same problem (``app.shim.install``): ``-I -S`` (isolated, no ``site``: no user site, no
``PYTHON*`` variables, no ``.pth``), and ``sys.path`` given explicitly: the directory holding the
``app`` package, then the installing interpreter's site-packages (the dependencies the
database-reading path imports, such as prometheus_client). Both are appended after the standard library,
so nothing there can shadow it. The cyclic garbage collector is off: a run is short and ends in
``_exit`` (``app.cli.main.run``), so what a pass could free goes with the process anyway, and the
passes that thousands of new objects (modules, a decoded answer) would set off are work for
nothing. The paths are fixed when it is written: it is written for one installation
(``multus-install multusctl``, run by whoever installed the package: the image build, or a
developer in a virtualenv) and names that installation's interpreter.

It replaces pip's console script of the same name (which keeps working, slower, where the launcher
is not written); any other file already there is left alone. Standard library and
``app.shim.install`` (its atomic write) only.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from app.shim import bundle
from app.shim import install as shim_install

NAME = "multusctl"
MARK = "# multus-py multusctl launcher, written by multus-install multusctl"
CONSOLE_SCRIPT_IMPORT = "from app.cli.main import main"
"""What pip's console script for multusctl imports: such a file may be replaced."""

TEMPLATE = """#!{interpreter} -IS
{mark}
import gc, sys
sys.path += {paths!r}
gc.disable()
from app.cli.main import run
run()
"""


class LauncherError(RuntimeError):
    """The launcher cannot be written as asked; the message says why."""


def package_paths() -> list[str]:
    """Where this installation's code is: the directory holding ``app``, then site-packages."""
    package_root = str(Path(__file__).resolve().parents[2])
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([package_root, paths["purelib"], paths["platlib"]]))


def default_bin_dir() -> Path:
    """Where pip put this installation's console scripts (``/usr/local/bin``, ``<venv>/bin``)."""
    return Path(sysconfig.get_path("scripts"))


def launcher_text(interpreter: str, paths: list[str]) -> str:
    if not os.path.isabs(interpreter) or any(char.isspace() for char in interpreter):
        raise LauncherError(f"the interpreter path cannot go into a shebang line: {interpreter!r}")
    text = TEMPLATE.format(interpreter=interpreter, mark=MARK, paths=paths)
    if bundle.shebang_overflow(text.partition("\n")[0]):  # it would lose -IS, or not run at all
        raise LauncherError(
            f"the interpreter path is too long for a shebang line (over {bundle.shebang_limit_text()}, "
            f"flags and newline included): {interpreter!r}"
        )
    return text


def is_ours(path: Path) -> bool:
    """True for a launcher this module wrote (its second line carries the mark)."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return MARK.encode() in head.split(b"\n", 2)[1:2]


def replaceable(path: Path) -> bool:
    """Nothing there, our launcher, or pip's console script for multusctl."""
    if not path.exists() and not path.is_symlink():
        return True
    if is_ours(path):
        return True
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return head.startswith(b"#!") and CONSOLE_SCRIPT_IMPORT.encode() in head


def install(bin_dir: Path | None = None, *, interpreter: str | None = None) -> Path:
    """Write ``<bin_dir>/multusctl`` (default: this installation's scripts directory); return it."""
    directory = bin_dir or default_bin_dir()
    if not directory.is_dir():
        raise LauncherError(f"{directory} is not a directory")
    target = directory / NAME
    if not replaceable(target):
        raise LauncherError(f"{target} exists and is neither our launcher nor pip's multusctl: left alone")
    text = launcher_text(interpreter or sys.executable, package_paths())
    shim_install.write_atomically(target, text.encode(), mode=0o755)
    return target
