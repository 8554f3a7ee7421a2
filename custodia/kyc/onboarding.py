"""Real-name onboarding: register, read, update and reveal customers (REGULATION.md R1–R4, L3).

Rules enforced here:

- R1 (Art. 6): every customer is a real, identified person or company; placeholder and
  anonymous names are refused; one identity document ↔ one customer, held by a UNIQUE blind
  index so that even two simultaneous registrations of one document yield one customer.
- R2 (Art. 6, ≈10): the identity data listed for individuals and corporates is required and
  validated (documents with python-stdnum, phones with phonenumbers); personal fields are
  stored only as vault blobs.
- R4 (≈9): a corporate customer declaring a financial industry is flagged; the accounts
  issue refuses it payment accounts.
- L3: the customer, its legal representative and beneficial owners are screened against the
  watchlists at registration; a match leaves the customer ``potential_match`` for compliance.
- K1 (Art. 23): the customer is rated at registration and re-rated on every change.

Everything happens in the caller's unit of work: a refusal leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.audit import AuditAction
from custodia.core.db import defer
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.masking import mask_id_number
from custodia.core.models import Base
from custodia.core.outbox import publish
from custodia.core.vault import BlindIndexer, Vault
from custodia.kyc import validation as v
from custodia.kyc.customers import (
    DOCUMENT_INDEX,
    PHONE_INDEX,
    CustomerView,
    PartyView,
    decrypt_field,
    document_state,
    document_value,
    load,
    masked_snapshot,
    rerate,
    view,
)
from custodia.kyc.errors import (
    CustomerClosed,
    CustomerExists,
    DocumentExpired,
    FieldProblem,
    InvalidIdentity,
)
from custodia.kyc.models import Customer, CustomerParty, ScreeningHit
from custodia.kyc.rating import RatingPolicy, RiskInputs, RiskModel, rate
from custodia.kyc.screening import Match
from custodia.kyc.watchlists import Screener

CUSTOMER_REGISTERED = "kyc.customer_registered"
SCREENING_HIT = "kyc.screening_hit"
UBO_THRESHOLD = Decimal(25)


#: Declared industries; those marked True are financial institutions or lending,
#: financing, wealth management, guarantee, trust or currency exchange businesses (R4, ≈9).
INDUSTRIES: dict[str, bool] = {
    "banking": True, "securities": True, "insurance": True, "trust": True, "fund_management": True,
    "lending": True, "financing_guarantee": True, "wealth_management": True,
    "currency_exchange": True, "payment_institution": True, "financial_leasing": True,
    "pawn": True, "agriculture": False, "mining": False, "manufacturing": False,
    "utilities": False, "construction": False, "wholesale": False, "retail": False,
    "logistics": False, "hospitality": False, "catering": False, "information_technology": False,
    "real_estate": False, "professional_services": False, "education": False,
    "healthcare": False, "culture_and_entertainment": False, "public_administration": False,
    "non_profit": False, "other": False,
}  # fmt: skip


# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class PersonData:
    """An individual's identity data as received (API.md "Customers")."""

    name: str
    id_type: str
    id_number: str
    id_valid_from: date | None
    id_valid_until: date | None
    nationality: str
    date_of_birth: date | None
    gender: str | None
    phone: str | None = None
    address: str | None = None
    occupation: str | None = None


@dataclass(frozen=True, slots=True)
class OwnerData:
    """A beneficial owner as received."""

    name: str
    id_type: str
    id_number: str
    ownership_pct: Decimal
    nationality: str | None = None
    date_of_birth: date | None = None


@dataclass(frozen=True, slots=True)
class RegisterIndividual:
    """Register a natural person."""

    person: PersonData


@dataclass(frozen=True, slots=True)
class RegisterCorporate:
    """Register a company with its legal representative and beneficial owners."""

    name: str
    id_number: str
    id_valid_until: date | None
    registered_address: str
    business_scope: str
    industry: str
    legal_representative: PersonData
    beneficial_owners: tuple[OwnerData, ...]
    nationality: str = "CN"


