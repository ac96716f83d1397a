"""Replaying DELs the shim spooled while the daemon could not take them (invariant 7).

The shim writes each such DEL, whole and fsynced, as ``<spoolDir>/del-*.json`` holding the exact
request body it would have posted. The daemon replays them at start-up before it reports ready,
and again on every GC pass, through the same decoding and the same engine DEL as a live request.
An entry is removed only once its DEL has run: either everything was removed, or the engine has
recorded the failures in the checkpoint, which then owns the retry (a failed DEL of a sandbox the
checkpoint does not hold, replayed from upstream Multus's cache, keeps its entry for a later pass).
An entry whose replay raises what no DEL path expects (a bug, a write the state database could not
take) is logged, counted in ``multus_py_engine_unexpected_errors_total`` and kept for a later
replay: it holds back neither the entries after it nor start-up (as recovery, invariant 11).

An entry kept so (either way) is retried under the orphans' backoff (``app.gc.collector.TeardownRetries``:
10 s after its first failure, doubling up to 5 minutes), not on every GC pass: each try runs its
plugins and logs an error. It is never given up (nor renamed ``.rejected``): the runtime heard
success for it, so its DEL may still be needed, and nothing else would run it. The backoff is kept
in memory per entry (``SpoolRetries``), as the orphans' is: a restarted daemon tries each entry at
once, before it reports ready. A replay reports the entries it kept (``kept``) and those it left
for later (``deferred``), each with its failures in a row and the seconds to its next try; those
due go after the entries that never failed. A replay told ``retry_now`` (an operator's, who asked
for it now) tries them all.

An entry that cannot be decoded, is not a DEL, or names a container ID no ADD could have used, is
renamed ``*.rejected`` with a log line: kept for the operator, never silently dropped, and never
retried in a loop. So is one that is not a regular file (a symlink is not followed, a FIFO not
waited on) or is larger than a live request may be: reading it must neither hang nor fill memory;
and so is one another user than the daemon's wrote (a shim runs as the runtime, whose user the
daemon's is): in a ``spoolDir`` others may write in, it would tear down any sandbox it names.
Such a ``spoolDir`` (another user's, or one a group or others may write in) is named in an error at
every replay: the shim spools no DEL there (it answers code 11), and the entries there could be
removed by others; those of this daemon's user are replayed all the same.

A DEL spooled before the ADD of the sandbox the checkpoint now holds under its container ID is not
that sandbox's (a runtime may reuse an ID once its DEL succeeded, and a spooled DEL did succeed):
it is dropped with a log line, unless it names the netns that sandbox records. The times compared
are the entry's (the shim's clock, in its name) and the sandbox's ``created_at`` (the daemon's):
one node's wall clock, so a clock stepped back between the two could still mislead it. The engine
judges it under the sandbox's lock (``AttachEngine.delete_unless``), so no ADD of a reused
ID can come between the judgment and the DEL. An ADD refused because its ID is still recorded runs
the entries named for that ID at once (``replay_for``, from ``app.daemon.server``), then is judged
again: the runtime's DEL, spooled while the daemon was up, came first.

A shim conf without ``spoolDir`` (a hand-written ``multusConfigFile``; the generated 00-multus.conf
names ours) spools in the shim's default directory, ``SHIM_DEFAULT_SPOOL_DIR``, whatever this
daemon's ``spoolDir``: so that directory is replayed too. It is shared by every hand-written conf on
the node, so from it a daemon takes only its own entries: those addressed to its socket (the conf's
``daemonSocketDir``, as the shim reads it; for a DEL whose conf it cannot use or that came without
one, the ``daemonSocketDir`` the shim puts in the entry beside it) or naming a sandbox its checkpoint
holds; the daemon whose
own directory it is also takes those whose address cannot be read, rejected ones included. Any other
entry there is another daemon's, left as it is (replaying it here would find nothing to DEL and drop
it). A default directory that is not this daemon's own is read only if it is ours and writable by us
alone (its entries tear down sandboxes); one that is missing holds nothing, one that cannot be read is
logged and skipped, never a reason to fail start-up. So is this daemon's own ``spoolDir`` when it
cannot be listed (a name too long, a file, no permission): an error at every replay, and the report's
``unreadable`` names it (the daemon starts and serves; only the DELs spooled there wait).

A shim killed while it wrote an entry leaves its temporary file, ``.del-*.json.tmp``: no DEL is lost
(the runtime heard no answer and sends it again), but nothing else would ever remove it. Each replay
removes those of a directory it takes entries from once they are ``STALE_TEMPORARY_SECONDS`` old: a
shim renames its temporary within milliseconds of creating it, and even a live one's removed
would only fail that shim's spooling, which answers the runtime code 11 (a retry), never success.

A ``spoolDir`` changed across a restart leaves DELs in the one used before: the shim conf the
runtime used named it until the daemon rewrote ``00-multus.conf``, and a runtime may hold an older
conf. So every ``spoolDir`` the daemon used is recorded in ``<stateDir>/spool-dirs.json``
(``SPOOL_RECORD_NAME``, replaced atomically): each replay writes the current one there if it is not
yet, before it reads any entry. Each directory recorded before (``retired``) is replayed as an own
one (every entry there is this daemon's), once it passes the trust check of the shim's default
directory (ours, writable by us alone); one that cannot be listed is reported as ``unreadable``, as
the own one is, never a reason to fail start-up. A retired directory leaves the record once it is
missing or holds no spool file any more (no entry, temporary or rejected one); ``multus-install
--purge-state`` purges those still recorded. A record that cannot be read as one is set aside as
``*.rejected`` for the operator and begun anew.

A replay told the daemon is stopping (``stop``) starts no further entry's DEL: a long one (thousands
of entries) would otherwise run on past the restart marker's ``until`` at start-up, or on a GC pass
until the shutdown's grace cancelled it in the middle of a teardown. What it leaves stays spooled.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import json
import logging
import os
import stat
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import gofold
from app.attach import errors as attach_errors
from app.attach import logcontext
from app.attach.engine import AttachEngine
from app.attach.requests import Command, SandboxRequest, Trigger
from app.cni import names
from app.cni.types import CniError
from app.daemon import protocol
from app.daemon.server import MAX_BODY_BYTES
from app.gc.collector import TeardownRetries
from app.settings import Settings

if TYPE_CHECKING:
    from app.store.records import SandboxRecord

log = logging.getLogger(__name__)

ENTRY_GLOB = "del-*.json"
TEMPORARY_GLOB = ".del-*.json.tmp"
"""What ``app.shim.shim.write_durably`` names an entry until it is whole (a test keeps them equal)."""
STALE_TEMPORARY_SECONDS = 600.0
"""A temporary this old by its modification time is left by a shim that died: ten times the shim's
own DEL deadline (``app.shim.shim.DEL_TIMEOUT_SECONDS``)."""
REJECTED_SUFFIX = ".rejected"
SPOOL_FILE_GLOBS = (ENTRY_GLOB, TEMPORARY_GLOB, ENTRY_GLOB + REJECTED_SUFFIX)
"""Every file a spool directory may hold for the daemon: a retired one holding none leaves the record."""
SPOOL_RECORD_NAME = "spool-dirs.json"
"""In ``stateDir``: every ``spoolDir`` the daemon has used that may still hold entries
(``app.cli.install.SPOOL_RECORD_NAME`` reads it to purge them; a test keeps them equal)."""
SHIM_DEFAULT_SPOOL_DIR = Path("/var/lib/multus-py/spool")
"""Where the shim spools when its conf names no ``spoolDir`` (``app.shim.shim.DEFAULT_SPOOL_DIR``; a
test keeps them equal)."""
SPOOL_NAME_ID_CHARS = 64
"""How much of the container ID an entry's name holds (``app.shim.shim.SPOOL_NAME_ID_CHARS``)."""
SHIM_DEFAULT_SOCKET_DIR = "/run/multus"
"""The shim's ``daemonSocketDir`` when its conf names none (``app.shim.shim.DEFAULT_SOCKET_DIR``)."""
_DEFAULT_SOCKET_DIR = Settings(raw={}).socket_dir
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Retry:
    """An entry kept after a replay that failed: how many in a row, and when it is due again."""

    entry: str
    failures: int
    retry_in_seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "entry": self.entry,
            "failures": self.failures,
            "retryInSeconds": round(self.retry_in_seconds, 3),
        }


