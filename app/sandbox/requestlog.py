"""The request log: every API request the emulator received, in arrival order, with its answer.

Tests of the daemon assert on it ("no GET of the pod during ADD", "the pod watch carries
fieldSelector=spec.nodeName=..."), from Python or over HTTP (``GET /_emulator/requests``). A record
is added when a request arrives and gets its status when the response starts, so an open watch is
visible at once. Control requests (``/_emulator``) are not logged. Bounded; the oldest records go
first. Part of the emulator, a test/demo tool.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    seq: int
    """Position in the log, from 1; stable across clears, so ``since=`` reads stay meaningful."""
    method: str
    path: str
    """The raw path with its raw query string, as the client sent it."""
    content_type: str | None
    accept: str | None
    status: int | None = None
    """None until the response starts."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "contentType": self.content_type,
            "accept": self.accept,
        }

    def __str__(self) -> str:
        return (
            f"{self.method:<6} {self.status or '-'} {self.path}  "
            f"[ct={self.content_type or '-'}; accept={self.accept or '-'}]"
        )


class RequestLog:
    def __init__(self, *, max_records: int) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._last_seq = 0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def last_seq(self) -> int:
        """The seq of the newest record (0 before any); pass it as ``since`` to see only later ones."""
        return self._last_seq

    def start(self, *, method: str, path: str, content_type: str | None, accept: str | None) -> RequestRecord:
        self._last_seq += 1
        record = RequestRecord(self._last_seq, method, path, content_type, accept)
        self._records.append(record)
        self._notify()
        return record

    def answer(self, record: RequestRecord, status: int) -> None:
        """Note the status a response started with."""
        record.status = status
        self._notify()

    def records(
        self, *, since: int = 0, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Records after seq ``since``, optionally only those whose method equals ``method`` and whose
        path matches the regex ``path`` (searched, not anchored)."""
        pattern = re.compile(path) if path is not None else None
        return [
            record
            for record in self._records
            if record.seq > since
            and (method is None or record.method == method.upper())
            and (pattern is None or pattern.search(record.path))
        ]

    async def wait_for(
        self, *, since: int = 0, method: str | None = None, path: str | None = None, answered: bool = False
    ) -> RequestRecord:
        """The first record matching as ``records`` does (and, if ``answered``, with a status), waiting
        for it to arrive. Bound it with ``asyncio.timeout``."""
        while True:
            changed = self._changed
            for record in self.records(since=since, method=method, path=path):
                if not answered or record.status is not None:
                    return record
            await changed.wait()

    def clear(self) -> None:
        self._records.clear()
