"""``multus-install``: puts multus-py's node files in place, and takes them off again.

Run by the DaemonSet's init container (``multus-install install --host-root /host ...``) before the
daemon starts, by the clean-up DaemonSet (``multus-install uninstall ...``), or by hand on a node.
It owns what the daemon does not write:

* the shim in the CNI bin dir, written by ``app.shim.install``: by default a launcher plus the shim's
  self-contained runtime (``app.shim.bundle``: its own interpreter, libraries and loader, so the node
  needs no Python and its libc is not used), installed beside the previous one in a versioned
  directory and switched to by renaming the launcher; with ``--interpreter`` a launcher
  ``#!<interpreter> -IS`` plus a precompiled module for a Python the node has. Either way a runtime
  executing the shim during an upgrade runs the old or the new version, never a torn file, and never
  hits "text file busy". The runtime comes from ``--bundle`` (or ``$MULTUS_SHIM_BUNDLE``: the image
  sets it to the bundle it was built with), else it is built from the interpreter running this;
* ``passthru`` in the CNI bin dir (``app.cli.passthru``), the plugin heading an
  ``auxiliaryCNIChainName`` chain, unless a foreign plugin of that name is there;
* when ``multusConfigFile`` names a file rather than ``auto``: that file's copy in the CNI conf dir,
  written only once ``readinessindicatorfile`` exists (upstream's daemon waits the same 45 s for it).
  In ``auto`` mode the daemon generates ``00-multus.conf`` itself and owns the readiness file.

Uninstall removes only what was installed: our launcher (a foreign ``multus-shim``, say upstream's Go
binary, is left alone), our module, the conf copies recorded at install time and the
``00-multus.conf`` the daemon generated, each only while it still calls our shim. The daemon keeps
that conf across restarts on purpose, so it is the uninstall that must remove it: a node must not
keep a conf that calls a removed plugin. With ``--daemon-config`` (so once no daemon answers) it
also removes the temporary ``.00-multus.conf.*`` a daemon killed while writing the conf left.
``--purge-state`` also removes the daemon's state database and socket, and refuses while a daemon
holds the database. It removes the DELs spooled for the daemon too: those of its ``spoolDir``, and
those of the shim's default spool directory (``/var/lib/multus-py/spool``, where a shim conf without
``spoolDir`` spools) addressed to it. That directory is shared by every such conf on the node, so an
entry there is the daemon's as ``app.daemon.spool`` decides: its conf's ``daemonSocketDir`` (as the
shim reads it; without a conf the daemon can use, the one the shim put in the entry) is the daemon's
``socketDir``, or, when the directory is the daemon's own
``spoolDir``, its address cannot be read. The entries of other daemons stay, and so the directory.
The ``spoolDir``s of its earlier runs, which ``<stateDir>/spool-dirs.json`` records (the daemon still
replays them), are purged as its own, and that record with them.

One installer at a time: ``install`` and ``uninstall`` hold the install lock of the bin dir
(``app.shim.install.install_lock``) while they write or remove files there or in the conf dir, so
two installers started together on a node (a rolling update with ``maxSurge``, an operator's run
during one) take turns; the second says it waits, and gives up after ``--lock-timeout`` seconds
(default 60) naming the lock. The lock dies with its holder, kill -9 included. ``install`` lets it
go while it waits for the readiness indicator (that wait is for the primary network, not for another
installer) and takes it again to write the conf, refusing if an uninstall removed the shim meanwhile.

``multus-install bundle --output DIR`` builds such a runtime (the image build runs it).

``multus-install multusctl [--bin-dir DIR]`` writes multusctl's launcher (``app.cli.launcher``:
``#!<this python> -IS``, no ``site``) over pip's ``multusctl`` console script in this installation's
scripts directory (or into ``DIR``); run once wherever the package is installed, not on the node.

Paths: ``--host-root`` is where the node's root is mounted (``/`` when run on the node). Paths in
daemon-config.json are the daemon container's, which the DaemonSet mounts at the same paths as on
the host, so ``<host-root>/<path>`` is where the installer finds them. A bundled runtime is patched
for the bin dir's path on the node (its path below ``--host-root``). ``--interpreter`` is a host path;
it is checked inside the host root when that is visible.

Imports the standard library, ``app.shim.install``, ``app.cli.passthru``, ``app.cli.launcher``,
``app.settings``, ``app.cni.results``, ``app.cni.names`` and ``app.gofold`` (all standard library
only): never the store or the Kubernetes client, so it starts in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app import gofold
from app import settings as settings_module
from app.cli import launcher, passthru
from app.cni import names, results
from app.settings import Settings, SettingsError
from app.shim import bundle as shim_bundle
from app.shim import install as shim_install

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
BUNDLE_ENV = "MULTUS_SHIM_BUNDLE"
"""A built bundle to install (the image sets it); unset: built from the running interpreter."""
DEFAULT_SHIM_NAME = "multus-shim"
GENERATED_CONF_NAME = "00-multus.conf"
"""What the daemon writes in ``auto`` mode (``app.daemon.autoconf.CONF_NAME``)."""
RECORD_NAME = "install-record.json"
"""Inside the shim's module directory: names of the conf files this installer wrote in the conf dir."""
READINESS_TIMEOUT = 45.0
"""Upstream's wait for ``readinessindicatorfile`` (45 polls, 1 s apart)."""
READINESS_POLL = 1.0
LOCK_TIMEOUT = 60.0
"""How long an installer waits for another one to release the install lock (an install takes
seconds; building the runtime here, without ``--bundle``, is the longest)."""
PAUSE_ENV = "MULTUS_PY_INSTALL_PAUSE_AT"
"""Test hook: a ``app.shim.install.Step`` at which the installer stops itself (SIGSTOP) until it is
continued (SIGCONT), so a test can start another installer against it; unset or empty: none."""
MIN_PYTHON = (3, 11)
"""The shim's oldest supported interpreter (``requires-python`` of the package)."""
STATE_FILE_SUFFIXES = ("", "-wal", "-shm", ".lock")
"""``state.db`` and its SQLite/lock companions, as ``app.store.database`` creates them."""
SPOOL_PATTERNS = ("del-*.json", "del-*.json.rejected", ".del-*.tmp")
"""The DELs the shim spooled for the daemon (``app.daemon.spool``), rejected ones and partial writes."""
SHIM_DEFAULT_SPOOL_DIR = "/var/lib/multus-py/spool"
"""Where the shim spools when its conf names no ``spoolDir`` (``app.daemon.spool.SHIM_DEFAULT_SPOOL_DIR``;
a test keeps them equal): shared by every such conf on the node."""
SHIM_DEFAULT_SOCKET_DIR = "/run/multus"
"""The shim's ``daemonSocketDir`` when its conf names none (``app.daemon.spool.SHIM_DEFAULT_SOCKET_DIR``)."""
SPOOL_RECORD_NAME = "spool-dirs.json"
"""In ``stateDir``: the daemon's earlier ``spoolDir``s (``app.daemon.spool.SPOOL_RECORD_NAME``)."""
MAX_SPOOL_ENTRY_BYTES = 4 * 1024 * 1024
"""The largest entry the daemon reads (``app.daemon.server.MAX_BODY_BYTES``); a larger one's address
cannot be read."""
MAX_CONF_DEPTH = 64
"""How deep the daemon lets a spooled conf nest before it takes it as unusable
(``app.daemon.protocol.MAX_JSON_DEPTH``)."""
SOCKET_LOCK_SUFFIX = ".lock"
"""``<socketDir>/multus.sock.lock``: the lock a daemon holds on its socket directory for its life,
never removed by it (``app.daemon.listener.lock_path_of``)."""
SYMLINK_HOPS = 40


