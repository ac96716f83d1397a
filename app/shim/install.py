"""Installs the shim into a CNI bin directory: a tiny launcher plus either a self-contained runtime
(``app.shim.bundle``: interpreter, its libraries and loader, the shim precompiled; the default) or a
precompiled module run by a Python the host has (``interpreter=``).

Called by the daemon (or an installer job) when it puts ``multus-shim`` into the node's CNI bin dir;
never on the CNI hot path, so it may use any standard library module. It imports nothing from ``app``:
it reads ``shim.py`` as a file.

Why a launcher: the runtime executes the shim on every pod start, and Python compiles a script it
executes on every run (about 4 ms per 500 lines). So ``<bin_dir>/<name>`` is a few-line script,
``#!<interpreter> -IS`` (one word: Linux passes everything after the interpreter as a single
argument), that puts ``<bin_dir>/.multus-shim.d`` on ``sys.path`` and imports
``multus_shim_impl``, a copy of ``app/shim/shim.py`` compiled here into ``__pycache__`` (timestamp pyc:
an edited copy is noticed and recompiled rather than silently ignored). The launcher finds that
directory next to itself through ``sys.argv[0]``, so it keeps working when the bin dir is mounted at
another path on the host than in the installing container.

With a runtime, the launcher is ``#!<bin_dir>/.multus-shim.d/runtime-<version>-<digest>/bin/python3.X
-ISXutf8`` and imports the shim from that runtime's own stdlib directory; switching versions is the
rename of the launcher (``install_bundled_shim``). Linux reads only the first 256 bytes of a script
to find its interpreter, 128 before 5.1 (``bundle.shebang_limit``, asked of the running kernel, which
is the node's): a longer ``#!`` line would lose its flags or not run at all, so an interpreter path,
or a bin dir path (with a runtime, 187 bytes at most; 59 on a kernel before 5.1), that makes it longer
is refused before anything is written.

Every file is written atomically (temporary file, fsync, rename, fsync of the directory), so a runtime
executing the shim during an upgrade sees the old or the new version, never a torn file.

Two installers must not run at once on a node (a DaemonSet's rolling update with ``maxSurge``, or an
operator running ``multus-install`` by hand during one): one would remove the runtime the other's
launcher is about to name, or the temporary and staging files the other is writing. So a whole
install or uninstall holds ``install_lock``, an exclusive ``flock`` on
``<bin_dir>/.multus-install.lock``: in the bin dir, the one directory every installer has
mounted (the daemon's socket and state directories are not mounted into the init container, and
``--purge-state`` removes them), and released by the kernel when its holder dies, kill -9
included. The functions here assume their caller holds it (``multus-install`` does); the shim never
takes it: executing the shim reads only the launcher and its runtime, which are switched by rename.
"""

import contextlib
import fcntl
import os
import py_compile
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

from app.shim import bundle

IMPL_DIR_NAME = ".multus-shim.d"
IMPL_MODULE = "multus_shim_impl"
INSTALL_LOCK_NAME = ".multus-install.lock"
"""In the bin dir: the lock an installer holds for its whole run (``install_lock``)."""
LOCK_POLL_SECONDS = 0.05
LAUNCHER_MARK = "# multus-py shim launcher, written by app.shim.install"
SHIM_SOURCE = Path(__file__).with_name("shim.py")

LAUNCHER_TEMPLATE = """#!{interpreter} -IS
{mark}
import sys
sys.path.insert(0, "".join(sys.argv[0].rpartition("/")[:2]) + "{impl_dir}")
try:
    from {module} import main
except ImportError:
    sys.stdout.write('{{\\n    "code": 999,\\n    "msg": "multus-shim: cannot import {module}"\\n}}')
    sys.exit(1)
main()
"""
"""The launcher: it finds the module directory next to itself (``sys.argv[0]`` is the script's path)."""


BUNDLED_LAUNCHER_TEMPLATE = """#!{interpreter} {flags}
{mark}
try:
    from {module} import main
except ImportError:
    import sys
    sys.stdout.write('{{\\n    "code": 999,\\n    "msg": "multus-shim: cannot import {module}"\\n}}')
    sys.exit(1)
main()
"""
"""The launcher of a bundled runtime: the shim module is in the runtime's stdlib directory."""


