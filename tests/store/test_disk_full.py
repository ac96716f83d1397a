"""A full disk under the state database, for real: a small tmpfs in a mount namespace of its own
(``disk_full_child``), filled by a file, then freed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DISK_FULL = "database or disk is full"


def _run_on_a_small_tmpfs(tmp_path: Path) -> dict[str, Any]:
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed"
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    script = (
        'mount --make-rprivate / && mount -t tmpfs -o size=3m,mode=0700 multus-py-full "$1" '
        '&& exec "$2" -m tests.store.disk_full_child "$1"'
    )
    done = subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", str(mount_point), sys.executable],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answers


def _failed_with_the_disks_error(errors: list[str | None]) -> bool:
    return all(error is not None and DISK_FULL in error for error in errors)


def test_a_full_disk_fails_the_batch_with_its_own_error_and_records_nothing_until_space_is_back(
    tmp_path: Path,
) -> None:
    answers = _run_on_a_small_tmpfs(tmp_path)

    # SQLite rolled the whole transaction back when the big unit spilled into the full WAL: every
    # unit of the batch is reported failed, with the disk's error (not "no such savepoint: unit")
    assert len(answers["batch"]) == 3
    assert _failed_with_the_disks_error(answers["batch"]), answers["batch"]
    assert _failed_with_the_disks_error([*answers["alone"], *answers["big_alone"]])
    # a unit that caught that error and returned is not reported committed: SQLite undid its writes
    caught = [*answers["caught_alone"], *answers["caught_in_batch"]]
    assert len(caught) == 3
    assert None not in caught, caught
    assert answers["after"] == [None, None]  # space is back: the writer commits again
    assert answers["integrity"] == "ok"
    assert answers["names"] == ["after0", "also0", "before0", "synced0"]  # what failed left nothing
