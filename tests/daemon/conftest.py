"""Daemon tests: in-process pieces (supervision, listener, logging) and daemon processes.

Daemon processes use the end-to-end fixtures (a run directory, real plugins, the installed shim,
and ``premigrated_state``, where a daemon's first start is not the subject: see tests/e2e/conftest.py);
the leftover-task check comes from tests/conftest.py, as for every async test.
"""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401 - the daemon-process fixtures
    cluster,
    installed_shim,
    premigrated_state,
    started,
    state_template,
)
