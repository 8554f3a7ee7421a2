"""Key rotation end to end: re-encrypt and re-index while lookups and uniqueness keep working."""

from __future__ import annotations

from datetime import date
from functools import partial

import msgspec
import pytest
from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from custodia import agreements, kyc
from custodia.api.runtime import Runtime, pii_schema
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.clock import ManualClock
from custodia.core.db import Database
from custodia.core.keys import KeyFile, KeyPurpose, KeyRing, rotate
from custodia.core.settings import Settings
from custodia.core.vault import key_id_of, reencrypt_batch, reindex_batch, run_batches
from custodia.kyc.models import Customer
from tests.factories import birth_date_of, corporate_body, mobile, prc_id


def _ctx(runtime: Runtime) -> Context:
    return Context(
        Actor(ActorKind.CLIENT, "cli_app", Role.ONBOARDING_APP), runtime.clock.now(), None
    )


def _person(number: str, phone: str) -> kyc.PersonData:
    return kyc.PersonData(
        name="张伟",
        id_type="prc_resident_id",
        id_number=number,
        id_valid_from=date(2020, 1, 1),
        id_valid_until=date(2040, 1, 1),
        nationality="CN",
        date_of_birth=date.fromisoformat(birth_date_of(number)),
        gender="male",
        phone=phone,
        address="上海市浦东新区世纪大道100号",
        occupation="teacher",
    )


def _register(runtime: Runtime, people: list[tuple[str, str]]) -> None:
    ctx = _ctx(runtime)

    def work(session: object) -> None:
        for number, phone in people:
            kyc.register_individual(
                session,  # type: ignore[arg-type]
                kyc.RegisterIndividual(_person(number, phone)),
                ctx=ctx,
                services=runtime.kyc_services(ctx),
            )
        body = corporate_body()
        rep = body["legal_representative"]
        assert isinstance(rep, dict)
        kyc.register_corporate(
            session,  # type: ignore[arg-type]
            kyc.RegisterCorporate(
                name=str(body["name"]),
                id_number=str(body["id_number"]),
                id_valid_until=None,
                registered_address=str(body["registered_address"]),
                business_scope=str(body["business_scope"]),
                industry="retail",
                legal_representative=kyc.PersonData(
                    name=str(rep["name"]),
                    id_type="prc_resident_id",
                    id_number=str(rep["id_number"]),
                    id_valid_from=date(2020, 1, 1),
                    id_valid_until=date(2040, 1, 1),
                    nationality="CN",
                    date_of_birth=date.fromisoformat(str(rep["date_of_birth"])),
                    gender="female",
                ),
                beneficial_owners=(),
            ),
            ctx=ctx,
            services=runtime.kyc_services(ctx),
        )

    with kyc.duplicate_documents_refused():
        runtime.db.run(work)


def _all_blobs(db: Database) -> dict[str, list[bytes]]:
    blobs: dict[str, list[bytes]] = {}
    for spec in pii_schema().encrypted:
        t = table(spec.table, column(spec.column))
        rows = db.run(lambda s, t=t, c=spec.column: s.execute(select(t.c[c])).scalars().all())
        blobs[f"{spec.table}.{spec.column}"] = [b for b in rows if b is not None]
    return blobs


def _runtime_with(settings: Settings, db: Database, keys: KeyFile, clock: ManualClock) -> Runtime:
    return Runtime(settings=settings, db=db, keys=keys, clock=clock)


def _rotate_all(runtime: Runtime) -> None:
    vault, indexer, db = runtime.vault, runtime.blind_index, runtime.db
    schema = pii_schema()
    for spec in schema.encrypted:
        run_batches(db, partial(_reencrypt, vault, spec))
    for index_spec in schema.indexes:
        run_batches(db, partial(_reindex, vault, indexer, index_spec))


def _reencrypt(vault: object, spec: object, session: object, after: str | None) -> object:
    return reencrypt_batch(session, vault, spec, after=after, limit=7)  # type: ignore[arg-type]


def _reindex(
    vault: object, indexer: object, spec: object, session: object, after: str | None
) -> object:
    return reindex_batch(session, vault, indexer, spec, after=after, limit=7)  # type: ignore[arg-type]


