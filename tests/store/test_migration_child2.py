"""The migration child's one-line error when the database cannot even be read: the revision it
stopped at is not claimed to be none (the file on a read-only mount, in a mount namespace of its own)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from app.store import schema
from app.store.database import Database
from tests.store.migrating import migrate


def test_a_database_the_child_cannot_open_is_not_said_to_have_stopped_at_no_revision(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    path = directory / "state.db"
    Database.open(path).close()
    migrate(path, down_to="0009")  # one revision to go: the child has work to do
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed"
    script = (
        'mount --make-rprivate / && mount --bind "$1" "$1" && mount -o remount,ro,bind "$1"'
        ' && exec "$2" -m app.store.schema "$1/state.db"'
    )

    done = subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", str(directory), sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )

    assert done.returncode == 1, done.stderr
    # it said "stopped at schema revision None": a database at 0009 named as one never migrated
    assert done.stderr.strip() == (
        f"error: stopped at a schema revision that cannot be read on the way to {schema.head_revision()!r}:"
        " unable to open database file"
    )
