"""``multus-daemon``'s entry point: settings, logging, the socket, then the heavy parts.

The socket accepts within milliseconds of ``exec``: before anything else this reads
daemon-config.json and the environment (``app.settings``), sets up logging
(``app.daemon.logformat``), raises its soft open-files limit to the hard one (``app.daemon.limits``,
at most 65536), locks the socket directory and binds ``<socketDir>/multus.sock``
(``app.daemon.listener``: it first waits for a predecessor that is still stopping gracefully), all
standard library only, and removes the restart marker a gracefully stopped daemon left. Only then
are aiohttp, the store and kubernetes_asyncio imported (``app.daemon.startup``) and the run
started, on uvloop's event loop where uvloop is installed; connections made meanwhile wait in the
listen backlog. Nothing imported at the top of this module may pull in a third-party package.

Exit codes follow upstream: 1 unusable configuration or database (or a fatal task crash),
3 socket/listener failure (another daemon holds the socket directory's lock or answers on the path,
or the path is unusable).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

from app import settings as settings_module
from app.daemon import limits, listener, logformat

log = logging.getLogger("app.daemon")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="multus-daemon", description="multus-py node daemon")
    parser.add_argument(
        "-config",
        "--config",
        dest="config",
        default=settings_module.DEFAULT_CONFIG_PATH,
        help="path to daemon-config.json",
    )
    parser.add_argument(
        "-version", "--version", dest="version", action="store_true", help="print the version"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_inherited_descriptors_to_ourselves()
    if args.version:
        from app.daemon.wiring import package_version

        print(f"multus-daemon: version:{package_version()}")
        return 0
    try:
        settings = settings_module.load(args.config, environ=os.environ)
        settings_module.check_chroot_dir(settings)
    except settings_module.SettingsError as exc:
        print(f"multus-daemon: {exc}", file=sys.stderr)
        return 1
    try:
        logformat.configure(settings)
    except OSError as exc:
        print(f"multus-daemon: cannot open logFile {settings.log_file}: {exc}", file=sys.stderr)
        return 1
    limits.raise_descriptor_limit()  # before the socket: a burst of sandboxes needs hundreds
    try:
        claimed = listener.claim(  # its lock is held until the process ends
            settings.socket_path, longest_stop=listener.restart_wait(settings.timeouts.shutdown_grace)
        )
    except (listener.SocketInUseError, OSError) as exc:
        log.critical("cannot listen on %s: %s", settings.socket_path, exc)
        return 3
    if listener.remove_restart_marker(settings.socket_dir):
        log.info("accepting on %s: restart marker removed", settings.socket_path)
    for signum in (signal.SIGTERM, signal.SIGINT):  # until the event loop takes them over
        signal.signal(signum, _remember_signal)
    return _run(settings, claimed.sock)


def keep_inherited_descriptors_to_ourselves() -> None:
    """Mark every descriptor above stdio that whoever started the daemon passed on to it as not
    inheritable: plugins are started with ``posix_spawn``, which hands a child every inheritable
    descriptor of its parent, and a plugin (or a process it leaves running) would hold such a pipe
    or socket open for as long as it lives. The daemon's own descriptors are never inheritable."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                os.set_inheritable(fd, False)


_early_signals: list[int] = []


def _remember_signal(signum: int, _frame: object) -> None:
    """A stop asked for while the heavy parts import: the run starts by stopping gracefully."""
    _early_signals.append(signum)


def _run(settings: settings_module.Settings, sock: socket.socket) -> NoReturn:
    """Import the heavy parts, run the daemon on the bound ``sock``, and end the process.

    Once the run returned everything is closed (servers, tasks, the store): the process exits
    at once with its code, skipping the interpreter's teardown of a few hundred modules (about
    half a second a restart would otherwise add)."""
    import asyncio

    with _lean_imports():
        from app.daemon.startup import Daemon

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        code = runner.run(Daemon(settings, sock, signalled=lambda: bool(_early_signals)).run())
    log.info("multus-daemon stopped (exit %d)", code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def _lean_imports() -> Iterator[None]:
    """Imports under it skip two things aiohttp builds at import that the daemon never uses, each
    through a variable its library reads then (``IMPORT_SWITCHES``). The variables are gone again
    afterwards (or back to what the operator set), so no plugin inherits them and nothing built
    later sees them.

    - ``FROZENLIST_NO_EXTENSIONS``: frozenlist (aiohttp's, for its signal lists) without its C
      extension, which is C++ and maps libstdc++: about 1 MiB of resident memory for lists built at
      start-up and hardly touched after.
    - ``SSL_CERT_FILE`` (OpenSSL's CA bundle) pointed at an empty file: ``aiohttp.connector`` builds
      two default client TLS contexts at import, each parsing the system's whole bundle (some 140
      certificates): about 90 ms of CPU at every start and 1.8 MiB resident. The daemon's one
      client, kubernetes_asyncio's, passes a context of its own, built later from the cluster's CA
      (or from the system's, the variable then restored). The default contexts still look CAs up
      in the system's hashed certificate directory, where it has one."""
    previous = {name: os.environ.get(name) for name in IMPORT_SWITCHES}
    os.environ.update(IMPORT_SWITCHES)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


IMPORT_SWITCHES = {"FROZENLIST_NO_EXTENSIONS": "1", "SSL_CERT_FILE": os.devnull}
"""The environment ``_lean_imports`` sets while the heavy parts import."""


def event_loop_factory() -> Callable[[], AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency of the package), else asyncio's own
    (None). The daemon's hot path is mostly event-loop machinery (a few dozen loop turns per CNI
    call: the connection, the request, the store's wake-ups, the plugin's pipes and exit);
    uvloop runs it in C, for about a tenth less CPU per ADD and DEL (``python -m bench``)."""
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio's (uvloop is not installed)")
        return None
    log.info("event loop: uvloop %s", getattr(uvloop, "__version__", "?"))
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
