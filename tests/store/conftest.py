"""Fixtures the store's tests share: a state database's path, and that database opened (and closed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.database import Database
from tests.conftest import open_empty_state


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def db(db_path: Path, empty_state_template: Path) -> Iterator[Database]:
    """``db_path`` opened as a new database (a copy of the session's empty migrated one: see
    tests/conftest.py); the tests of opening and migrating a new file open ``db_path`` themselves."""
    database = open_empty_state(empty_state_template, db_path)
    try:
        yield database
    finally:
        database.close()
