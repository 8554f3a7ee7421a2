"""Agreements: templates, consents, notices, risk warnings; the default payment agreement.

Revision ID: 0004_agreements
Revises: 0003_kyc
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from custodia.agreements.templates import install_defaults
from custodia.core.ids import IdGenerator
from custodia.migrations.ddl import (
    CONSENT_FROZEN_COLUMNS,
    PUBLISHED_ONLY,
    append_only,
    drop_append_only,
)

revision = "0004_agreements"
down_revision = "0003_kyc"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
VERIFICATIONS = "'none', 'totp', 'signature'"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "agreements",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("locale", sa.String(10), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("effective_at", TS, nullable=False),
        sa.Column("clauses", JSON_DOCUMENT, nullable=False),
        sa.Column("consent_verification", sa.String(16), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("published_by", sa.String(100), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agreements"),
        sa.UniqueConstraint("kind", "version", "locale", name="uq_agreements_kind_version_locale"),
        sa.CheckConstraint("status IN ('draft', 'published')", name="ck_agreements_status"),
        sa.CheckConstraint("locale IN ('zh-CN', 'en')", name="ck_agreements_locale"),
        sa.CheckConstraint(
            f"consent_verification IN ({VERIFICATIONS})", name="ck_agreements_verification"
        ),
        sa.CheckConstraint(
            "(status = 'published') = (content_sha256 IS NOT NULL AND published_at IS NOT NULL)",
            name="ck_agreements_published_has_hash",
        ),
    )
    op.create_index(
        "ix_agreements_current", "agreements", ["kind", "locale", "status", "effective_at"]
    )

    op.create_table(
        "consents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("agreement_id", sa.String(40), nullable=False),
        sa.Column("agreement_kind", sa.String(40), nullable=False),
        sa.Column("agreement_version", sa.String(20), nullable=False),
        sa.Column("agreement_locale", sa.String(10), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("ip_enc", sa.LargeBinary(), nullable=False),
        sa.Column("user_agent", sa.String(500), nullable=False),
        sa.Column("shown_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("verification", sa.String(16), nullable=False),
        sa.Column("verification_ref", sa.String(100), nullable=True),
        sa.Column("prominent_clauses", JSON_DOCUMENT, nullable=False),
        sa.Column("receipt_key_id", sa.String(16), nullable=False),
        sa.Column("receipt_signature", sa.String(100), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_consents_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["agreements.id"], name="fk_consents_agreement_id_agreements"
        ),
        sa.CheckConstraint(f"verification IN ({VERIFICATIONS})", name="ck_consents_verification"),
        sa.CheckConstraint("shown_at <= decided_at", name="ck_consents_shown_before_decided"),
    )
    op.create_index(
        "ix_consents_customer_kind", "consents", ["customer_id", "agreement_kind", "decided_at"]
    )

    op.create_table(
        "agreement_notices",
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("agreement_id", sa.String(40), nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "agreement_id", name="pk_agreement_notices"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_agreement_notices_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name="fk_agreement_notices_agreement_id_agreements",
        ),
    )

    op.create_table(
        "risk_warnings",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(100), nullable=True),
        sa.Column("shown_at", TS, nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_risk_warnings"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_risk_warnings_customer_id_customers"
        ),
    )
    op.create_index(
        "ix_risk_warnings_customer_kind", "risk_warnings", ["customer_id", "kind", "shown_at"]
    )

    for statement in (
        *append_only("agreements", dialect, when=PUBLISHED_ONLY),
        *append_only("consents", dialect, columns=CONSENT_FROZEN_COLUMNS),
        *append_only("risk_warnings", dialect),
    ):
        op.execute(statement)

    # A fresh deployment can onboard at once: the default payment-service agreement.
    install_defaults(op.get_bind(), now=datetime.now(UTC), ids=IdGenerator())


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ("risk_warnings", "consents", "agreements"):
        for statement in drop_append_only(table, dialect):
            op.execute(statement)
    op.drop_index("ix_risk_warnings_customer_kind", table_name="risk_warnings")
    op.drop_table("risk_warnings")
    op.drop_table("agreement_notices")
    op.drop_index("ix_consents_customer_kind", table_name="consents")
    op.drop_table("consents")
    op.drop_index("ix_agreements_current", table_name="agreements")
    op.drop_table("agreements")
