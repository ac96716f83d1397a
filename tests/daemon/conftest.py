"""Daemon tests: in-process pieces (supervision, listener, logging) and daemon processes.

Daemon processes use the end-to-end fixtures (a run directory, real plugins, the installed shim);
the leftover-task check comes from tests/conftest.py, as for every async test.
"""

from __future__ import annotations

from tests.e2e.conftest import cluster, installed_shim, started  # noqa: F401 - the daemon-process fixtures
