"""The tables of the state database, as SQLAlchemy Core: sandboxes, their attachments, the history.

The schema itself is owned by alembic (``migrations/``); these tables must describe exactly what
the newest revision creates, and ``tests/store`` checks that they agree. Core only: the store never
imports SQLAlchemy's ORM (about 6 MiB of the daemon's memory). Read and written only by
``app.store``'s modules.

- ``SANDBOXES``: one pod sandbox (CNI container ID) this node has attached or is attaching.
- ``ATTACHMENTS``: one delegate of a sandbox (container ID + interface name): its intent
  (config bytes, CNI_ARGS, runtimeConfig) written before it runs, its result after.
- ``REMOVED_ATTACHMENTS``: an attachment with host-local IPAM removed from the checkpoint, kept
  (by a trigger, in the transaction that removes it) until GC has seen no lease of its container
  left: GC's proof that a leftover lease is ours, which history retention cannot prune.
- ``HISTORY``: an append-only line per CNI operation and per delegate step.
- ``MIRROR_PODS``, ``MIRROR_NADS``, ``WATCH_STATE``: the Kubernetes mirror.
- ``SCHEMA_COMPATIBILITY``: per revision, the oldest release's revision whose code may run on it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC and read back as aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


METADATA = MetaData()
"""Every table of the state database (alembic's ``target_metadata``)."""

SANDBOX_STATES = ("adding", "ready", "deleting")
ATTACHMENT_STATES = ("intent", "added", "deleting")


SANDBOXES = Table(
    "sandboxes",
    METADATA,
    Column("container_id", String, primary_key=True),
    Column("state", String, nullable=False),
    Column("netns", String, nullable=False),
    Column("netns_id", String, nullable=False, default=""),
    Column("ifname", String, nullable=False),
    Column("cni_version", String, nullable=False),
    Column("pod_namespace", String, nullable=False, default=""),
    Column("pod_name", String, nullable=False, default=""),
    Column("pod_uid", String, nullable=False, default=""),
    Column("boot_id", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("parallel", Boolean, nullable=False, server_default=false()),
    Column("default_networks", Integer, nullable=True),
    Column("status_unwritten", Boolean, nullable=False, server_default=false()),
    CheckConstraint(f"state IN {SANDBOX_STATES}", name="ck_sandboxes_state"),
)
"""One pod sandbox (CNI container ID) this node has attached or is attaching. ``default_networks``:
how many ``defaultNetworks`` attachments its ADD made (positions 1..n); NULL when recorded before
revision 0007. ``status_unwritten``: its ADD's network-status write failed and neither a background retry nor
hot-plug's reconciler has written it since (revision 0009)."""

ATTACHMENTS = Table(
    "attachments",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("container_id", String, ForeignKey("sandboxes.container_id", ondelete="CASCADE"), nullable=False),
    Column("ifname", String, nullable=False),
    Column("position", Integer, nullable=False),
    Column("is_master", Boolean, nullable=False, default=False),
    Column("network_name", String, nullable=False),
    Column("plugin_types", String, nullable=False, default=""),
    Column("config", LargeBinary, nullable=False),
    Column("cni_args", Text, nullable=False, default="[]"),
    Column("capability_args", Text, nullable=False, default="{}"),
    Column("cni_path", Text, nullable=False, default="[]"),
    Column("device", Text, nullable=True),
    Column("root", Text, nullable=False, default="", server_default=""),
    Column("state", String, nullable=False),
    Column("result", Text, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("ips", Text, nullable=True),
    Column("macs", Text, nullable=True),
    Column("device_ids", Text, nullable=True),
    UniqueConstraint("container_id", "ifname", name="uq_attachments_container_ifname"),
    CheckConstraint(f"state IN {ATTACHMENT_STATES}", name="ck_attachments_state"),
)
"""One delegate of a sandbox (container ID + interface name). ``root``: the root the delegate ran
in (``chrootDir`` at ADD; "" = the daemon's own), DEL replays in it. ``ips``, ``macs``,
``device_ids``: JSON lists of the IPs the result reports, the MACs of its sandbox interfaces and
the device IDs the delegate used; NULL until derived (revision 0004)."""

REMOVED_ATTACHMENTS = Table(
    "removed_attachments",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("container_id", String, nullable=False),
    Column("ifname", String, nullable=False),
    Column("config", LargeBinary, nullable=False),
    Column("root", Text, nullable=False, default="", server_default=""),
)
"""An attachment removed from the checkpoint whose recorded config names host-local: its container
ID, interface, config bytes and root, copied by the trigger ``tr_attachments_removed`` (revision
0008) in the transaction that deletes the ``attachments`` row, whatever deletes it. Deleted by GC
once none of the config's lease directories holds a lease of the container (``app.gc.leases``)."""

HISTORY = Table(
    "history",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("duration_ms", Float, nullable=True),
    Column("command", String, nullable=False),
    Column("step", String, nullable=False),
    Column("trigger", String, nullable=False),
    Column("outcome", String, nullable=False),
    Column("container_id", String, nullable=False, default=""),
    Column("netns", String, nullable=False, default=""),
    Column("ifname", String, nullable=False, default=""),
    Column("network_name", String, nullable=False, default=""),
    Column("plugin_types", String, nullable=False, default=""),
    Column("pod_namespace", String, nullable=False, default=""),
    Column("pod_name", String, nullable=False, default=""),
    Column("pod_uid", String, nullable=False, default=""),
    Column("ips", Text, nullable=False, default="[]"),
    Column("macs", Text, nullable=False, default="[]"),
    Column("error_code", Integer, nullable=True),
    Column("error_msg", Text, nullable=True),
    Column("error_details", Text, nullable=True),
    Column("node", String, nullable=False, default="", server_default=""),
    Column("device_ids", Text, nullable=False, default="[]", server_default="[]"),
    Index("ix_history_container_id", "container_id"),
    Index("ix_history_pod", "pod_namespace", "pod_name"),
    Index("ix_history_at", "at"),
    Index("ix_history_network", "network_name"),
    Index("ix_history_outcome", "outcome"),
)
"""One history line. Every index ends, implicitly, with the rowid ``id``: a query on one pod,
container, network or outcome reads its rows newest first without sorting (revision 0003)."""


# The Kubernetes mirror (revision 0002): a cache of the API, never the truth (invariant 1).

MIRROR_PODS = Table(
    "mirror_pods",
    METADATA,
    Column("namespace", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("uid", String, nullable=False),
    Column("node_name", String, nullable=False, default=""),
    Column("resource_version", String, nullable=False, default=""),
    Column("annotations", Text, nullable=False, default="{}"),
)
"""A pod of this node as the watch last saw it: identity, node, and the kept annotations only."""

MIRROR_NADS = Table(
    "mirror_nads",
    METADATA,
    Column("namespace", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("uid", String, nullable=False),
    Column("resource_version", String, nullable=False, default=""),
    Column("config", Text, nullable=False, default=""),
    Column("resource_name", String, nullable=False, default=""),
)
"""A NetworkAttachmentDefinition: ``config`` is ``spec.config`` verbatim."""

WATCH_STATE = Table(
    "watch_state",
    METADATA,
    Column("key", String, primary_key=True),
    Column("scope", String, nullable=False, default=""),
    Column("resource_version", String, nullable=False, default=""),
    Column("synced_at", UtcDateTime, nullable=True),
    Column("last_event_at", UtcDateTime, nullable=True),
    Column("relists", Integer, nullable=False, default=0),
    Column("events", Integer, nullable=False, default=0),
)
"""Where one watch stands: the resourceVersion to resume from and what it has done so far.

``scope`` names what the watch selects (node, namespace): a watch whose scope changed since the
row was written must relist instead of resuming."""

SCHEMA_COMPATIBILITY = Table(
    "schema_compatibility",
    METADATA,
    Column("revision", String, primary_key=True),
    Column("oldest_code_revision", String, nullable=False),
)
"""For each revision migrated to, the oldest revision whose code may run on its schema (revision
0010), written by ``migrations/env.py`` in the transaction that stamps the revision. Read by
``app.store.schema`` of a release that does not know the database's revision (a rollback), so its
name and these two columns never change: every older release from 0010 on reads them."""
