"""Named places where a test may have the daemon SIGKILL itself, to prove crash safety.

The engine, recovery and GC call ``reached(point)`` between the steps whose interleaving with a
kill -9 matters (after an intent commit, after a delegate ran but before its result is committed,
in the middle of a rollback or a DEL, ...). In production nothing is armed and ``reached`` is a
dictionary lookup. Tests arm one point through the daemon's environment (``MULTUS_PY_CRASH_AT``,
read once by ``app.settings``; ``app.daemon.wiring`` arms the engine with it): ``<point>`` kills at
its first occurrence, ``<point>:<n>`` at its n-th (so a test can crash inside the third delegate of
an ADD).
"""

from __future__ import annotations

import logging
import os
import signal
from enum import StrEnum

log = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "MULTUS_PY_CRASH_AT"


class Point(StrEnum):
    ADD_AFTER_INTENT = "add-after-intent"
    """A delegate's intent (with the previous delegate's result) is committed; it has not run."""
    ADD_INTENTS_SYNCED = "add-intents-synced"
    """The ADD's intents are on disk; its first plugin may have been started, waiting for its input,
    which it has not been given."""
    ADD_AFTER_EXEC = "add-after-exec"
    """A delegate ran and succeeded; its result is not committed."""
    ADD_BEFORE_ANSWER = "add-before-answer"
    """The whole ADD is committed; the runtime has not been answered."""
    ROLLBACK_AFTER_DEL = "rollback-after-del"
    """During a rollback, one delegate's DEL ran; the rollback is not committed."""
    DEL_AFTER_BEGIN = "del-after-begin"
    """A DEL marked the sandbox as deleting; no delegate DEL has run."""
    DEL_AFTER_EXEC = "del-after-exec"
    """During a DEL, one delegate's DEL ran; nothing of it is committed."""
    GC_AFTER_DEL = "gc-after-del"
    """During GC or recovery, one delegate's DEL ran; nothing of it is committed."""


class CrashPoints:
    """Which point (and which occurrence of it) kills the process; nothing by default."""

    def __init__(self, armed: str = "") -> None:
        self._point: str | None = None
        self._occurrence = 1
        self._seen = 0
        if armed:
            name, _, count = armed.partition(":")
            self._point = Point(name).value
            self._occurrence = int(count) if count else 1

    def reached(self, point: Point) -> None:
        if point != self._point:
            return
        self._seen += 1
        if self._seen == self._occurrence:
            log.critical("crash point %s reached (occurrence %d): SIGKILL", point, self._seen)
            os.kill(os.getpid(), signal.SIGKILL)


DISARMED = CrashPoints()
