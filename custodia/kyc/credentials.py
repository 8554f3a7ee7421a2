"""Customers' verification factors: payment password, TOTP, device signing keys (REGULATION.md K3).

- Payment password (K3 (1), K5): a 6-digit PIN or a longer password, stored only as scrypt
  keyed with a pepper held outside the database (``custodia.core.passwords``): a stolen
  table cannot be brute-forced without the key file too. Trivial PINs are refused.
  Changing it needs the current one.
- TOTP (K3 (2)): a secret in the vault, bound after the customer proves it with a first
  code; each 30-second step is accepted once (a conditional update of ``totp_last_step``).
- Device keys (K3 (2), electronic signature): Ed25519 public keys; a signature over the
  operation's signing string (API.md) proves the device took part. A key is revoked when
  its device is lost or replaced (:func:`revoke_signing_key`): from that commit on no
  signature by it verifies, on any path (the transfer function checks it in the database).

:func:`verify_factors` checks the factors of one operation. A wrong factor raises
:class:`AuthenticationFailed`; the caller then counts the failure in a transaction of its
own (:func:`count_failure`), since the operation's transaction rolls back: after
``max_failures`` failures in a row the customer's payments are locked for a while.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.db import upsert_insert
from custodia.core.errors import ErrorKind, FieldProblem, InvalidFields, NotFound
from custodia.core.factors import Factor
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.passwords import SecretHasher
from custodia.core.signing import verify_signature
from custodia.core.totp import matched_step, new_secret, provisioning_uri
from custodia.core.vault import Vault
from custodia.kyc.errors import KycError
from custodia.kyc.models import CustomerCredential, CustomerSigningKey

MAX_SIGNING_KEYS = 10
_PIN = re.compile(r"\d{6}")


@dataclass(frozen=True, slots=True)
class CredentialPolicy:
    """How many wrong factors in a row lock a customer's payments, and for how long."""

    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)


class InvalidCredential(InvalidFields, KycError):
    """A credential that cannot be stored as given (weak PIN, malformed key)."""

    title = "The credential is not valid"
    detail_text = "The credential was not stored; see errors."


class AuthenticationFailed(KycError):
    """A factor did not match (API.md: 401 ``authentication_failed``); counted."""

    code = "authentication_failed"
    kind = ErrorKind.UNAUTHENTICATED
    title = "Verification failed"
    transient = True

    def __init__(self, factor: str, *, customer_id: str | None = None) -> None:
        super().__init__(f"The {factor} factor did not verify.", factor=factor)
        self.factor = factor
        self.customer_id = customer_id  # whose failure it is, for the count (not shown)


class AuthenticationLocked(KycError):
    """Too many wrong factors in a row: the customer's payments are locked for a while."""

    code = "authentication_locked"
    kind = ErrorKind.TOO_MANY_REQUESTS
    title = "Verification locked"
    transient = True

    def __init__(self, locked_until: datetime, now: datetime) -> None:
        super().__init__(
            "Too many failed verifications; try again after "
            f"{locked_until.isoformat(timespec='seconds')}.",
            locked_until=locked_until.isoformat(),
        )
        self.retry_after_s = max(1, int((locked_until - now).total_seconds()))

    def headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after_s)}


class CredentialConflict(KycError):
    """The credential is in a state that does not allow this step."""

    code = "credential_conflict"
    kind = ErrorKind.CONFLICT
    title = "Credential state does not allow this"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail, reason=reason)


@dataclass(frozen=True, slots=True)
class CredentialSummary:
    """Which factors a customer has (no secrets)."""

    password: bool
    totp: bool
    signing_keys: tuple[str, ...]
    locked_until: datetime | None


