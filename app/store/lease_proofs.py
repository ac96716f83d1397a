"""What GC's host-local lease sweep reads and writes: where leases may be, and what proves one ours.

- ``recorded_configs``: every distinct (config, root) recorded in the checkpoint now (the lease
  directories of the attachments this node holds, as the root they ran in sees them);
- ``removed``: the ``removed_attachments`` rows (revision 0008), a copy of each attachment with
  host-local IPAM removed from the checkpoint, written by a trigger in the transaction that removed
  it: the proof that a leftover lease of its container is ours, and where to look for it; GC
  ``forget``s a row once no lease of its container is left in those directories;
- ``added_by_us``: the proof for attachments removed before revision 0008, from the history (a
  delegate of ours ran an ADD for the container), for as long as retention keeps those lines.

History retention (``app.store.retention``) never touches ``removed_attachments``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, select

from app.store.models import ATTACHMENTS, HISTORY, REMOVED_ATTACHMENTS


@dataclass(frozen=True, slots=True)
class RemovedAttachment:
    """An attachment with host-local IPAM that left the checkpoint (``removed_attachments``)."""

    id: int
    container_id: str
    ifname: str
    config: bytes
    root: str


def recorded_configs(connection: Connection) -> set[tuple[bytes, str]]:
    """Every distinct (config, root) of the attachments recorded now."""
    statement = select(ATTACHMENTS.c.config, ATTACHMENTS.c.root).distinct()
    return {(bytes(row[0]), str(row[1])) for row in connection.execute(statement)}


def removed(connection: Connection) -> list[RemovedAttachment]:
    """Every removed attachment GC has not yet seen without a lease, oldest first."""
    statement = select(REMOVED_ATTACHMENTS).order_by(REMOVED_ATTACHMENTS.c.id)
    return [
        RemovedAttachment(
            id=int(row.id),
            container_id=str(row.container_id),
            ifname=str(row.ifname),
            config=bytes(row.config),
            root=str(row.root),
        )
        for row in connection.execute(statement)
    ]


def forget(connection: Connection, ids: Collection[int]) -> None:
    """Delete the removed attachments ``ids`` (no lease of theirs is left)."""
    if ids:
        connection.execute(delete(REMOVED_ATTACHMENTS).where(REMOVED_ATTACHMENTS.c.id.in_(sorted(ids))))


_ADDED_BY_US = (
    select(HISTORY.c.id)
    .where(
        HISTORY.c.container_id == bindparam("cid"),
        HISTORY.c.command == "ADD",
        HISTORY.c.step == "delegate",
    )
    .limit(1)
)


def added_by_us(connection: Connection, container_id: str) -> bool:
    """True when the history shows a delegate of ours run for an ADD of ``container_id``; a line of
    another kind (a CHECK, a refused request, a DEL of a container we never had) proves nothing."""
    return connection.execute(_ADDED_BY_US, {"cid": container_id}).first() is not None
