"""Log line formats of the daemon: upstream-like text, or JSON lines (``logFormat: "json"``).

Used by ``app.daemon.main.configure_logging`` for every handler (``logFile``, stderr). A JSON line
is one object: ``time`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``, ``msg``, then any
context the call passed with ``extra=`` (container ID, interface, network, verb, ...) under its
own key, and ``exc`` with the traceback when there is one. Values that JSON cannot hold are
written as their ``str``. Formatting never raises: a log call must not fail an operation.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

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
