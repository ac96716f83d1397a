"""A spool directory others may write in is no place for a DEL answered success.

There another user could rename or remove the entry (no sticky bit: a write permission on the
directory is all it takes; owning the directory, one can grant oneself that), and the DEL the
runtime heard succeed would never run (invariant 7). The shim refuses such a directory: the runtime
gets the original code 11 and sends the DEL again, until the daemon takes it. The rule is the one
the daemon holds the shim's default directory to before it replays it (``app.daemon.spool``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.shim.helpers import conf_bytes, run_shim

ABSENT_DAEMON_DEL = {"CNI_COMMAND": "DEL", "MULTUS_SHIM_WAIT_SECONDS": "0"}
NOBODY = 65534


@pytest.mark.parametrize("mode", [0o777, 0o733, 0o770], ids=["world-writable", "other-writable", "group"])
def test_a_del_is_not_spooled_in_a_directory_others_may_write_in(
    launcher: Path, socket_dir: Path, tmp_path: Path, mode: int
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(mode)

    run = run_shim(launcher, conf_bytes(socket_dir, spoolDir=str(spool)), env=ABSENT_DAEMON_DEL)

    error = run.error()
    assert error["code"] == 11
    assert f"cannot spool the DEL in {spool}" in str(error["msg"])
    assert f"mode {mode:o}" in str(error["msg"])
    assert list(spool.iterdir()) == []


def test_a_del_is_not_spooled_in_a_directory_of_another_user(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    os.chown(spool, NOBODY, NOBODY)

    run = run_shim(launcher, conf_bytes(socket_dir, spoolDir=str(spool)), env=ABSENT_DAEMON_DEL)

    error = run.error()
    assert error["code"] == 11
    assert f"uid {NOBODY}" in str(error["msg"])
    assert list(spool.iterdir()) == []


def test_a_del_is_spooled_in_a_directory_only_its_owner_may_write_in(
    launcher: Path, socket_dir: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)

    run = run_shim(launcher, conf_bytes(socket_dir, spoolDir=str(spool)), env=ABSENT_DAEMON_DEL)

    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    assert len(list(spool.glob("del-*.json"))) == 1