SYSTEM_INTERPRETER = "/usr/bin/python3"
"""Preferred interpreter: the distribution's own Python exists on every node (a virtualenv's does not on
the host), and Debian's is built with the shim's C modules (``_socket``, ``binascii``) compiled in,
which starts measurably faster on this hot path."""


class Step(StrEnum):
    """Named points of an install where a test may stop the installer (``multus-install``'s
    ``MULTUS_PY_INSTALL_PAUSE_AT``) to start another one against it; the last two are reached by a
    bundled install only."""

    LOCKED = "locked"
    """The install lock is held; nothing is written yet."""
    RUNTIME_INSTALLED = "runtime-installed"
    """The new runtime is in place; the launcher does not name it yet."""
    LAUNCHER_WRITTEN = "launcher-written"
    """The launcher names the new runtime; older runtimes are not removed yet."""


def no_step_hook(step: Step) -> None:
    """What an install does at each ``Step`` outside tests: nothing."""


class InstallLockTimeoutError(TimeoutError):
    """Another installer held the install lock for longer than this one would wait."""


@contextlib.contextmanager
def install_lock(
    bin_dir: Path, *, timeout: float, on_wait: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Hold the install lock of ``bin_dir`` (creating its file if need be); yield its path.

    Waits up to ``timeout`` seconds for another installer to release it (``on_wait`` is called once,
    with the lock's path, when it has to wait), then raises ``InstallLockTimeoutError`` naming the path.
    The lock is released when the block ends, or by the kernel when this process dies. The file
    stays; whoever removes it must hold the lock (``remove_install_lock``). ``OSError`` when it
    cannot be created (a missing or read-only bin dir)."""
    fd = acquire_install_lock(lock_path(bin_dir), timeout=timeout, on_wait=on_wait)
    try:
        yield lock_path(bin_dir)
    finally:
        os.close(fd)


def lock_path(bin_dir: Path) -> Path:
    return bin_dir / INSTALL_LOCK_NAME


def remove_install_lock(bin_dir: Path) -> None:
    """Remove the lock file, held by the caller (an uninstall leaves nothing behind). Safe: an
    installer waiting on it finds, once it has the lock, that the file is no longer in place, and
    locks the one the next installer creates (``acquire_install_lock``)."""
    lock_path(bin_dir).unlink(missing_ok=True)


def acquire_install_lock(path: Path, *, timeout: float, on_wait: Callable[[Path], None] | None) -> int:
    """The descriptor holding ``path``'s flock.

    An uninstall removes the lock file while it holds it, so a lock obtained on a file no longer at
    ``path`` is worthless (the next installer creates a new file and locks that): it is dropped and
    ``path`` opened again."""
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while not try_flock(fd):
                if time.monotonic() >= deadline:
                    raise InstallLockTimeoutError(
                        f"another multus-install has held the install lock {path} for over {timeout:g} s: "
                        f"let it finish (or stop it), then run this again"
                    )
                if not waiting and on_wait is not None:
                    on_wait(path)
                waiting = True
                time.sleep(LOCK_POLL_SECONDS)
            if still_named(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def try_flock(fd: int) -> bool:
    """Take ``fd``'s exclusive flock if it is free."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def still_named(fd: int, path: Path) -> bool:
    """True while ``path`` is the file open as ``fd``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def default_interpreter() -> str:
    """The real path of the system Python if there is one, else of the running interpreter."""
    if os.access(SYSTEM_INTERPRETER, os.X_OK):
        return os.path.realpath(SYSTEM_INTERPRETER)
    return os.path.realpath(sys.executable)


def install_shim(bin_dir: str, *, interpreter: str | None = None, name: str = "multus-shim") -> Path:
    """Install the shim as ``<bin_dir>/<name>`` and return that path.

    ``interpreter`` is the Python the runtime will execute (an absolute path valid on the host);
    it defaults to ``default_interpreter()``. The module is compiled by that
    interpreter when it is not the running one, since bytecode is specific to a Python version.
    """
    bin_path = Path(bin_dir)
    python = interpreter or default_interpreter()
    if not os.path.isabs(python) or any(char.isspace() for char in python):
        raise ValueError(f"the interpreter path cannot go into a shebang line: {python!r}")
    if bundle.shebang_overflow(f"#!{python} -IS"):
        raise ValueError(
            f"the interpreter path is too long for a shebang line (over {bundle.shebang_limit_text()}): "
            f"{python!r}"
        )
    impl_dir = bin_path / IMPL_DIR_NAME
    impl_dir.mkdir(mode=0o755, exist_ok=True)
    module_path = impl_dir / f"{IMPL_MODULE}.py"
    write_atomically(module_path, SHIM_SOURCE.read_bytes(), mode=0o644)
    precompile(module_path, python)
    launcher = bin_path / name
    write_atomically(launcher, launcher_text(python).encode(), mode=0o755)
    return launcher


def install_bundled_shim(
    bin_dir: str,
    *,
    host_bin_dir: str | None = None,
    source: Path | None = None,
    name: str = "multus-shim",
    reached: Callable[[Step], None] = no_step_hook,
) -> Path:
    """Install the self-contained runtime and switch ``<bin_dir>/<name>`` to it; return the launcher.

    ``host_bin_dir`` is where the node sees ``bin_dir`` (default: the same path); the interpreter's
    loader and library path are set to it. ``source`` is a built bundle (``multus-install bundle``);
    without one a bundle is built from the running interpreter. The runtime the launcher used before
    is kept, for a shim started a moment ago; older runtimes no launcher names are removed, by an
    install that switches the launcher only (run again, one removes none: it cannot tell which
    runtime the last switch replaced). On any
    failure the previous install is left as it was (``bundle.BundleError``, naming the path).
    ``reached`` is called at each ``Step`` (a test hook)."""
    bin_path = Path(bin_dir)
    if not bin_path.is_dir():
        raise bundle.BundleError(f"the CNI bin dir {bin_path} does not exist")
    if not os.access(bin_path, os.W_OK):
        raise bundle.BundleError(f"the CNI bin dir {bin_path} is not writable (read-only file system?)")
    host_impl_dir = f"{(host_bin_dir or bin_dir).rstrip('/')}/{IMPL_DIR_NAME}"
    if any(char.isspace() for char in host_impl_dir):
        raise ValueError(f"the CNI bin dir cannot go into a shebang line: {host_impl_dir!r}")
    launcher = bin_path / name
    previous = runtime_of(launcher)
    runtime, interpreter = bundle.install_bundle(bin_path / IMPL_DIR_NAME, host_impl_dir, source=source)
    reached(Step.RUNTIME_INSTALLED)
    text = BUNDLED_LAUNCHER_TEMPLATE.format(
        interpreter=interpreter, flags=bundle.SHEBANG_FLAGS, mark=LAUNCHER_MARK, module=bundle.SHIM_MODULE
    )
    try:
        write_atomically(launcher, text.encode(), mode=0o755)
    except OSError as exc:
        raise bundle.BundleError(f"cannot write the launcher {launcher}: {exc.strerror or exc}") from None
    reached(Step.LAUNCHER_WRITTEN)
    if previous == runtime.name:
        # Run again (an init container restarted, an install killed after its switch): the runtime the
        # switch replaced is not known any more, and shims exec'd just before it may still start from
        # it, so none goes; the next install that switches the launcher removes them.
        bundle.remove_set_aside(bin_path / IMPL_DIR_NAME)
        return launcher
    keep = runtimes_in_use(bin_path) | {runtime.name} | ({previous} if previous else set())
    bundle.remove_runtimes(bin_path / IMPL_DIR_NAME, keep=keep)
    return launcher


def runtime_of(launcher: Path) -> str | None:
    """The runtime directory name a launcher of ours runs, or None (not ours, or a host Python)."""
    if not is_our_launcher(launcher):
        return None
    with launcher.open("rb") as file:
        first = file.readline().decode("utf-8", "replace")
    marker = f"/{IMPL_DIR_NAME}/{bundle.RUNTIME_PREFIX}"
    if not first.startswith("#!") or marker not in first:
        return None
    return bundle.RUNTIME_PREFIX + first.split(marker, 1)[1].split("/", 1)[0]


def runtimes_in_use(bin_path: Path) -> set[str]:
    """The runtimes named by the launchers of ours in ``bin_path``."""
    names = {runtime_of(path) for path in bin_path.iterdir() if path.is_file()}
    return {name for name in names if name}


def uninstall_shim(bin_dir: str, name: str = "multus-shim") -> list[Path]:
    """Remove what ``install_shim`` wrote for ``name`` and return the removed paths.

    A file at ``<bin_dir>/<name>`` that is not our launcher (say, upstream's Go shim) is left alone.
    The implementation directory is shared by every launcher name in ``bin_dir``: it is removed only
    once no launcher of ours is left there, and only the files we write (plus the directories, once
    empty).
    """
    bin_path = Path(bin_dir)
    removed = []
    launcher = bin_path / name
    if is_our_launcher(launcher):
        launcher.unlink()
        removed.append(launcher)
    removed += remove_temporaries(launcher)
    impl_dir = bin_path / IMPL_DIR_NAME
    if impl_dir.is_dir():
        removed += bundle.remove_runtimes(impl_dir, keep=runtimes_in_use(bin_path))
    if impl_dir.is_dir() and not any(is_our_launcher(path) for path in bin_path.iterdir()):
        removed += remove_implementation(impl_dir)
    return removed


def remove_implementation(impl_dir: Path) -> list[Path]:
    """Delete the module, its compiled forms and the directories they leave empty."""
    removed = []
    cache_dir = impl_dir / "__pycache__"
    candidates = [impl_dir / f"{IMPL_MODULE}.py"]
    removed += remove_temporaries(candidates[0])
    if cache_dir.is_dir():
        candidates += sorted(cache_dir.glob(f"{IMPL_MODULE}.*.pyc"))
    for path in candidates:
        if path.is_file():
            path.unlink()
            removed.append(path)
    for directory in (cache_dir, impl_dir):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            removed.append(directory)
    return removed


def is_our_launcher(path: Path) -> bool:
    """True for a launcher written by ``install_shim`` (its second line carries our mark)."""
    if not path.is_file() or path.is_symlink():
        return False
    with path.open("rb") as file:
        head = file.read(4096)
    return LAUNCHER_MARK.encode() in head.split(b"\n", 2)[1:2]


def launcher_text(interpreter: str) -> str:
    """The launcher script for ``interpreter``."""
    return LAUNCHER_TEMPLATE.format(
        interpreter=interpreter, mark=LAUNCHER_MARK, impl_dir=IMPL_DIR_NAME, module=IMPL_MODULE
    )


def precompile(module_path: Path, interpreter: str) -> None:
    """Write the module's timestamp pyc into ``__pycache__``, compiled by ``interpreter``.

    Stale pycs of ours go first. An interpreter that does not exist here (a host path, seen from the
    installing container) cannot compile: the module is then compiled by that interpreter in memory
    on each run (slower start, same behaviour), or cached by it if the directory is writable."""
    for stale in sorted((module_path.parent / "__pycache__").glob(f"{module_path.stem}.*.pyc")):
        stale.unlink()
    if os.path.realpath(interpreter) == os.path.realpath(sys.executable):
        py_compile.compile(
            str(module_path), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
        )
        return
    if not os.access(interpreter, os.X_OK):
        return
    command = [interpreter, "-I", "-S", "-m", "py_compile", str(module_path)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data``: temporary file in the same directory, fsync, rename, fsync dir.
    Temporary files of ``path`` an earlier writer killed in the middle left are removed first."""
    remove_temporaries(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files ``write_atomically`` writes for ``path`` (``.<name>.tmp-<pid>``),
    which a writer killed before its rename leaves for ever; return them.

    Safe because one installer runs at a time on a node (it holds ``install_lock``; the next install
    removes a killed one's staging directories likewise, ``bundle.remove_set_aside``): no such file
    is still being written."""
    prefix = f".{path.name}.tmp-"
    removed = []
    try:
        candidates = sorted(path.parent.iterdir())
    except FileNotFoundError:
        return []
    for candidate in candidates:
        pid = candidate.name.removeprefix(prefix)
        if pid != candidate.name and pid.isdigit() and pid.isascii() and not candidate.is_dir():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