@dataclass(frozen=True, slots=True)
class DocumentRenewal:
    """A renewed identity document (new validity, and a new number where documents change it)."""

    id_valid_from: date | None
    id_valid_until: date | None
    id_number: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateCustomer:
    """Contact data and a renewed document (only the fields given change)."""

    phone: str | None = None
    address: str | None = None
    occupation: str | None = None
    business_scope: str | None = None
    document: DocumentRenewal | None = None


# ----------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class Services:
    """The collaborators onboarding needs (passed in, never looked up)."""

    vault: Vault
    blind_index: BlindIndexer
    screener: Screener
    risk_model: RiskModel
    ids: IdGenerator
    today: date  # in the institution's time zone
    policy: RatingPolicy = field(default_factory=RatingPolicy)


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    id_type: v.IdType
    id_number: str
    valid_from: date | None
    valid_until: date | None
    nationality: str
    date_of_birth: date | None
    gender: v.Gender | None
    phone: str | None
    address: str | None
    occupation: str | None


def _id_type(
    value: str, field_name: str, problems: list[FieldProblem], *, corporate: bool
) -> v.IdType:
    try:
        id_type = v.IdType(value)
    except ValueError:
        problems.append(FieldProblem(field_name, f"unknown identity document type {value!r}"))
        return v.IdType.PASSPORT
    if (id_type is v.IdType.USCC) != corporate:
        expected = "uscc" if corporate else "an individual's document type"
        problems.append(FieldProblem(field_name, f"must be {expected}"))
    return id_type


def _required(value: Any, field_name: str, problems: list[FieldProblem]) -> None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(FieldProblem(field_name, "required"))


def _text(
    value: str | None, field_name: str, problems: list[FieldProblem], limit: int
) -> str | None:
    if value is None:
        return None
    text = " ".join(value.split())
    if len(text) > limit:
        problems.append(FieldProblem(field_name, f"at most {limit} characters"))
    return text or None


def _person(
    data: PersonData,
    prefix: str,
    problems: list[FieldProblem],
    *,
    today: date,
    contact_required: bool,
) -> _Person:
    name = v.real_name(data.name, f"{prefix}name", problems)
    id_type = _id_type(data.id_type, f"{prefix}id_type", problems, corporate=False)
    nationality = v.country(data.nationality, f"{prefix}nationality", problems)
    number, facts = v.document_number(
        id_type, data.id_number, f"{prefix}id_number", problems, nationality=nationality
    )
    v.validity(id_type, data.id_valid_from, data.id_valid_until, prefix, problems, today=today)
    required: list[tuple[Any, str]] = [
        (data.date_of_birth, "date_of_birth"),
        (data.gender, "gender"),
        (data.id_valid_from, "id_valid_from"),
    ]
    if contact_required:
        required += [
            (data.phone, "phone"),
            (data.address, "address"),
            (data.occupation, "occupation"),
        ]
    for value, name_of in required:
        _required(value, f"{prefix}{name_of}", problems)
    gender = None
    if data.gender is not None:
        try:
            gender = v.Gender(data.gender)
        except ValueError:
            problems.append(FieldProblem(f"{prefix}gender", "male or female"))
    born = (
        v.birth_date(data.date_of_birth, f"{prefix}date_of_birth", problems, today=today)
        if data.date_of_birth
        else None
    )
    v.agrees_with_document(facts, born, gender, prefix, problems)
    phone = v.phone_e164(data.phone, f"{prefix}phone", problems) if data.phone else None
    return _Person(
        name=name,
        id_type=id_type,
        id_number=number,
        valid_from=data.id_valid_from,
        valid_until=data.id_valid_until,
        nationality=nationality,
        date_of_birth=born,
        gender=gender,
        phone=phone,
        address=_text(data.address, f"{prefix}address", problems, 300),
        occupation=_text(data.occupation, f"{prefix}occupation", problems, 100),
    )


