"""A spool directory the shim makes is on disk before the DEL is answered success.

The entry is written, synced, renamed into place and its directory synced; a directory the shim
had to make for it (the first DEL spooled on a node) was not synced into its parent, so a power
loss right after the answer could take the new directory, and the entry inside, away: a DEL lost
(invariant 7). Run in process, with ``posix``'s ``mkdir`` and ``fsync`` watched (they still run).
"""

from __future__ import annotations

import os
import posix
from pathlib import Path

import pytest

from app.shim import shim


def watch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What ``mkdir`` made and ``fsync`` synced, in order (an fsync'd descriptor named by its path)."""
    events: list[tuple[str, str]] = []
    real_mkdir, real_fsync = posix.mkdir, posix.fsync

    def mkdir(path: str, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        events.append(("mkdir", "/" + path.lstrip("/")))  # as readlink names it (the old code made "//x")

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(posix, "mkdir", mkdir)
    monkeypatch.setattr(posix, "fsync", fsync)
    return events


def test_each_directory_made_for_a_spooled_del_is_synced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "state" / "spool"
    events = watch(monkeypatch)

    shim.spool_del({"spooldir": str(spool)}, b"{}", shim.CniError(shim.ERR_TRY_AGAIN_LATER, "absent"))

    [entry] = spool.glob("del-*.json")
    made = [path for kind, path in events if kind == "mkdir"]
    assert made == [str(tmp_path / "state"), str(spool)]
    for directory in made:
        synced_after = [
            path for kind, path in events[events.index(("mkdir", directory)) :] if kind == "fsync"
        ]
        assert str(Path(directory).parent) in synced_after, f"{directory} was never synced into its parent"
    assert events[-1] == ("fsync", str(spool)), "the entry's directory is synced last"
    assert entry.read_bytes() == b"{}"


def test_no_parent_is_synced_when_the_spool_directory_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    events = watch(monkeypatch)

    shim.spool_del({"spooldir": str(spool)}, b"{}", shim.CniError(shim.ERR_TRY_AGAIN_LATER, "absent"))

    assert [event for event in events if event[0] == "mkdir"] == []
    synced = [path for kind, path in events if kind == "fsync"]
    assert [path for path in synced if not path.endswith(".json.tmp")] == [str(spool)]
