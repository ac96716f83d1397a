"""A test that hangs fails the run instead of hanging it (pytest-timeout, then tests/hang_backstop.py).

Each case runs a small suite of hung tests in a pytest process of its own, with this suite's timeout
settings but timeouts of half a second.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from app.sandbox.processes import child_environment

REPOSITORY = Path(__file__).parent.parent

HUNG_ON_A_LOOP_AND_ON_A_CHILD = """
import asyncio
import subprocess
from pathlib import Path

import pytest

TORN_DOWN = Path(__file__).parent / "torn-down"


@pytest.fixture
def child():
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()
    with TORN_DOWN.open("a") as torn_down:
        torn_down.write(f"{process.pid}\\n")


async def test_awaits_for_ever(child):
    await asyncio.Event().wait()


def test_waits_for_its_child_for_ever(child):
    child.wait()
"""

HUNG_ON_UVLOOP = """
import asyncio

import uvloop


def test_runs_uvloop_for_ever():
    uvloop.run(asyncio.Event().wait())


def test_after_it():
    pass
"""


OUTER_PYTEST_SETTINGS = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PY_COLORS",
    "FORCE_COLOR",
    "NO_COLOR",
    "COLUMNS",
)
"""What the environment of the run around this one (CI's, a developer's shell) may set that would
change the small suite's options or output."""


def _child_pytest_environment() -> dict[str, str]:
    env = child_environment(PYTHONPATH=str(REPOSITORY))
    for name in OUTER_PYTEST_SETTINGS:
        env.pop(name, None)
    return env


def _run_suite(directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    (directory / "test_hung.py").write_text(source)
    (directory / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "timeout = 0.5\ntimeout_method = signal\nhang_backstop_grace = 0.5\n"
    )
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"),
            *("-p", "tests.hang_backstop", "--junitxml", "report.xml", "test_hung.py"),
        ],
        cwd=directory,
        env=_child_pytest_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _failure_messages(directory: Path) -> dict[str, str]:
    """Each failed test's name and failure message, from the run's JUnit report (not the terminal's
    text, whose summary lines depend on the terminal's width)."""
    report = ElementTree.parse(directory / "report.xml")
    return {
        case.attrib["name"]: failure.attrib.get("message", "")
        for case in report.iter("testcase")
        if (failure := case.find("failure")) is not None
    }


def test_a_hung_test_fails_its_fixtures_are_torn_down_and_the_run_goes_on(tmp_path: Path) -> None:
    run = _run_suite(tmp_path, HUNG_ON_A_LOOP_AND_ON_A_CHILD)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 failed" in run.stdout
    failures = _failure_messages(tmp_path)
    assert sorted(failures) == ["test_awaits_for_ever", "test_waits_for_its_child_for_ever"]
    for message in failures.values():
        assert message.startswith("Failed: Timeout (>0.5s) from pytest-timeout"), message
    torn_down = (tmp_path / "torn-down").read_text().split()
    assert len(torn_down) == 2, "each hung test's child was killed by its fixture's teardown"


def test_a_hang_the_signal_cannot_end_ends_the_run_with_every_stack(tmp_path: Path) -> None:
    run = _run_suite(tmp_path, HUNG_ON_UVLOOP)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_hung.py::test_runs_uvloop_for_ever still runs 1 s after it started" in run.stdout
    assert "line 8 in test_runs_uvloop_for_ever" in run.stderr, "its stack is printed"
    assert "passed" not in run.stdout, "the run ended there"