def _not_expired(valid_until: date | None, field_name: str, today: date) -> None:
    if valid_until is not None and valid_until < today:
        raise DocumentExpired(field_name, valid_until)


# ----------------------------------------------------------------------------- helpers


def _encrypt(
    vault: Vault, table: str, row_id: str, **fields: str | None
) -> dict[str, bytes | None]:
    return {
        f"{name}_enc": None
        if value is None
        else vault.encrypt(value, table=table, column=f"{name}_enc", row_id=row_id)
        for name, value in fields.items()
    }


def _existing_document(session: Session, indexer: BlindIndexer, value: str) -> bool:
    candidates = indexer.candidates(DOCUMENT_INDEX, value)
    found = session.execute(
        select(Customer.id).where(Customer.document_index.in_(candidates)).limit(1)
    ).first()
    return found is not None


# ----------------------------------------------------------------------------- screening


_INSERT_CUSTOMER = insert(Customer.__table__).inline()  # type: ignore[arg-type]
_INSERT_PARTY = insert(CustomerParty.__table__).inline()  # type: ignore[arg-type]
_INSERT_HIT = insert(ScreeningHit.__table__).inline()  # type: ignore[arg-type]


def _row(obj: Base) -> dict[str, Any]:
    """Return a model object's column values, for a plain INSERT of its table."""
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


def _add_hit(
    session: Session,
    customer: Customer,
    match: Match,
    *,
    party_id: str,
    subject: str,
    ctx: Context,
    ids: IdGenerator,
) -> None:
    hit_id = ids.new(IdPrefix.SCREENING_HIT)
    defer(
        session,
        _INSERT_HIT,
        {
            "id": hit_id,
            "customer_id": customer.id,
            "party_id": party_id,
            "subject": subject,
            "list_id": match.entry.list_id,
            "entry_key": match.entry.key[:200],
            "matched_name": match.matched_name[:300],
            "score": match.score,
            "status": "open",
            "created_at": ctx.now,
        },
    )
    publish(
        session,
        SCREENING_HIT,
        {
            "hit_id": hit_id,
            "customer_id": customer.id,
            "subject": subject,
            "list_id": match.entry.list_id,
            "score": match.score,
        },
        ids=ids,
        now=ctx.now,
    )


def _record_hits(
    session: Session,
    customer: Customer,
    matches: Sequence[Match],
    *,
    party_id: str,
    subject: str,
    ctx: Context,
    ids: IdGenerator,
) -> int:
    """Record the matches not recorded before (a cleared hit stays cleared); return how many."""
    recorded = 0
    for match in matches:
        exists = session.execute(
            select(ScreeningHit.id).where(
                ScreeningHit.customer_id == customer.id,
                ScreeningHit.party_id == party_id,
                ScreeningHit.entry_key == match.entry.key,
            )
        ).first()
        if exists is None:
            _add_hit(session, customer, match, party_id=party_id, subject=subject, ctx=ctx, ids=ids)
            recorded += 1
    return recorded


@dataclass(frozen=True, slots=True)
class ScreeningSubject:
    """One name screened for a customer: the customer itself, or one of its parties."""

    party_id: str  # "" for the customer
    subject: str
    name: str
    date_of_birth: date | None
    nationality: str | None


