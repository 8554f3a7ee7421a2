"""Service agreements, consents and risk warnings (REGULATION.md A1–A4).

Design
    ``agreements`` holds every version of every agreement text: a kind (``payment_service``,
    ``partner_product_risk`` …), a version, a locale, the effective instant and the clauses.
    A draft may be edited; publishing freezes it and records ``content_sha256`` over its
    canonical form (:func:`custodia.agreements.templates.content_hash`). A trigger refuses any
    UPDATE or DELETE of a published row, so the text a customer accepted can be shown again
    byte for byte, years later (B4: evidence kept).

    ``consents`` records each customer's decision on one version: accepted or declined, how
    (channel, IP, user agent, the factor that confirmed it), when it was shown and when it
    was decided, and the service's Ed25519 signature over the receipt. Append-only: the only
    column a trigger lets change is the IP's vault blob, which ``custodia keys reencrypt``
    moves to a new key without changing its plaintext (the receipt still verifies).

    ``agreement_notices`` remembers which customers were told of which new version (A3), so
    the fan-out after a publication sends each notice once.

    ``risk_warnings`` records that a warning was shown before a high-risk operation, and
    whether the customer acknowledged it (A4). Append-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base
from custodia.core.vault import EncryptedColumn

AGREEMENT_STATUSES = ("draft", "published")
LOCALES = ("zh-CN", "en")
#: How a customer confirms a consent beyond the onboarding app's word for it.
CONSENT_VERIFICATIONS = ("none", "totp", "signature")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Agreement(Base):
    """One version of an agreement text in one locale; immutable once published."""

    __tablename__ = "agreements"
    __table_args__ = (
        CheckConstraint(_one_of("status", AGREEMENT_STATUSES), name="status"),
        CheckConstraint(_one_of("locale", LOCALES), name="locale"),
        CheckConstraint(
            _one_of("consent_verification", CONSENT_VERIFICATIONS), name="verification"
        ),
        CheckConstraint(
            "(status = 'published') = (content_sha256 IS NOT NULL AND published_at IS NOT NULL)",
            name="published_has_hash",
        ),
        UniqueConstraint("kind", "version", "locale", name="uq_agreements_kind_version_locale"),
        Index("ix_agreements_current", "kind", "locale", "status", "effective_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(20))
    locale: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    effective_at: Mapped[datetime]
    #: ``{"clauses": [{"key", "title", "body", "prominent"}, …]}`` in the order shown.
    clauses: Mapped[dict[str, Any]]
    consent_verification: Mapped[str] = mapped_column(String(16))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    published_at: Mapped[datetime | None]
    published_by: Mapped[str | None] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Consent(Base):
    """A customer's accepted or declined consent to one agreement version (append-only)."""

    __tablename__ = "consents"
    __table_args__ = (
        CheckConstraint(_one_of("verification", CONSENT_VERIFICATIONS), name="verification"),
        CheckConstraint("shown_at <= decided_at", name="shown_before_decided"),
        Index("ix_consents_customer_kind", "customer_id", "agreement_kind", "decided_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    agreement_kind: Mapped[str] = mapped_column(String(40))
    agreement_version: Mapped[str] = mapped_column(String(20))
    agreement_locale: Mapped[str] = mapped_column(String(10))
    content_sha256: Mapped[str] = mapped_column(String(64))
    accepted: Mapped[bool] = mapped_column(Boolean)
    channel: Mapped[str] = mapped_column(String(32))
    ip_enc: Mapped[bytes]
    user_agent: Mapped[str] = mapped_column(String(500))
    shown_at: Mapped[datetime]
    decided_at: Mapped[datetime]
    verification: Mapped[str] = mapped_column(String(16))
    verification_ref: Mapped[str | None] = mapped_column(String(100))
    #: ``{"keys": [...]}``: the prominent clauses the customer confirmed having read (A2).
    prominent_clauses: Mapped[dict[str, Any]]
    receipt_key_id: Mapped[str] = mapped_column(String(16))
    receipt_signature: Mapped[str] = mapped_column(String(100))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(128))


class AgreementNotice(Base):
    """A customer told of a new agreement version (A3), so that each notice goes out once."""

    __tablename__ = "agreement_notices"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"), primary_key=True)
    sent_at: Mapped[datetime]


class RiskWarning(Base):
    """A risk warning shown to a customer before a high-risk operation (A4, append-only)."""

    __tablename__ = "risk_warnings"
    __table_args__ = (Index("ix_risk_warnings_customer_kind", "customer_id", "kind", "shown_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(40))
    #: What the warning was about, e.g. the partner product before its first purchase.
    subject: Mapped[str | None] = mapped_column(String(100))
    shown_at: Mapped[datetime]
    acknowledged: Mapped[bool] = mapped_column(Boolean)
    channel: Mapped[str | None] = mapped_column(String(32))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]


#: The vault-encrypted columns of this package (walked by ``custodia keys reencrypt``).
PII_COLUMNS = (EncryptedColumn("consents", "ip_enc"),)
