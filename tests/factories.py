"""Factories for tests: staff who can log in, API clients with keys, command contexts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
from sqlalchemy import update

from custodia import access
from custodia.access.models import Staff
from custodia.api.runtime import Runtime
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.clock import ManualClock

STAFF_PASSWORD = "correct horse battery staple"


def cli_context(runtime: Runtime) -> Context:
    """A context as the command line builds it."""
    return Context(Actor(ActorKind.CLI, "tester"), runtime.clock.now(), "req_test")


def totp_secret_of(otpauth_uri: str) -> str:
    """Return the base32 secret inside an ``otpauth://`` URI."""
    return parse_qs(urlparse(otpauth_uri).query)["secret"][0]


@dataclass
class StaffLogin:
    """A member of staff the test can act as."""

    id: str
    username: str
    role: Role
    password: str
    totp_secret: str
    token: str = ""

    def code(self, clock: ManualClock) -> str:
        """Return the TOTP code of the clock's current step."""
        return pyotp.TOTP(self.totp_secret).at(clock.now())

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of this member's session."""
        return {"Authorization": f"Bearer {self.token}"}


def make_staff(
    runtime: Runtime,
    role: Role = Role.COMPLIANCE_OFFICER,
    *,
    username: str | None = None,
    password_changed: bool = True,
    logged_in: bool = True,
) -> StaffLogin:
    """Create staff; by default with a chosen password set and a live session token.

    Each login uses a fresh TOTP step, so the manual clock moves 30 s per login.
    """
    name = username or f"{role.value.replace('_', '-')}-{secrets.token_hex(3)}"
    created = runtime.db.run(
        lambda s: access.create_staff(
            s,
            username=name,
            role=role,
            ctx=cli_context(runtime),
            ids=runtime.ids,
            vault=runtime.vault,
            hasher=runtime.hasher,
        )
    )
    login = StaffLogin(
        created.id, created.username, role, created.password, totp_secret_of(created.otpauth_uri)
    )
    if password_changed:
        hashed = runtime.hasher.hash(STAFF_PASSWORD)
        runtime.db.run(
            lambda s: s.execute(
                update(Staff)
                .where(Staff.id == created.id)
                .values(password_hash=hashed, password_change_required=False)
            )
        )
        login.password = STAFF_PASSWORD
    if logged_in:
        login.token = log_in(runtime, login)
    return login


def log_in(runtime: Runtime, staff: StaffLogin) -> str:
    """Log ``staff`` in through the service (a fresh TOTP step) and return the token."""
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=30))
    ctx = Context(Actor(ActorKind.ANONYMOUS, "login"), clock.now(), "req_test")
    outcome = runtime.db.run(
        lambda s: access.login(
            s,
            username=staff.username,
            password=staff.password,
            totp_code=staff.code(clock),
            client_ip="127.0.0.1",
            ctx=ctx,
            vault=runtime.vault,
            hasher=runtime.hasher,
            policy=runtime.access_policy,
        )
    ).unwrap()
    return outcome.token


def make_client(
    runtime: Runtime, kind: Role = Role.ONBOARDING_APP, *, merchant_id: str | None = None
) -> access.NewClient:
    """Create an API client and return its id and key."""
    if kind is Role.MERCHANT and merchant_id is None:
        merchant_id = "mer_01jd3t3pqx7e5m6y8z9a0b1c2d"
    return runtime.db.run(
        lambda s: access.create_client(
            s,
            kind=kind,
            name=f"test {kind.value}",
            merchant_id=merchant_id,
            environment=runtime.settings.env,
            ctx=cli_context(runtime),
            ids=runtime.ids,
        )
    )


def bearer(key_or_token: str) -> dict[str, str]:
    """The Authorization header for a key or token."""
    return {"Authorization": f"Bearer {key_or_token}"}


def audit_actions(runtime: Runtime, target: str) -> list[str]:
    """Return the audit actions recorded on ``target``, oldest first (sealed or not)."""
    from custodia.core import audit  # noqa: PLC0415

    events = runtime.db.run(
        lambda s: audit.list_events(
            s,
            audit.EventFilter(target=target),
            before_id=None,
            after_id=None,
            limit=1000,
            newest_first=False,
        ),
        read_only=True,
    )
    return [event.action for event in events]
