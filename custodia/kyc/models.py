"""Customers and what the institution knows and has checked about them (REGULATION.md R1–R4).

Design
    ``customers`` holds one row per customer: one identity document ↔ one customer, held by
    the UNIQUE blind index ``document_index`` over the document type and normalised number.
    Personal fields are vault blobs (``*_enc``, AES-256-GCM bound to table, column and row);
    what queries need in clear is in clear: the document type and validity dates (the expiry
    job), the nationality (screening, geography risk), statuses and the risk level.
    ``customer_parties`` holds a corporate customer's legal representative and beneficial
    owners, screened like customers. ``verifications`` records every verification attempt
    (append-only: it is evidence). ``watchlists`` and ``watchlist_entries`` hold the
    uploaded sanctions and terrorist lists (public data, in clear); ``screening_hits`` the
    matches found. ``customer_notices`` remembers which notices were sent, so the daily job
    sends each once.
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
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base, BigId
from custodia.core.vault import BlindIndexColumn, EncryptedColumn

CUSTOMER_TYPES = ("individual", "corporate")
CUSTOMER_STATUSES = ("pending_verification", "active", "restricted", "closed")
SCREENING_STATUSES = ("not_screened", "clear", "potential_match", "confirmed_match")
RISK_LEVELS = ("low", "medium", "high")
ID_TYPES = (
    "prc_resident_id",
    "passport",
    "hk_macau_permit",
    "taiwan_permit",
    "foreign_permanent_resident_id",
    "uscc",
)
PARTY_ROLES = ("legal_representative", "beneficial_owner")
CHANNELS = (
    "public_security_id",
    "bank_card",
    "mobile_carrier",
    "social_security",
    "education",
    "tax",
    "face_to_face",
    "video",
)
VERIFICATION_RESULTS = ("passed", "failed", "error")
HIT_STATUSES = ("open", "cleared", "confirmed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Customer(Base):
    """A customer: individual or corporate, identified by one identity document."""

    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint(_one_of("type", CUSTOMER_TYPES), name="type"),
        CheckConstraint(_one_of("status", CUSTOMER_STATUSES), name="status"),
        CheckConstraint(_one_of("id_type", ID_TYPES), name="id_type"),
        CheckConstraint(_one_of("screening_status", SCREENING_STATUSES), name="screening_status"),
        CheckConstraint(_one_of("risk_level", RISK_LEVELS), name="risk_level"),
        CheckConstraint("risk_score BETWEEN 0 AND 1000", name="risk_score_range"),
        CheckConstraint("document_version >= 1", name="document_version_positive"),
        CheckConstraint(
            "(type = 'corporate') = (id_type = 'uscc')", name="uscc_only_for_corporates"
        ),
        Index("ix_customers_phone_index", "phone_index"),
        Index("ix_customers_id_valid_until", "id_valid_until"),
        Index("ix_customers_created_by", "created_by", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    restriction_reason: Mapped[str | None] = mapped_column(String(40))
    name_enc: Mapped[bytes]
    id_type: Mapped[str] = mapped_column(String(40))
    id_number_enc: Mapped[bytes]
    document_index: Mapped[str] = mapped_column(String(64), unique=True)
    document_version: Mapped[int] = mapped_column(Integer)
    id_valid_from: Mapped[date | None] = mapped_column(Date)
    id_valid_until: Mapped[date | None] = mapped_column(Date)
    nationality: Mapped[str] = mapped_column(String(2))
    date_of_birth_enc: Mapped[bytes | None]
    gender_enc: Mapped[bytes | None]
    phone_enc: Mapped[bytes | None]
    phone_index: Mapped[str | None] = mapped_column(String(64))
    address_enc: Mapped[bytes | None]
    occupation_enc: Mapped[bytes | None]
    industry: Mapped[str | None] = mapped_column(String(64))
    business_scope: Mapped[str | None] = mapped_column(Text)
    financial_institution: Mapped[bool] = mapped_column(Boolean)
    screening_status: Mapped[str] = mapped_column(String(24))
    risk_level: Mapped[str] = mapped_column(String(8))
    risk_score: Mapped[int] = mapped_column(Integer)  # permille of the maximum score
    risk_factors: Mapped[dict[str, Any]]
    transaction_behaviour_score: Mapped[int | None] = mapped_column(Integer)  # fed by AML
    rated_at: Mapped[datetime]
    reverification_due_on: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CustomerParty(Base):
    """A corporate customer's legal representative or a beneficial owner (≥ 25 %)."""

    __tablename__ = "customer_parties"
    __table_args__ = (
        CheckConstraint(_one_of("role", PARTY_ROLES), name="role"),
        CheckConstraint(_one_of("id_type", ID_TYPES[:-1]), name="id_type"),
        CheckConstraint(_one_of("screening_status", SCREENING_STATUSES), name="screening_status"),
        CheckConstraint(
            "ownership_bp IS NULL OR ownership_bp BETWEEN 1 AND 10000", name="ownership_range"
        ),
        Index("ix_customer_parties_customer_id", "customer_id"),
        Index("ix_customer_parties_document_index", "document_index"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    role: Mapped[str] = mapped_column(String(24))
    name_enc: Mapped[bytes]
    id_type: Mapped[str] = mapped_column(String(40))
    id_number_enc: Mapped[bytes]
    document_index: Mapped[str] = mapped_column(String(64))
    id_valid_until: Mapped[date | None] = mapped_column(Date)
    nationality: Mapped[str | None] = mapped_column(String(2))
    date_of_birth_enc: Mapped[bytes | None]
    gender_enc: Mapped[bytes | None]
    phone_enc: Mapped[bytes | None]
    ownership_bp: Mapped[int | None] = mapped_column(Integer)  # basis points of ownership
    screening_status: Mapped[str] = mapped_column(String(24))


class Verification(Base):
    """One verification attempt through one channel, and its outcome (append-only)."""

    __tablename__ = "verifications"
    __table_args__ = (
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        CheckConstraint(_one_of("result", VERIFICATION_RESULTS), name="result"),
        Index("ix_verifications_customer_id", "customer_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(32))
    adapter: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(200))
    evidence_ref: Mapped[str | None] = mapped_column(String(200))
    document_version: Mapped[int] = mapped_column(Integer)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Watchlist(Base):
    """An uploaded sanctions or terrorist list; re-uploading a list id replaces its entries."""

    __tablename__ = "watchlists"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    entry_count: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(100))
    uploaded_at: Mapped[datetime]


class WatchlistEntry(Base):
    """A listed person or organisation (public list data, kept in clear)."""

    __tablename__ = "watchlist_entries"
    __table_args__ = (Index("ix_watchlist_entries_list_id", "list_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    list_id: Mapped[str] = mapped_column(ForeignKey("watchlists.id"))
    reference: Mapped[str | None] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300))
    aliases: Mapped[dict[str, Any]]  # {"names": [...]}
    date_of_birth: Mapped[str | None] = mapped_column(String(10))  # YYYY, YYYY-MM or YYYY-MM-DD
    nationality: Mapped[str | None] = mapped_column(String(2))
    source: Mapped[str | None] = mapped_column(String(200))


class ScreeningHit(Base):
    """A customer or party that matched a list entry; compliance decides (issue 7 queue)."""

    __tablename__ = "screening_hits"
    __table_args__ = (
        CheckConstraint(_one_of("status", HIT_STATUSES), name="status"),
        CheckConstraint("score BETWEEN 0 AND 100", name="score_range"),
        UniqueConstraint(
            "customer_id", "party_id", "entry_key", name="uq_screening_hits_subject_entry"
        ),
        Index("ix_screening_hits_customer_id", "customer_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    party_id: Mapped[str] = mapped_column(String(40))  # "" for the customer itself
    subject: Mapped[str] = mapped_column(String(24))
    list_id: Mapped[str] = mapped_column(String(100))
    entry_key: Mapped[str] = mapped_column(String(200))  # list id + entry reference or name
    matched_name: Mapped[str] = mapped_column(String(300))
    score: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class CustomerNotice(Base):
    """A notice sent about one version of a customer's document, so that each goes out once."""

    __tablename__ = "customer_notices"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    document_version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sent_at: Mapped[datetime]


class CustomerCredential(Base):
    """A customer's payment verification factors (K3) and the failures counted against them.

    The payment password is stored only as scrypt with a pepper held outside the database;
    the TOTP secret only as a vault blob. ``totp_last_step`` makes each code usable once.
    """

    __tablename__ = "customer_credentials"
    __table_args__ = (
        CheckConstraint("failed_attempts >= 0", name="failed_attempts_not_negative"),
        CheckConstraint(
            "totp_confirmed = false OR totp_secret_enc IS NOT NULL",
            name="totp_confirmed_has_secret",
        ),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    totp_secret_enc: Mapped[bytes | None]
    totp_confirmed: Mapped[bool] = mapped_column(Boolean)
    totp_last_step: Mapped[int] = mapped_column(BigInteger)
    failed_attempts: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class CustomerSigningKey(Base):
    """An Ed25519 device key registered by a customer: an electronic-signature factor (K3)."""

    __tablename__ = "customer_signing_keys"
    __table_args__ = (Index("ix_customer_signing_keys_customer_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    public_key: Mapped[str] = mapped_column(String(60))  # base64 of the raw 32 bytes
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


def _document_value(values: dict[str, str]) -> str:
    return f"{values['id_type']}:{values['id_number_enc']}"


#: The vault-encrypted columns of this package (walked by ``custodia keys reencrypt``).
PII_COLUMNS = (
    *(
        EncryptedColumn("customers", column)
        for column in (
            "name_enc",
            "id_number_enc",
            "date_of_birth_enc",
            "gender_enc",
            "phone_enc",
            "address_enc",
            "occupation_enc",
        )
    ),
    *(
        EncryptedColumn("customer_parties", column)
        for column in ("name_enc", "id_number_enc", "date_of_birth_enc", "gender_enc", "phone_enc")
    ),
    EncryptedColumn("customer_credentials", "totp_secret_enc", id_column="customer_id"),
)

#: The blind-index columns of this package (rebuilt by ``custodia keys reindex``).
INDEX_COLUMNS = (
    BlindIndexColumn(
        "customers",
        "document_index",
        "identity_document",
        sources=("id_type", "id_number_enc"),
        encrypted_sources=frozenset({"id_number_enc"}),
        compose=_document_value,
    ),
    BlindIndexColumn(
        "customers",
        "phone_index",
        "phone",
        sources=("phone_enc",),
        encrypted_sources=frozenset({"phone_enc"}),
    ),
    BlindIndexColumn(
        "customer_parties",
        "document_index",
        "identity_document",
        sources=("id_type", "id_number_enc"),
        encrypted_sources=frozenset({"id_number_enc"}),
        compose=_document_value,
    ),
)