def screen_customer(
    session: Session,
    customer: Customer,
    subjects: Sequence[ScreeningSubject],
    *,
    screener: Screener,
    ctx: Context,
    ids: IdGenerator,
) -> int:
    """Screen every subject; record new hits and set the screening status (L3)."""
    new_hits = 0
    for subject in subjects:
        matches = screener.screen(
            session,
            subject.name,
            date_of_birth=subject.date_of_birth,
            nationality=subject.nationality,
            fresh=True,
        )
        new_hits += _record_hits(
            session,
            customer,
            matches,
            party_id=subject.party_id,
            subject=subject.subject,
            ctx=ctx,
            ids=ids,
        )
        if subject.party_id:
            party = session.get(CustomerParty, subject.party_id)
            if party is not None:
                party.screening_status = "potential_match" if matches else "clear"
    open_hits = (
        session.execute(select(ScreeningHit.status).where(ScreeningHit.customer_id == customer.id))
        .scalars()
        .all()
    )
    session.flush()
    statuses = set(open_hits)
    if "confirmed" in statuses:
        customer.screening_status = "confirmed_match"
    elif "open" in statuses or new_hits:
        customer.screening_status = "potential_match"
    else:
        customer.screening_status = "clear"
    if new_hits:
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_SCREENED,
            target=customer.id,
            customer_id=customer.id,
            details={"new_hits": new_hits, "screening_status": customer.screening_status},
        )
    return new_hits


# ----------------------------------------------------------------------------- registration


def register_individual(
    session: Session, cmd: RegisterIndividual, *, ctx: Context, services: Services
) -> CustomerView:
    """Register a natural person (see the module docstring for the rules)."""
    problems: list[FieldProblem] = []
    person = _person(cmd.person, "", problems, today=services.today, contact_required=True)
    if problems:
        raise InvalidIdentity(problems)
    _not_expired(person.valid_until, "id_valid_until", services.today)
    personal = {
        "date_of_birth": person.date_of_birth.isoformat() if person.date_of_birth else None,
        "gender": person.gender.value if person.gender else None,
        "phone": person.phone,
        "address": person.address,
        "occupation": person.occupation,
    }
    customer = _new_customer(
        session,
        customer_type="individual",
        name=person.name,
        id_type=person.id_type,
        id_number=person.id_number,
        valid_from=person.valid_from,
        valid_until=person.valid_until,
        nationality=person.nationality,
        ctx=ctx,
        services=services,
        personal=personal,
        phone=person.phone,
    )
    subjects = [
        ScreeningSubject("", "customer", person.name, person.date_of_birth, person.nationality)
    ]
    plain = {"name": person.name, "id_number": person.id_number, **personal}
    return _finish_registration(
        session, customer, subjects, ctx=ctx, services=services, plain=plain
    )


def register_corporate(
    session: Session, cmd: RegisterCorporate, *, ctx: Context, services: Services
) -> CustomerView:
    """Register a company, its legal representative and its beneficial owners (R2, R3, R4)."""
    problems: list[FieldProblem] = []
    today = services.today
    name = v.real_name(cmd.name, "name", problems)
    nationality = v.country(cmd.nationality, "nationality", problems)
    number, _ = v.document_number(
        v.IdType.USCC, cmd.id_number, "id_number", problems, nationality=nationality
    )
    address = _text(cmd.registered_address, "registered_address", problems, 300)
    scope = _text(cmd.business_scope, "business_scope", problems, 2000)
    _required(address, "registered_address", problems)
    _required(scope, "business_scope", problems)
    if cmd.industry not in INDUSTRIES:
        problems.append(FieldProblem("industry", f"one of: {', '.join(sorted(INDUSTRIES))}"))
    representative = _person(
        cmd.legal_representative,
        "legal_representative.",
        problems,
        today=today,
        contact_required=False,
    )
    owners = _owners(cmd.beneficial_owners, problems)
    if problems:
        raise InvalidIdentity(problems)
    _not_expired(cmd.id_valid_until, "id_valid_until", today)
    _not_expired(representative.valid_until, "legal_representative.id_valid_until", today)
    customer = _new_customer(
        session,
        customer_type="corporate",
        name=name,
        id_type=v.IdType.USCC,
        id_number=number,
        valid_from=None,
        valid_until=cmd.id_valid_until,
        nationality=nationality,
        ctx=ctx,
        services=services,
        personal={"address": address},
        phone=None,
        industry=cmd.industry,
        business_scope=scope,
    )
    subjects = [ScreeningSubject("", "customer", name, None, nationality)]
    parties: list[tuple[CustomerParty, PartyView]] = []
    representative_party = _new_party(
        customer,
        role="legal_representative",
        name=representative.name,
        id_type=representative.id_type,
        id_number=representative.id_number,
        valid_until=representative.valid_until,
        nationality=representative.nationality,
        date_of_birth=representative.date_of_birth,
        gender=representative.gender.value if representative.gender else None,
        phone=representative.phone,
        ownership=None,
        services=services,
    )
    parties.append(representative_party)
    subjects.append(
        ScreeningSubject(
            representative_party[0].id,
            "legal_representative",
            representative.name,
            representative.date_of_birth,
            representative.nationality,
        )
    )
    for owner in owners:
        owner_party = _new_party(
            customer,
            role="beneficial_owner",
            name=owner.name,
            id_type=owner.id_type,
            id_number=owner.id_number,
            valid_until=None,
            nationality=owner.nationality,
            date_of_birth=owner.date_of_birth,
            gender=None,
            phone=None,
            ownership=owner.ownership,
            services=services,
        )
        parties.append(owner_party)
        subjects.append(
            ScreeningSubject(
                owner_party[0].id,
                "beneficial_owner",
                owner.name,
                owner.date_of_birth,
                owner.nationality,
            )
        )
    plain = {"name": name, "id_number": number, "address": address}
    return _finish_registration(
        session, customer, subjects, ctx=ctx, services=services, plain=plain, parties=parties
    )


