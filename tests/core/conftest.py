"""Fixtures for the core tests: a ``Node`` (store, plugins, conf dir) on a temp dir, removed after.

These tests drive ``AttachEngine``, ``GarbageCollector``, recovery and the daemon's HTTP application
in the test's own process: real SQLite, real plugin processes, real network namespaces, no daemon. Each
node's store starts as a copy of the session's empty migrated database (``empty_state_template``):
none of these tests is about migrating a new file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.support import Node


@pytest.fixture
def node(tmp_path: Path, empty_state_template: Path) -> Iterator[Node]:
    built = Node(tmp_path, state_template=empty_state_template)
    try:
        yield built
    finally:
        built.cleanup()