class SpoolRetries(TeardownRetries[Path]):
    """The entries kept after a failed replay, and when each may be replayed again: the orphans'
    backoff (``TeardownRetries``: each failure in a row doubles the wait, up to its cap; nothing is
    given up), keyed by the entry's path; in memory only, so a restart costs one more try of each
    at once. Its answers are the replay's report of them."""

    def kept(self, entry: Path) -> Retry:
        """Note one more failure of ``entry``'s replay; its retry, as reported."""
        delay = self.failed(entry)
        return Retry(entry.name, self.failures(entry), delay)

    def deferral(self, entry: Path) -> Retry | None:
        """``entry``'s retry while it is not due yet, else None."""
        left = self.next_try_in(entry)
        return None if left is None else Retry(entry.name, self.failures(entry), left)


@dataclass
class SpoolReport:
    replayed: list[str] = field(default_factory=list)
    failed: list[tuple[str, CniError]] = field(default_factory=list)
    kept: list[Retry] = field(default_factory=list)
    """Entries whose replay failed this time and that stay spooled (their DEL is recorded nowhere
    else), with their failures in a row and when they are tried again."""
    deferred: list[Retry] = field(default_factory=list)
    """Entries not tried this time: their replay failed lately, and their next try is not due yet."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    """Entries dropped unreplayed: their DEL was spooled before the ADD of the sandbox the checkpoint
    now holds under that container ID, so it addressed an earlier one, gone since."""
    temporaries_removed: list[str] = field(default_factory=list)
    """Temporaries of entries that a shim never finished writing (``STALE_TEMPORARY_SECONDS``)."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """Spool directories whose entries could not be listed (a name too long, not a directory, no
    permission), with the reason: nothing there was replayed, and the shim can spool nothing there."""

    def as_json(self) -> dict[str, object]:
        """What an operator's GC pass answers of the replay (``spool``, ``multusctl gc``)."""
        return {
            "replayed": self.replayed,
            "failed": [{"entry": name, "error": error.to_json()} for name, error in self.failed],
            "kept": [retry.as_json() for retry in self.kept],
            "deferred": [retry.as_json() for retry in self.deferred],
            "rejected": [{"entry": name, "reason": reason} for name, reason in self.rejected],
            "superseded": self.superseded,
            "temporariesRemoved": self.temporaries_removed,
            "unreadable": [{"directory": path, "reason": reason} for path, reason in self.unreadable],
        }