def _row(session: Session, customer_id: str, now: datetime) -> CustomerCredential:
    """Return the customer's credential row, locked; created empty if there is none.

    Created with INSERT … ON CONFLICT DO NOTHING, so that two first uses at once both
    find the one row instead of one failing on the primary key.
    """
    dialect_insert = upsert_insert(session)
    session.execute(
        dialect_insert(CustomerCredential)
        .values(
            customer_id=customer_id,
            password_hash=None,
            totp_secret_enc=None,
            totp_confirmed=False,
            totp_last_step=0,
            failed_attempts=0,
            locked_until=None,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["customer_id"])
    )
    return session.execute(
        select(CustomerCredential)
        .where(CustomerCredential.customer_id == customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _weak_pin(pin: str) -> bool:
    digits = [int(c) for c in pin]
    steps = {b - a for a, b in pairwise(digits)}
    return len(set(digits)) <= 2 or steps in ({1}, {-1})


def check_password(password: str) -> None:
    """Refuse weak payment passwords.

    Accepted: a 6-digit PIN that is no trivial pattern, or a password of 8 to 128 characters.
    """
    if _PIN.fullmatch(password):
        if _weak_pin(password):
            raise InvalidCredential(
                [FieldProblem("password", "too easy to guess: no repeated or sequential digits")]
            )
        return
    if not 8 <= len(password) <= 128 or password.isdigit():
        raise InvalidCredential(
            [FieldProblem("password", "a 6-digit PIN, or a password of 8 to 128 characters")]
        )


def set_password(
    session: Session,
    customer_id: str,
    password: str,
    *,
    current_password: str | None,
    ctx: Context,
    hasher: SecretHasher,
) -> None:
    """Store a new payment password; replacing one needs the current one (else 401)."""
    check_password(password)
    row = _row(session, customer_id, ctx.now)
    _ensure_unlocked(row, ctx.now)
    replacing = row.password_hash is not None
    if replacing and (
        current_password is None or not hasher.verify(current_password, row.password_hash)
    ):
        raise AuthenticationFailed("password")
    row.password_hash = hasher.hash(password)
    row.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_CREDENTIAL_SET,
        target=customer_id,
        customer_id=customer_id,
        details={"factor": "password", "replaced": replacing},
    )


def begin_totp(session: Session, customer_id: str, *, ctx: Context, vault: Vault) -> str:
    """Make a TOTP secret for the customer and return its provisioning URI (to confirm)."""
    row = _row(session, customer_id, ctx.now)
    if row.totp_confirmed:
        raise CredentialConflict("An authenticator is bound already.", reason="totp_already_bound")
    secret = new_secret()
    row.totp_secret_enc = vault.encrypt(
        secret, table="customer_credentials", column="totp_secret_enc", row_id=customer_id
    )
    row.totp_last_step = 0
    row.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_CREDENTIAL_SET,
        target=customer_id,
        customer_id=customer_id,
        details={"factor": "totp", "state": "pending"},
    )
    return provisioning_uri(secret, name=customer_id)


def _totp_secret(row: CustomerCredential, vault: Vault) -> str | None:
    if row.totp_secret_enc is None:
        return None
    return vault.decrypt(
        row.totp_secret_enc,
        table="customer_credentials",
        column="totp_secret_enc",
        row_id=row.customer_id,
    )


def _use_step(session: Session, customer_id: str, step: int) -> bool:
    """Consume TOTP ``step``: only if no later or equal step was used (one use per step)."""
    done = session.execute(
        update(CustomerCredential)
        .where(
            CustomerCredential.customer_id == customer_id,
            CustomerCredential.totp_last_step < step,
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0) == 1


def confirm_totp(
    session: Session, customer_id: str, code: str, *, ctx: Context, vault: Vault
) -> None:
    """Bind the pending authenticator once the customer proves it with a code."""
    row = _row(session, customer_id, ctx.now)
    _ensure_unlocked(row, ctx.now)
    secret = _totp_secret(row, vault)
    if secret is None or row.totp_confirmed:
        raise CredentialConflict(
            "There is no authenticator waiting for confirmation.", reason="totp_not_pending"
        )
    step = matched_step(secret, code, ctx.now)
    if step is None or not _use_step(session, customer_id, step):
        raise AuthenticationFailed("totp")
    session.refresh(row)
    row.totp_confirmed = True
    row.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_CREDENTIAL_SET,
        target=customer_id,
        customer_id=customer_id,
        details={"factor": "totp", "state": "bound"},
    )


