"""The daemon's soft open-files limit is raised towards the hard one at start-up, capped, never lowered.

Each case runs in a process of its own started with the limits under test (``preexec_fn``), so the
test process keeps its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from app.daemon import limits
from tests.e2e.conftest import Cluster

REPORT = """
import json, logging, resource, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from app.daemon import limits
done = limits.raise_descriptor_limit(cap=int(sys.argv[1]))
print(json.dumps({"result": [done.before, done.after, done.hard],
                  "now": list(resource.getrlimit(resource.RLIMIT_NOFILE))}))
"""


def limits_after_raising(*, soft: int, hard: int, cap: int) -> tuple[dict[str, list[int]], str]:
    """What ``raise_descriptor_limit(cap=cap)`` returns and leaves in a process started with
    ``soft``/``hard`` as its RLIMIT_NOFILE, and what it logged."""

    def start_with_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    run = subprocess.run(
        [sys.executable, "-c", REPORT, str(cap)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=start_with_limits,
    )
    return json.loads(run.stdout), run.stderr


HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
"""The hard limit this test runs under: a child may keep it or lower it, not raise it."""
pytestmark = pytest.mark.skipif(
    HARD < 4096 or HARD == resource.RLIM_INFINITY, reason="needs a finite hard limit of 4096 or more"
)


@pytest.mark.parametrize(
    ("soft", "cap", "raised_to"),
    [
        (256, HARD * 2, HARD),  # systemd's 1024 (here 256) below a modest hard limit: up to it
        (256, 2048, 2048),  # a hard limit above the cap: up to the cap only
        (3000, 2048, 3000),  # set higher than the cap by whoever started the daemon: kept
        (HARD, HARD * 2, HARD),  # nothing to raise
    ],
)
def test_the_soft_limit_is_raised_to_the_hard_one_at_most_to_the_cap_and_never_lowered(
    soft: int, cap: int, raised_to: int
) -> None:
    found, _ = limits_after_raising(soft=soft, hard=HARD, cap=cap)

    assert found == {"result": [soft, raised_to, HARD], "now": [raised_to, HARD]}


def test_raising_the_limit_is_logged_with_both_values() -> None:
    _, logged = limits_after_raising(soft=256, hard=HARD, cap=2048)

    assert f"INFO open-files limit raised from 256 to 2048 (hard limit {HARD})" in logged.splitlines()


def test_a_daemon_started_with_a_low_limit_can_hold_more_descriptors_than_it() -> None:
    """What it is for: a process started at 256 opens a thousand descriptors once it has raised it."""
    program = (
        "import os\n"
        "from app.daemon import limits\n"
        "limits.raise_descriptor_limit()\n"
        "held = [os.open('/dev/null', os.O_RDONLY) for _ in range(1000)]\n"
        "print(len(held))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, HARD)),
    )

    assert run.stdout.strip() == "1000"


def soft_open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit in /proc/{pid}/limits")


@pytest.mark.usefixtures("premigrated_state")  # the first start is not what this is about
def test_multus_daemon_raises_its_limit_before_it_serves(cluster: Cluster) -> None:
    """Started as systemd starts services (a low soft limit), the daemon itself runs with the raised
    one (and is ready: ``start_daemon`` waits for /readyz), so a burst of a few hundred sandboxes no
    longer meets EMFILE."""
    cluster.daemon_wrapper = ["prlimit", f"--nofile=256:{HARD}", "--"]
    cluster.start_daemon()
    assert cluster.daemon is not None

    assert soft_open_files_limit(cluster.daemon.pid) == min(HARD, limits.SOFT_LIMIT_CAP)
