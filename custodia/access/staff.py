"""Staff accounts: creation, login with password and TOTP, sessions, password changes.

Rules (API.md "Authentication and roles"; DESIGN.md "Security"):

- A new member of staff gets a one-time password that must be changed at first login, and
  a TOTP secret (shown once as an ``otpauth://`` URI, stored encrypted in the vault).
- Login needs username, password and a TOTP code from the current time step or one step
  either side (``valid_window`` 1). Each step is accepted once per person: the last
  accepted step is stored and only a later one passes, by a conditional update, so even
  two concurrent logins with one code cannot both succeed.
- ``login_max_failures`` failures in a row lock the account for ``login_lockout_minutes``;
  success resets the count. Every login, failure and lockout is audited.
- Sessions are opaque tokens stored as SHA-256, with an absolute and an idle expiry.
- Services never commit: a refused login still has to record its failure, so :func:`login`
  *returns* the refusal and the caller raises it after the unit of work committed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from custodia.access.errors import (
    CurrentPasswordIncorrect,
    InvalidUsername,
    LoginFailed,
    LoginLocked,
    PasswordTooWeak,
    StaffExists,
)
from custodia.access.models import Staff, StaffSession
from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.audit import AuditAction
from custodia.core.errors import DomainError, Unauthenticated
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.passwords import SecretHasher, token_digest
from custodia.core.settings import Settings
from custodia.core.totp import matched_step, new_secret, provisioning_uri
from custodia.core.vault import Vault

SESSION_TOKEN_PREFIX = "cs_"  # noqa: S105 - a prefix, not a secret
#: How stale ``last_seen_at`` may get before a request refreshes it (saves a write per call).
LAST_SEEN_RESOLUTION = timedelta(seconds=60)
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
_TABLE = "staff"


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The tunable parts of staff authentication (from settings)."""

    session_absolute: timedelta
    session_idle: timedelta
    max_failures: int
    lockout: timedelta
    min_password_length: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        """Read the policy from ``settings``."""
        return cls(
            session_absolute=timedelta(hours=settings.staff_session_hours),
            session_idle=timedelta(minutes=settings.staff_session_idle_minutes),
            max_failures=settings.login_max_failures,
            lockout=timedelta(minutes=settings.login_lockout_minutes),
            min_password_length=settings.staff_password_min_length,
        )


@dataclass(frozen=True, slots=True)
class NewStaff:
    """What ``custodia staff create`` prints once: never stored in clear."""

    id: str
    username: str
    role: str
    password: str
    otpauth_uri: str


def normalise_username(username: str) -> str:
    """Return the stored form of a username (trimmed, lower-case); InvalidUsername if bad."""
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidUsername
    return name


def create_staff(
    session: Session,
    *,
    username: str,
    role: Role,
    ctx: Context,
    ids: IdGenerator,
    vault: Vault,
    hasher: SecretHasher,
) -> NewStaff:
    """Create a member of staff with a one-time password and a fresh TOTP secret."""
    name = normalise_username(username)
    if session.execute(select(Staff.id).where(Staff.username == name)).first() is not None:
        raise StaffExists(name)
    staff_id = ids.new(IdPrefix.STAFF)
    password = secrets.token_urlsafe(18)
    totp_secret = new_secret()
    session.add(
        Staff(
            id=staff_id,
            username=name,
            role=role.value,
            password_hash=hasher.hash(password),
            password_change_required=True,
            totp_secret=vault.encrypt(
                totp_secret, table=_TABLE, column="totp_secret", row_id=staff_id
            ),
            totp_last_step=0,
            failed_logins=0,
            created_at=ctx.now,
            password_changed_at=ctx.now,
        )
    )
    audit.record(
        session,
        ctx,
        AuditAction.STAFF_CREATED,
        target=staff_id,
        details={"username": name, "role": role.value},
    )
    uri = provisioning_uri(totp_secret, name=name)
    return NewStaff(staff_id, name, role.value, password, uri)


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """A successful login's session, or the refusal to raise once the failure is recorded."""

    error: DomainError | None = None
    token: str = ""
    expires_at: datetime | None = None
    password_change_required: bool = False
    staff_id: str | None = None
    reason: str = ""  # for the security log: why a login failed

    def unwrap(self) -> LoginOutcome:
        """Return self if the login succeeded, else raise its refusal."""
        if self.error is not None:
            raise self.error
        return self