def pending(spool_dir: Path) -> list[Path]:
    """Spooled DELs, oldest first (names start with the time they were written)."""
    try:
        return sorted(spool_dir.glob(ENTRY_GLOB), key=lambda path: path.name)
    except FileNotFoundError:
        return []


@dataclass(frozen=True, slots=True)
class _Directory:
    """A spool directory, and which of its entries this daemon takes."""

    path: Path
    own: bool
    """This daemon's ``spoolDir``: what cannot be read there is rejected by it, as nobody else will."""
    shared: bool
    """The shim's default directory: entries of other daemons may lie there."""
    socket_dir: Path
    retired: bool = False
    """A ``spoolDir`` of an earlier run (``SPOOL_RECORD_NAME``), replayed as an own one."""

    def takes(self, address: Path | None) -> bool:
        """Whether an entry addressed to ``address`` (None: unreadable) is ours without asking the
        checkpoint."""
        if not self.shared:
            return True
        if address is None:
            return self.own
        return _same_directory(address, self.socket_dir)


_replay_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
"""Per event loop, the lock every replay holds: the periodic pass's and an operator's (``POST /gc``)
take turns, so no two read and DEL one entry at once."""

_loop_retries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SpoolRetries] = (
    weakref.WeakKeyDictionary()
)
"""Per event loop (the daemon's), the backoff of the entries kept after a failed replay."""


def _replay_turn() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    turn = _replay_turns.get(loop)
    if turn is None:
        turn = _replay_turns[loop] = asyncio.Lock()
    return turn


def _retries_of_this_loop() -> SpoolRetries:
    loop = asyncio.get_running_loop()
    retries = _loop_retries.get(loop)
    if retries is None:
        retries = _loop_retries[loop] = SpoolRetries()
    return retries


async def replay(
    *,
    spool_dir: Path,
    engine: AttachEngine,
    daemon_config: dict[str, Any],
    shim_default_dir: Path = SHIM_DEFAULT_SPOOL_DIR,
    record: Path | None = None,
    stop: Callable[[], bool] = lambda: False,
    retry_now: bool = False,
    retries: SpoolRetries | None = None,
) -> SpoolReport:
    """Run every spooled DEL of this daemon once, from ``spool_dir`` and the shim's default
    directory, and the ``spoolDir`` of an earlier run that ``record`` (``record_path(stateDir)``;
    None: none) names, where ``spool_dir`` is recorded first; remove each entry whose DEL ran, and
    from ``record`` each earlier directory that holds nothing any more. Replays of one daemon take
    turns. An entry kept after a failed replay is left for a later one until its retry is due
    (``deferred``), unless ``retry_now`` (an operator's pass); ``retries`` is that backoff (by
    default the one of this event loop, which the daemon's replays share). Once ``stop()`` is true
    (the daemon is stopping) no further entry's DEL starts: those left stay spooled, for the next
    replay (the next daemon's, before it reports ready)."""
    async with _replay_turn():
        return await _replay(
            spool_dir=spool_dir,
            engine=engine,
            daemon_config=daemon_config,
            shim_default_dir=shim_default_dir,
            record=record,
            stop=stop,
            retry_now=retry_now,
            retries=_retries_of_this_loop() if retries is None else retries,
        )


