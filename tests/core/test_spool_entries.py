"""Spool entries the daemon must not trust blindly (invariants 5b, 7 and 13), replayed in process.

A spooled DEL is replayed at start-up, before the daemon reports ready, and on every GC pass: an
entry that hangs the read or fills memory would hold the daemon there for ever, and a DEL meant for
an earlier sandbox must not tear down a later one that reuses its container ID.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.attach.requests import Command
from app.daemon import spool
from app.daemon.server import MAX_BODY_BYTES
from app.store.records import SandboxRecord
from tests.core.support import Node, new_container_id
from tests.core.test_spool_replay import attached, daemon_config, spool_entry

WATCHDOG_SECONDS = 30.0
"""How long a read of a FIFO is given before the test opens its other end itself (then it failed)."""


def spooled_name(when_ns: int, container_id: str) -> str:
    """An entry's name as the shim makes it: the time it was spooled, a pid, the container ID."""
    return f"del-{when_ns}-4242-{container_id}.json"


async def replay(node: Node, directory: Path) -> spool.SpoolReport:
    return await spool.replay(
        spool_dir=directory,
        engine=node.engine(),
        daemon_config=daemon_config(node),
        shim_default_dir=node.root / "shim-default",
    )


# --- A container ID reused after a spooled DEL -------------------------------------------------------


async def test_a_del_spooled_before_the_add_of_a_sandbox_reusing_its_id_leaves_that_sandbox_attached(
    node: Node,
) -> None:
    """The runtime heard success for the spooled DEL, so it may add a new sandbox under the same ID
    (the daemon may even have run that DEL itself, late). Replaying the DEL then tore the new
    sandbox down: its pod lost its networks while running."""
    spooled_ns = time.time_ns()
    container = await attached(node)
    directory = node.root / "spool"
    entry = spool_entry(directory, container, name=spooled_name(spooled_ns, container))

    report = await replay(node, directory)

    assert report.superseded == [entry.name]
    assert report.replayed == []
    record = node.checkpoint(container)
    assert record is not None
    assert record.state == "ready"
    assert not entry.exists(), "the DEL it meant to run has no sandbox left to run on"


async def test_a_del_spooled_after_the_sandbox_was_added_is_replayed(node: Node) -> None:
    container = await attached(node)
    directory = node.root / "spool"
    entry = spool_entry(directory, container, name=spooled_name(time.time_ns(), container))

    report = await replay(node, directory)

    assert report.replayed == [entry.name]
    assert node.checkpoint(container) is None


async def test_a_del_naming_the_recorded_netns_is_replayed_even_if_spooled_before_the_add(
    node: Node,
) -> None:
    """An ADD that waited long before its first commit while its DEL timed out in the shim: the DEL
    names the sandbox's own netns, so it is that sandbox's."""
    spooled_ns = time.time_ns()
    container = await attached(node)
    record = node.checkpoint(container)
    assert record is not None
    directory = node.root / "spool"
    entry = spool_entry(directory, container, name=spooled_name(spooled_ns, container))
    entry.write_text(entry.read_text().replace('"CNI_NETNS": ""', f'"CNI_NETNS": "{record.netns}"'))

    report = await replay(node, directory)

    assert report.replayed == [entry.name]
    assert node.checkpoint(container) is None


# --- Entries that are not plain files ----------------------------------------------------------------


