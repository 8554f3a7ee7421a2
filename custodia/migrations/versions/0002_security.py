"""Security foundation: staff, sessions, API clients, and the tamper-evident audit trail.

Revision ID: 0002_security
Revises: 0001_foundation
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from custodia.migrations.ddl import (
    DROP_INBOX_GUARD_FUNCTION_PG,
    DROP_REFUSE_FUNCTION_PG,
    INBOX_GUARD_FUNCTION_PG,
    REFUSE_FUNCTION_PG,
    append_only,
    audit_inbox_guard,
    drop_append_only,
    drop_audit_inbox_guard,
)

revision = "0002_security"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _audit_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(100), nullable=True),
        sa.Column("customer_id", sa.String(40), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "staff",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("password_change_required", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.UniqueConstraint("username", name="uq_staff_username"),
        sa.CheckConstraint(
            "role IN ('compliance_officer', 'compliance_lead', 'auditor', 'admin')",
            name="ck_staff_role",
        ),
        sa.CheckConstraint("failed_logins >= 0", name="ck_staff_failed_logins_not_negative"),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_staff_sessions"),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name="fk_staff_sessions_staff_id_staff"
        ),
    )
    op.create_index("ix_staff_sessions_staff_id", "staff_sessions", ["staff_id"])
    op.create_table(
        "api_clients",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("merchant_id", sa.String(40), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_clients"),
        sa.CheckConstraint("kind IN ('onboarding_app', 'merchant')", name="ck_api_clients_kind"),
        sa.CheckConstraint(
            "(kind = 'merchant') = (merchant_id IS NOT NULL)",
            name="ck_api_clients_merchant_key_bound",
        ),
    )

    op.create_table(
        "audit_inbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        *_audit_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_audit_inbox"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=False),
        *_audit_columns(),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
        sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
        sa.CheckConstraint("seq >= 1", name="ck_audit_events_seq_positive"),
    )
    op.create_index("ix_audit_events_target", "audit_events", ["target", "event_id"])
    op.create_index("ix_audit_events_customer_id", "audit_events", ["customer_id", "event_id"])
    op.create_index("ix_audit_events_actor_id", "audit_events", ["actor_id", "event_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action", "event_id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": bytes(32)}])

    if dialect == "postgresql":
        op.execute(REFUSE_FUNCTION_PG)
        op.execute(INBOX_GUARD_FUNCTION_PG)
    for statement in [*append_only("audit_events", dialect), *audit_inbox_guard(dialect)]:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in [*drop_append_only("audit_events", dialect), *drop_audit_inbox_guard(dialect)]:
        op.execute(statement)
    if dialect == "postgresql":
        op.execute(DROP_INBOX_GUARD_FUNCTION_PG)
        op.execute(DROP_REFUSE_FUNCTION_PG)
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_index("ix_audit_events_action", table_name="audit_events")
    op.drop_index("ix_audit_events_actor_id", table_name="audit_events")
    op.drop_index("ix_audit_events_customer_id", table_name="audit_events")
    op.drop_index("ix_audit_events_target", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("audit_inbox")
    op.drop_table("api_clients")
    op.drop_index("ix_staff_sessions_staff_id", table_name="staff_sessions")
    op.drop_table("staff_sessions")
    op.drop_table("staff")