async def _replay(
    *,
    spool_dir: Path,
    engine: AttachEngine,
    daemon_config: dict[str, Any],
    shim_default_dir: Path,
    record: Path | None,
    stop: Callable[[], bool],
    retry_now: bool,
    retries: SpoolRetries,
) -> SpoolReport:
    report = SpoolReport()
    _warn_if_exposed(spool_dir)
    recorded = [] if record is None else await asyncio.to_thread(_remember, record, spool_dir)
    directories, retired = _directories(
        spool_dir=spool_dir,
        shim_default_dir=shim_default_dir,
        socket_dir=_socket_dir(daemon_config),
        recorded=recorded,
        report=report,
    )
    listed: list[Path] = []
    for directory in directories:
        unreadable = await asyncio.to_thread(_unreadable, directory.path)
        if unreadable is not None:
            _report_unreadable(directory, unreadable, report)
            continue
        report.temporaries_removed.extend(await asyncio.to_thread(_remove_stale_temporaries, directory.path))
        entries = _entries(directory, report)
        listed += entries
        for entry in sorted(entries, key=retries.failures):  # stable: in name order otherwise
            if stop():
                log.info("spool: stopping; the entries not replayed yet are left for the next replay")
                return report
            waiting = None if retry_now else retries.deferral(entry)
            if waiting is not None:
                log.debug("spool entry %s failed lately: its next try is not due yet", entry)
                report.deferred.append(waiting)
                continue
            try:
                kept = await _replay_entry(
                    entry, directory=directory, engine=engine, daemon_config=daemon_config, report=report
                )
            except Exception as exc:  # one entry's surprise must not hold back the others, nor start-up
                kept = _kept_after_surprise(entry, exc, report)
            if kept is None:
                retries.forget(entry)
            else:
                _keep(entry, kept, report=report, retries=retries)
    retries.forget_all_but(listed)
    if record is not None and len(recorded) > 1:
        await asyncio.to_thread(
            _forget_emptied, record, current=spool_dir, recorded=recorded, retired=retired
        )
    if report.replayed or report.rejected or report.superseded:
        log.info(
            "spool: %d DELs replayed (%d left work pending), %d entries rejected, %d meant for an "
            "earlier sandbox",
            len(report.replayed),
            len(report.failed),
            len(report.rejected),
            len(report.superseded),
        )
    return report


async def replay_for(
    container_id: str,
    *,
    spool_dir: Path,
    engine: AttachEngine,
    daemon_config: dict[str, Any],
    shim_default_dir: Path = SHIM_DEFAULT_SPOOL_DIR,
    record: Path | None = None,
) -> bool:
    """Replay now the spooled DELs named for ``container_id`` (``del-*-<its first 64 characters>.json``),
    from the directories ``replay`` reads; True when one of them ran, or when ``container_id`` is
    no longer recorded at all. For an ADD refused because its container ID is still recorded: the
    runtime's DEL of that sandbox may sit spooled (it timed out while the daemon was up), and it
    came first, so it runs before the ADD is judged again rather than at the next GC pass. Each
    runs as in ``replay`` (``delete_unless``, under the sandbox's lock: one spooled before the
    recorded sandbox's ADD is dropped). Not in ``replay``'s turn: a long pass must not hold the
    ADD, and an entry both take is DELed twice at worst (idempotent); a pass that took the entry
    first (between the ADD's refusal and this look) left nothing here to run, but the sandbox that
    refused the ADD is gone, so the ADD is judged again all the same. An entry whose DEL fails
    stays for the next pass, whose backoff is left as it is. ``record`` is read, never written (the
    replays keep it)."""
    report = SpoolReport()
    recorded = None if record is None else await asyncio.to_thread(_read_record, record)
    directories, _ = _directories(
        spool_dir=spool_dir,
        shim_default_dir=shim_default_dir,
        socket_dir=_socket_dir(daemon_config),
        recorded=recorded or [],
        report=report,
    )
    pattern = f"del-*-{container_id[:SPOOL_NAME_ID_CHARS]}.json"
    for directory in directories:
        try:
            entries = sorted(directory.path.glob(pattern), key=lambda path: path.name)
        except OSError:  # reported by every replay
            continue
        for entry in entries:
            try:
                await _replay_entry(
                    entry, directory=directory, engine=engine, daemon_config=daemon_config, report=report
                )
            except Exception as exc:  # kept for the next pass, as ``replay`` keeps it
                _kept_after_surprise(entry, exc, report)
    if report.replayed:
        log.info(
            "spool: %d DELs of container %s replayed before its ADD: %s",
            len(report.replayed),
            container_id,
            ", ".join(report.replayed),
        )
        return True
    return await engine.load_sandbox(container_id) is None  # a GC pass's replay DELed it meanwhile


@dataclass(frozen=True, slots=True)
class _Kept:
    """Why an entry stays spooled after its replay: its DEL failed, recorded nowhere else."""

    container_id: str
    error: CniError


def _keep(entry: Path, kept: _Kept, *, report: SpoolReport, retries: SpoolRetries) -> None:
    """Leave ``entry`` for a later replay, its next try put off by its backoff; say so once."""
    retry = retries.kept(entry)
    report.kept.append(retry)
    log.error(
        "spooled DEL %s%s failed (%d in a row), kept for a replay in %.0f s at the earliest: %s",
        entry.name,
        f" of container {kept.container_id}" if kept.container_id else "",
        retry.failures,
        retry.retry_in_seconds,
        kept.error,
    )


def _kept_after_surprise(
    entry: Path, exc: Exception, report: SpoolReport, *, container_id: str = ""
) -> _Kept:
    """An entry whose replay raised what no DEL path expects (a bug, a failed write under the state
    database): counted as such, and kept, so a later replay runs it again (a DEL is idempotent), as
    recovery leaves such a sandbox to GC (invariant 11)."""
    context = logcontext.fields(container_id, command=str(Command.DEL), trigger=str(Trigger.SPOOL))
    error = attach_errors.unexpected(exc, step="spool", context=context)
    report.failed.append((entry.name, error))
    return _Kept(container_id, error)


