"""AML: monitoring rules and their versions, the movements monitoring sees, alerts and cases.

Revision ID: 0009_aml
Revises: 0008_transfer_function
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from custodia.migrations.ddl import GUARDS, drop_append_only, guard_statements

revision = "0009_aml"
down_revision = "0008_transfer_function"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: This migration's guards: rule versions, closed alerts, alert transactions and notes.
_GUARDS = [g for g in GUARDS if g.table.startswith("aml_")]
_TABLES = (
    "aml_actions",
    "aml_alert_transactions",
    "aml_alert_notes",
    "aml_alerts",
    "aml_cases",
    "aml_movements",
    "aml_rule_versions",
    "aml_rules",
)


def upgrade() -> None:
    op.create_table(
        "aml_cases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL)", name=op.f("ck_aml_cases_closed_at")
        ),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_aml_cases_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aml_cases")),
    )
    op.create_index(
        "uq_aml_cases_one_open",
        "aml_cases",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "aml_movements",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("counterparty", sa.String(length=64), nullable=False),
        sa.Column("cross_border", sa.Boolean(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.CheckConstraint("direction IN ('in', 'out')", name=op.f("ck_aml_movements_direction")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_aml_movements_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aml_movements")),
        sa.UniqueConstraint(
            "transaction_id", "customer_id", "direction", name="uq_aml_movements_side"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_aml_movements_customer_at", "aml_movements", ["customer_id", "at"], unique=False
    )
    op.create_index(
        "ix_aml_movements_window", "aml_movements", ["customer_id", "direction", "at"], unique=False
    )
    op.create_table(
        "aml_rule_versions",
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("params", JSON_DOCUMENT, nullable=False),
        sa.Column("changed_by", sa.String(length=100), nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_aml_rule_versions_version_positive")),
        sa.PrimaryKeyConstraint("key", "version", name=op.f("pk_aml_rule_versions")),
    )
    op.create_table(
        "aml_rules",
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("params", JSON_DOCUMENT, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_aml_rules_version_positive")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_aml_rules")),
    )
    op.create_table(
        "aml_alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("params", JSON_DOCUMENT, nullable=False),
        sa.Column("pattern", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("details", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL)", name=op.f("ck_aml_alerts_closed_at")
        ),
        sa.CheckConstraint(
            "(status = 'closed') = (decision IS NOT NULL)",
            name=op.f("ck_aml_alerts_decided_when_closed"),
        ),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('false_positive', 'reported', 'no_action')",
            name=op.f("ck_aml_alerts_decision"),
        ),
        sa.CheckConstraint(
            "severity IN ('low', 'medium', 'high')", name=op.f("ck_aml_alerts_severity")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'in_review', 'escalated', 'closed')",
            name=op.f("ck_aml_alerts_status"),
        ),
        sa.CheckConstraint("score BETWEEN 0 AND 100", name=op.f("ck_aml_alerts_score_range")),
        sa.ForeignKeyConstraint(
            ["case_id"], ["aml_cases.id"], name=op.f("fk_aml_alerts_case_id_aml_cases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aml_alerts")),
    )
    op.create_index("ix_aml_alerts_case", "aml_alerts", ["case_id"], unique=False)
    op.create_index("ix_aml_alerts_customer", "aml_alerts", ["customer_id", "id"], unique=False)
    op.create_index("ix_aml_alerts_rule", "aml_alerts", ["rule", "id"], unique=False)
    op.create_index("ix_aml_alerts_status", "aml_alerts", ["status", "id"], unique=False)
    op.create_index(
        "uq_aml_alerts_open_pattern",
        "aml_alerts",
        ["customer_id", "rule", "pattern"],
        unique=True,
        postgresql_where=sa.text("status <> 'closed'"),
        sqlite_where=sa.text("status <> 'closed'"),
    )
    op.create_table(
        "aml_alert_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("text_enc", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('note', 'decision')", name=op.f("ck_aml_alert_notes_kind")),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["aml_alerts.id"], name=op.f("fk_aml_alert_notes_alert_id_aml_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aml_alert_notes")),
    )
    op.create_index(
        "ix_aml_alert_notes_alert", "aml_alert_notes", ["alert_id", "created_at"], unique=False
    )
    op.create_table(
        "aml_alert_transactions",
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["aml_alerts.id"],
            name=op.f("fk_aml_alert_transactions_alert_id_aml_alerts"),
        ),
        sa.PrimaryKeyConstraint(
            "alert_id", "transaction_id", name=op.f("pk_aml_alert_transactions")
        ),
    )

    op.create_table(
        "aml_actions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("account_ids", JSON_DOCUMENT, nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("reason_enc", sa.LargeBinary(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "action IN ('freeze', 'terminate_service', 'lift')", name=op.f("ck_aml_actions_action")
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["aml_alerts.id"], name=op.f("fk_aml_actions_alert_id_aml_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aml_actions")),
    )
    op.create_index(
        "ix_aml_actions_customer", "aml_actions", ["customer_id", "created_at"], unique=False
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
    for table in _TABLES:
        op.drop_table(table)
