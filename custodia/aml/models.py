"""Transaction monitoring, alerts and cases (REGULATION.md K2, L1, L2, L3).

Design
    ``aml_rules`` holds each monitoring rule's current parameters and whether it is enabled;
    every change writes a new row to ``aml_rule_versions`` (append-only), so an alert can
    always show the parameters it was raised under (its ``rule_version`` and a copy of the
    ``params``).

    ``aml_movements`` is monitoring's own view of the transaction record: one row per
    customer side of each posted transaction (``out`` for the payer's account, ``in`` for
    the payee's), with the counterparty and the amount. It is written by the monitoring
    consumer in the transaction that marks the outbox event done, so it also proves that an
    event was evaluated once: the UNIQUE (transaction, customer, direction) refuses a second
    evaluation. Every window aggregate a rule needs is an index range scan on
    ``(customer_id, at)`` (covering on PostgreSQL), never a scan of the journal.

    ``aml_alerts`` are what compliance works: the rule, its version and parameters at the
    time, a score and severity, the pattern it found, the transactions
    (``aml_alert_transactions``) and a due date. Open alerts of one customer group into one
    ``aml_cases`` row. States: ``open → in_review → escalated → closed`` with a decision
    (``false_positive``, ``reported``, ``no_action``). A closed alert is read-only (a
    trigger refuses UPDATE and DELETE), and at most one unclosed alert exists per customer,
    rule and pattern (a partial UNIQUE index), which is how duplicates are folded.

    ``aml_actions`` records each measure taken on an account or customer (K2: freeze,
    terminate service, lift) with its vault-encrypted reason; the accounts module enforces
    the measure itself (a frozen account, a restricted customer) in the same transaction.

    ``regulatory_reports`` are the reports filed with the regulator (L1 large-value, L2
    suspicious): each holds its canonical content as a vault blob (it names people) and the
    SHA-256 of that content in clear. A filed report is a fact: triggers refuse DELETE and
    any UPDATE but the re-encryption of the blob, and every read checks the content against
    the digest.

    ``aml_alert_notes`` are the officers' notes and decision reasons: free text, which may
    name people, so it is stored only as a vault blob (K5). Notes are append-only but for
    the blob, which ``custodia keys reencrypt`` may move to a new key.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base, BigId
from custodia.core.vault import EncryptedColumn

DIRECTIONS = ("in", "out")
ALERT_STATUSES = ("open", "in_review", "escalated", "closed")
DECISIONS = ("false_positive", "reported", "no_action")
SEVERITIES = ("low", "medium", "high")
CASE_STATUSES = ("open", "closed")
NOTE_KINDS = ("note", "decision")
ACTIONS = ("freeze", "delay_settlement", "terminate_service", "lift")
REPORT_KINDS = ("large_value", "suspicious")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AmlRule(Base):
    """A monitoring rule's current parameters (the latest of its versions)."""

    __tablename__ = "aml_rules"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict[str, Any]]
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime]


class AmlRuleVersion(Base):
    """One version of a rule's parameters, as a compliance lead set them (append-only)."""

    __tablename__ = "aml_rule_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict[str, Any]]
    changed_by: Mapped[str] = mapped_column(String(100))
    changed_at: Mapped[datetime]


class AmlMovement(Base):
    """One customer side of one posted transaction, as monitoring sees it."""

    __tablename__ = "aml_movements"
    __table_args__ = (
        CheckConstraint(_one_of("direction", DIRECTIONS), name="direction"),
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint(
            "transaction_id", "customer_id", "direction", name="uq_aml_movements_side"
        ),
        # Covering on PostgreSQL: a rule's window scan reads the index alone (0014).
        Index(
            "ix_aml_movements_customer_at",
            "customer_id",
            "at",
            postgresql_include=[
                "transaction_id",
                "direction",
                "amount",
                "counterparty",
                "cross_border",
                "channel",
            ],
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(40))
    direction: Mapped[str] = mapped_column(String(3))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: The other side: a customer id, a merchant id, or ``own_card`` (top-up, withdrawal).
    counterparty: Mapped[str] = mapped_column(String(64))
    cross_border: Mapped[bool] = mapped_column(Boolean)
    channel: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]


