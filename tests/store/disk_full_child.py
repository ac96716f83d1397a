"""Run in a mount namespace of its own, on a small tmpfs holding the state database (``argv[1]``):
fills the file system with a file, writes, frees the space, writes again, and prints what each
write answered and what the database holds as JSON (``test_disk_full``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from app.store.database import Connection, Database

BIG_ROWS = 4000
"""Rows of a unit large enough to spill SQLite's page cache (2 MiB) into the WAL mid-transaction."""


def _pods(prefix: str, rows: int = 1) -> Callable[[Connection], None]:
    def unit(connection: Connection) -> None:
        for index in range(rows):
            connection.execute(
                "INSERT INTO mirror_pods (namespace, name, uid, node_name, resource_version, annotations)"
                " VALUES ('ns', ?, ?, '', '', '{}')",
                (f"{prefix}{index}", "u" * 1000),
            )

    return unit


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != 28:  # ENOSPC: full
            raise
    finally:
        os.close(fd)
    return filler


def _catching(unit: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """``unit``, catching the error its writes end with (as a unit that goes on after an error may)."""

    def caught(connection: Connection) -> None:
        with contextlib.suppress(sqlite3.OperationalError):
            unit(connection)

    return caught


async def _one_batch(db: Database, *units: Callable[[Connection], None]) -> list[str | None]:
    """``units`` committed in one batch (queued while the writer is held busy); each one's error."""
    busy, release = threading.Event(), threading.Event()

    def hold(connection: Connection) -> None:
        busy.set()
        release.wait(60)

    held = asyncio.ensure_future(db.write(hold))
    await asyncio.to_thread(busy.wait, 60)
    writes = [asyncio.ensure_future(db.write(unit)) for unit in units]
    await asyncio.sleep(0)
    release.set()
    await held
    return [
        None if isinstance(o, type(None)) else str(o)
        for o in await asyncio.gather(*writes, return_exceptions=True)
    ]


async def _scenario(directory: Path) -> dict[str, object]:
    db = Database.open(directory / "state.db")
    answers: dict[str, object] = {}
    try:
        await db.write(_pods("before"))
        filler = _fill(directory)
        answers["batch"] = await _one_batch(db, _pods("small"), _pods("big", BIG_ROWS), _pods("other"))
        answers["alone"] = await _one_batch(db, _pods("alone"))
        answers["big_alone"] = await _one_batch(db, _pods("bigalone", BIG_ROWS))
        answers["caught_alone"] = await _one_batch(db, _catching(_pods("caughtalone", BIG_ROWS)))
        answers["caught_in_batch"] = await _one_batch(
            db, _pods("first"), _catching(_pods("caught", BIG_ROWS))
        )
        filler.unlink()
        answers["after"] = await _one_batch(db, _pods("after"), _pods("also"))
        _, on_disk = await db.write_then_sync(_pods("synced"))
        await on_disk
    finally:
        db.close()
    with sqlite3.connect(directory / "state.db") as raw:  # what is on disk, through a connection of its own
        answers["integrity"] = raw.execute("PRAGMA integrity_check").fetchone()[0]
        answers["names"] = sorted(name for (name,) in raw.execute("SELECT name FROM mirror_pods"))
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_scenario(Path(sys.argv[1])))))