@dataclass(frozen=True, slots=True)
class _Owner:
    name: str
    id_type: v.IdType
    id_number: str
    ownership: Decimal
    nationality: str | None
    date_of_birth: date | None


def _owners(owners: Sequence[OwnerData], problems: list[FieldProblem]) -> list[_Owner]:
    valid: list[_Owner] = []
    total = Decimal(0)
    for i, owner in enumerate(owners):
        prefix = f"beneficial_owners[{i}]."
        name = v.real_name(owner.name, f"{prefix}name", problems)
        id_type = _id_type(owner.id_type, f"{prefix}id_type", problems, corporate=False)
        nationality = (
            v.country(owner.nationality, f"{prefix}nationality", problems)
            if owner.nationality
            else None
        )
        number, _ = v.document_number(
            id_type, owner.id_number, f"{prefix}id_number", problems, nationality=nationality
        )
        pct = owner.ownership_pct
        if not UBO_THRESHOLD <= pct <= 100 or pct.as_tuple().exponent < -2:  # type: ignore[operator]
            problems.append(
                FieldProblem(
                    f"{prefix}ownership_pct",
                    "a beneficial owner holds 25 to 100 per cent (at most two decimals)",
                )
            )
        total += pct
        valid.append(_Owner(name, id_type, number, pct, nationality, owner.date_of_birth))
    if total > 100:
        problems.append(
            FieldProblem("beneficial_owners", "ownership adds up to more than 100 per cent")
        )
    return valid


def _new_customer(
    session: Session,
    *,
    customer_type: str,
    name: str,
    id_type: v.IdType,
    id_number: str,
    valid_from: date | None,
    valid_until: date | None,
    nationality: str,
    ctx: Context,
    services: Services,
    personal: dict[str, str | None],
    phone: str | None,
    industry: str | None = None,
    business_scope: str | None = None,
) -> Customer:
    value = document_value(id_type.value, id_number)
    # The UNIQUE index refuses a second row under the same index key at commit; only while
    # an index key is being rotated can the same document sit under an older key.
    if services.blind_index.rotating and _existing_document(session, services.blind_index, value):
        raise CustomerExists
    customer_id = services.ids.new(IdPrefix.CUSTOMER)
    encrypted = _encrypt(
        services.vault, "customers", customer_id, name=name, id_number=id_number, **personal
    )
    return Customer(
        id=customer_id,
        type=customer_type,
        status="pending_verification",
        id_type=id_type.value,
        document_index=services.blind_index.compute(DOCUMENT_INDEX, value),
        document_version=1,
        id_valid_from=valid_from,
        id_valid_until=valid_until,
        nationality=nationality,
        phone_index=services.blind_index.compute(PHONE_INDEX, phone) if phone else None,
        industry=industry,
        business_scope=business_scope,
        financial_institution=INDUSTRIES.get(industry or "", False),
        screening_status="not_screened",
        risk_level="medium",
        risk_score=0,
        risk_factors={},
        rated_at=ctx.now,
        created_by=ctx.actor.id,
        created_at=ctx.now,
        updated_at=ctx.now,
        **{column: encrypted.get(column) for column in _CUSTOMER_BLOBS},
    )


