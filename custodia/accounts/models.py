"""Payment accounts, merchants, bank cards, the transaction record and limit counters.

Design
    ``payment_accounts`` are the customers' accounts of classes I, II, III (individuals) or
    corporate (REGULATION.md R5, R3). Each *is* a ledger wallet: the same id names the ledger
    account that carries its balance, so the ledger needs no lookup and knows nothing of
    customers. One Class III account per customer is a partial UNIQUE index.

    ``merchants`` are the payees of merchant payments; each has a settlement account in the
    ledger under the merchant's id. ``bank_cards`` are customers' own same-name cards (R7):
    the number only as a vault blob, a masked form and a blind index.

    ``payment_transactions`` is the record B2 asks for: type, amount, accounts, payer and
    payee (names encrypted), merchant name/code/MCC, channel and terminal, the factors that
    authorised it, the purpose, the trace id. It is append-only except for a pending
    withdrawal's outcome (status, bank reference, completion time), which a trigger allows
    and nothing else. ``payment_refunds`` keeps a payment's refunded total under a CHECK
    that it never exceeds the payment (B3).

    ``limit_usage`` holds what a customer has used of each limit in each period (the Class I
    lifetime, the yearly class limits, the daily limit by verification strength); a payment
    consumes it with a conditional upsert in its own transaction (R5, R6, K4).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base
from custodia.core.vault import BlindIndexColumn, EncryptedColumn

ACCOUNT_CLASSES = ("I", "II", "III", "corporate")
ACCOUNT_STATUSES = ("active", "frozen", "restricted", "closing", "closed")
TRANSACTION_TYPES = ("top_up", "withdrawal", "transfer", "payment", "refund")
TRANSACTION_STATUSES = ("succeeded", "pending", "failed")
MERCHANT_STATUSES = ("active", "suspended")
CARD_STATUSES = ("active", "removed")
LIMIT_RULES = ("class_i_lifetime", "class_ii_yearly", "class_iii_yearly", "daily")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class PaymentAccount(Base):
    """A customer's payment account; its balance is the ledger wallet of the same id."""

    __tablename__ = "payment_accounts"
    __table_args__ = (
        CheckConstraint(_one_of("account_class", ACCOUNT_CLASSES), name="account_class"),
        CheckConstraint(_one_of("status", ACCOUNT_STATUSES), name="status"),
        CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL)", name="closed_at_when_closed"
        ),
        ForeignKeyConstraint(
            ["id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_payment_accounts_id_ledger_accounts",
        ),
        Index("ix_payment_accounts_customer_id", "customer_id"),
        Index(
            "uq_payment_accounts_one_class_iii",
            "customer_id",
            unique=True,
            postgresql_where=text("account_class = 'III' AND status <> 'closed'"),
            sqlite_where=text("account_class = 'III' AND status <> 'closed'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    account_class: Mapped[str] = mapped_column(String(10))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(200))
    #: The AML measure (``act_…``) holding the account's incoming value (K2), or None.
    settlement_delayed_by: Mapped[str | None] = mapped_column(String(40))
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))


class Merchant(Base):
    """A merchant paid from customers' balances; settled into its ledger account (same id)."""

    __tablename__ = "merchants"
    __table_args__ = (
        CheckConstraint(_one_of("status", MERCHANT_STATUSES), name="status"),
        CheckConstraint("length(mcc) = 4", name="mcc_four_digits"),
        UniqueConstraint("merchant_code", name="uq_merchants_merchant_code"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    merchant_code: Mapped[str] = mapped_column(String(32))
    mcc: Mapped[str] = mapped_column(String(4))
    legal_customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class BankCard(Base):
    """A customer's own bank card (R7): the number encrypted, masked, and blind-indexed."""

    __tablename__ = "bank_cards"
    __table_args__ = (
        CheckConstraint(_one_of("status", CARD_STATUSES), name="status"),
        UniqueConstraint("customer_id", "card_index", name="uq_bank_cards_customer_card"),
        Index("ix_bank_cards_card_index", "card_index"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    card_number_enc: Mapped[bytes]
    card_index: Mapped[str] = mapped_column(String(64))
    masked_number: Mapped[str] = mapped_column(String(32))
    bank_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class PaymentTransaction(Base):
    """The record of one money movement (B2, Art. 20); the same id as its ledger transaction."""

    __tablename__ = "payment_transactions"
    __table_args__ = (
        CheckConstraint(_one_of("type", TRANSACTION_TYPES), name="type"),
        CheckConstraint(_one_of("status", TRANSACTION_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payment_transactions_debit_account", "debit_account", "created_at"),
        Index("ix_payment_transactions_credit_account", "credit_account", "created_at"),
        Index(
            "uq_payment_transactions_merchant_order",
            "merchant_id",
            "order_id",
            unique=True,
            postgresql_where=text("type = 'payment'"),
            sqlite_where=text("type = 'payment'"),
        ),
        Index("ix_payment_transactions_original", "original_transaction_id"),
        # The large-value report reads one institution day of records (L1).
        Index("ix_payment_transactions_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    debit_account: Mapped[str] = mapped_column(String(40))
    credit_account: Mapped[str] = mapped_column(String(40))
    payer_customer_id: Mapped[str | None] = mapped_column(String(40))
    payee_customer_id: Mapped[str | None] = mapped_column(String(40))
    payer_name_enc: Mapped[bytes | None]
    payee_name_enc: Mapped[bytes | None]
    merchant_id: Mapped[str | None] = mapped_column(String(40))
    merchant_name: Mapped[str | None] = mapped_column(String(200))
    merchant_code: Mapped[str | None] = mapped_column(String(32))
    mcc: Mapped[str | None] = mapped_column(String(4))
    bank_card_id: Mapped[str | None] = mapped_column(String(40))
    bank_card_masked: Mapped[str | None] = mapped_column(String(32))
    bank_name: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))
    terminal_type: Mapped[str] = mapped_column(String(32))
    #: ``{"kinds": [...], "factors": [...], "reference": "..."}``: what authorised it (B2).
    authentication: Mapped[dict[str, Any]]
    purpose: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(200))
    original_transaction_id: Mapped[str | None] = mapped_column(String(40))
    trace_id: Mapped[str | None] = mapped_column(String(128))
    bank_reference: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class PaymentRefunds(Base):
    """How much of a payment has been refunded; never more than the payment (B3)."""

    __tablename__ = "payment_refunds"
    __table_args__ = (
        CheckConstraint("refunded >= 0 AND refunded <= amount", name="refunded_within_payment"),
    )

    payment_id: Mapped[str] = mapped_column(ForeignKey("payment_transactions.id"), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[int] = mapped_column(BigInteger)


class LimitUsage(Base):
    """What a customer has used of one limit in one window (R5, R6, K4)."""

    __tablename__ = "limit_usage"
    __table_args__ = (
        CheckConstraint(_one_of("rule", LIMIT_RULES), name="rule"),
        CheckConstraint("used >= 0", name="used_not_negative"),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(24), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)  # "lifetime", "2026", …
    used: Mapped[int] = mapped_column(BigInteger)


class CustomerPaymentSettings(Base):
    """What a customer agreed with the institution: the daily limit with an e-signature (K4)."""

    __tablename__ = "customer_payment_settings"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    signature_daily_limit: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


#: The vault-encrypted columns of this package (walked by ``custodia keys reencrypt``).
PII_COLUMNS = (
    EncryptedColumn("bank_cards", "card_number_enc"),
    EncryptedColumn("payment_transactions", "payer_name_enc"),
    EncryptedColumn("payment_transactions", "payee_name_enc"),
)

#: The blind-index columns of this package (rebuilt by ``custodia keys reindex``).
INDEX_COLUMNS = (
    BlindIndexColumn(
        "bank_cards",
        "card_index",
        "card_number",
        sources=("card_number_enc",),
        encrypted_sources=frozenset({"card_number_enc"}),
    ),
)
