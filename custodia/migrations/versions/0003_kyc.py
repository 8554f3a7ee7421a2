"""KYC: customers, parties, verifications, watchlists, screening hits, notices.

Revision ID: 0003_kyc
Revises: 0002_security
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from custodia.migrations.ddl import append_only, drop_append_only

revision = "0003_kyc"
down_revision = "0002_security"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
ID_TYPES = (
    "'prc_resident_id', 'passport', 'hk_macau_permit', 'taiwan_permit', "
    "'foreign_permanent_resident_id'"
)
SCREENING = "'not_screened', 'clear', 'potential_match', 'confirmed_match'"
CHANNELS = (
    "'public_security_id', 'bank_card', 'mobile_carrier', 'social_security', 'education', "
    "'tax', 'face_to_face', 'video'"
)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "customers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("restriction_reason", sa.String(40), nullable=True),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("id_type", sa.String(40), nullable=False),
        sa.Column("id_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("document_index", sa.String(64), nullable=False),
        sa.Column("document_version", sa.Integer(), nullable=False),
        sa.Column("id_valid_from", sa.Date(), nullable=True),
        sa.Column("id_valid_until", sa.Date(), nullable=True),
        sa.Column("nationality", sa.String(2), nullable=False),
        sa.Column("date_of_birth_enc", sa.LargeBinary(), nullable=True),
        sa.Column("gender_enc", sa.LargeBinary(), nullable=True),
        sa.Column("phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("phone_index", sa.String(64), nullable=True),
        sa.Column("address_enc", sa.LargeBinary(), nullable=True),
        sa.Column("occupation_enc", sa.LargeBinary(), nullable=True),
        sa.Column("industry", sa.String(64), nullable=True),
        sa.Column("business_scope", sa.Text(), nullable=True),
        sa.Column("financial_institution", sa.Boolean(), nullable=False),
        sa.Column("screening_status", sa.String(24), nullable=False),
        sa.Column("risk_level", sa.String(8), nullable=False),
        sa.Column("risk_score", sa.Integer(), nullable=False),
        sa.Column("risk_factors", JSON_DOCUMENT, nullable=False),
        sa.Column("transaction_behaviour_score", sa.Integer(), nullable=True),
        sa.Column("rated_at", TS, nullable=False),
        sa.Column("reverification_due_on", sa.Date(), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("document_index", name="uq_customers_document_index"),
        sa.CheckConstraint("type IN ('individual', 'corporate')", name="ck_customers_type"),
        sa.CheckConstraint(
            "status IN ('pending_verification', 'active', 'restricted', 'closed')",
            name="ck_customers_status",
        ),
        sa.CheckConstraint(f"id_type IN ({ID_TYPES}, 'uscc')", name="ck_customers_id_type"),
        sa.CheckConstraint(
            f"screening_status IN ({SCREENING})", name="ck_customers_screening_status"
        ),
        sa.CheckConstraint(
            "risk_level IN ('low', 'medium', 'high')", name="ck_customers_risk_level"
        ),
        sa.CheckConstraint("risk_score BETWEEN 0 AND 1000", name="ck_customers_risk_score_range"),
        sa.CheckConstraint("document_version >= 1", name="ck_customers_document_version_positive"),
        sa.CheckConstraint(
            "(type = 'corporate') = (id_type = 'uscc')",
            name="ck_customers_uscc_only_for_corporates",
        ),
    )
    op.create_index("ix_customers_phone_index", "customers", ["phone_index"])
    op.create_index("ix_customers_id_valid_until", "customers", ["id_valid_until"])
    op.create_index("ix_customers_created_by", "customers", ["created_by", "id"])

    op.create_table(
        "customer_parties",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("id_type", sa.String(40), nullable=False),
        sa.Column("id_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("document_index", sa.String(64), nullable=False),
        sa.Column("id_valid_until", sa.Date(), nullable=True),
        sa.Column("nationality", sa.String(2), nullable=True),
        sa.Column("date_of_birth_enc", sa.LargeBinary(), nullable=True),
        sa.Column("gender_enc", sa.LargeBinary(), nullable=True),
        sa.Column("phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("ownership_bp", sa.Integer(), nullable=True),
        sa.Column("screening_status", sa.String(24), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customer_parties"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_parties_customer_id_customers"
        ),
        sa.CheckConstraint(
            "role IN ('legal_representative', 'beneficial_owner')", name="ck_customer_parties_role"
        ),
        sa.CheckConstraint(f"id_type IN ({ID_TYPES})", name="ck_customer_parties_id_type"),
        sa.CheckConstraint(
            f"screening_status IN ({SCREENING})", name="ck_customer_parties_screening_status"
        ),
        sa.CheckConstraint(
            "ownership_bp IS NULL OR ownership_bp BETWEEN 1 AND 10000",
            name="ck_customer_parties_ownership_range",
        ),
    )
    op.create_index("ix_customer_parties_customer_id", "customer_parties", ["customer_id"])
    op.create_index("ix_customer_parties_document_index", "customer_parties", ["document_index"])

    op.create_table(
        "verifications",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("adapter", sa.String(32), nullable=False),
        sa.Column("result", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("evidence_ref", sa.String(200), nullable=True),
        sa.Column("document_version", sa.Integer(), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_verifications"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_verifications_customer_id_customers"
        ),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name="ck_verifications_channel"),
        sa.CheckConstraint(
            "result IN ('passed', 'failed', 'error')", name="ck_verifications_result"
        ),
    )
    op.create_index("ix_verifications_customer_id", "verifications", ["customer_id", "created_at"])

    op.create_table(
        "watchlists",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.String(100), nullable=False),
        sa.Column("uploaded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_watchlists"),
    )
    op.create_table(
        "watchlist_entries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("list_id", sa.String(100), nullable=False),
        sa.Column("reference", sa.String(100), nullable=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("aliases", JSON_DOCUMENT, nullable=False),
        sa.Column("date_of_birth", sa.String(10), nullable=True),
        sa.Column("nationality", sa.String(2), nullable=True),
        sa.Column("source", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_watchlist_entries"),
        sa.ForeignKeyConstraint(
            ["list_id"], ["watchlists.id"], name="fk_watchlist_entries_list_id_watchlists"
        ),
    )
    op.create_index("ix_watchlist_entries_list_id", "watchlist_entries", ["list_id"])

    op.create_table(
        "screening_hits",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("party_id", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(24), nullable=False),
        sa.Column("list_id", sa.String(100), nullable=False),
        sa.Column("entry_key", sa.String(200), nullable=False),
        sa.Column("matched_name", sa.String(300), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_screening_hits"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_screening_hits_customer_id_customers"
        ),
        sa.UniqueConstraint(
            "customer_id", "party_id", "entry_key", name="uq_screening_hits_subject_entry"
        ),
        sa.CheckConstraint(
            "status IN ('open', 'cleared', 'confirmed')", name="ck_screening_hits_status"
        ),
        sa.CheckConstraint("score BETWEEN 0 AND 100", name="ck_screening_hits_score_range"),
    )
    op.create_index("ix_screening_hits_customer_id", "screening_hits", ["customer_id"])

    op.create_table(
        "customer_notices",
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("document_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "kind", "document_version", name="pk_customer_notices"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_notices_customer_id_customers"
        ),
    )
    for statement in append_only("verifications", dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in drop_append_only("verifications", dialect):
        op.execute(statement)
    op.drop_table("customer_notices")
    op.drop_index("ix_screening_hits_customer_id", table_name="screening_hits")
    op.drop_table("screening_hits")
    op.drop_index("ix_watchlist_entries_list_id", table_name="watchlist_entries")
    op.drop_table("watchlist_entries")
    op.drop_table("watchlists")
    op.drop_index("ix_verifications_customer_id", table_name="verifications")
    op.drop_table("verifications")
    op.drop_index("ix_customer_parties_document_index", table_name="customer_parties")
    op.drop_index("ix_customer_parties_customer_id", table_name="customer_parties")
    op.drop_table("customer_parties")
    op.drop_index("ix_customers_created_by", table_name="customers")
    op.drop_index("ix_customers_id_valid_until", table_name="customers")
    op.drop_index("ix_customers_phone_index", table_name="customers")
    op.drop_table("customers")