_CUSTOMER_BLOBS = (
    "name_enc",
    "id_number_enc",
    "date_of_birth_enc",
    "gender_enc",
    "phone_enc",
    "address_enc",
    "occupation_enc",
)


def _new_party(
    customer: Customer,
    *,
    role: str,
    name: str,
    id_type: v.IdType,
    id_number: str,
    valid_until: date | None,
    nationality: str | None,
    date_of_birth: date | None,
    gender: str | None,
    phone: str | None,
    ownership: Decimal | None,
    services: Services,
) -> tuple[CustomerParty, PartyView]:
    """Return a legal representative's or owner's row and its view (nothing written yet)."""
    party_id = services.ids.new(IdPrefix.PARTY)
    encrypted = _encrypt(
        services.vault,
        "customer_parties",
        party_id,
        name=name,
        id_number=id_number,
        date_of_birth=date_of_birth.isoformat() if date_of_birth else None,
        gender=gender,
        phone=phone,
    )
    party = CustomerParty(
        id=party_id,
        customer_id=customer.id,
        role=role,
        id_type=id_type.value,
        document_index=services.blind_index.compute(
            DOCUMENT_INDEX, document_value(id_type.value, id_number)
        ),
        id_valid_until=valid_until,
        nationality=nationality,
        ownership_bp=int(ownership * 100) if ownership is not None else None,
        screening_status="not_screened",
        **encrypted,
    )
    return party, PartyView(
        id=party_id,
        role=role,
        name=name,
        id_type=id_type.value,
        id_number=id_number,
        nationality=nationality,
        ownership_pct=ownership,
        screening_status="not_screened",
    )


