"""SQLAlchemy models of the state database: sandboxes, their attachments, and the history.

The schema itself is owned by alembic (``migrations/``); these classes must describe exactly what
the newest revision creates, and ``tests/store`` checks that they agree. Read and written only by
``app.store``'s modules; nothing outside the package sees an ORM object.

- ``Sandbox``: one pod sandbox (CNI container ID) this node has attached or is attaching.
- ``AttachmentRow``: one delegate of a sandbox (container ID + interface name): its intent
  (config bytes, CNI_ARGS, runtimeConfig) written before it runs, its result after.
- ``HistoryRow``: an append-only line per CNI operation and per delegate step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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


class Base(DeclarativeBase):
    pass


SANDBOX_STATES = ("adding", "ready", "deleting")
ATTACHMENT_STATES = ("intent", "added", "deleting")


class Sandbox(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (CheckConstraint(f"state IN {SANDBOX_STATES}", name="ck_sandboxes_state"),)

    container_id: Mapped[str] = mapped_column(String, primary_key=True)
    state: Mapped[str] = mapped_column(String, nullable=False)
    netns: Mapped[str] = mapped_column(String, nullable=False)
    netns_id: Mapped[str] = mapped_column(String, nullable=False, default="")
    ifname: Mapped[str] = mapped_column(String, nullable=False)
    cni_version: Mapped[str] = mapped_column(String, nullable=False)
    pod_namespace: Mapped[str] = mapped_column(String, nullable=False, default="")
    pod_name: Mapped[str] = mapped_column(String, nullable=False, default="")
    pod_uid: Mapped[str] = mapped_column(String, nullable=False, default="")
    boot_id: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    attachments: Mapped[list[AttachmentRow]] = relationship(
        back_populates="sandbox",
        cascade="all, delete-orphan",
        order_by="AttachmentRow.position",
        passive_deletes=True,
    )


class AttachmentRow(Base):
    __tablename__ = "attachments"
    __table_args__ = (
        UniqueConstraint("container_id", "ifname", name="uq_attachments_container_ifname"),
        CheckConstraint(f"state IN {ATTACHMENT_STATES}", name="ck_attachments_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    container_id: Mapped[str] = mapped_column(
        String, ForeignKey("sandboxes.container_id", ondelete="CASCADE"), nullable=False
    )
    ifname: Mapped[str] = mapped_column(String, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    is_master: Mapped[bool] = mapped_column(nullable=False, default=False)
    network_name: Mapped[str] = mapped_column(String, nullable=False)
    plugin_types: Mapped[str] = mapped_column(String, nullable=False, default="")
    config: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    cni_args: Mapped[str] = mapped_column(Text, nullable=False, default="[]")
    capability_args: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    cni_path: Mapped[str] = mapped_column(Text, nullable=False, default="[]")
    device: Mapped[str | None] = mapped_column(Text, nullable=True)
    root: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    """The root the delegate ran in (``chrootDir`` at ADD; "" = the daemon's own); DEL replays in it."""
    state: Mapped[str] = mapped_column(String, nullable=False)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    ips: Mapped[str | None] = mapped_column(Text, nullable=True)
    """JSON list of the IPs the delegate's result reports; NULL until derived (revision 0004)."""
    macs: Mapped[str | None] = mapped_column(Text, nullable=True)
    """JSON list of the MACs of the result's sandbox interfaces; NULL until derived."""
    device_ids: Mapped[str | None] = mapped_column(Text, nullable=True)
    """JSON list of the device IDs the delegate used; NULL until derived."""

    sandbox: Mapped[Sandbox] = relationship(back_populates="attachments")


class HistoryRow(Base):
    """One history line. Every index ends, implicitly, with the rowid ``id``: a query on one pod,
    container, network or outcome reads its rows newest first without sorting (revision 0003)."""

    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_container_id", "container_id"),
        Index("ix_history_pod", "pod_namespace", "pod_name"),
        Index("ix_history_at", "at"),
        Index("ix_history_network", "network_name"),
        Index("ix_history_outcome", "outcome"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    command: Mapped[str] = mapped_column(String, nullable=False)
    step: Mapped[str] = mapped_column(String, nullable=False)
    trigger: Mapped[str] = mapped_column(String, nullable=False)
    outcome: Mapped[str] = mapped_column(String, nullable=False)
    container_id: Mapped[str] = mapped_column(String, nullable=False, default="")
    netns: Mapped[str] = mapped_column(String, nullable=False, default="")
    ifname: Mapped[str] = mapped_column(String, nullable=False, default="")
    network_name: Mapped[str] = mapped_column(String, nullable=False, default="")
    plugin_types: Mapped[str] = mapped_column(String, nullable=False, default="")
    pod_namespace: Mapped[str] = mapped_column(String, nullable=False, default="")
    pod_name: Mapped[str] = mapped_column(String, nullable=False, default="")
    pod_uid: Mapped[str] = mapped_column(String, nullable=False, default="")
    ips: Mapped[str] = mapped_column(Text, nullable=False, default="[]")
    macs: Mapped[str] = mapped_column(Text, nullable=False, default="[]")
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_msg: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    node: Mapped[str] = mapped_column(String, nullable=False, default="", server_default="")
    device_ids: Mapped[str] = mapped_column(Text, nullable=False, default="[]", server_default="[]")


# The Kubernetes mirror (revision 0002): a cache of the API, never the truth (invariant 1).


class MirroredPod(Base):
    """A pod of this node as the watch last saw it: identity, node, and the kept annotations only."""

    __tablename__ = "mirror_pods"

    namespace: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    uid: Mapped[str] = mapped_column(String, nullable=False)
    node_name: Mapped[str] = mapped_column(String, nullable=False, default="")
    resource_version: Mapped[str] = mapped_column(String, nullable=False, default="")
    annotations: Mapped[str] = mapped_column(Text, nullable=False, default="{}")


class MirroredNad(Base):
    """A NetworkAttachmentDefinition: ``config`` is ``spec.config`` verbatim."""

    __tablename__ = "mirror_nads"

    namespace: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    uid: Mapped[str] = mapped_column(String, nullable=False)
    resource_version: Mapped[str] = mapped_column(String, nullable=False, default="")
    config: Mapped[str] = mapped_column(Text, nullable=False, default="")
    resource_name: Mapped[str] = mapped_column(String, nullable=False, default="")


class WatchStateRow(Base):
    """Where one watch stands: the resourceVersion to resume from and what it has done so far.

    ``scope`` names what the watch selects (node, namespace): a watch whose scope changed since
    the row was written must relist instead of resuming.
    """

    __tablename__ = "watch_state"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    scope: Mapped[str] = mapped_column(String, nullable=False, default="")
    resource_version: Mapped[str] = mapped_column(String, nullable=False, default="")
    synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    relists: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    events: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