def _failed(
    session: Session,
    staff: Staff,
    ctx: Context,
    policy: AccessPolicy,
    reason: str,
    *,
    client_ip: str | None = None,
) -> LoginOutcome:
    """Count a failure, lock the account at the limit, audit both; return the refusal."""
    session.execute(
        update(Staff)
        .where(Staff.id == staff.id)
        .values(failed_logins=Staff.failed_logins + 1)
        .execution_options(synchronize_session=False)
    )
    failures = session.execute(select(Staff.failed_logins).where(Staff.id == staff.id)).scalar_one()
    audit.record(
        session,
        ctx,
        AuditAction.STAFF_LOGIN_FAILED,
        target=staff.id,
        details={"reason": reason, "failures": failures, "ip": client_ip},
    )
    if failures < policy.max_failures:
        return LoginOutcome(error=LoginFailed(), staff_id=staff.id, reason=reason)
    until = ctx.now + policy.lockout
    session.execute(
        update(Staff)
        .where(Staff.id == staff.id)
        .values(failed_logins=0, locked_until=until)
        .execution_options(synchronize_session=False)
    )
    _revoke_sessions(session, staff.id, ctx.now)
    audit.record(
        session,
        ctx,
        AuditAction.STAFF_LOCKED,
        target=staff.id,
        details={"locked_until": until.isoformat(), "failures": failures},
    )
    return LoginOutcome(error=LoginLocked(until, ctx.now), staff_id=staff.id, reason="locked")


def login(
    session: Session,
    *,
    username: str,
    password: str,
    totp_code: str,
    client_ip: str | None,
    ctx: Context,
    vault: Vault,
    hasher: SecretHasher,
    policy: AccessPolicy,
) -> LoginOutcome:
    """Check password and TOTP; on success open a session (see the module docstring)."""
    try:
        name = normalise_username(username)
    except InvalidUsername:
        name = ""
    staff = (
        session.execute(select(Staff).where(Staff.username == name)).scalar_one_or_none()
        if name
        else None
    )
    if staff is None or staff.disabled_at is not None:
        hasher.verify(password, None)  # as slow as a real check: no enumeration by timing
        audit.record(
            session,
            ctx,
            AuditAction.STAFF_LOGIN_FAILED,
            target=staff.id if staff else None,
            details={
                "reason": "unknown_user" if staff is None else "disabled",
                "username": name,
                "ip": client_ip,
            },
        )
        return LoginOutcome(error=LoginFailed(), reason="unknown_user")
    if staff.locked_until is not None and staff.locked_until > ctx.now:
        audit.record(
            session,
            ctx,
            AuditAction.STAFF_LOGIN_FAILED,
            target=staff.id,
            details={"reason": "locked"},
        )
        return LoginOutcome(
            error=LoginLocked(staff.locked_until, ctx.now), staff_id=staff.id, reason="locked"
        )

    password_ok = hasher.verify(password, staff.password_hash)
    secret = vault.decrypt(staff.totp_secret, table=_TABLE, column="totp_secret", row_id=staff.id)
    step = matched_step(secret, totp_code, ctx.now)
    if not password_ok:
        return _failed(session, staff, ctx, policy, "wrong_password", client_ip=client_ip)
    if step is None:
        return _failed(session, staff, ctx, policy, "wrong_totp", client_ip=client_ip)
    # Each step once: only a step later than the last accepted one moves the mark.
    accepted = session.execute(
        update(Staff)
        .where(Staff.id == staff.id, Staff.totp_last_step < step)
        .values(totp_last_step=step, failed_logins=0, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(accepted, "rowcount", 0) or 0) != 1:
        return _failed(session, staff, ctx, policy, "totp_replayed", client_ip=client_ip)
    if hasher.needs_rehash(staff.password_hash):
        session.execute(
            update(Staff)
            .where(Staff.id == staff.id)
            .values(password_hash=hasher.hash(password))
            .execution_options(synchronize_session=False)
        )
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = ctx.now + policy.session_absolute
    session.add(
        StaffSession(
            token_hash=token_digest(token),
            staff_id=staff.id,
            created_at=ctx.now,
            last_seen_at=ctx.now,
            expires_at=expires,
        )
    )
    as_staff = replace(ctx, actor=Actor(ActorKind.STAFF, staff.id, Role(staff.role)))
    audit.record(
        session, as_staff, AuditAction.STAFF_LOGIN, target=staff.id, details={"ip": client_ip}
    )
    return LoginOutcome(
        token=token,
        expires_at=expires,
        password_change_required=staff.password_change_required,
        staff_id=staff.id,
    )


@dataclass(frozen=True, slots=True)
class StaffPrincipal:
    """An authenticated member of staff, as a request sees them."""

    actor: Actor
    username: str
    session_token_hash: str
    password_change_required: bool
    expires_at: datetime
    needs_touch: bool  # last_seen_at is stale: the caller refreshes it in a write


def authenticate_session(
    conn: Connection | Session, token: str, *, now: datetime, policy: AccessPolicy
) -> StaffPrincipal:
    """Return the staff behind a session token; Unauthenticated if unknown or expired."""
    digest = token_digest(token)
    row = conn.execute(
        select(
            StaffSession.revoked_at,
            StaffSession.expires_at,
            StaffSession.last_seen_at,
            Staff.id,
            Staff.role,
            Staff.username,
            Staff.disabled_at,
            Staff.password_change_required,
        )
        .join(Staff, Staff.id == StaffSession.staff_id)
        .where(StaffSession.token_hash == digest)
    ).first()
    if row is None:
        raise Unauthenticated("The session token is unknown.")
    if row.revoked_at is not None or row.disabled_at is not None:
        raise Unauthenticated("The session has ended; log in again.")
    if now >= row.expires_at or now - row.last_seen_at >= policy.session_idle:
        raise Unauthenticated("The session has expired; log in again.")
    return StaffPrincipal(
        actor=Actor(ActorKind.STAFF, row.id, Role(row.role)),
        username=row.username,
        session_token_hash=digest,
        password_change_required=row.password_change_required,
        expires_at=row.expires_at,
        needs_touch=now - row.last_seen_at >= LAST_SEEN_RESOLUTION,
    )


def touch_session(session: Session, token_hash: str, now: datetime) -> None:
    """Record that a session was used now (keeps it from idling out)."""
    session.execute(
        update(StaffSession)
        .where(StaffSession.token_hash == token_hash, StaffSession.last_seen_at < now)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )


def _revoke_sessions(
    session: Session, staff_id: str, now: datetime, *, keep: str | None = None
) -> None:
    statement = update(StaffSession).where(
        StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)
    )
    if keep is not None:
        statement = statement.where(StaffSession.token_hash != keep)
    session.execute(statement.values(revoked_at=now).execution_options(synchronize_session=False))