class AmlCase(Base):
    """The unclosed alerts of one customer, worked together."""

    __tablename__ = "aml_cases"
    __table_args__ = (
        CheckConstraint(_one_of("status", CASE_STATUSES), name="status"),
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name="closed_at"),
        Index(
            "uq_aml_cases_one_open",
            "customer_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class AmlAlert(Base):
    """One pattern a rule found for one customer, worked to a decision (K2, L2)."""

    __tablename__ = "aml_alerts"
    __table_args__ = (
        CheckConstraint(_one_of("status", ALERT_STATUSES), name="status"),
        CheckConstraint(f"decision IS NULL OR {_one_of('decision', DECISIONS)}", name="decision"),
        CheckConstraint(_one_of("severity", SEVERITIES), name="severity"),
        CheckConstraint("score BETWEEN 0 AND 100", name="score_range"),
        CheckConstraint("(status = 'closed') = (decision IS NOT NULL)", name="decided_when_closed"),
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name="closed_at"),
        Index(
            "uq_aml_alerts_open_pattern",
            "customer_id",
            "rule",
            "pattern",
            unique=True,
            postgresql_where=text("status <> 'closed'"),
            sqlite_where=text("status <> 'closed'"),
        ),
        Index("ix_aml_alerts_status", "status", "id"),
        Index("ix_aml_alerts_customer", "customer_id", "id"),
        Index("ix_aml_alerts_rule", "rule", "id"),
        Index("ix_aml_alerts_case", "case_id"),
        # The suspicious-transaction report reads the alerts reported in a period (L2).
        Index(
            "ix_aml_alerts_reported",
            "closed_at",
            postgresql_where=text("decision = 'reported'"),
            sqlite_where=text("decision = 'reported'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("aml_cases.id"))
    customer_id: Mapped[str] = mapped_column(String(40))
    rule: Mapped[str] = mapped_column(String(40))
    rule_version: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]]
    pattern: Mapped[str] = mapped_column(String(100))
    score: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(8))
    #: What the rule measured (figures and ids, never names).
    details: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    assignee: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(100))


class AmlAlertTransaction(Base):
    """A transaction that contributed to an alert (append-only)."""

    __tablename__ = "aml_alert_transactions"

    alert_id: Mapped[str] = mapped_column(ForeignKey("aml_alerts.id"), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    added_at: Mapped[datetime]


class AmlAlertNote(Base):
    """An officer's note or decision reason on an alert; the text only as a vault blob."""

    __tablename__ = "aml_alert_notes"
    __table_args__ = (
        CheckConstraint(_one_of("kind", NOTE_KINDS), name="kind"),
        Index("ix_aml_alert_notes_alert", "alert_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("aml_alerts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(100))
    text_enc: Mapped[bytes]
    created_at: Mapped[datetime]


class AmlAction(Base):
    """A measure compliance took on a customer or account (K2), with its reason (append-only).

    ``account_ids`` lists the accounts the measure changed; the reason is free text and so
    stored only as a vault blob.
    """

    __tablename__ = "aml_actions"
    __table_args__ = (
        CheckConstraint(_one_of("action", ACTIONS), name="action"),
        Index("ix_aml_actions_customer", "customer_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    action: Mapped[str] = mapped_column(String(24))
    customer_id: Mapped[str] = mapped_column(String(40))
    account_ids: Mapped[dict[str, Any]]  # {"changed": [...]}
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("aml_alerts.id"))
    reason_enc: Mapped[bytes]
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class FiledReport(Base):
    """A regulatory report as filed (L1, L2): its content sealed, its digest in clear.

    Append-only: UPDATE of any column but ``content_enc`` and every DELETE are refused by
    triggers; ``content_enc`` may only be re-encrypted (same plaintext) by ``keys reencrypt``.
    """

    __tablename__ = "regulatory_reports"
    __table_args__ = (
        CheckConstraint(_one_of("kind", REPORT_KINDS), name="kind"),
        CheckConstraint("period_to >= period_from", name="period_ordered"),
        CheckConstraint("length(content_sha256) = 64", name="digest_length"),
        Index("ix_regulatory_reports_kind", "kind", "period_from"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: The institution calendar days covered, both included (``timezone`` names the calendar).
    period_from: Mapped[date] = mapped_column(Date)
    period_to: Mapped[date] = mapped_column(Date)
    timezone: Mapped[str] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]]
    #: SHA-256 (hex) of the canonical JSON content, kept in clear to prove the content.
    content_sha256: Mapped[str] = mapped_column(String(64))
    content_enc: Mapped[bytes]
    filed_by: Mapped[str] = mapped_column(String(100))
    filed_at: Mapped[datetime]
    request_id: Mapped[str | None] = mapped_column(String(128))


#: The vault-encrypted columns of this package (walked by ``custodia keys reencrypt``).
PII_COLUMNS = (
    EncryptedColumn("aml_alert_notes", "text_enc"),
    EncryptedColumn("aml_actions", "reason_enc"),
    EncryptedColumn("regulatory_reports", "content_enc"),
)
