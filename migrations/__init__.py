"""Alembic migrations of the multus-py state database (``state.db``).

Run by ``app.store.schema.migrate`` before the daemon listens; never by hand in production.
Every revision must be safe to rerun after a kill -9 (SQLite DDL is transactional here, and
each revision runs in its own transaction).
"""