class InstallError(RuntimeError):
    """The node cannot be set up (or cleaned) as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things are, as the installer sees them."""

    host_root: Path
    bin_dir: Path
    conf_dir: Path
    shim_name: str = DEFAULT_SHIM_NAME

    def on_host(self, path: str | os.PathLike[str]) -> Path:
        """``path`` (absolute, as the node or the daemon sees it) as the installer sees it."""
        return host_path(self.host_root, path)


def host_path(host_root: Path, path: str | os.PathLike[str]) -> Path:
    """``<host_root>/<path>`` for an absolute ``path``."""
    text = os.fspath(path)
    if not text.startswith("/"):
        raise InstallError(f"{text!r} is not an absolute path")
    return host_root.joinpath(text.lstrip("/"))


def resolve_in_root(host_root: Path, path: str) -> Path | None:
    """Follow ``path``'s symlinks as the node would, without leaving ``host_root``.

    Returns the final path (seen from here), or None when a component cannot be followed from here
    (not mounted into this container, or a loop)."""
    pending = list(PurePosixPath(path).parts[1:])
    current = PurePosixPath("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        seen = host_path(host_root, str(candidate))
        if not seen.is_symlink():
            if not seen.exists():
                return None
            current = candidate
            continue
        hops += 1
        if hops > SYMLINK_HOPS:
            return None
        target = PurePosixPath(os.readlink(seen))
        if target.is_absolute():
            current = PurePosixPath("/")
        pending[:0] = list(target.parts[1:] if target.is_absolute() else target.parts)
    return host_path(host_root, str(current))


def check_interpreter(host_root: Path, interpreter: str) -> list[str]:
    """Refuse an interpreter the node certainly lacks; return warnings for what cannot be verified.

    The runtime executes the launcher on the node, so ``interpreter`` must exist there. From a
    container only what is mounted under the host root is visible: a missing file in a visible
    directory is an error, a symlink leading out of view (``/etc/alternatives``) only a warning."""
    if not interpreter.startswith("/") or any(char.isspace() for char in interpreter):
        raise InstallError(f"the interpreter must be an absolute path without spaces: {interpreter!r}")
    seen = host_path(host_root, interpreter)
    if not seen.parent.is_dir():
        return [f"cannot check the interpreter {interpreter}: {seen.parent} is not visible here"]
    if not seen.exists() and not seen.is_symlink():
        raise InstallError(
            f"the node has no {interpreter}: multus-shim needs Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer on the node (install it, or pass --interpreter)"
        )
    final = resolve_in_root(host_root, interpreter)
    if final is None:
        return [f"cannot follow {interpreter} to its target from here; not checked"]
    if not final.is_file() or not os.access(final, os.X_OK):
        raise InstallError(f"{interpreter} on the node is not an executable file")
    match = re.fullmatch(r"python(\d+)\.(\d+)", final.name)
    if match is None:
        return [f"cannot tell the Python version of {interpreter} from its name {final.name!r}"]
    found = (int(match[1]), int(match[2]))
    if found < MIN_PYTHON:
        raise InstallError(
            f"{interpreter} on the node is Python {found[0]}.{found[1]}; multus-shim needs "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (pass --interpreter)"
        )
    return []


# --- install ------------------------------------------------------------------------------------------


def host_bin_dir(layout: Layout) -> str:
    """The bin dir as the node sees it: its path below the host root (itself when not below it)."""
    try:
        relative = layout.bin_dir.relative_to(layout.host_root)
    except ValueError:
        return str(layout.bin_dir)
    return "/" if str(relative) == "." else f"/{relative}"


def install(
    layout: Layout,
    *,
    interpreter: str | None = None,
    bundle: Path | None = None,
    settings: Settings | None = None,
    readiness_timeout: float = READINESS_TIMEOUT,
    lock_timeout: float = LOCK_TIMEOUT,
    reached: Callable[[shim_install.Step], None] = shim_install.no_step_hook,
) -> list[Path]:
    """Install the shim (bundled runtime, or ``interpreter`` of the node), then (static conf mode
    only) the conf once the readiness file exists, each holding the install lock.

    Returns the paths written, as seen here. Safe to run again: every file is replaced by rename.
    ``reached`` is called at each ``shim_install.Step`` (a test hook)."""
    with install_lock(layout, timeout=lock_timeout, reached=reached):
        written = install_shim_files(layout, interpreter=interpreter, bundle=bundle, reached=reached)
    if settings is None or settings.multus_config_file == "auto":
        return written
    wait_for_readiness(layout, settings, timeout=readiness_timeout)
    with install_lock(layout, timeout=lock_timeout):
        ensure_shim_still_installed(layout)
        conf = install_static_conf(layout, Path(settings.multus_config_file))
        record_installed(layout, conf)
    written.append(conf)
    return written


def install_shim_files(
    layout: Layout,
    *,
    interpreter: str | None,
    bundle: Path | None,
    reached: Callable[[shim_install.Step], None],
) -> list[Path]:
    """The shim (with its runtime or module) and ``passthru`` in the bin dir; the paths written."""
    if interpreter is None:
        try:
            launcher = shim_install.install_bundled_shim(
                str(layout.bin_dir),
                host_bin_dir=host_bin_dir(layout),
                source=bundle,
                name=layout.shim_name,
                reached=reached,
            )
        except shim_bundle.BundleError as exc:
            raise InstallError(f"{exc}; the previous install is left as it was") from None
    else:
        launcher = shim_install.install_shim(
            str(layout.bin_dir), interpreter=interpreter, name=layout.shim_name
        )
    written = [launcher]
    plugin = passthru.install(layout.bin_dir)
    if plugin is not None:
        written.append(plugin)
    return written


@contextlib.contextmanager
def install_lock(
    layout: Layout,
    *,
    timeout: float,
    reached: Callable[[shim_install.Step], None] = shim_install.no_step_hook,
) -> Iterator[None]:
    """Hold the bin dir's install lock for the block, waiting up to ``timeout`` s for another installer.

    A block that fails while nothing of ours is in the bin dir (a first install refused) removes
    the lock file too, so that the bin dir is left as it was."""
    if not layout.bin_dir.is_dir():
        raise InstallError(f"the CNI bin dir {layout.bin_dir} does not exist")
    lock = shim_install.lock_path(layout.bin_dir)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                shim_install.install_lock(layout.bin_dir, timeout=timeout, on_wait=announce_wait)
            )
        except shim_install.InstallLockTimeoutError as exc:
            raise InstallError(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise InstallError(
                    f"the CNI bin dir {layout.bin_dir} is not writable (read-only file system?); "
                    f"the previous install is left as it was (cannot create the install lock {lock})"
                ) from None
            raise InstallError(f"cannot take the install lock {lock}: {exc.strerror or exc}") from None
        try:
            reached(shim_install.Step.LOCKED)
            yield
        except BaseException:
            if not (layout.bin_dir / shim_install.IMPL_DIR_NAME).exists():
                shim_install.remove_install_lock(layout.bin_dir)
            raise


def announce_wait(lock: Path) -> None:
    print(f"multus-install: waiting for another multus-install to finish (it holds {lock})", file=sys.stderr)


def ensure_shim_still_installed(layout: Layout) -> None:
    """Refuse to write a conf calling a shim an uninstall removed while this install waited."""
    launcher = layout.bin_dir / layout.shim_name
    if not shim_install.is_our_launcher(launcher):
        raise InstallError(
            f"{launcher} was removed (or replaced) while this install waited for the readiness "
            f"indicator file; the conf calling it is not installed: run the install again"
        )


def wait_for_readiness(layout: Layout, settings: Settings, *, timeout: float) -> None:
    """Wait until the readiness indicator file exists (the primary network is up), like upstream."""
    indicator = settings.readiness_indicator_file
    if not indicator:
        return
    path = layout.on_host(indicator)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            raise InstallError(
                f"readiness indicator file {indicator} did not appear within {timeout:g} s "
                f"(looked at {path}): the primary network is not ready"
            )
        time.sleep(min(READINESS_POLL, max(0.0, deadline - time.monotonic())))


def install_static_conf(layout: Layout, source: Path) -> Path:
    """Copy ``source`` (the shim's conf, as ``multusConfigFile`` names it) into the conf dir."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise InstallError(f"cannot read multusConfigFile {source}: {exc.strerror}") from exc
    try:
        conf = json.loads(data)
    except ValueError as exc:
        raise InstallError(f"multusConfigFile {source} is not JSON: {exc}") from exc
    if not isinstance(conf, dict):
        # a broken file in the conf dir would break the runtime's CNI configuration for every pod
        raise InstallError(f"multusConfigFile {source} is not a JSON object")
    layout.conf_dir.mkdir(parents=True, exist_ok=True)
    target = layout.conf_dir / source.name
    shim_install.write_atomically(target, data, mode=0o600)
    return target


def record_path(layout: Layout) -> Path:
    return layout.bin_dir / shim_install.IMPL_DIR_NAME / RECORD_NAME


def read_record(layout: Layout) -> list[str]:
    """Names (in the conf dir) of the conf files this installer wrote."""
    try:
        data = json.loads(record_path(layout).read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read the install record {record_path(layout)}: {exc}") from exc
    names = data.get("confFiles") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InstallError(f"the install record {record_path(layout)} has no 'confFiles' list")
    return [PurePosixPath(name).name for name in names]


def record_installed(layout: Layout, path: Path) -> None:
    """Add ``path`` (a file just written into the conf dir) to the install record."""
    names = sorted({*read_record(layout), path.name})
    body = json.dumps({"confFiles": names}, indent=2) + "\n"
    shim_install.write_atomically(record_path(layout), body.encode(), mode=0o644)


# --- uninstall ----------------------------------------------------------------------------------------


def uninstall(
    layout: Layout,
    *,
    settings: Settings | None = None,
    purge_state: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
    reached: Callable[[shim_install.Step], None] = shim_install.no_step_hook,
) -> list[Path]:
    """Remove what ``install`` (and, for ``00-multus.conf``, the daemon) wrote; return what went.

    Everything that could refuse is checked before anything is removed. The confs go first, so the
    runtime stops calling the shim before the shim disappears. The install lock is held throughout,
    and its file removed last, except when there is no bin dir: nothing of ours is there then, and
    an install would refuse it."""
    if purge_state and settings is None:
        raise InstallError("--purge-state needs --daemon-config (it says where the state is)")
    if settings is not None:
        refuse_while_daemon_runs(layout, settings)
        if purge_state:
            ensure_unlocked(layout.on_host(settings.database_path))
    has_bin_dir = layout.bin_dir.is_dir()
    with (
        install_lock(layout, timeout=lock_timeout, reached=reached)
        if has_bin_dir
        else contextlib.nullcontext()
    ):
        removed = remove_shim_confs(layout)
        if settings is not None:  # no daemon answers (checked above): no write of the conf is under way
            removed += remove_killed_writes(layout.conf_dir, GENERATED_CONF_NAME)
        removed += shim_install.uninstall_shim(str(layout.bin_dir), layout.shim_name)
        removed += passthru.uninstall(layout.bin_dir)
        if has_bin_dir:
            shim_install.remove_install_lock(layout.bin_dir)
    if settings is not None and purge_state:
        removed += purge_daemon_state(layout, settings)
    return removed


def refuse_while_daemon_runs(layout: Layout, settings: Settings) -> None:
    """A running daemon in ``auto`` mode would write ``00-multus.conf`` again within seconds."""
    sock_path = layout.on_host(settings.socket_path)
    if daemon_answers(sock_path):
        raise InstallError(
            f"a multus daemon answers on {sock_path}: remove the DaemonSet (stop the daemon) first"
        )


def daemon_answers(sock_path: Path) -> bool:
    """True if something speaks HTTP on the daemon's socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(sock_path))
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
        except (OSError, ValueError):
            return False


def remove_shim_confs(layout: Layout) -> list[Path]:
    """Remove ``00-multus.conf`` and the recorded confs, each only if it calls this shim.

    A conf calling the shim must not outlive it (the runtime would fail every pod on the node);
    a conf someone replaced with something else since is left alone, and so is one that calls
    a shim of that name that is not ours (upstream's)."""
    launcher = layout.bin_dir / layout.shim_name
    shim_is_ours = shim_install.is_our_launcher(launcher) or not (launcher.exists() or launcher.is_symlink())
    removed = []
    for name in dict.fromkeys([GENERATED_CONF_NAME, *read_record(layout)]):
        conf = layout.conf_dir / name
        if not conf.exists():
            continue
        if not (shim_is_ours and calls_shim(conf, layout.shim_name)):
            print(
                f"multus-install: leaving {conf}: it does not call this installation's shim", file=sys.stderr
            )
            continue
        conf.unlink()
        removed.append(conf)
    if removed:
        shim_install.fsync_directory(layout.conf_dir)
    record = record_path(layout)
    if record.exists():
        record.unlink()
        removed.append(record)
    return removed


def calls_shim(conf: Path, shim_name: str) -> bool:
    """True for a CNI conf whose plugin ``type`` is ``shim_name``."""
    try:
        content = json.loads(conf.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("type") == shim_name


def purge_daemon_state(layout: Layout, settings: Settings) -> list[Path]:
    """Remove the daemon's files by name (database and companions, spooled DELs, sockets, the
    socket directory's lock and the restart marker a gracefully stopped daemon leaves for the shim, and
    the marker's temporary a daemon killed while writing it left), then their directories if that left
    them empty. A file we do not know keeps its directory.

    This forgets the checkpoint: only for a node where no pod uses multus networks any more."""
    database = layout.on_host(settings.database_path)
    spool = layout.on_host(settings.spool_path)
    socket = layout.on_host(settings.socket_path)
    sockets = [
        socket,
        socket.with_name(socket.name + SOCKET_LOCK_SUFFIX),
        layout.on_host(settings.query_socket_path),
        layout.on_host(settings.restart_marker_path),
    ]
    candidates = [database.with_name(database.name + suffix) for suffix in STATE_FILE_SUFFIXES]
    shim_default = layout.on_host(SHIM_DEFAULT_SPOOL_DIR)
    own_is_shared = same_directory(spool, shim_default)
    candidates += spooled_for(layout, settings, spool, own=True, shared=own_is_shared)
    if not own_is_shared:
        candidates += spooled_for(layout, settings, shim_default, own=False, shared=True)
    record = layout.on_host(settings.state_dir / SPOOL_RECORD_NAME)
    earlier = [
        directory
        for directory in recorded_spool_dirs(layout, record)
        if not same_directory(directory, spool) and not same_directory(directory, shim_default)
    ]
    for directory in earlier:
        candidates += spooled_for(layout, settings, directory, own=True, shared=False)
    candidates.append(record)
    removed = []
    for path in [*candidates, *sockets]:
        if path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path)
    marker = layout.on_host(settings.restart_marker_path)
    removed += remove_killed_writes(marker.parent, marker.name)
    for directory in (*earlier, spool, shim_default, database.parent, layout.on_host(settings.socket_dir)):
        if remove_empty_directory(directory):
            removed.append(directory)
    return removed


def recorded_spool_dirs(layout: Layout, record: Path) -> list[Path]:
    """The earlier ``spoolDir``s the daemon's ``record`` names (``app.daemon.spool``), as the
    installer sees them; none when there is no record or it is unusable (the daemon sets such a one
    aside)."""
    try:
        document = json.loads(record.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        print(
            f"multus-install: ignoring the record of earlier spool directories {record}: {exc}",
            file=sys.stderr,
        )
        return []
    directories = document.get("spoolDirs") if isinstance(document, dict) else None
    if not isinstance(directories, list):
        return []
    return [
        layout.on_host(item)
        for item in directories
        if isinstance(item, str) and item.startswith("/") and names.unusable_character(item) is None
    ]


def spooled_for(
    layout: Layout, settings: Settings, directory: Path, *, own: bool, shared: bool
) -> list[Path]:
    """The spool files of ``directory`` (entries, rejected ones, partial writes) that are the
    daemon's. In a directory other daemons share (the shim's default one) those addressed to its
    ``socketDir``, and, when the directory is the daemon's own, those whose address cannot be read:
    the entries the daemon would replay or reject there (``app.daemon.spool``)."""
    if not directory.is_dir():
        return []
    found = sorted(path for pattern in SPOOL_PATTERNS for path in directory.glob(pattern))
    if not shared:
        return found
    ours = []
    for path in found:
        address = spooled_address(path)
        if own if address is None else addressed_to(layout, address, settings.socket_dir):
            ours.append(path)
    return ours


def spooled_address(entry: Path) -> str | None:
    """The socket directory the shim that spooled ``entry`` was looking for, read as the daemon reads
    it (``app.daemon.spool._address`` of ``app.daemon.protocol.decode_body``): its conf's
    ``daemonSocketDir`` (keys matched as Go's decoder matches them, the last one winning), the shim's
    default when there is none, or none at all; for a DEL whose conf the daemon cannot use (or that
    came without it), the ``daemonSocketDir`` the shim put in the body beside it. None when it cannot
    be read (not a regular file, too large, not a request, neither address there) or is no string."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_SPOOL_ENTRY_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as reader:
            body = reader.read(MAX_SPOOL_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(body) > MAX_SPOOL_ENTRY_BYTES:
        return None
    try:
        envelope = results.parse_json(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict):
        return None
    fields = {key.lower(): value for key, value in envelope.items()}
    env = fields.get("env")
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        return None
    conf = spooled_conf(fields.get("config"))
    if conf is None:  # the daemon refuses such an entry whole, or replays a DEL without it: then
        return envelope_address(envelope)  # addressed by the body's own daemonSocketDir, if any
    value = gofold.field(conf, "daemonSocketDir")
    if value is None or value == "":
        return SHIM_DEFAULT_SOCKET_DIR
    return value if isinstance(value, str) else None


def envelope_address(envelope: dict[str, object]) -> str | None:
    """The ``daemonSocketDir`` the shim puts beside ``env`` and ``config`` in the entries it spools
    (``app.daemon.spool._envelope_address``), when it is a usable path."""
    value = gofold.field(envelope, "daemonSocketDir")
    if not isinstance(value, str) or not value or names.unusable_character(value) is not None:
        return None
    return value


def spooled_conf(config: object) -> dict[str, object] | None:
    """An entry's ``config`` field decoded (base64, then a JSON object the daemon takes), else None."""
    if not isinstance(config, str):
        return None
    try:
        conf = results.parse_json(base64.b64decode(config, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(conf, dict) or not usable_tree(conf):
        return None
    return conf


def usable_tree(value: object) -> bool:
    """Whether the daemon takes a decoded conf (``app.daemon.protocol.check_json_tree``): nested at
    most ``MAX_CONF_DEPTH`` levels, no key or string with a NUL or a lone surrogate."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_CONF_DEPTH:
            return False
        if isinstance(item, dict):
            if any(names.unusable_character(key) is not None for key in item):
                return False
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and names.unusable_character(item) is not None:
            return False
    return True


def addressed_to(layout: Layout, address: str, socket_dir: str | os.PathLike[str]) -> bool:
    """Whether ``address`` (a node path an entry names) is the daemon's ``socket_dir``: the same path,
    or the same directory on the host."""
    if os.path.normpath(address) == os.path.normpath(socket_dir):
        return True
    try:
        return same_directory(layout.on_host(address), layout.on_host(socket_dir))
    except (InstallError, ValueError):  # a relative path, or one with a NUL: not the daemon's
        return False


def same_directory(one: Path, other: Path) -> bool:
    """The same path, or both naming one existing directory."""
    if os.path.normpath(one) == os.path.normpath(other):
        return True
    try:
        return os.path.samefile(one, other)
    except (OSError, ValueError):
        return False


def remove_killed_writes(directory: Path, name: str) -> list[Path]:
    """Remove the temporaries a daemon killed in the middle of replacing ``directory/name`` left
    (``.<name>.<random>``: ``00-multus.conf``, the restart marker); return them. Only once no daemon
    runs: a live one's write in progress has the same name. Only regular files (and links) are
    such leftovers: anything else of that name is left, and does not stop the uninstall."""
    if not directory.is_dir():
        return []
    leftovers = [
        path
        for path in sorted(directory.glob(f".{glob.escape(name)}.*"))
        if not path.is_dir() or path.is_symlink()
    ]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def remove_empty_directory(directory: Path) -> bool:
    """rmdir, tolerating a directory that is gone, still holds files, or is a mount point here."""
    try:
        directory.rmdir()
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            print(f"multus-install: leaving {directory}: it is a mount point here", file=sys.stderr)
            return False
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def ensure_unlocked(database: Path) -> None:
    """Refuse while a daemon holds the database's lock (``app.store.database`` takes it at open)."""
    lock = database.with_name(database.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise InstallError(f"a multus daemon is using {database}: stop it before --purge-state") from exc
    finally:
        os.close(fd)


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="multus-install", description="Install or remove multus-py's shim (and conf) on a node."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("install", "install or upgrade the shim"),
        ("uninstall", "remove what was installed"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--host-root", default="/", help="where the node's root is mounted (default: /)")
        command.add_argument(
            "--cni-bin-dir",
            help="the node's CNI bin dir (default: <host-root>/<binDir of --daemon-config>, "
            f"else <host-root>{DEFAULT_BIN_DIR})",
        )
        command.add_argument(
            "--cni-conf-dir",
            help="the node's CNI conf dir (default: <host-root>/<cniConfigDir of --daemon-config>, "
            f"else <host-root>{DEFAULT_CONF_DIR})",
        )
        command.add_argument("--shim-name", default=DEFAULT_SHIM_NAME, help="the shim's file name")
        command.add_argument("--daemon-config", help="the daemon's daemon-config.json")
        command.add_argument(
            "--lock-timeout",
            type=float,
            default=LOCK_TIMEOUT,
            help=f"seconds to wait for another multus-install on this node (default: {LOCK_TIMEOUT:g})",
        )
    install_parser = sub.choices["install"]
    install_parser.add_argument(
        "--interpreter",
        help="run the shim with this Python of the node (a node path, Python >= 3.11) instead of "
        "the bundled runtime",
    )
    install_parser.add_argument(
        "--bundle",
        default=os.environ.get(BUNDLE_ENV) or None,
        help=f"the bundled runtime to install (default: ${BUNDLE_ENV}, else built from this Python)",
    )
    bundle_parser = sub.add_parser(
        "bundle", help="build the shim's self-contained runtime", description="build the shim's runtime"
    )
    bundle_parser.add_argument("--output", required=True, help="a new (or empty) directory")
    bundle_parser.add_argument("--python", help="the CPython to bundle (default: this one)")
    multusctl_parser = sub.add_parser(
        "multusctl",
        help="write multusctl's fast launcher (python -I -S) for this installation",
        description="write multusctl's launcher (python -I -S, no site) over pip's console script",
    )
    multusctl_parser.add_argument(
        "--bin-dir",
        help=f"where to write it (default: {launcher.default_bin_dir()}, pip's scripts directory)",
    )
    install_parser.add_argument(
        "--readiness-timeout",
        type=float,
        default=READINESS_TIMEOUT,
        help="seconds to wait for readinessindicatorfile (static conf mode only)",
    )
    sub.choices["uninstall"].add_argument(
        "--purge-state",
        action="store_true",
        help="also remove the daemon's state database and socket (needs --daemon-config)",
    )
    return parser.parse_args(argv)


def layout_from(args: argparse.Namespace, settings: Settings | None) -> Layout:
    host_root = Path(args.host_root).absolute()
    if args.cni_bin_dir:
        bin_dir = Path(args.cni_bin_dir)
    else:  # where the daemon runs its delegates from is the runtime's bin dir too: the shim goes there
        bin_dir = host_path(host_root, settings.bin_dir if settings else DEFAULT_BIN_DIR)
    if args.cni_conf_dir:
        conf_dir = Path(args.cni_conf_dir)
    else:
        conf_dir = host_path(host_root, settings.cni_config_dir if settings else DEFAULT_CONF_DIR)
    return Layout(host_root=host_root, bin_dir=bin_dir, conf_dir=conf_dir, shim_name=str(args.shim_name))


def run(args: argparse.Namespace) -> None:
    if args.command == "bundle":
        manifest = shim_bundle.build_bundle(Path(args.output), interpreter=args.python)
        print(f"built {manifest.parent}")
        return
    if args.command == "multusctl":
        print(f"installed {launcher.install(Path(args.bin_dir) if args.bin_dir else None)}")
        return
    settings = settings_module.load(args.daemon_config) if args.daemon_config else None
    layout = layout_from(args, settings)
    reached = pause_hook(os.environ.get(PAUSE_ENV, ""))
    if args.command == "install":
        interpreter = None if args.interpreter is None else str(args.interpreter)
        for warning in check_interpreter(layout.host_root, interpreter) if interpreter else []:
            print(f"multus-install: warning: {warning}", file=sys.stderr)
        paths = install(
            layout,
            interpreter=interpreter,
            bundle=Path(args.bundle) if args.bundle else None,
            settings=settings,
            readiness_timeout=args.readiness_timeout,
            lock_timeout=args.lock_timeout,
            reached=reached,
        )
        for path in paths:
            print(f"installed {path}")
        return
    removed = uninstall(
        layout,
        settings=settings,
        purge_state=bool(args.purge_state),
        lock_timeout=args.lock_timeout,
        reached=reached,
    )
    for path in removed:
        print(f"removed {path}")


def pause_hook(step_name: str) -> Callable[[shim_install.Step], None]:
    """The ``PAUSE_ENV`` test hook: stop this process (SIGSTOP) when it reaches ``step_name``."""
    if not step_name:
        return shim_install.no_step_hook
    try:
        wanted = shim_install.Step(step_name)
    except ValueError:
        known = ", ".join(step.value for step in shim_install.Step)
        raise InstallError(f"{PAUSE_ENV}={step_name!r} is none of the install's steps ({known})") from None

    def reached(step: shim_install.Step) -> None:
        if step == wanted:
            os.kill(os.getpid(), signal.SIGSTOP)

    return reached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multus-install`` console script: 0 done, 1 failed, 2 bad usage."""
    args = parse_args(argv)
    try:
        run(args)
    except (
        InstallError,
        launcher.LauncherError,
        shim_bundle.BundleError,
        SettingsError,
        ValueError,
        OSError,
        subprocess.SubprocessError,
    ) as exc:
        # ValueError: an interpreter path unfit for a shebang; SubprocessError: it cannot compile the shim
        print(f"multus-install: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