def _finish_registration(
    session: Session,
    customer: Customer,
    subjects: Sequence[ScreeningSubject],
    *,
    ctx: Context,
    services: Services,
    plain: dict[str, Any],
    parties: Sequence[tuple[CustomerParty, PartyView]] = (),
) -> CustomerView:
    """Screen, rate, and write the new customer with its events in one flush at commit.

    Everything is decided before the first write, so that the whole registration costs a
    handful of statements; a second registration of the same document is refused by the
    UNIQUE index at commit (see :func:`duplicate_documents_refused`).
    """
    party_objects = {party.id: party for party, _ in parties}
    found: list[tuple[ScreeningSubject, Match]] = []
    for subject in subjects:
        matches = services.screener.screen(
            session,
            subject.name,
            date_of_birth=subject.date_of_birth,
            nationality=subject.nationality,
        )
        found.extend((subject, match) for match in matches)
        if subject.party_id:
            party_objects[subject.party_id].screening_status = (
                "potential_match" if matches else "clear"
            )
    hits = len(found)
    customer.screening_status = "potential_match" if hits else "clear"
    rating = rate(
        RiskInputs(
            corporate=customer.type == "corporate",
            financial_institution=customer.financial_institution,
            external_channels=0,
            in_person=False,
            occupation=plain.get("occupation"),
            nationality=customer.nationality,
            screening_status=customer.screening_status,
            document_state=document_state(
                customer.id_valid_until,
                services.today,
                notice_days=services.policy.notice_days,
                grace_days=services.policy.grace_days,
            ),
            transaction_behaviour=None,
            relationship_days=0,
        ),
        services.risk_model,
    )
    customer.risk_level, customer.risk_score = rating.level, rating.score
    customer.risk_factors = rating.as_json()
    # Written with the commit in one round trip (custodia.core.db.defer): a duplicate
    # document is refused there by the UNIQUE index (duplicate_documents_refused).
    defer(session, _INSERT_CUSTOMER, _row(customer))
    for party, _ in parties:
        defer(session, _INSERT_PARTY, _row(party))
    for subject, match in found:
        _add_hit(
            session,
            customer,
            match,
            party_id=subject.party_id,
            subject=subject.subject,
            ctx=ctx,
            ids=services.ids,
        )
    if hits:
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_SCREENED,
            target=customer.id,
            customer_id=customer.id,
            details={"new_hits": hits, "screening_status": customer.screening_status},
        )
    audit.record(
        session,
        ctx,
        AuditAction.CUSTOMER_REGISTERED,
        target=customer.id,
        customer_id=customer.id,
        details={
            "type": customer.type,
            "id_type": customer.id_type,
            "id_number": mask_id_number(plain["id_number"]),
            "nationality": customer.nationality,
            "screening_status": customer.screening_status,
            "risk_level": customer.risk_level,
            "risk_score": customer.risk_score,
        },
    )
    publish(
        session,
        CUSTOMER_REGISTERED,
        {"customer_id": customer.id, "type": customer.type},
        ids=services.ids,
        now=ctx.now,
    )
    born = plain.get("date_of_birth")
    return CustomerView(
        id=customer.id,
        type=customer.type,
        status=customer.status,
        restriction_reason=None,
        name=plain["name"],
        id_type=customer.id_type,
        id_number=plain["id_number"],
        id_valid_from=customer.id_valid_from,
        id_valid_until=customer.id_valid_until,
        nationality=customer.nationality,
        date_of_birth=date.fromisoformat(born) if born else None,
        gender=plain.get("gender"),
        phone=plain.get("phone"),
        address=plain.get("address"),
        occupation=plain.get("occupation"),
        industry=customer.industry,
        business_scope=customer.business_scope,
        financial_institution=customer.financial_institution,
        screening_status=customer.screening_status,
        risk_level=customer.risk_level,
        risk_score=customer.risk_score,
        verified_channels=(),
        max_account_class=None,
        reverification_due_on=None,
        created_by=customer.created_by,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        parties=tuple(
            replace(view_, screening_status=party.screening_status) for party, view_ in parties
        ),
    )


DOCUMENT_CONFLICT_MARKERS = ("uq_customers_document_index", "customers.document_index")


@contextmanager
def duplicate_documents_refused() -> Iterator[None]:
    """Turn the UNIQUE document index's refusal at commit into CustomerExists (R1, Art. 6).

    Wrap the unit of work that registers (or renews) a customer: when two registrations of
    one document race, the database lets exactly one commit.
    """
    try:
        yield
    except IntegrityError as exc:
        if any(marker in str(exc.orig) for marker in DOCUMENT_CONFLICT_MARKERS):
            raise CustomerExists from None
        raise


# ----------------------------------------------------------------------------- updating


