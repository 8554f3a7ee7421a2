"""Accounts: payment accounts, merchants, bank cards, the transaction record, limits.

Revision ID: 0007_accounts
Revises: 0006_ledger
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from custodia.migrations.ddl import GUARDS, drop_append_only, guard_statements

revision = "0007_accounts"
down_revision = "0006_ledger"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
#: This migration's guards: the transaction record is append-only but for pending outcomes.
_GUARDS = [g for g in GUARDS if g.table == "payment_transactions"]


def upgrade() -> None:
    op.create_table(
        "payment_transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("debit_account", sa.String(length=40), nullable=False),
        sa.Column("credit_account", sa.String(length=40), nullable=False),
        sa.Column("payer_customer_id", sa.String(length=40), nullable=True),
        sa.Column("payee_customer_id", sa.String(length=40), nullable=True),
        sa.Column("payer_name_enc", sa.LargeBinary(), nullable=True),
        sa.Column("payee_name_enc", sa.LargeBinary(), nullable=True),
        sa.Column("merchant_id", sa.String(length=40), nullable=True),
        sa.Column("merchant_name", sa.String(length=200), nullable=True),
        sa.Column("merchant_code", sa.String(length=32), nullable=True),
        sa.Column("mcc", sa.String(length=4), nullable=True),
        sa.Column("bank_card_id", sa.String(length=40), nullable=True),
        sa.Column("bank_card_masked", sa.String(length=32), nullable=True),
        sa.Column("bank_name", sa.String(length=100), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("terminal_type", sa.String(length=32), nullable=False),
        sa.Column("authentication", JSON_DOCUMENT, nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("original_transaction_id", sa.String(length=40), nullable=True),
        sa.Column("trace_id", sa.String(length=128), nullable=True),
        sa.Column("bank_reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('succeeded', 'pending', 'failed')",
            name=op.f("ck_payment_transactions_status"),
        ),
        sa.CheckConstraint(
            "type IN ('top_up', 'withdrawal', 'transfer', 'payment', 'refund')",
            name=op.f("ck_payment_transactions_type"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_transactions_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_transactions")),
    )
    op.create_index(
        "ix_payment_transactions_credit_account",
        "payment_transactions",
        ["credit_account", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_payment_transactions_debit_account",
        "payment_transactions",
        ["debit_account", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_payment_transactions_original",
        "payment_transactions",
        ["original_transaction_id"],
        unique=False,
    )
    op.create_index(
        "uq_payment_transactions_merchant_order",
        "payment_transactions",
        ["merchant_id", "order_id"],
        unique=True,
        postgresql_where=sa.text("type = 'payment'"),
        sqlite_where=sa.text("type = 'payment'"),
    )

    op.create_table(
        "bank_cards",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("card_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("card_index", sa.String(length=64), nullable=False),
        sa.Column("masked_number", sa.String(length=32), nullable=False),
        sa.Column("bank_name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('active', 'removed')", name=op.f("ck_bank_cards_status")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_bank_cards_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_cards")),
        sa.UniqueConstraint("customer_id", "card_index", name="uq_bank_cards_customer_card"),
    )
    op.create_index("ix_bank_cards_card_index", "bank_cards", ["card_index"], unique=False)

    op.create_table(
        "customer_payment_settings",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("signature_daily_limit", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_payment_settings_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_payment_settings")),
    )
    op.create_table(
        "limit_usage",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("rule", sa.String(length=24), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "rule IN ('class_i_lifetime', 'class_ii_yearly', 'class_iii_yearly', 'daily')",
            name=op.f("ck_limit_usage_rule"),
        ),
        sa.CheckConstraint("used >= 0", name=op.f("ck_limit_usage_used_not_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_limit_usage_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "rule", "period", name=op.f("pk_limit_usage")),
    )
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("merchant_code", sa.String(length=32), nullable=False),
        sa.Column("mcc", sa.String(length=4), nullable=False),
        sa.Column("legal_customer_id", sa.String(length=40), nullable=False),
        sa.Column("webhook_url", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_merchants_status")),
        sa.CheckConstraint("length(mcc) = 4", name=op.f("ck_merchants_mcc_four_digits")),
        sa.ForeignKeyConstraint(
            ["legal_customer_id"],
            ["customers.id"],
            name=op.f("fk_merchants_legal_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("merchant_code", name="uq_merchants_merchant_code"),
    )
    op.create_table(
        "payment_refunds",
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "refunded >= 0 AND refunded <= amount",
            name=op.f("ck_payment_refunds_refunded_within_payment"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payment_transactions.id"],
            name=op.f("fk_payment_refunds_payment_id_payment_transactions"),
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payment_refunds")),
    )
    op.create_table(
        "payment_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("account_class", sa.String(length=10), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=200), nullable=True),
        sa.Column("consent_id", sa.String(length=40), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL)",
            name=op.f("ck_payment_accounts_closed_at_when_closed"),
        ),
        sa.CheckConstraint(
            "account_class IN ('I', 'II', 'III', 'corporate')",
            name=op.f("ck_payment_accounts_account_class"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'restricted', 'closing', 'closed')",
            name=op.f("ck_payment_accounts_status"),
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_payment_accounts_consent_id_consents")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_payment_accounts_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_payment_accounts_id_ledger_accounts",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_accounts")),
    )
    op.create_index(
        "ix_payment_accounts_customer_id", "payment_accounts", ["customer_id"], unique=False
    )
    op.create_index(
        "uq_payment_accounts_one_class_iii",
        "payment_accounts",
        ["customer_id"],
        unique=True,
        postgresql_where=sa.text("account_class = 'III' AND status <> 'closed'"),
        sqlite_where=sa.text("account_class = 'III' AND status <> 'closed'"),
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
    op.drop_index("uq_payment_accounts_one_class_iii", table_name="payment_accounts")
    op.drop_index("ix_payment_accounts_customer_id", table_name="payment_accounts")

    op.drop_table("payment_accounts")
    op.drop_table("payment_refunds")
    op.drop_table("merchants")
    op.drop_table("limit_usage")
    op.drop_table("customer_payment_settings")
    op.drop_index("ix_bank_cards_card_index", table_name="bank_cards")

    op.drop_table("bank_cards")
    op.drop_index("uq_payment_transactions_merchant_order", table_name="payment_transactions")
    op.drop_index("ix_payment_transactions_original", table_name="payment_transactions")
    op.drop_index("ix_payment_transactions_debit_account", table_name="payment_transactions")
    op.drop_index("ix_payment_transactions_credit_account", table_name="payment_transactions")

    op.drop_table("payment_transactions")
