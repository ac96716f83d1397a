"""The last resort behind pytest-timeout: a run with a test still hung after its timeout is abandoned.

pytest-timeout runs with its ``signal`` method (``pyproject.toml``): SIGALRM fails the hung test
where it waits (a socket, ``subprocess.wait``, ``time.sleep``, an asyncio loop's ``select``), its
fixtures are torn down (daemons killed, netns and bridges deleted) and the run goes on. Two hangs
survive that signal: a uvloop loop run in the test process (its signal handling keeps the exception
from reaching the test), and a teardown that hangs after the signal has been spent (say, an event
loop's close joining an executor thread that never returns). For those, ``tests/conftest.py`` arms
this backstop with every pytest-timeout timer: a thread that, ``hang_backstop_grace`` seconds (an
ini option, 60 by default) after the test's timeout, prints which test hung and every thread's
stack, then ends the process with status 1, as pytest-timeout's ``thread`` method would have at
once. CI then fails instead of waiting for ever.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from typing import Protocol

import pytest

GRACE_OPTION = "hang_backstop_grace"
_BACKSTOP = pytest.StashKey[threading.Timer]()
_armed: set[threading.Timer] = set()


class TimeoutSettings(Protocol):
    """The part of pytest-timeout's per-test settings the backstop reads."""

    timeout: float | None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        GRACE_OPTION,
        "seconds a test may go on after its pytest-timeout timeout before the whole run is abandoned",
        default="60",
    )


def _abandon_the_run(item: pytest.Item, after: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # our output must reach the terminal, not a capture buffer
        capture.suspend_global_capture(in_=True)
    terminal = item.config.get_terminal_writer()
    terminal.sep("+", f"{item.nodeid} still runs {after:.0f} s after it started")
    terminal.line("pytest-timeout's signal did not end it; abandoning the run. Every thread's stack:")
    terminal.flush()
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(1)


def pytest_timeout_set_timer(item: pytest.Item, settings: TimeoutSettings) -> None:
    """Arm the backstop next to pytest-timeout's own timer (None: pytest-timeout arms its own)."""
    if not settings.timeout:
        return
    after = settings.timeout + float(item.config.getini(GRACE_OPTION))
    backstop = threading.Timer(after, _abandon_the_run, (item, after))
    backstop.name = "hang-backstop"
    backstop.daemon = True
    item.stash[_BACKSTOP] = backstop
    _armed.add(backstop)
    backstop.start()


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    """Disarm the backstop when pytest-timeout disarms its timer (None: it disarms its own too)."""
    backstop = item.stash.get(_BACKSTOP, None)
    if backstop is not None:
        backstop.cancel()
        _armed.discard(backstop)


def pytest_enter_pdb() -> None:
    """Someone debugging at a breakpoint is not a hang (pytest-timeout stands down likewise)."""
    for backstop in list(_armed):
        backstop.cancel()
    _armed.clear()