@pytest.fixture
def make_fifo() -> Iterator[Callable[[Path], Path]]:
    """Makes a FIFO nobody writes to. Should a read of one block, a watchdog opens its writing end
    after ``WATCHDOG_SECONDS`` (so that the test ends, and fails) and the test sees that it had to."""
    done, unblocked = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []

    def watchdog(path: Path) -> None:
        if not done.wait(WATCHDOG_SECONDS):
            unblocked.set()
            os.close(os.open(path, os.O_WRONLY))

    def make(path: Path) -> Path:
        os.mkfifo(path, 0o600)
        thread = threading.Thread(target=watchdog, args=(path,), name="fifo-watchdog", daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield make
    done.set()
    for thread in threads:
        thread.join(timeout=WATCHDOG_SECONDS)
    assert not unblocked.is_set(), "the replay waited on a FIFO until the watchdog opened it"


@pytest.mark.parametrize("how", ["fifo", "symlink-to-fifo"])
async def test_an_entry_that_is_no_regular_file_is_rejected_without_waiting_on_it(
    node: Node, make_fifo: Callable[[Path], Path], how: str
) -> None:
    """Read as a file, such an entry held start-up (a FIFO blocks its reader; a symlink to
    ``/dev/zero`` would fill memory) and, on the event loop, every request with it."""
    directory = node.root / "spool"
    directory.mkdir(mode=0o700)
    entry = directory / spooled_name(time.time_ns(), new_container_id())
    if how == "fifo":
        make_fifo(entry)
    else:
        entry.symlink_to(make_fifo(node.root / "fifo"))

    report = await replay(node, directory)

    assert [name for name, _ in report.rejected] == [entry.name]
    set_aside = entry.with_name(entry.name + spool.REJECTED_SUFFIX)
    assert set_aside.is_fifo() if how == "fifo" else set_aside.is_symlink()


async def test_an_entry_larger_than_a_request_may_be_is_rejected_unread(node: Node) -> None:
    directory = node.root / "spool"
    directory.mkdir(mode=0o700)
    entry = directory / spooled_name(time.time_ns(), new_container_id())
    with entry.open("wb") as sparse:
        sparse.truncate(16 * MAX_BODY_BYTES)

    report = await replay(node, directory)

    [(name, reason)] = report.rejected
    assert name == entry.name
    assert f"larger than {MAX_BODY_BYTES} bytes" in reason


async def test_an_entry_that_cannot_be_set_aside_does_not_stop_the_replay(node: Node) -> None:
    """Renaming a rejected entry can fail (here its ``.rejected`` name is a directory): that raised
    out of the replay, which failed start-up (the daemon stopped) and every GC pass after it."""
    directory = node.root / "spool"
    directory.mkdir(mode=0o700)
    torn = directory / spooled_name(time.time_ns(), "torn")
    torn.write_bytes(b'{"env": {"CNI_COMM')
    in_the_way = torn.with_name(torn.name + spool.REJECTED_SUFFIX)
    in_the_way.mkdir()
    (in_the_way / "something").write_text("")
    later = spool_entry(directory, new_container_id(), name=spooled_name(time.time_ns(), "later"))

    report = await replay(node, directory)

    assert report.rejected == []
    assert torn.exists(), "left for the next pass"
    assert report.replayed == [later.name]


async def test_whether_a_spooled_del_is_meant_for_the_recorded_sandbox_is_judged_under_its_lock(
    node: Node,
) -> None:
    """Judged before the lock, an ADD of a reused ID taking the lock in between could still lose
    its networks to the DEL; judged under it, nothing can come between the judgment and the DEL.
    Here the judgment must wait while another operation holds the sandbox's lock."""
    container = await attached(node)
    engine = node.engine()
    judged: list[str] = []

    def meant_for_an_earlier_sandbox(record: SandboxRecord) -> bool:
        judged.append(record.container_id)
        return True

    request = node.request(Command.DEL, container, None, node.conf(node.recorder_network("x")))
    async with engine.locks.hold(container):
        deleting = asyncio.create_task(engine.delete_unless(request, unless=meant_for_an_earlier_sandbox))
        await asyncio.sleep(0.05)  # the DEL has run up to its lock (nothing else to wait on)
        assert judged == [], "judged while another operation held the sandbox's lock"
    done = await deleting

    assert judged == [container]
    assert done is False
    assert node.checkpoint(container) is not None, "nothing was deleted"


# --- Temporaries of entries a shim never finished ------------------------------------------------------


class _DyingPosix:
    """The ``posix`` module as a shim killed between writing an entry and renaming it sees it: the
    rename never happens, nor the clean-up after it."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def rename(_source: str, _target: str) -> None:
        raise OSError("killed before the rename")

    @staticmethod
    def unlink(_path: str) -> None:
        """Nothing: the process is gone."""


def abandoned_temporary(directory: Path, monkeypatch: pytest.MonkeyPatch, *, age: float) -> Path:
    """The temporary file a shim leaves when it dies in the middle of spooling a DEL, ``age``
    seconds old."""
    from app.shim import shim

    directory.mkdir(mode=0o700, exist_ok=True)
    before = set(directory.iterdir())
    with monkeypatch.context() as patched:
        patched.setattr(shim, "posix", _DyingPosix())
        with pytest.raises(OSError, match="killed before the rename"):
            shim.write_durably(str(directory), spooled_name(time.time_ns(), new_container_id()), b"{}")
    [left] = set(directory.iterdir()) - before
    then = time.time() - age
    os.utime(left, (then, then))
    return left


async def test_a_temporary_left_by_a_shim_that_died_while_spooling_is_removed_once_stale(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing else ever removed it: each one stayed in the spool directory until an uninstall."""
    directory = node.root / "spool"
    stale = abandoned_temporary(directory, monkeypatch, age=spool.STALE_TEMPORARY_SECONDS + 60)
    entry = spool_entry(directory, new_container_id(), name=spooled_name(time.time_ns(), "whole"))

    report = await replay(node, directory)

    assert report.temporaries_removed == [stale.name]
    assert not stale.exists()
    assert report.replayed == [entry.name], "whole entries are replayed as before"


async def test_a_temporary_a_shim_may_still_be_writing_is_left_alone(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = node.root / "spool"
    recent = abandoned_temporary(directory, monkeypatch, age=1.0)
    not_a_file = directory / f".{spooled_name(1, 'dir')}.tmp"
    not_a_file.mkdir()
    old = time.time() - 10 * spool.STALE_TEMPORARY_SECONDS
    os.utime(not_a_file, (old, old))

    report = await replay(node, directory)

    assert report.temporaries_removed == []
    assert recent.exists()
    assert not_a_file.is_dir()
