"""Alembic environment: migrate the connection ``app.store.schema`` hands over, nothing else."""

from __future__ import annotations

from alembic import context

from app.store.models import METADATA

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("multus-py migrations run only through app.store.schema.migrate")

context.configure(
    connection=connection,
    target_metadata=METADATA,
    transaction_per_migration=True,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
