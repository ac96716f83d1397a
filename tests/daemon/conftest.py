"""Daemon tests: in-process pieces (supervision, listener, logging) and daemon processes.

Daemon processes use the end-to-end fixtures (a run directory, real plugins, the installed shim).
"""

from __future__ import annotations

from tests.asyncio_hygiene import no_tasks_left_on_the_loop  # noqa: F401 - autouse here
from tests.e2e.conftest import cluster, started  # noqa: F401 - the daemon-process fixtures