def logout(session: Session, token_hash: str, *, ctx: Context) -> None:
    """End the session whose token digest is ``token_hash``."""
    session.execute(
        update(StaffSession)
        .where(StaffSession.token_hash == token_hash, StaffSession.revoked_at.is_(None))
        .values(revoked_at=ctx.now)
        .execution_options(synchronize_session=False)
    )
    audit.record(session, ctx, AuditAction.STAFF_LOGOUT, target=ctx.actor.id)


def check_password_policy(new: str, *, username: str, current: str, min_length: int) -> None:
    """Raise PasswordTooWeak unless ``new`` is long enough, new, and not the username."""
    if len(new) < min_length:
        raise PasswordTooWeak(f"Use at least {min_length} characters.", min_length=min_length)
    if len(new) > 256:
        raise PasswordTooWeak("Use at most 256 characters.", min_length=min_length)
    if new == current:
        raise PasswordTooWeak("Choose a password you have not just used.", min_length=min_length)
    if username and username in new.lower():
        raise PasswordTooWeak("The password must not contain the username.", min_length=min_length)


def change_password(
    session: Session,
    *,
    token_hash: str,
    current_password: str,
    new_password: str,
    ctx: Context,
    hasher: SecretHasher,
    policy: AccessPolicy,
) -> LoginOutcome:
    """Replace the caller's password; other sessions end. Returns a refusal to raise."""
    staff = session.execute(select(Staff).where(Staff.id == ctx.actor.id)).scalar_one()
    if not hasher.verify(current_password, staff.password_hash):
        outcome = _failed(session, staff, ctx, policy, "wrong_current_password")
        error = outcome.error if isinstance(outcome.error, LoginLocked) else None
        return LoginOutcome(error=error or CurrentPasswordIncorrect(), staff_id=staff.id)
    check_password_policy(
        new_password,
        username=staff.username,
        current=current_password,
        min_length=policy.min_password_length,
    )
    session.execute(
        update(Staff)
        .where(Staff.id == staff.id)
        .values(
            password_hash=hasher.hash(new_password),
            password_change_required=False,
            password_changed_at=ctx.now,
            failed_logins=0,
        )
        .execution_options(synchronize_session=False)
    )
    _revoke_sessions(session, staff.id, ctx.now, keep=token_hash)
    audit.record(session, ctx, AuditAction.STAFF_PASSWORD_CHANGED, target=staff.id)
    return LoginOutcome(staff_id=staff.id)