def _remove_stale_temporaries(directory: Path, *, now: float | None = None) -> list[str]:
    """Remove the regular files named as a shim's temporaries that are ``STALE_TEMPORARY_SECONDS``
    old; return their names. One that cannot be looked at or removed is logged and left."""
    removed: list[str] = []
    cutoff = (time.time() if now is None else now) - STALE_TEMPORARY_SECONDS
    try:
        candidates = sorted(directory.glob(TEMPORARY_GLOB))
    except OSError as exc:
        log.warning("spool: cannot list %s for abandoned temporaries: %s", directory, exc)
        return removed
    for path in candidates:
        try:
            status = path.lstat()
            if not stat.S_ISREG(status.st_mode) or status.st_mtime > cutoff:
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # its shim renamed or removed it meanwhile
        except OSError as exc:
            log.warning("spool: cannot remove the abandoned temporary %s: %s", path, exc)
            continue
        removed.append(path.name)
    if removed:
        log.info("spool: removed %d temporaries left by shims that died while spooling a DEL", len(removed))
    return removed


def _unreadable(directory: Path) -> str | None:
    """Why ``directory`` cannot be a spool directory whose entries are listed, or None: a missing
    one holds nothing yet (the shim makes it); one that is no directory (where ``glob`` would find
    nothing and say nothing) or cannot be looked at (ENAMETOOLONG, EACCES, ENOTDIR, ELOOP) is."""
    try:
        status = directory.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    except ValueError as exc:  # a NUL (the settings refuse one in spoolDir): no path at all
        return str(exc)
    return None if stat.S_ISDIR(status.st_mode) else "not a directory"


def _report_unreadable(directory: _Directory, reason: str, report: SpoolReport) -> None:
    """Log and report a spool directory nothing can be listed in: never a reason to fail start-up
    or a GC pass (the other directory, the checkpoint's DELs and every ADD are still served), but
    the operator must hear of it, as of an exposed one, at every replay: no DEL spooled there is
    replayed, and the shim can spool none there (it answers code 11 while the daemon is away)."""
    report.unreadable.append((str(directory.path), reason))
    if directory.retired:
        log.error(
            "the earlier spoolDir %s cannot be read (%s): the DELs the shim spooled there before "
            "spoolDir changed wait until it can",
            directory.path,
            reason,
        )
    elif directory.own:
        log.error(
            "spoolDir %s cannot be read (%s): no DEL spooled there is replayed, and the shim cannot "
            "spool one there (it answers code 11 while the daemon cannot take a DEL)",
            directory.path,
            reason,
        )
    else:
        log.error("cannot read the shim's default spool directory %s: %s", directory.path, reason)


def _entries(directory: _Directory, report: SpoolReport) -> list[Path]:
    try:
        return pending(directory.path)
    except OSError as exc:  # lost since it was looked at: reported, never a reason to fail start-up
        _report_unreadable(directory, exc.strerror or str(exc), report)
        return []


async def _replay_entry(
    entry: Path,
    *,
    directory: _Directory,
    engine: AttachEngine,
    daemon_config: dict[str, Any],
    report: SpoolReport,
) -> _Kept | None:
    """Replay ``entry`` if it is this daemon's; what keeps it spooled, if anything does."""
    try:
        read = await asyncio.to_thread(_read, entry)
        if read is None:
            log.debug("spool entry %s is gone: replayed meanwhile by another daemon", entry.name)
            return None
        body, written_ns = read
        shim_request = protocol.decode_body(body)
    except CniError as error:
        if directory.takes(None):
            _reject(entry, str(error), report)
        return None
    address = _address(shim_request, body)
    try:
        request = _deletion(entry, shim_request, daemon_config)
    except (CniError, protocol.NothingRecordedError) as error:
        if directory.takes(address):
            _reject(entry, str(error), report)
        return None
    if not directory.takes(address) and await engine.load_sandbox(request.container_id) is None:
        log.debug("spool entry %s is addressed to another daemon (%s): left to it", entry, address)
        return None
    spooled_at = _spooled_at(entry, written_ns)
    return await _delete(entry, request, engine=engine, report=report, spooled_at=spooled_at)


def _spooled_at(entry: Path, written_ns: int) -> datetime:
    """When the shim spooled ``entry``: the Unix nanoseconds its name starts with
    (``del-<ns>-<pid>-...``), else (a name of another form) the file's modification time. A time
    ``datetime`` cannot hold (a tmpfs keeps any modification time, past year 9999 or before year 1)
    is its latest or its earliest: still after, or before, every ADD."""
    stamp = entry.name.removeprefix("del-").partition("-")[0]
    # ASCII only: ``isdigit`` also holds for characters such as '²', which ``int`` refuses
    readable = stamp.isascii() and stamp.isdigit() and len(stamp) <= 20
    nanoseconds = int(stamp) if readable else written_ns
    try:
        return datetime.fromtimestamp(nanoseconds / 1e9, UTC)
    except (OverflowError, OSError, ValueError):
        return _LATEST if nanoseconds > 0 else _EARLIEST


