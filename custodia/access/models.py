"""Who may call the service: staff with their sessions, and API clients.

- ``staff``: compliance officers, leads, auditors and admins. A password (scrypt, see
  ``custodia.core.passwords``) and a TOTP secret (encrypted in the vault; the last accepted
  time step is kept so that each code works once) — DESIGN.md "Security".
- ``staff_sessions``: opaque bearer tokens handed out by ``POST /v1/auth/login``; only their
  SHA-256 is stored. Each has an absolute expiry and an idle expiry.
- ``api_clients``: onboarding apps and merchants. The key ``ck_<env>_<key id>_<secret>`` is
  shown once; only the SHA-256 of the secret is stored. A merchant's key is bound to one
  merchant.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from custodia.core.models import Base
from custodia.core.vault import EncryptedColumn

STAFF_ROLE_VALUES = ("compliance_officer", "compliance_lead", "auditor", "admin")
CLIENT_KIND_VALUES = ("onboarding_app", "merchant")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Staff(Base):
    """A member of staff who signs in with password and TOTP."""

    __tablename__ = "staff"
    __table_args__ = (
        CheckConstraint(_one_of("role", STAFF_ROLE_VALUES), name="role"),
        CheckConstraint("failed_logins >= 0", name="failed_logins_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    password_change_required: Mapped[bool] = mapped_column(Boolean)
    totp_secret: Mapped[bytes]
    totp_last_step: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failed_logins: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]


class StaffSession(Base):
    """A signed-in session: the token's digest, its owner and its expiries."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_staff_id", "staff_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiClient(Base):
    """An onboarding app or a merchant integration and the digest of its key."""

    __tablename__ = "api_clients"
    __table_args__ = (
        CheckConstraint(_one_of("kind", CLIENT_KIND_VALUES), name="kind"),
        CheckConstraint(
            "(kind = 'merchant') = (merchant_id IS NOT NULL)", name="merchant_key_bound"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    merchant_id: Mapped[str | None] = mapped_column(String(40))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


#: The vault-encrypted columns of this package (walked by ``custodia keys reencrypt``).
PII_COLUMNS = (EncryptedColumn("staff", "totp_secret"),)
