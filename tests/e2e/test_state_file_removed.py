"""The state database removed or replaced under a running daemon: the checkpoint is put back.

SQLite in WAL mode gives no error when ``state.db`` (or its directory, or its WAL) is unlinked
while open: the daemon would write and read the deleted file, and its next start would find the
checkpoint gone, every running sandbox's DEL then finding nothing to undo (leaked interfaces and
leases). The daemon's file check writes the checkpoint back at its path from the open connection
(``Database.keep_file_in_place``); a daemon started again finds every sandbox, and its DEL undoes
each one. The daemon's query API (``multusctl``) reads the file put back too.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, Netns, new_container_id

pytestmark = [
    pytest.mark.slow,  # starts daemon processes
    pytest.mark.usefixtures("premigrated_state"),
]

RESTORE_WAIT_SECONDS = 20.0
"""Generous on a loaded machine: the check runs every two seconds."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _wait_for_a_new_file(path: Path, old: tuple[int, int] | None) -> None:
    """Until ``path`` names a file again, and not the one it named (``old``)."""
    deadline = time.monotonic() + RESTORE_WAIT_SECONDS
    while _identity(path) in (None, old):
        assert time.monotonic() < deadline, f"{path} was not put back"
        time.sleep(0.05)


def _add(node: Cluster) -> tuple[str, Netns]:
    netns = node.new_netns()
    container = new_container_id()
    added = node.run_shim("ADD", container_id=container, netns=netns)
    assert added.returncode == 0, added.stdout + added.stderr
    return container, netns


def _recorded(node: Cluster) -> set[str]:
    """The sandboxes the file at the state database's path records (the daemon stopped)."""
    with closing(sqlite3.connect(node.state_db)) as connection:
        return {row[0] for row in connection.execute("SELECT container_id FROM sandboxes")}


def _restart_and_del_all(node: Cluster, sandboxes: dict[str, Netns]) -> None:
    """A new daemon on the same node DELs every sandbox from its checkpoint: each netns is emptied."""
    node.start_daemon()
    for container, netns in sandboxes.items():
        assert "eth0" in netns.links()
        deleted = node.run_shim("DEL", container_id=container, netns=netns)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert "eth0" not in netns.links(), "DEL found nothing recorded: the interface leaked"


def _removed_under_the_daemon(node: Cluster, remove: Callable[[], None], *, add_before: bool = True) -> None:
    """ADD, ``remove`` something, ADD and DEL on, restart: the checkpoint holds what it must.

    ``add_before``: the second ADD comes before the file is put back (into the unlinked file)."""
    first, first_netns = _add(node)
    old = _identity(node.state_db)
    remove()
    if add_before:
        second, second_netns = _add(node)
    _wait_for_a_new_file(node.state_db, old)
    if not add_before:
        second, second_netns = _add(node)
    third, third_netns = _add(node)
    deleted = node.run_shim("DEL", container_id=first, netns=first_netns)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert node.stop_daemon(signal.SIGTERM) == 0
    assert _recorded(node) == {second, third}
    _restart_and_del_all(node, {second: second_netns, third: third_netns})


def test_a_state_db_unlinked_under_the_daemon_is_put_back_with_every_sandbox(
    started: Callable[..., Cluster],
) -> None:
    node = started()
    _removed_under_the_daemon(node, node.state_db.unlink)
    assert "put back at its path" in node.daemon_log.read_text()


def test_a_state_directory_removed_under_the_daemon_is_put_back_with_every_sandbox(
    started: Callable[..., Cluster],
) -> None:
    node = started()
    # Its WAL went with it: an ADD before the file is put back may fail, as below.
    _removed_under_the_daemon(node, lambda: shutil.rmtree(node.state_db.parent), add_before=False)
    assert node.state_db.with_name("state.db.lock").exists()  # locked again, against a second daemon


def test_a_wal_unlinked_under_the_daemon_is_put_back_with_every_sandbox(
    started: Callable[..., Cluster],
) -> None:
    node = started()
    # An ADD before the file is put back may fail (code 5: its intents' WAL cannot be synced).
    _removed_under_the_daemon(node, node.state_db.with_name("state.db-wal").unlink, add_before=False)


def _shown(node: Cluster, container: str) -> subprocess.CompletedProcess[str]:
    """``multusctl show container``, answered by the daemon's query API."""
    config = str(node.root / "daemon-config.json")
    command = [sys.executable, "-m", "app.cli.main", "--config", config, "show", container]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_query_api_reads_the_state_db_put_back(started: Callable[..., Cluster]) -> None:
    node = started()
    first, _ = _add(node)
    before = _shown(node, first)  # the query API's connections are open, on the file as it is
    assert before.returncode == 0, before.stdout + before.stderr
    old = _identity(node.state_db)
    node.state_db.unlink()
    _wait_for_a_new_file(node.state_db, old)
    second, _ = _add(node)

    shown = _shown(node, second)

    assert shown.returncode == 0, shown.stdout + shown.stderr  # not the checkpoint as it was put back
    assert second in shown.stdout
    assert "directly" not in shown.stderr  # the daemon answered, not the file