def _added_after(recorded: SandboxRecord, *, request: SandboxRequest, spooled_at: datetime) -> bool:
    """Whether the sandbox the checkpoint holds was added after the DEL was spooled, so the DEL is
    not its: runtimes may reuse a container ID once its DEL succeeded, and a spooled DEL did, for
    them. A DEL naming the netns the sandbox records is its own whatever the times say (an ADD that
    waited long before its first commit while its DEL timed out in the shim)."""
    if recorded.created_at <= spooled_at:
        return False
    return not (request.netns and request.netns == recorded.netns)


async def _delete(
    entry: Path, request: SandboxRequest, *, engine: AttachEngine, report: SpoolReport, spooled_at: datetime
) -> _Kept | None:
    """DEL the entry's sandbox, unless the one recorded under its ID was added after the DEL was
    spooled (judged by the engine under the sandbox's lock): then drop the entry unreplayed. What
    keeps the entry spooled, if anything does."""
    try:
        done = await engine.delete_unless(
            request, unless=partial(_added_after, request=request, spooled_at=spooled_at)
        )
    except CniError as error:
        report.failed.append((entry.name, error))
        if await engine.load_sandbox(request.container_id) is None:
            # Not in the checkpoint (a sandbox upstream Multus attached, DELed from its cache):
            # nothing else would retry it, so the entry stays for a later pass.
            return _Kept(request.container_id, error)
        log.error(  # recorded as pending in the checkpoint: GC retries from there
            "spooled DEL %s of container %s left work pending: %s",
            entry.name,
            request.container_id,
            error,
        )
    except Exception as exc:  # not a CNI error: a bug, or a failed write (the engine recorded nothing)
        return _kept_after_surprise(entry, exc, report, container_id=request.container_id)
    else:
        if not done:
            log.warning(
                "spooled DEL %s of container %s dropped: it was spooled at %s, before the ADD of the"
                " sandbox now recorded under that ID, so it was meant for an earlier one",
                entry.name,
                request.container_id,
                spooled_at.isoformat(),
            )
            report.superseded.append(entry.name)
            await asyncio.to_thread(_remove_durably, entry)
            return None
    report.replayed.append(entry.name)
    await asyncio.to_thread(_remove_durably, entry)
    return None


def _socket_dir(daemon_config: dict[str, Any]) -> Path:
    value = daemon_config.get("socketDir")
    return Path(value) if isinstance(value, str) and value else _DEFAULT_SOCKET_DIR


def _address(request: protocol.ShimRequest, body: bytes) -> Path | None:
    """The socket directory the shim that spooled ``request`` (``body``) was looking for, read as
    the shim reads it (keys matched as Go's decoder matches them, the last one winning); None when
    it is not a string. A DEL that comes without its conf (too large to send, or one the daemon
    could not use, dropped by ``protocol.decode_body``) is addressed by the body's own
    ``daemonSocketDir``, which the shim adds to the entries it spools; without it (a shim of an
    earlier release, or a conf whose shim keys were unusable) what it named is unknown, not the
    default."""
    if not request.stdin:
        return _envelope_address(body)
    value = gofold.field(request.stdin_conf, "daemonSocketDir")
    if value is None or value == "":
        return Path(SHIM_DEFAULT_SOCKET_DIR)
    return Path(value) if isinstance(value, str) else None


def _envelope_address(body: bytes) -> Path | None:
    """The ``daemonSocketDir`` the shim put beside ``env`` and ``config`` in an entry's body (keys
    matched as Go's decoder matches them, the last one winning), when it is a usable path."""
    try:
        envelope = json.loads(body)
    except ValueError:  # decoded once already by ``protocol.decode_body``: never, in practice
        return None
    value = gofold.field(envelope, "daemonSocketDir") if isinstance(envelope, dict) else None
    if not isinstance(value, str) or not value or names.unusable_character(value) is not None:
        return None
    return Path(value)


def _same_directory(one: Path, other: Path) -> bool:
    if os.path.normpath(one) == os.path.normpath(other):
        return True
    try:
        return os.path.samefile(one, other)
    except (OSError, ValueError):  # one of them missing (or unnameable): then not one directory
        return False


def _trusted(directory: Path, *, what: str = "the shim's default spool directory") -> bool:
    """Whether the shim's default directory (or another one, ``what``), when it is not our own, may
    be replayed: its entries tear sandboxes down, so it must be ours and writable by nobody else
    (the shim makes it 0700)."""
    try:
        status = directory.stat()
    except FileNotFoundError:
        return False  # nothing was ever spooled there
    except OSError as exc:
        log.error("cannot read %s %s: %s", what, directory, exc.strerror)
        return False
    if _writable_by_others(status):
        log.error(
            "%s %s is not replayed: it must belong to uid %d and be writable by it alone (it is "
            "uid %d, mode %o)",
            what,
            directory,
            os.geteuid(),
            status.st_uid,
            status.st_mode & 0o7777,
        )
        return False
    return True