def add_signing_key(
    session: Session, customer_id: str, public_key: str, *, ctx: Context, ids: IdGenerator
) -> str:
    """Register an Ed25519 device public key (base64 of 32 bytes); return its key id."""
    try:
        raw = base64.b64decode(public_key, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise InvalidCredential(
            [FieldProblem("public_key", "base64 of a raw 32-byte Ed25519 public key")]
        ) from None
    active = session.scalar(
        select(func.count())
        .select_from(CustomerSigningKey)
        .where(
            CustomerSigningKey.customer_id == customer_id, CustomerSigningKey.revoked_at.is_(None)
        )
    )
    if (active or 0) >= MAX_SIGNING_KEYS:
        raise CredentialConflict(
            f"A customer registers at most {MAX_SIGNING_KEYS} device keys.", reason="too_many_keys"
        )
    key_id = ids.new(IdPrefix.SIGNING_KEY)
    session.add(
        CustomerSigningKey(
            id=key_id,
            customer_id=customer_id,
            public_key=base64.b64encode(raw).decode(),
            created_at=ctx.now,
            revoked_at=None,
        )
    )
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_CREDENTIAL_SET,
        target=key_id,
        customer_id=customer_id,
        details={"factor": "signature", "key_id": key_id},
    )
    return key_id


