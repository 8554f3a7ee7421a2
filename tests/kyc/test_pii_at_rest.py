"""No personal data in clear at rest or in logs (REGULATION.md K5; DESIGN.md invariants).

1,000 generated identities are stored through the service; then the raw database — the
SQLite file with its WAL, or a ``pg_dump`` of the PostgreSQL database — is searched for every
name, identity number and phone number, in every form they were given in.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import subprocess
from datetime import date
from pathlib import Path

from faker import Faker
from litestar.testing import TestClient
from sqlalchemy.engine import make_url

from custodia import kyc
from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.logging import configure_logging
from custodia.core.masking import mask_id_number
from custodia.core.settings import Settings, load_settings
from tests.factories import bearer, birth_date_of, make_client, mobile, person_body, prc_id

IDENTITIES = 1000


def _identities() -> list[dict[str, object]]:
    fake_cn, fake_en = Faker("zh_CN"), Faker("en_US")
    fake_cn.seed_instance(20261122)
    fake_en.seed_instance(20261122)
    people = []
    names: set[str] = set()
    while len(people) < IDENTITIES:
        name = (
            fake_cn.name() + fake_cn.first_name()
            if len(people) % 2
            else f"{fake_en.first_name()} {fake_en.last_name()} {fake_en.last_name()}"
        )
        if name in names:
            continue
        names.add(name)
        male = len(people) % 3 != 0
        number = prc_id(
            born=f"19{50 + len(people) % 45}-0{1 + len(people) % 9}-1{len(people) % 9}", male=male
        )
        people.append(
            person_body(
                name=name,
                id_number=number,
                date_of_birth=birth_date_of(number),
                gender="male" if male else "female",
                phone=mobile(),
                address=fake_cn.address(),
            )
        )
    return people


def _store(runtime: Runtime, people: list[dict[str, object]]) -> None:
    ctx = Context(
        Actor(ActorKind.CLIENT, "cli_test", Role.ONBOARDING_APP), runtime.clock.now(), None
    )
    services = runtime.kyc_services(ctx)
    for start in range(0, len(people), 100):
        chunk = people[start : start + 100]

        def work(session: object, chunk: list[dict[str, object]] = chunk) -> None:
            for body in chunk:
                person = kyc.PersonData(
                    name=str(body["name"]),
                    id_type="prc_resident_id",
                    id_number=str(body["id_number"]),
                    id_valid_from=date(2020, 1, 1),
                    id_valid_until=date(2040, 1, 1),
                    nationality="CN",
                    date_of_birth=date.fromisoformat(str(body["date_of_birth"])),
                    gender=str(body["gender"]),
                    phone=str(body["phone"]),
                    address=str(body["address"]),
                    occupation="engineer",
                )
                kyc.register_individual(
                    session, kyc.RegisterIndividual(person), ctx=ctx, services=services
                )  # type: ignore[arg-type]

        runtime.db.run(work)


def _secrets_of(people: list[dict[str, object]]) -> list[bytes]:
    return [
        str(value).encode("utf-8")
        for body in people
        for value in (
            body["name"],
            body["id_number"],
            body["phone"],
            f"+86{body['phone']}",
            body["address"],
        )
    ]


def _raw_database(runtime: Runtime, settings: Settings, tmp_path: Path) -> bytes:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        database = Path(url.database or "")
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = database.with_name(database.name + "-wal")
        return database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to prove the PostgreSQL side"
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(  # noqa: S603 - the test database's own dump
        [pg_dump, "--data-only", plain], capture_output=True, check=True, timeout=120
    ).stdout
    assert b"COPY public.customers" in dump
    return dump


def test_a_thousand_identities_leave_no_name_number_or_phone_in_the_database(
    committing_runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    people = _identities()
    _store(committing_runtime, people)
    raw = _raw_database(committing_runtime, settings, tmp_path)
    # The search sees stored text: the audit trail's masked id numbers are there ...
    assert mask_id_number(str(people[0]["id_number"])).encode() in raw
    leaked = [secret.decode() for secret in _secrets_of(people) if secret in raw]
    assert leaked == []  # ... but no name, number or phone in clear


def test_onboarding_logs_carry_no_personal_data(
    settings: Settings, runtime: Runtime, logging_restored: None
) -> None:
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json", log_level="DEBUG"), stream=log)
    key = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    people = [person_body(name=n) for n in ("张伟", "欧阳娜娜", "Zhang Wei")]
    with TestClient(create_app(settings, runtime=runtime)) as client:
        for body in people:
            created = client.post("/v1/customers", json=body, headers=key).json()
            client.post(
                f"/v1/customers/{created['id']}/verifications",
                json={"channel": "bank_card", "evidence": {"card_number": "6222021234567890128"}},
                headers=key,
            )
            client.post("/v1/customers", json={**body, "phone": "12345"}, headers=key)  # a 422 too
    written = log.getvalue()
    assert written.count('"event":"request"') >= 9
    for secret in [*_secrets_of(people), b"6222021234567890128"]:
        assert secret.decode() not in written
    records = [json.loads(line) for line in written.splitlines()]  # one JSON object a line
    refused = [r for r in records if r["event"] == "request" and r["status"] == 422]
    assert [r["code"] for r in refused] == ["validation_failed"] * 3  # why, without the data
    assert {r["code"] for r in records if r["event"] == "request" and r["status"] < 300} == {None}


def test_consents_and_factors_leave_no_ip_secret_or_password_in_the_database(
    committing_runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """Consent IPs (also in idempotent replies), TOTP secrets and payment passwords (K5)."""
    import pyotp  # noqa: PLC0415

    key = bearer(make_client(committing_runtime, Role.ONBOARDING_APP).key)
    secrets: list[bytes] = []
    pins: list[bytes] = []
    with TestClient(create_app(settings, runtime=committing_runtime)) as client:
        agreement = client.get("/v1/agreements/current", headers=key).json()
        for n in range(20):
            customer = client.post("/v1/customers", json=person_body(), headers=key).json()
            ip = f"198.51.100.{n + 1}"
            consent = client.post(
                f"/v1/customers/{customer['id']}/consents",
                json={
                    "agreement_id": agreement["id"],
                    "accepted": True,
                    "channel": "app",
                    "ip": ip,
                    "user_agent": "test",
                    "shown_at": committing_runtime.clock.now().isoformat(),
                },
                headers={**key, "Idempotency-Key": f"consent-{n}"},
            )
            assert consent.status_code == 201, consent.text
            pin = f"{(n * 7919 + 104729) % 10**6:06d}"
            stored = client.post(
                f"/v1/customers/{customer['id']}/credentials/password",
                json={"password": pin},
                headers=key,
            )
            assert stored.status_code == 204, stored.text
            uri = client.post(f"/v1/customers/{customer['id']}/credentials/totp", headers=key)
            assert uri.status_code == 201
            secrets += [
                ip.encode(),
                f'"ip":"{ip}"'.encode(),
                pyotp.parse_uri(uri.json()["provisioning_uri"]).secret.encode(),
            ]
            pins.append(pin.encode())
    raw = _raw_database(committing_runtime, settings, tmp_path)
    assert b"consent-0" in raw  # the idempotency record is there ...
    assert [s.decode() for s in secrets if s in raw] == []  # ... but nothing of the above
    assert [p.decode() for p in pins if _holds_pin(raw, p, settings)] == []  # nor a PIN


def _holds_pin(raw: bytes, pin: bytes, settings: Settings) -> bool:
    """Return whether a 6-digit PIN is stored in ``raw`` as a value of its own.

    SQLite's file keeps blobs as bytes, where six ASCII digits by chance are all but
    impossible, and packs a row's values without separators: any occurrence counts. A
    ``pg_dump`` writes bytea as hex and times with microseconds, where six digits turn up by
    chance now and then: there the PIN counts as a value when no letter, digit or part of a
    number or time touches it (a stored PIN is a column of its own, or a JSON string).
    """
    if make_url(settings.resolved_database_url).get_backend_name() == "sqlite":
        return pin in raw
    return re.search(rb"(?<![0-9A-Za-z._:+\\-])" + pin + rb"(?![0-9A-Za-z])", raw) is not None
