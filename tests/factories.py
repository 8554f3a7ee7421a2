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


def audit_actions(
    runtime: Runtime, target: str | None = None, *, customer_id: str | None = None
) -> list[str]:
    """Return the audit actions on ``target`` or about a customer, oldest first."""
    from custodia.core import audit  # noqa: PLC0415

    events = runtime.db.run(
        lambda s: audit.list_events(
            s,
            audit.EventFilter(target=target, customer_id=customer_id),
            before_id=None,
            after_id=None,
            limit=1000,
            newest_first=False,
        ),
        read_only=True,
    )
    return [event.action for event in events]


# ----------------------------------------------------------------------------- identities

_SEQUENCE = iter(range(1, 10**9))


def prc_id(born: str = "1990-03-07", *, male: bool = True, region: str = "110105") -> str:
    """Return a valid PRC resident identity number (checksum included), unique per call."""
    from stdnum.cn import ric  # noqa: PLC0415

    n = next(_SEQUENCE)
    sequence = (n * 2 + (1 if male else 0)) % 1000
    if male and sequence % 2 == 0:
        sequence = (sequence + 1) % 1000
    if not male and sequence % 2 == 1:
        sequence = (sequence + 1) % 1000
    # Vary the birth day so that numbers stay unique beyond 500 per birth date.
    year, month, day = (int(p) for p in born.split("-"))
    day = ((day - 1 + n // 500) % 28) + 1
    body = f"{region}{year:04d}{month:02d}{day:02d}{sequence:03d}"
    return body + ric.calc_check_digit(body + "0")  # stdnum expects a check digit slot


def birth_date_of(id_number: str) -> str:
    """Return the birth date a resident id number encodes (YYYY-MM-DD)."""
    return f"{id_number[6:10]}-{id_number[10:12]}-{id_number[12:14]}"


def uscc() -> str:
    """Return a valid unified social credit code, unique per call."""
    from stdnum.cn import uscc as code  # noqa: PLC0415

    n = next(_SEQUENCE)
    body = f"91110000{n:09d}"
    return body + code.calc_check_digit(body)


def mobile() -> str:
    """Return a valid mainland mobile number, unique per call."""
    return f"138{next(_SEQUENCE) % 10**8:08d}"


def person_body(**overrides: object) -> dict[str, object]:
    """Return an individual's registration body (API.md) with valid, unique data."""
    number = prc_id()
    body: dict[str, object] = {
        "type": "individual",
        "name": "张伟",
        "id_type": "prc_resident_id",
        "id_number": number,
        "id_valid_from": "2020-01-01",
        "id_valid_until": "2040-01-01",
        "nationality": "CN",
        "date_of_birth": birth_date_of(number),
        "gender": "male",
        "phone": mobile(),
        "address": "北京市朝阳区建国路88号",
        "occupation": "engineer",
    }
    body.update(overrides)
    return body


def representative_body(**overrides: object) -> dict[str, object]:
    """Return a legal representative's identity fields."""
    body = person_body(name="李娜", gender="female")
    number = prc_id(male=False, born="1980-05-20")
    body.update(id_number=number, date_of_birth=birth_date_of(number))
    for key in ("type", "address", "occupation"):
        body.pop(key)
    body.update(overrides)
    return body


def corporate_body(**overrides: object) -> dict[str, object]:
    """Return a company's registration body with its representative and one owner."""
    owner = prc_id(born="1975-11-11")
    body: dict[str, object] = {
        "type": "corporate",
        "name": "北京示例科技有限公司",
        "id_type": "uscc",
        "id_number": uscc(),
        "id_valid_until": None,
        "registered_address": "北京市海淀区中关村大街1号",
        "business_scope": "软件开发；信息技术咨询服务",
        "industry": "information_technology",
        "legal_representative": representative_body(),
        "beneficial_owners": [
            {"name": "王芳", "id_type": "prc_resident_id", "id_number": owner, "ownership_pct": 60}
        ],
    }
    body.update(overrides)
    return body