def _writable_by_others(status: os.stat_result) -> bool:
    """Whether a spool directory is another user's, or another user may write in it: the rule the
    shim refuses to spool by (``app.shim.shim.check_spool_owner``)."""
    return status.st_uid != os.geteuid() or bool(status.st_mode & 0o022)


def _warn_if_exposed(spool_dir: Path) -> None:
    """Say so when this daemon's own ``spoolDir`` breaks the shim's rule: the shim then spools no DEL
    there (the runtime gets code 11 while the daemon cannot take a DEL), and the entries already
    there (those of this daemon's user, the only ones replayed) could be removed by another user."""
    try:
        status = spool_dir.stat()
    except OSError:
        return  # missing: nothing spooled yet (the shim makes it 0700); unreadable: replaying says so
    if _writable_by_others(status):
        log.error(
            "spoolDir %s must belong to uid %d and be writable by it alone (it is uid %d, mode %o): "
            "the shim spools no DEL there, and answers code 11 while the daemon cannot take one",
            spool_dir,
            os.geteuid(),
            status.st_uid,
            status.st_mode & 0o7777,
        )


def _read(entry: Path) -> tuple[bytes, int] | None:
    """The entry's bytes and modification time (nanoseconds); None when it is gone since it was
    listed (a daemon sharing the shim's default directory replayed it). Only a regular file of at most
    ``MAX_BODY_BYTES`` (what a live request may carry) is read, without following a symlink and
    without waiting on a FIFO: a symlink to ``/dev/zero`` or a FIFO nobody writes would otherwise
    hold start-up (and every GC pass) for ever, or fill the memory. Anything else is an entry to
    reject (code 5, or 6 for its size)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(entry, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise CniError(5, f"cannot read spool entry {entry.name}: {reason}") from exc
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise CniError(5, f"spool entry {entry.name} is not a regular file")
        if status.st_uid != os.geteuid():
            # A shim runs as the runtime, whose user this daemon's is: an entry of another user was
            # not spooled by one, and its DEL would tear down whatever sandbox it names (a
            # ``spoolDir`` others may write in, such as one under /tmp).
            raise CniError(
                5, f"spool entry {entry.name} belongs to uid {status.st_uid}, not to this daemon's"
            )
        if status.st_size > MAX_BODY_BYTES:
            raise CniError(6, f"spool entry {entry.name} is larger than {MAX_BODY_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as reader:
            body = reader.read(MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise CniError(5, f"cannot read spool entry {entry.name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(body) > MAX_BODY_BYTES:  # grew since it was looked at
        raise CniError(6, f"spool entry {entry.name} is larger than {MAX_BODY_BYTES} bytes")
    return body, status.st_mtime_ns


def _deletion(
    entry: Path, shim_request: protocol.ShimRequest, daemon_config: dict[str, Any]
) -> SandboxRequest:
    request = protocol.interpret(shim_request, daemon_config=daemon_config)
    if not isinstance(request, SandboxRequest) or request.command is not Command.DEL:
        raise CniError(7, f"spool entry {entry.name} is not a DEL")
    return SandboxRequest(
        command=request.command,
        container_id=request.container_id,
        netns=request.netns,
        ifname=request.ifname,
        cni_args=request.cni_args,
        pod=request.pod,
        conf=request.conf,
        trigger=Trigger.SPOOL,
    )


def _reject(entry: Path, reason: str, report: SpoolReport) -> None:
    target = entry.with_name(entry.name + REJECTED_SUFFIX)
    try:
        entry.rename(target)
    except OSError as exc:  # the entry stays, tried again next pass; never a reason to fail start-up
        log.error("spool entry %s cannot be set aside as %s (%s): %s", entry.name, target.name, exc, reason)
        return
    log.error("spool entry %s rejected, kept as %s: %s", entry.name, target.name, reason)
    report.rejected.append((entry.name, reason))


def _remove_durably(entry: Path) -> None:
    entry.unlink(missing_ok=True)
    fd = os.open(entry.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_path(state_dir: Path) -> Path:
    """The record of the spool directories a daemon of ``state_dir`` has used (``SPOOL_RECORD_NAME``)."""
    return state_dir / SPOOL_RECORD_NAME


def _read_record(record: Path) -> list[Path] | None:
    """The directories ``record`` names, in order; [] when there is none yet; None when it cannot
    be read (logged): then it is neither replaced nor pruned. One whose content is not a record
    is set aside as ``*.rejected`` (logged): its directories are lost to the replays, not to the
    operator."""
    try:
        content = record.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("cannot read the record of earlier spool directories %s: %s", record, exc.strerror)
        return None
    try:
        document = json.loads(content)
        directories = document["spoolDirs"]
        if not isinstance(directories, list) or not all(_recordable(item) for item in directories):
            raise ValueError("spoolDirs must be a list of absolute paths")
    except (ValueError, TypeError, KeyError) as exc:
        target = record.with_name(record.name + REJECTED_SUFFIX)
        try:
            record.rename(target)
        except OSError as failed:
            log.error("the record of earlier spool directories %s is unusable (%s): %s", record, exc, failed)
            return None
        log.error(
            "the record of earlier spool directories %s is unusable (%s): set aside as %s",
            record,
            exc,
            target,
        )
        return []
    return [Path(item) for item in directories]


def _recordable(item: object) -> bool:
    return isinstance(item, str) and item.startswith("/") and names.unusable_character(item) is None


def _write_record(record: Path, directories: list[Path]) -> None:
    """Replace ``record`` with ``directories`` whole: a temporary beside it, fsynced, renamed over
    it, the directory fsynced (a crash leaves the old record or the new one, never a torn one)."""
    content = json.dumps({"spoolDirs": [str(path) for path in directories]}, indent=1).encode() + b"\n"
    temporary = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, record)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    directory_fd = os.open(record.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _remember(record: Path, current: Path) -> list[Path]:
    """Record ``current`` (the ``spoolDir`` of this run) unless it is already; every directory
    recorded, ``current`` included. A record that cannot be written is logged: the earlier
    directories are replayed all the same, and the write is tried again at the next replay."""
    recorded = _read_record(record)
    if recorded is None:
        return []
    if any(os.path.normpath(path) == os.path.normpath(current) for path in recorded):
        return recorded
    recorded = [*recorded, current]
    try:
        _write_record(record, recorded)
    except OSError as exc:
        log.error("cannot record spoolDir %s in %s: %s", current, record, exc.strerror or exc)
    return recorded


def _directories(
    *, spool_dir: Path, shim_default_dir: Path, socket_dir: Path, recorded: list[Path], report: SpoolReport
) -> tuple[list[_Directory], list[Path]]:
    """The directories a replay reads, in order: this daemon's ``spoolDir``, the shim's default
    directory when it is another one and trusted, and the earlier ``spoolDir``s of ``recorded``
    that can be replayed (``_replayable``); with those earlier ones (``_retired``), replayable or
    not."""
    shared = _same_directory(spool_dir, shim_default_dir)
    directories = [_Directory(spool_dir, own=True, shared=shared, socket_dir=socket_dir)]
    if not shared and _trusted(shim_default_dir):
        directories.append(_Directory(shim_default_dir, own=False, shared=True, socket_dir=socket_dir))
    retired = _retired(recorded, spool_dir=spool_dir, shim_default_dir=shim_default_dir)
    return directories + _replayable(retired, socket_dir=socket_dir, report=report), retired


def _retired(recorded: list[Path], *, spool_dir: Path, shim_default_dir: Path) -> list[Path]:
    """The recorded directories a replay reads as earlier ``spoolDir``s: neither the current one
    nor the shim's default directory (replayed as such)."""
    return [
        path
        for path in recorded
        if not _same_directory(path, spool_dir) and not _same_directory(path, shim_default_dir)
    ]


