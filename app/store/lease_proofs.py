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

from app.store.database import Connection
from app.store.records_sql import cursor_of, json_list


@dataclass(frozen=True, slots=True)
class RemovedAttachment:
    """An attachment with host-local IPAM that left the checkpoint (``removed_attachments``)."""

    id: int
    container_id: str
    ifname: str
    config: bytes
    root: str


_RECORDED_CONFIGS_SQL = "SELECT DISTINCT config, root FROM attachments"
_REMOVED_SQL = "SELECT id, container_id, ifname, config, root FROM removed_attachments ORDER BY id"
_FORGET_SQL = "DELETE FROM removed_attachments WHERE id IN (SELECT value FROM json_each(?))"
_ADDED_BY_US_SQL = (
    "SELECT id FROM history WHERE container_id = ? AND command = 'ADD' AND step = 'delegate' LIMIT 1"
)


def recorded_configs(connection: Connection) -> set[tuple[bytes, str]]:
    """Every distinct (config, root) of the attachments recorded now."""
    rows = cursor_of(connection).execute(_RECORDED_CONFIGS_SQL).fetchall()
    return {(bytes(config), str(root)) for config, root in rows}


def removed(connection: Connection) -> list[RemovedAttachment]:
    """Every removed attachment GC has not yet seen without a lease, oldest first."""
    return [
        RemovedAttachment(
            id=int(row_id),
            container_id=str(container_id),
            ifname=str(ifname),
            config=bytes(config),
            root=str(root),
        )
        for row_id, container_id, ifname, config, root in cursor_of(connection)
        .execute(_REMOVED_SQL)
        .fetchall()
    ]


def forget(connection: Connection, ids: Collection[int]) -> None:
    """Delete the removed attachments ``ids`` (no lease of theirs is left)."""
    if ids:
        cursor_of(connection).execute(_FORGET_SQL, (json_list(sorted(ids)),))


def added_by_us(connection: Connection, container_id: str) -> bool:
    """True when the history shows a delegate of ours run for an ADD of ``container_id``; a line of
    another kind (a CHECK, a refused request, a DEL of a container we never had) proves nothing."""
    return cursor_of(connection).execute(_ADDED_BY_US_SQL, (container_id,)).fetchone() is not None