def _contact_changes(
    customer: Customer, cmd: UpdateCustomer, problems: list[FieldProblem]
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if cmd.phone is not None:
        found = len(problems)
        phone = v.phone_e164(cmd.phone, "phone", problems)
        if len(problems) == found:
            changes["phone"] = phone
    for name_of, limit in (("address", 300), ("occupation", 100)):
        value = getattr(cmd, name_of)
        if value is not None:
            changes[name_of] = _text(value, name_of, problems, limit)
    if cmd.business_scope is not None:
        if customer.type != "corporate":
            problems.append(FieldProblem("business_scope", "only corporate customers have one"))
        changes["business_scope"] = _text(cmd.business_scope, "business_scope", problems, 2000)
    return changes


def _renewed_number(
    customer: Customer,
    renewal: DocumentRenewal,
    problems: list[FieldProblem],
    *,
    vault: Vault,
    today: date,
) -> str:
    """Validate a renewal and return the document number it carries."""
    id_type = v.IdType(customer.id_type)
    blob = customer.id_number_enc
    current = decrypt_field(vault, "customers", customer.id, blob, "id_number_enc") or ""
    number = current
    if renewal.id_number is not None:
        number, _ = v.document_number(
            id_type,
            renewal.id_number,
            "document.id_number",
            problems,
            nationality=customer.nationality,
        )
        if id_type in {v.IdType.PRC_RESIDENT_ID, v.IdType.USCC} and number != current:
            problems.append(
                FieldProblem("document.id_number", "this document keeps its number when renewed")
            )
    v.validity(
        id_type, renewal.id_valid_from, renewal.id_valid_until, "document.", problems, today=today
    )
    return number


def _apply_renewal(
    session: Session, customer: Customer, renewal: DocumentRenewal, number: str, services: Services
) -> None:
    _not_expired(renewal.id_valid_until, "document.id_valid_until", services.today)
    value = document_value(customer.id_type, number)
    index = services.blind_index.compute(DOCUMENT_INDEX, value)
    if index != customer.document_index and _existing_document(
        session, services.blind_index, value
    ):
        raise CustomerExists
    customer.id_number_enc = services.vault.encrypt(
        number, table="customers", column="id_number_enc", row_id=customer.id
    )
    customer.document_index = index
    customer.id_valid_from = renewal.id_valid_from
    customer.id_valid_until = renewal.id_valid_until
    customer.document_version += 1
    customer.reverification_due_on = None


def update(
    session: Session,
    customer_id: str,
    cmd: UpdateCustomer,
    *,
    ctx: Context,
    services: Services,
) -> CustomerView:
    """Change contact data or renew the document; before and after are audited, masked.

    A renewed document is validated again, must not be expired, and needs verifying again:
    its verifications start from nothing (document version + 1), and a customer restricted
    for an expired document stays restricted until one passes (K7).
    """
    customer = load(session, customer_id, for_update=True)
    if customer.status == "closed":
        raise CustomerClosed(customer_id)
    vault = services.vault
    problems: list[FieldProblem] = []
    changes = _contact_changes(customer, cmd, problems)
    renewal = cmd.document
    number = (
        _renewed_number(customer, renewal, problems, vault=vault, today=services.today)
        if renewal is not None
        else None
    )
    if problems:
        raise InvalidIdentity(problems)
    before = masked_snapshot(customer, vault)
    for name_of in ("phone", "address", "occupation"):
        if name_of in changes:
            value = changes[name_of]
            setattr(
                customer,
                f"{name_of}_enc",
                None
                if value is None
                else vault.encrypt(
                    value, table="customers", column=f"{name_of}_enc", row_id=customer.id
                ),
            )
    if "phone" in changes:
        customer.phone_index = services.blind_index.compute(PHONE_INDEX, changes["phone"])
    if "business_scope" in changes:
        customer.business_scope = changes["business_scope"]
    if renewal is not None and number is not None:
        _apply_renewal(session, customer, renewal, number, services)
    customer.updated_at = ctx.now
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise CustomerExists from None
    after = masked_snapshot(customer, vault)
    audit.record(
        session,
        ctx,
        AuditAction.CUSTOMER_UPDATED,
        target=customer.id,
        customer_id=customer.id,
        details={
            "before": {k: before[k] for k in after if before[k] != after[k]},
            "after": {k: after[k] for k in after if before[k] != after[k]},
            "document_renewed": renewal is not None,
        },
    )
    rerate(
        session,
        customer,
        vault=vault,
        model=services.risk_model,
        ctx=ctx,
        today=services.today,
        policy=services.policy,
        reason="updated",
    )
    return view(session, customer, vault=vault)
