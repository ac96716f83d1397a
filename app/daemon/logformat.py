"""The daemon's logging: level, handlers, ``logFile`` rotation (``logOptions``), line formats.

``configure`` is called once by ``app.daemon.main`` right after the settings are read, before
the socket is bound: standard library only. Lines go to ``logFile`` and/or stderr as upstream
(``logToStderr``, stderr when there is no file), at upstream's ``logLevel`` names.

``logFile`` is rotated as upstream's lumberjack does: before a write would take it beyond
``logOptions.maxSize`` MB it is renamed ``<name>-<UTC time>.<ext>`` (``multus-2026-12-05T09-17-04.000.log``),
gzipped when ``compress`` is on, and the rotated files beyond ``maxBackups`` (0: no bound) or
older than ``maxAge`` days (0: no bound) are removed; compression and removal run on a thread of
their own so no log call waits for them.

Formats: upstream-like text, or JSON lines (``logFormat: "json"``): one object per line with
``time`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``, ``msg``, then any field the call
passed with ``extra=`` under its own key, and ``exc`` with the traceback when there is one.
Values that JSON cannot hold are written as their ``str``. Formatting never raises: a log call
must not fail an operation.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import stat
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from app.osthreads import name_this_thread
from app.settings import LogOptions, Settings

LEVELS = {
    "debug": logging.DEBUG,
    "verbose": logging.INFO,
    "error": logging.ERROR,
    "panic": logging.CRITICAL,
}
"""Upstream's ``logLevel`` names (case-insensitive); anything else logs nothing but panics."""
MEGABYTE = 1024 * 1024
DEFAULT_MAX_SIZE_MB = LogOptions().max_size_mb
"""lumberjack's size when ``maxSize`` is 0."""
BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for daemon-config's ``logFormat`` (already validated: ``text`` or ``json``)."""
    return JsonLinesFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(settings: Settings) -> None:
    """Install the daemon's handlers on the root logger (replacing any)."""
    level = LEVELS.get(settings.log_level.lower(), logging.CRITICAL)
    handlers: list[logging.Handler] = []
    if settings.log_file:
        handlers.append(RotatingLogFile(settings.log_file, settings.log_options))
    if settings.log_to_stderr or not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    line_format = formatter(settings.log_format)
    for handler in handlers:
        handler.setFormatter(line_format)
    logging.basicConfig(level=level, handlers=handlers, force=True)


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """``logFile`` with lumberjack's rotation: timestamped backups, optional gzip, count and age bounds."""

    def __init__(self, filename: str, options: LogOptions) -> None:
        self.options = options
        super().__init__(
            filename, maxBytes=(options.max_size_mb or DEFAULT_MAX_SIZE_MB) * MEGABYTE, encoding="utf-8"
        )
        path = Path(self.baseFilename)
        self._directory = path.parent
        self._stem, self._suffix = path.stem, path.suffix
        self._backup = re.compile(
            re.escape(self._stem)
            + r"-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3})"
            + re.escape(self._suffix)
            + r"(\.gz)?$"
        )
        self._maintenance = threading.Lock()

    def doRollover(self) -> None:  # noqa: N802 - the stdlib's name
        if self.stream:
            self.stream.close()
            self.stream = None
        now = time.time()
        stamp = time.strftime(BACKUP_TIME_FORMAT, time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
        backup = self._directory / f"{self._stem}-{stamp}{self._suffix}"
        if os.path.exists(self.baseFilename):
            os.replace(self.baseFilename, backup)
        self.stream = self._open()
        threading.Thread(target=self._maintain_in_thread, name="log-rotation", daemon=True).start()

    def backups(self) -> list[tuple[datetime, Path]]:
        """Rotated files of this log, newest first."""
        found = []
        for entry in os.scandir(self._directory):
            match = self._backup.match(entry.name)
            if match:
                moment = datetime.strptime(match.group(1), BACKUP_TIME_FORMAT + ".%f").replace(tzinfo=UTC)
                found.append((moment, Path(entry.path)))
        return sorted(found, reverse=True)

    def _maintain_in_thread(self) -> None:
        name_this_thread("log-rotation")
        self._maintain()

    def _maintain(self) -> None:
        """Compress, then remove what ``maxBackups`` and ``maxAge`` do not keep; never raises."""
        with self._maintenance:
            try:
                if self.options.compress:
                    for _, path in self.backups():
                        if path.suffix != ".gz":
                            _gzip(path)
                backups = self.backups()
                doomed: set[Path] = set()
                if self.options.max_backups:
                    doomed.update(path for _, path in backups[self.options.max_backups :])
                if self.options.max_age_days:
                    cutoff = datetime.now(UTC).timestamp() - self.options.max_age_days * 86400
                    doomed.update(path for moment, path in backups if moment.timestamp() < cutoff)
                for path in doomed:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                print(f"multus-daemon: log rotation of {self.baseFilename}: {exc}", file=sys.stderr)


def _gzip(path: Path) -> None:
    """``path`` -> ``path.gz`` (written beside, then renamed), ``path`` removed. Neither name is
    followed as a symlink: in a log directory others may write in (``/var/log`` is group-writable on
    some distributions) a link planted at a backup's name would have its target copied, readable, into
    the directory, and one at the partial file's name would have its target overwritten. A backup that
    is no regular file is left as it is (a rotation makes only regular ones)."""
    import gzip  # only on a rotation: kept off the path to the first accept
    import shutil

    target = path.with_name(path.name + ".gz")
    partial = path.with_name(f".{path.name}.gz.partial")
    source_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(source_fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source_fd).st_mode):
            return
        partial.unlink(missing_ok=True)  # a killed rotation's, or a link: never written through
        sink_fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with open(sink_fd, "wb") as raw_sink, gzip.GzipFile(fileobj=raw_sink, mode="wb") as sink:
            shutil.copyfileobj(source, sink)
    os.replace(partial, target)
    path.unlink()