def test_rotation_then_reencrypt_and_reindex_leave_nothing_under_the_old_keys(
    settings: Settings, db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    old = _runtime_with(settings, db, keys, clock)
    people = [(prc_id(), mobile()) for _ in range(20)]
    _register(old, people)
    customer_id = _consent_and_totp(old)
    assert {key_id_of(b) for blobs in _all_blobs(db).values() for b in blobs} == {"1"}

    new_keys = rotate(rotate(keys, KeyPurpose.PII), KeyPurpose.INDEX)
    new = _runtime_with(settings, db, new_keys, clock)
    number, phone = people[3]
    # Mid-rotation: rows still indexed under the old key are found through every ring key.
    assert (
        db.run(
            lambda s: kyc.find_by_document(s, "prc_resident_id", number, indexer=new.blind_index)
        )
        is not None
    )

    _rotate_all(new)

    blobs = _all_blobs(db)
    assert {key_id_of(b) for values in blobs.values() for b in values} == {"2"}
    assert len(blobs["customers.name_enc"]) == 21
    assert len(blobs["customer_parties.name_enc"]) == 1
    # The old keys can now leave the ring: everything opens and is found with the new ones.
    only_new = msgspec.structs.replace(
        new_keys,
        rings={
            **new_keys.rings,
            KeyPurpose.PII: KeyRing(
                primary="2", keys={"2": new_keys.rings[KeyPurpose.PII].keys["2"]}
            ),
            KeyPurpose.INDEX: KeyRing(
                primary="2", keys={"2": new_keys.rings[KeyPurpose.INDEX].keys["2"]}
            ),
        },
    )
    fresh = _runtime_with(settings, db, only_new, clock)
    found = db.run(
        lambda s: kyc.find_by_document(s, "prc_resident_id", number, indexer=fresh.blind_index)
    )
    assert found is not None
    by_phone = db.run(lambda s: kyc.find_by_phone(s, phone, indexer=fresh.blind_index))
    assert [c.id for c in by_phone] == [found.id]
    view = db.run(lambda s: kyc.view(s, found, vault=fresh.vault))
    assert (view.id_number, view.phone) == (number, "+86" + phone)
    with pytest.raises(kyc.CustomerExists):
        _register(fresh, [(number, mobile())])
    assert len(blobs["consents.ip_enc"]) == len(blobs["customer_credentials.totp_secret_enc"]) == 1
    (consent,) = db.run(
        lambda s: agreements.list_consents(
            s, customer_id, vault=fresh.vault, before_id=None, limit=5
        )
    )
    assert consent.ip == "203.0.113.9"
    assert agreements.verify_receipt(consent.receipt, fresh.signer.public_keys()).valid


def _consent_and_totp(runtime: Runtime) -> str:
    """Give one customer a consent (IP in the vault) and a pending authenticator."""
    ctx = _ctx(runtime)

    def work(session: Session) -> str:
        customer_id = session.scalars(select(Customer.id).order_by(Customer.id)).first()
        agreement = agreements.in_force(session, "payment_service", "zh-CN", ctx.now)
        assert customer_id is not None and agreement is not None
        request = agreements.ConsentRequest(
            agreement_id=agreement.id,
            accepted=True,
            channel="app",
            ip="203.0.113.9",
            user_agent="test",
            shown_at=ctx.now,
        )
        agreements.record(
            session,
            customer_id,
            request,
            ctx=ctx,
            ids=runtime.ids,
            vault=runtime.vault,
            signer=runtime.signer,
            confirm=runtime.confirm_consent,
        )
        kyc.begin_totp(session, customer_id, ctx=ctx, vault=runtime.vault)
        return customer_id

    return runtime.db.run(work)


def test_reencrypt_never_overwrites_a_row_changed_meanwhile(
    settings: Settings, db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    """Compare and set: a blob that changed between read and write is left for the next run."""
    old = _runtime_with(settings, db, keys, clock)
    _register(old, [(prc_id(), mobile())])
    new = _runtime_with(settings, db, rotate(keys, KeyPurpose.PII), clock)
    spec = next(s for s in pii_schema().encrypted if s.column == "phone_enc")
    t = table("customers", column("id"), column("phone_enc"))
    row_id = db.run(
        lambda s: s.execute(select(t.c.id).where(t.c.phone_enc.is_not(None))).scalar_one()
    )
    changed_meanwhile = old.vault.encrypt(
        "+8613700000000", table="customers", column="phone_enc", row_id=row_id
    )

    class RacingVault(type(new.vault)):  # type: ignore[misc]
        """Decrypts while the service changes the row underneath, as a concurrent request would."""

        session: object = None

        def decrypt(self, blob: bytes, **where: str) -> str:
            self.session.execute(
                t.update().where(t.c.id == row_id).values(phone_enc=changed_meanwhile)
            )  # type: ignore[attr-defined]
            return super().decrypt(blob, **where)

    racing = RacingVault(new.keys)

    def run(session: object) -> object:
        racing.session = session
        return reencrypt_batch(session, racing, spec, after=None, limit=10)  # type: ignore[arg-type]

    assert db.run(run).changed == 0
    current = db.run(
        lambda s: s.execute(select(t.c.phone_enc).where(t.c.id == row_id)).scalar_one()
    )
    assert (
        new.vault.decrypt(current, table="customers", column="phone_enc", row_id=row_id)
        == "+8613700000000"
    )
    again = db.run(lambda s: reencrypt_batch(s, new.vault, spec, after=None, limit=10))
    assert again.changed == 1  # the next run moves the new value to the new key
