"""Tables of the shared kernel and the declarative base every package's models use.

The schema is made only by the Alembic migrations in ``custodia/migrations``; these
classes describe it for queries, and a test checks that they and the migrations agree.

- ``idempotency_keys``: one row per (caller scope, key); claimed in the same transaction as
  the work it protects and holding the response to replay (API.md "Conventions").
- ``outbox_events``: events written in the business transaction and delivered to the
  registered consumers by ``custodia worker`` (see ``custodia.core.outbox``).
- ``audit_inbox``, ``audit_events``, ``audit_chain_head``: the tamper-evident audit trail
  (see ``custodia.core.audit``). Sealed events are append-only: triggers refuse UPDATE and
  DELETE; inbox rows are never updated and leave only once sealed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An instant: stored in UTC on both backends, always returned as an aware datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; store UTC (naive on SQLite, which has no zone type)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 - part of the TypeDecorator signature
    ) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON on SQLite, JSONB on PostgreSQL.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (migrations refer to them)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument}  # noqa: RUF012


def table_of(model: type[Base]) -> Table:
    """Return a model's table, typed as one (for Core statements on the hot path)."""
    table = model.__table__
    assert isinstance(table, Table)  # noqa: S101 - every model here maps one table
    return table


class IdempotencyRecord(Base):
    """A request made under an ``Idempotency-Key``, and the response to replay."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("state IN ('in_flight', 'completed')", name="state"),
        CheckConstraint(
            "state <> 'completed' OR (response_status IS NOT NULL AND response_body IS NOT NULL)",
            name="completed_has_response",
        ),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_content_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class OutboxEvent(Base):
    """An event recorded by a business transaction, waiting for or done with delivery."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'done', 'dead')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # Led by the type: a claim reads only the types it consumes (migration 0015).
        Index(
            "ix_outbox_events_pending",
            "event_type",
            "available_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            postgresql_include=["created_at"],
            sqlite_where=text("status = 'pending'"),
        ),
        # Counted for /metrics and listed for operators: normally none (migration 0015).
        Index(
            "ix_outbox_events_dead",
            "created_at",
            "id",
            postgresql_where=text("status = 'dead'"),
            sqlite_where=text("status = 'dead'"),
        ),
        Index("ix_outbox_events_processed_at", "processed_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    available_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]


#: An auto-incrementing 64-bit key (SQLite's INTEGER PRIMARY KEY is already 64 bits).
BigId = BigInteger().with_variant(Integer, "sqlite")


class AuditInbox(Base):
    """An audit event written by a command and not yet sealed into the chain.

    Written in the same transaction as the change it records. Rows are never updated; a
    trigger lets a row be deleted only once its sealed copy exists in ``audit_events``.
    ``details`` is canonical JSON (sorted keys) holding masked values or ciphertext only.
    """

    __tablename__ = "audit_inbox"
    # Inserted as a deferred write (custodia.core.db.defer): its id is never read back.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(100))
    customer_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)


class AuditEvent(Base):
    """A sealed audit event: its place in the chain (``seq``, no gaps) and its HMAC.

    ``hash = HMAC-SHA256(audit key, previous hash ‖ canonical bytes of seq and event)``.
    Never updated or deleted (triggers refuse both).
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index("ix_audit_events_target", "target", "event_id"),
        Index("ix_audit_events_customer_id", "customer_id", "event_id"),
        Index("ix_audit_events_actor_id", "actor_id", "event_id"),
        Index("ix_audit_events_action", "action", "event_id"),
        Index("ix_audit_events_at", "at"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigId, unique=True)
    at: Mapped[datetime]
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(100))
    customer_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_at: Mapped[datetime]


class AuditChainHead(Base):
    """The last seal, so the sealer chains on without scanning; one row, locked by sealers."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
