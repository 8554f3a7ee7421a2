"""The double-entry ledger's tables (REGULATION.md B1; DESIGN.md "Invariants").

Design overview
    ``ledger_accounts`` holds every account that carries value: customers' wallets, merchants'
    settlement accounts, the institution's reserve bank account for prepaid funds, fee income
    and suspense. Each has one currency and a stored ``balance`` in integer minor units,
    *credit-normal*: a credit raises it, a debit lowers it. The reserve account is an asset
    and so, credit-normal, runs negative: minus its balance is the money at the bank.

    ``ledger_entries`` is the journal. One entry debits one account and credits another by
    the same positive amount, in one currency, so an entry — and every transaction made of
    entries — is balanced by construction, and the balances of all accounts sum to zero per
    currency at every instant. (A two-legged row rather than two signed lines: the database
    then holds the balance itself with a ``CHECK``, and a movement is one row, not two.)
    ``ledger_transactions`` groups the entries of one movement; a reversal is a new
    transaction pointing at the one it reverses, never an edit. Both are append-only
    (triggers), and composite foreign keys make an entry's currency that of both accounts.

    A no-overdraft account's debit is a conditional update (``balance - held >= amount``), so
    concurrent debits can never overdraw it; ``CHECK (allow_overdraft OR balance >= held)``
    holds the line in the database too, and only the reserve and suspense accounts may be
    allowed to overdraw at all.

    ``ledger_holds`` reserve part of an account's balance (authorize), then are captured into a
    posting or voided, or expire. ``held`` on the account is the sum of its active holds: it
    lowers the *available* balance, never the posted one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base, BigId

ACCOUNT_KINDS = ("customer_wallet", "merchant_settlement", "reserve", "fees", "suspense")
#: The only kinds that may ever be allowed to go below zero (the bank side and suspense).
OVERDRAWABLE_KINDS = ("reserve", "suspense")
HOLD_STATUSES = ("active", "captured", "voided", "expired")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class LedgerAccount(Base):
    """An account that carries value in one currency; its balance is credit-normal."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ACCOUNT_KINDS), name="kind"),
        CheckConstraint(
            f"allow_overdraft = false OR {_one_of('kind', OVERDRAWABLE_KINDS)}",
            name="overdraft_only_bank_side",
        ),
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("allow_overdraft OR balance >= held", name="no_overdraft"),
        CheckConstraint("length(currency) = 3", name="currency_code"),
        UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    allow_overdraft: Mapped[bool] = mapped_column(Boolean)
    balance: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class LedgerTransaction(Base):
    """The entries of one movement, posted together (append-only)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (CheckConstraint("length(currency) = 3", name="currency_code"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    #: The transaction this one reverses (at most one reversal each).
    reversal_of: Mapped[str | None] = mapped_column(
        ForeignKey("ledger_transactions.id"), unique=True
    )
    created_at: Mapped[datetime]


class LedgerEntry(Base):
    """One balanced movement: ``amount`` from the debit to the credit account (append-only)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account <> credit_account", name="two_accounts"),
        ForeignKeyConstraint(
            ["debit_account", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_entries_debit_account_ledger_accounts",
        ),
        ForeignKeyConstraint(
            ["credit_account", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_entries_credit_account_ledger_accounts",
        ),
        Index("ix_ledger_entries_debit_account", "debit_account", "id"),
        Index("ix_ledger_entries_credit_account", "credit_account", "id"),
        Index("ix_ledger_entries_transaction_id", "transaction_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"))
    debit_account: Mapped[str] = mapped_column(String(40))
    credit_account: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class LedgerHold(Base):
    """Part of an account's balance reserved until captured, voided or expired."""

    __tablename__ = "ledger_holds"
    __table_args__ = (
        CheckConstraint(_one_of("status", HOLD_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "(status = 'active') = (resolved_at IS NULL)", name="resolved_when_not_active"
        ),
        ForeignKeyConstraint(
            ["account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_holds_account_id_ledger_accounts",
        ),
        Index("ix_ledger_holds_status_expires_at", "status", "expires_at"),
        Index("ix_ledger_holds_account_id", "account_id"),
        Index("ix_ledger_holds_reference", "reference"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    capture_transaction_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_transactions.id"))
    #: What placed the hold, e.g. ``aml:act_…`` for delayed settlement (K2); None for a payment.
    reference: Mapped[str | None] = mapped_column(String(64))
