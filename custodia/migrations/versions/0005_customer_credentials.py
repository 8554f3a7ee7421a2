"""Customers' verification factors: payment password, TOTP, device signing keys.

Revision ID: 0005_customer_credentials
Revises: 0004_agreements
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_customer_credentials"
down_revision = "0004_agreements"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer_credentials",
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=True),
        sa.Column("totp_secret_enc", sa.LargeBinary(), nullable=True),
        sa.Column("totp_confirmed", sa.Boolean(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_credentials"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_credentials_customer_id_customers"
        ),
        sa.CheckConstraint(
            "failed_attempts >= 0", name="ck_customer_credentials_failed_attempts_not_negative"
        ),
        sa.CheckConstraint(
            "totp_confirmed = false OR totp_secret_enc IS NOT NULL",
            name="ck_customer_credentials_totp_confirmed_has_secret",
        ),
    )
    op.create_table(
        "customer_signing_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("public_key", sa.String(60), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_customer_signing_keys"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_signing_keys_customer_id_customers"
        ),
    )
    op.create_index(
        "ix_customer_signing_keys_customer_id", "customer_signing_keys", ["customer_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_customer_signing_keys_customer_id", table_name="customer_signing_keys")
    op.drop_table("customer_signing_keys")
    op.drop_table("customer_credentials")