def revoke_signing_key(session: Session, customer_id: str, key_id: str, *, ctx: Context) -> bool:
    """Revoke one of the customer's device keys (a lost or replaced device, K3 (2), K5).

    From this transaction's commit no signature by the key verifies: every path that takes
    a signature reads ``revoked_at`` in its own transaction (:func:`verify_factors`, the
    transfer function and its SQLite steps), whatever a process has cached of the key.
    Return True if it was revoked now, False if it already was (nothing changes, nothing is
    audited twice). A key of another customer, or none, is :class:`NotFound`.
    """
    revoked = session.execute(
        update(CustomerSigningKey)
        .where(
            CustomerSigningKey.id == key_id,
            CustomerSigningKey.customer_id == customer_id,
            CustomerSigningKey.revoked_at.is_(None),
        )
        .values(revoked_at=ctx.now)
        .returning(CustomerSigningKey.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if revoked is None:
        known = session.scalar(
            select(CustomerSigningKey.id).where(
                CustomerSigningKey.id == key_id, CustomerSigningKey.customer_id == customer_id
            )
        )
        if known is None:
            raise NotFound("signing key", key_id)
        return False
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_CREDENTIAL_REVOKED,
        target=key_id,
        customer_id=customer_id,
        details={"factor": "signature", "key_id": key_id},
    )
    return True


def summary(session: Session, customer_id: str) -> CredentialSummary:
    """Return which factors the customer has set up."""
    row = session.get(CustomerCredential, customer_id)
    keys = session.execute(
        select(CustomerSigningKey.id)
        .where(
            CustomerSigningKey.customer_id == customer_id, CustomerSigningKey.revoked_at.is_(None)
        )
        .order_by(CustomerSigningKey.id)
    ).scalars()
    return CredentialSummary(
        password=row is not None and row.password_hash is not None,
        totp=row is not None and row.totp_confirmed,
        signing_keys=tuple(keys),
        locked_until=row.locked_until if row is not None else None,
    )


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class VerifiedFactors:
    """The factor kinds that verified for one operation, and what was used (B2: stored)."""

    kinds: tuple[str, ...]
    reference: str  # e.g. "password,totp:57341234,signature:key_…"


def _ensure_unlocked(row: CustomerCredential, now: datetime) -> None:
    if row.locked_until is not None and row.locked_until > now:
        raise AuthenticationLocked(row.locked_until, now)


def _verify_signature(session: Session, customer_id: str, factor: Factor, message: bytes) -> bool:
    key = session.scalar(
        select(CustomerSigningKey).where(
            CustomerSigningKey.id == (factor.key_id or ""),
            CustomerSigningKey.customer_id == customer_id,
            CustomerSigningKey.revoked_at.is_(None),
        )
    )
    if key is None or not factor.signature:
        return False
    try:
        signature = base64.b64decode(factor.signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    return verify_signature(base64.b64decode(key.public_key), message, signature)


def verify_factors(
    session: Session,
    customer_id: str,
    factors: Sequence[Factor],
    *,
    message: bytes,
    now: datetime,
    hasher: SecretHasher,
    vault: Vault,
) -> VerifiedFactors:
    """Check every factor of one operation; AuthenticationFailed names the first that fails.

    Each kind counts once; a TOTP step is consumed (a replayed code fails). ``message`` is
    the signing string a ``signature`` factor must have signed.
    """
    # A plain read: a payment takes no lock on the credentials; the one-time code is
    # consumed by a conditional update and a failure is counted in its own transaction.
    row = session.scalar(
        select(CustomerCredential).where(CustomerCredential.customer_id == customer_id)
    )
    if row is not None:
        _ensure_unlocked(row, now)
    kinds: list[str] = []
    refs: list[str] = []
    outdated: tuple[str, str] | None = None  # (stored hash, password) to hash anew
    for factor in factors:
        if factor.type in kinds:
            continue
        if factor.type == "password":
            stored = row.password_hash if row is not None else None
            # A missing password still costs one hash, so timing tells nothing.
            ok = hasher.verify(factor.value or "", stored) and stored is not None
            if ok and stored is not None and hasher.needs_rehash(stored):
                outdated = (stored, factor.value or "")
            ref = "password"
        elif factor.type == "totp":
            secret = _totp_secret(row, vault) if row is not None and row.totp_confirmed else None
            step = matched_step(secret, factor.code or "", now) if secret else None
            ok = step is not None and _use_step(session, customer_id, step)
            ref = f"totp:{step}"
        elif factor.type == "signature":
            ok = _verify_signature(session, customer_id, factor, message)
            ref = f"signature:{factor.key_id}"
        else:
            ok, ref = False, factor.type
        if not ok:
            raise AuthenticationFailed(factor.type, customer_id=customer_id)
        kinds.append(factor.type)
        refs.append(ref)
    if row is not None and row.failed_attempts:
        session.execute(
            update(CustomerCredential)
            .where(CustomerCredential.customer_id == customer_id)
            .values(failed_attempts=0, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    if outdated is not None:
        # Made under older parameters or pepper (K5): hashed anew now that the password is
        # known to be right, unless it was changed meanwhile.
        stored, password = outdated
        session.execute(
            update(CustomerCredential)
            .where(
                CustomerCredential.customer_id == customer_id,
                CustomerCredential.password_hash == stored,
            )
            .values(password_hash=hasher.hash(password), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return VerifiedFactors(tuple(kinds), ",".join(refs))


def count_failure(
    session: Session, customer_id: str, factor: str, *, ctx: Context, policy: CredentialPolicy
) -> datetime | None:
    """Count one failed verification; lock payments after ``max_failures`` in a row.

    Returns the end of the lock when this failure started one. Audited either way.
    """
    row = _row(session, customer_id, ctx.now)
    row.failed_attempts += 1
    row.updated_at = ctx.now
    locked_until = None
    if row.failed_attempts >= policy.max_failures:
        locked_until = ctx.now + policy.lockout
        row.locked_until = locked_until
        row.failed_attempts = 0
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_AUTH_FAILED,
        target=customer_id,
        customer_id=customer_id,
        details={
            "factor": factor,
            "locked_until": locked_until.isoformat() if locked_until else None,
        },
    )
    return locked_until
