"""Ledger: accounts, transactions, the journal, holds; the institution's CNY accounts.

Revision ID: 0006_ledger
Revises: 0005_customer_credentials
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from custodia.ledger.posting import install_system_accounts
from custodia.migrations.ddl import append_only, drop_append_only

revision = "0006_ledger"
down_revision = "0005_customer_credentials"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
KINDS = "'customer_wallet', 'merchant_settlement', 'reserve', 'fees', 'suspense'"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("allow_overdraft", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_accounts"),
        sa.UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
        sa.CheckConstraint(f"kind IN ({KINDS})", name="ck_ledger_accounts_kind"),
        sa.CheckConstraint(
            "allow_overdraft = false OR kind IN ('reserve', 'suspense')",
            name="ck_ledger_accounts_overdraft_only_bank_side",
        ),
        sa.CheckConstraint("held >= 0", name="ck_ledger_accounts_held_not_negative"),
        sa.CheckConstraint(
            "allow_overdraft OR balance >= held", name="ck_ledger_accounts_no_overdraft"
        ),
        sa.CheckConstraint("length(currency) = 3", name="ck_ledger_accounts_currency_code"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reversal_of", sa.String(40), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_transactions"),
        sa.UniqueConstraint("reversal_of", name="uq_ledger_transactions_reversal_of"),
        sa.ForeignKeyConstraint(
            ["reversal_of"],
            ["ledger_transactions.id"],
            name="fk_ledger_transactions_reversal_of_ledger_transactions",
        ),
        sa.CheckConstraint("length(currency) = 3", name="ck_ledger_transactions_currency_code"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(40), nullable=False),
        sa.Column("debit_account", sa.String(40), nullable=False),
        sa.Column("credit_account", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_entries_transaction_id_ledger_transactions",
        ),
        sa.ForeignKeyConstraint(
            ["debit_account", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_entries_debit_account_ledger_accounts",
        ),
        sa.ForeignKeyConstraint(
            ["credit_account", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_entries_credit_account_ledger_accounts",
        ),
        sa.CheckConstraint("amount > 0", name="ck_ledger_entries_amount_positive"),
        sa.CheckConstraint(
            "debit_account <> credit_account", name="ck_ledger_entries_two_accounts"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ledger_entries_debit_account", "ledger_entries", ["debit_account", "id"])
    op.create_index("ix_ledger_entries_credit_account", "ledger_entries", ["credit_account", "id"])
    op.create_index("ix_ledger_entries_transaction_id", "ledger_entries", ["transaction_id"])
    op.create_table(
        "ledger_holds",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("capture_transaction_id", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_holds"),
        sa.ForeignKeyConstraint(
            ["account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_holds_account_id_ledger_accounts",
        ),
        sa.ForeignKeyConstraint(
            ["capture_transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_holds_capture_transaction_id_ledger_transactions",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'voided', 'expired')", name="ck_ledger_holds_status"
        ),
        sa.CheckConstraint("amount > 0", name="ck_ledger_holds_amount_positive"),
        sa.CheckConstraint(
            "(status = 'active') = (resolved_at IS NULL)",
            name="ck_ledger_holds_resolved_when_not_active",
        ),
    )
    op.create_index("ix_ledger_holds_status_expires_at", "ledger_holds", ["status", "expires_at"])
    op.create_index("ix_ledger_holds_account_id", "ledger_holds", ["account_id"])
    for table in ("ledger_transactions", "ledger_entries"):
        for statement in append_only(table, dialect):
            op.execute(statement)
    install_system_accounts(op.get_bind(), "CNY", now=datetime.now(UTC))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ("ledger_entries", "ledger_transactions"):
        for statement in drop_append_only(table, dialect):
            op.execute(statement)
    op.drop_index("ix_ledger_holds_account_id", table_name="ledger_holds")
    op.drop_index("ix_ledger_holds_status_expires_at", table_name="ledger_holds")
    op.drop_table("ledger_holds")
    op.drop_index("ix_ledger_entries_transaction_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_credit_account", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_debit_account", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
