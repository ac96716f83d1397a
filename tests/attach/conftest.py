"""Fixtures shared by the app.attach tests: a real state database in the test's directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.database import Database
from tests.conftest import open_empty_state


@pytest.fixture
def database(tmp_path: Path, empty_state_template: Path) -> Iterator[Database]:
    """A new state database (a copy of the session's empty migrated one: see tests/conftest.py)."""
    database = open_empty_state(empty_state_template, tmp_path / "state.db")
    yield database
    database.close()
