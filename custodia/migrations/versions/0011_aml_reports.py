"""AML reports: filed regulatory reports (append-only) and the indexes the reports read.

Revision ID: 0011_aml_reports
Revises: 0010_settlement_delay
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from custodia.migrations.ddl import GUARDS, drop_append_only, guard_statements

revision = "0011_aml_reports"
down_revision = "0010_settlement_delay"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
#: This migration's guard: filed reports.
_GUARDS = [g for g in GUARDS if g.table == "regulatory_reports"]


def upgrade() -> None:
    op.create_table(
        "regulatory_reports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period_from", sa.Date(), nullable=False),
        sa.Column("period_to", sa.Date(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("counts", JSON_DOCUMENT, nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_enc", sa.LargeBinary(), nullable=False),
        sa.Column("filed_by", sa.String(length=100), nullable=False),
        sa.Column("filed_at", TS, nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "kind IN ('large_value', 'suspicious')", name=op.f("ck_regulatory_reports_kind")
        ),
        sa.CheckConstraint(
            "period_to >= period_from", name=op.f("ck_regulatory_reports_period_ordered")
        ),
        sa.CheckConstraint(
            "length(content_sha256) = 64", name=op.f("ck_regulatory_reports_digest_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regulatory_reports")),
    )
    op.create_index(
        "ix_regulatory_reports_kind", "regulatory_reports", ["kind", "period_from"], unique=False
    )
    op.create_index(
        "ix_payment_transactions_created_at", "payment_transactions", ["created_at"], unique=False
    )
    op.create_index(
        "ix_aml_alerts_reported",
        "aml_alerts",
        ["closed_at"],
        unique=False,
        postgresql_where=sa.text("decision = 'reported'"),
        sqlite_where=sa.text("decision = 'reported'"),
    )

    dialect = op.get_bind().dialect.name
    for guard in _GUARDS:
        for statement in guard_statements(guard, dialect):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for guard in _GUARDS:
        for statement in drop_append_only(guard.table, dialect, name=guard.name):
            op.execute(statement)
    op.drop_index("ix_aml_alerts_reported", table_name="aml_alerts")
    op.drop_index("ix_payment_transactions_created_at", table_name="payment_transactions")
    op.drop_index("ix_regulatory_reports_kind", table_name="regulatory_reports")
    op.drop_table("regulatory_reports")