def _replayable(retired: list[Path], *, socket_dir: Path, report: SpoolReport) -> list[_Directory]:
    """Those of the ``retired`` directories a replay reads (own ones: every entry there is this
    daemon's): those that exist and pass the trust check; one that cannot be looked at is reported
    in ``unreadable``, as the own ``spoolDir`` is."""
    replayable = []
    for path in retired:
        directory = _Directory(path, own=True, shared=False, socket_dir=socket_dir, retired=True)
        unreadable = _unreadable(path)
        if unreadable is not None:
            _report_unreadable(directory, unreadable, report)
        elif _trusted(path, what="the earlier spoolDir"):
            replayable.append(directory)
    return replayable


def _forget_emptied(record: Path, *, current: Path, recorded: list[Path], retired: list[Path]) -> None:
    """Rewrite ``record`` without the earlier directories that hold nothing any more: missing ones,
    those holding no spool file (``SPOOL_FILE_GLOBS``), and those a replay reads as the current
    ``spoolDir`` or the shim's default directory. One that cannot be listed stays."""
    keep = [
        path
        for path in recorded
        if os.path.normpath(path) == os.path.normpath(current) or (path in retired and not _emptied(path))
    ]
    if keep == recorded:
        return
    try:
        _write_record(record, keep)
    except OSError as exc:
        log.error("cannot update the record of earlier spool directories %s: %s", record, exc.strerror or exc)
        return
    for path in recorded:
        if path not in keep:
            log.info("spool: the earlier spoolDir %s holds nothing any more: no longer replayed", path)


def _emptied(directory: Path) -> bool:
    """Whether ``directory`` is missing or holds no spool file; not when it cannot be listed."""
    try:
        file_names = os.listdir(directory)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for name in file_names for pattern in SPOOL_FILE_GLOBS)
