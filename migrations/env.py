"""Alembic environment: migrate the connection ``app.store.schema`` hands over, nothing else.

Each step also records, in the transaction that stamps its revision, the oldest revision whose code
may run on the schema it leaves (``schema_compatibility``, revision 0010 on): a release rolled back
to reads that row, having no newer migration script to ask. A migration declares
``previous_code_compatible = True`` when the code of the revision before it can still run safely on
its schema (a nullable or defaulted column, a table that code never reads), and this release's code
on what that older code writes; without the declaration it is not (revisions before 0009 declare
nothing: no release before 0010 reads the record).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script.revision import RevisionMap
from sqlalchemy import inspect, text

from app.store.models import METADATA, SCHEMA_COMPATIBILITY


def _oldest_code_revision(revision_map: RevisionMap, revision: str) -> str:
    """The oldest revision whose code may run on ``revision``'s schema: walk down while each
    migration declares the code before it compatible (a merge of branches ends the walk)."""
    script = revision_map.get_revision(revision)
    while (
        script is not None
        and isinstance(script.down_revision, str)
        and getattr(getattr(script, "module", None), "previous_code_compatible", False) is True
    ):
        script = revision_map.get_revision(script.down_revision)
    return revision if script is None else script.revision


def _record_compatibility(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """Write (upgrade) or remove (downgrade) the record of the revision ``step`` moved to or from.

    Before revision 0010 there is no table to write to; a downgrade of 0010 drops it. Alembic
    passes ``heads`` and ``run_args`` too (by these names): not read."""
    connection = ctx.connection
    if connection is None or step.up_revision_id is None:
        return
    if not inspect(connection).has_table(SCHEMA_COMPATIBILITY.name):
        return
    if step.is_upgrade:
        connection.execute(
            text(
                "INSERT OR REPLACE INTO schema_compatibility (revision, oldest_code_revision)"
                " VALUES (:revision, :oldest)"
            ),
            {
                "revision": step.up_revision_id,
                "oldest": _oldest_code_revision(step.revision_map, step.up_revision_id),
            },
        )
    else:
        connection.execute(
            text("DELETE FROM schema_compatibility WHERE revision = :revision"),
            {"revision": step.up_revision_id},
        )


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("multus-py migrations run only through app.store.schema")

context.configure(
    connection=connection,
    target_metadata=METADATA,
    transaction_per_migration=True,
    render_as_batch=True,
    on_version_apply=_record_compatibility,
)
with context.begin_transaction():
    context.run_migrations()
