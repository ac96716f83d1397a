"""Descriptors passed on to the daemon by whoever started it never reach the plugins it spawns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SPAWN = """
import os, sys
from app.daemon.main import keep_inherited_descriptors_to_ourselves
read_end, write_end = os.pipe()
os.set_inheritable(write_end, True)  # as a parent passing a pipe on would leave it
if sys.argv[1] == "kept":
    keep_inherited_descriptors_to_ourselves()
listing = sys.argv[2]
pid = os.posix_spawn("/bin/sh", ["sh", "-c", f"ls /proc/self/fd > {listing}"], {})
os.waitpid(pid, 0)
print(write_end)
"""


def _fds_of_a_spawned_child(tmp_path: Path, mode: str) -> tuple[int, set[int]]:
    listing = tmp_path / f"fds-{mode}"
    run = subprocess.run(
        [sys.executable, "-c", SPAWN, mode, str(listing)], capture_output=True, text=True, check=True
    )
    return int(run.stdout), {int(name) for name in listing.read_text().split()}


@pytest.mark.parametrize("mode", ["kept", "passed-on"])
def test_an_inherited_descriptor_reaches_a_spawned_plugin_only_if_not_kept(tmp_path: Path, mode: str) -> None:
    passed, seen = _fds_of_a_spawned_child(tmp_path, mode)
    assert {0, 1, 2} <= seen
    assert (passed in seen) is (mode == "passed-on")
