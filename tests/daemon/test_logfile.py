"""``logFile`` rotation with upstream's ``logOptions`` (lumberjack semantics)."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.daemon import logformat
from app.settings import LogOptions

LINE = "x" * 1000


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.daemon.rotation")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "rotation maintenance did not finish"
        time.sleep(0.01)


def fill(logger: logging.Logger, megabytes: float) -> None:
    for _ in range(int(megabytes * 1024 * 1024 / (len(LINE) + 1))):
        logger.info(LINE)


def test_the_file_rotates_at_max_size_into_compressed_backups_kept_to_max_backups(
    tmp_path: Path, logger: logging.Logger
) -> None:
    handler = logformat.RotatingLogFile(
        str(tmp_path / "multus.log"), LogOptions(max_size_mb=1, max_backups=2, compress=True)
    )
    logger.addHandler(handler)
    fill(logger, 3.5)  # three rotations

    def settled() -> bool:
        names = [path.name for _, path in handler.backups()]
        return len(names) == 2 and all(name.endswith(".log.gz") for name in names)

    until(settled)
    assert (tmp_path / "multus.log").stat().st_size <= 1024 * 1024
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names[-1] == "multus.log"
    assert len(names) == 3  # nothing else: no temp files
    for _, backup in handler.backups():
        assert backup.name.startswith("multus-")
        content = gzip.decompress(backup.read_bytes()).decode()
        assert 1024 * 1024 - 2000 < len(content) <= 1024 * 1024
        assert set(content.splitlines()) == {LINE}


def test_max_age_removes_old_backups_and_zero_backups_keeps_the_rest(
    tmp_path: Path, logger: logging.Logger
) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    stale = tmp_path / f"multus-{old.strftime(logformat.BACKUP_TIME_FORMAT)}.000.log"
    stale.write_text("from three days ago\n")
    foreign = tmp_path / "multus-notes.log"
    foreign.write_text("not a backup\n")
    handler = logformat.RotatingLogFile(
        str(tmp_path / "multus.log"), LogOptions(max_size_mb=1, max_age_days=2, max_backups=0, compress=False)
    )
    logger.addHandler(handler)
    fill(logger, 2.5)  # two rotations

    def settled() -> bool:
        return not stale.exists() and len(handler.backups()) == 2

    until(settled)
    assert foreign.exists()
    assert all(path.suffix == ".log" for _, path in handler.backups())


def test_rotation_follows_no_link_planted_at_a_backups_name_or_its_partial_file(tmp_path: Path) -> None:
    """In a log directory others may write in, the compression copied a linked file's content into
    the directory (readable by all) and wrote its gzip through a link at the partial file's name."""
    secret, victim = tmp_path / "secret", tmp_path / "victim"
    secret.write_text("root's alone\n")
    victim.write_text("must stay\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    linked = logs / "multus-2026-01-02T03-04-05.000.log"
    linked.symlink_to(secret)
    rotated = logs / "multus-2026-01-02T03-04-06.000.log"
    rotated.write_text("rotated\n")
    (logs / f".{rotated.name}.gz.partial").symlink_to(victim)
    handler = logformat.RotatingLogFile(str(logs / "multus.log"), LogOptions(max_size_mb=1, compress=True))
    try:
        handler._maintain()
    finally:
        handler.close()

    assert (secret.read_text(), victim.read_text()) == ("root's alone\n", "must stay\n")
    assert linked.is_symlink()
    assert not (logs / f"{linked.name}.gz").exists()
    assert gzip.decompress((logs / f"{rotated.name}.gz").read_bytes()) == b"rotated\n"
    assert sorted(path.name for path in logs.iterdir()) == sorted(
        [linked.name, f"{rotated.name}.gz", "multus.log"]
    )
