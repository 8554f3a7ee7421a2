"""Customers as the rest of the service sees them: read, rated, revealed, their timeline.

- ``view`` decrypts a customer for the API layer, which masks what the caller may not see.
- ``rerate`` recomputes the risk rating (K1, Art. 23) and audits every change.
- ``max_account_class`` turns passed verification channels into the highest account class
  the customer may open (R5, Art. 11; corporates R3).
- ``reveal`` shows chosen fields in clear to an officer who states why, and audits it (K5).
- ``visible_to`` keeps an onboarding app to the customers it registered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context
from custodia.core.audit import AuditAction
from custodia.core.db import one_of
from custodia.core.errors import NotFound
from custodia.core.masking import mask_id_number, mask_phone, mask_text
from custodia.core.vault import BlindIndexer, Vault
from custodia.kyc import validation as v
from custodia.kyc.errors import CustomerClosed, FieldProblem, InvalidIdentity
from custodia.kyc.models import Customer, CustomerParty, Verification
from custodia.kyc.rating import RatingPolicy, RiskInputs, RiskModel, rate

DOCUMENT_INDEX = "identity_document"
PHONE_INDEX = "phone"
EXTERNAL_CHANNELS = frozenset(
    {"public_security_id", "bank_card", "mobile_carrier", "social_security", "education", "tax"}
)
IN_PERSON_CHANNELS = frozenset({"face_to_face", "video"})


def document_value(id_type: str, number: str) -> str:
    """Return the value a document's blind index is computed over."""
    return f"{id_type}:{number}"


@dataclass(frozen=True, slots=True)
class PartyView:
    """A legal representative or beneficial owner, decrypted (the API masks it)."""

    id: str
    role: str
    name: str
    id_type: str
    id_number: str
    nationality: str | None
    ownership_pct: Decimal | None
    screening_status: str


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer, decrypted; what leaves the service is masked by the API layer."""

    id: str
    type: str
    status: str
    restriction_reason: str | None
    name: str
    id_type: str
    id_number: str
    id_valid_from: date | None
    id_valid_until: date | None
    nationality: str
    date_of_birth: date | None
    gender: str | None
    phone: str | None
    address: str | None
    occupation: str | None
    industry: str | None
    business_scope: str | None
    financial_institution: bool
    screening_status: str
    risk_level: str
    risk_score: int
    verified_channels: tuple[str, ...]
    max_account_class: str | None
    reverification_due_on: date | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    parties: tuple[PartyView, ...] = field(default_factory=tuple)


def decrypt_field(
    vault: Vault, table: str, row_id: str, blob: bytes | None, column: str
) -> str | None:
    """Return a vault field of one row in clear (None stays None)."""
    if blob is None:
        return None
    return vault.decrypt(blob, table=table, column=column, row_id=row_id)


def passed_channels(session: Session, customer: Customer) -> tuple[str, ...]:
    """Return the channels passed for the customer's current document, sorted."""
    return passed_channels_of(session, [customer])[customer.id]


def passed_channels_of(
    session: Session, customers: Sequence[Customer]
) -> dict[str, tuple[str, ...]]:
    """Return each customer's channels passed for its current document, sorted, in one query."""
    if not customers:
        return {}
    versions = {customer.id: customer.document_version for customer in customers}
    rows = session.execute(
        select(Verification.customer_id, Verification.document_version, Verification.channel)
        .where(one_of(session, Verification.customer_id, versions), Verification.result == "passed")
        .distinct()
    ).all()
    found: dict[str, set[str]] = {customer_id: set() for customer_id in versions}
    for customer_id, version, channel in rows:
        if version == versions[customer_id]:
            found[customer_id].add(channel)
    return {customer_id: tuple(sorted(channels)) for customer_id, channels in found.items()}


def max_account_class(customer_type: str, channels: Sequence[str]) -> str | None:
    """Return the highest account class the verification done so far allows (R5, R3).

    Individuals: face to face (or a live video session) or ≥ 5 external channels → III,
    ≥ 3 → II, ≥ 1 → I (Art. 11). Corporates: face to face or ≥ 3 external channels (≈10).
    """
    in_person = not IN_PERSON_CHANNELS.isdisjoint(channels)
    external = len(EXTERNAL_CHANNELS.intersection(channels))
    if customer_type == "corporate":
        return "corporate" if in_person or external >= 3 else None
    if in_person or external >= 5:
        return "III"
    if external >= 3:
        return "II"
    return "I" if external >= 1 else None


def document_state(
    valid_until: date | None, today: date, *, notice_days: int, grace_days: int
) -> str:
    """Return ``valid``, ``expiring``, ``expired`` or ``expired_past_grace``."""
    if valid_until is None:
        return "valid"
    days_left = (valid_until - today).days
    if days_left >= notice_days:
        return "valid"
    if days_left >= 0:
        return "expiring"
    return "expired" if -days_left <= grace_days else "expired_past_grace"


def rerate(
    session: Session,
    customer: Customer,
    *,
    vault: Vault,
    model: RiskModel,
    ctx: Context,
    today: date,
    policy: RatingPolicy,
    reason: str,
    audit_change: bool = True,
    channels: tuple[str, ...] | None = None,
) -> None:
    """Recompute the customer's rating; record and audit it when level or score changed (K1).

    ``audit_change`` is off for the first rating, which the registration event carries.
    ``channels``: the customer's :func:`passed_channels` if the caller read them already.
    """
    if channels is None:
        channels = passed_channels(session, customer)
    occupation = decrypt_field(
        vault, "customers", customer.id, customer.occupation_enc, "occupation_enc"
    )
    rating = rate(
        RiskInputs(
            corporate=customer.type == "corporate",
            financial_institution=customer.financial_institution,
            external_channels=len(EXTERNAL_CHANNELS.intersection(channels)),
            in_person=not IN_PERSON_CHANNELS.isdisjoint(channels),
            occupation=occupation,
            nationality=customer.nationality,
            screening_status=customer.screening_status,
            document_state=document_state(
                customer.id_valid_until,
                today,
                notice_days=policy.notice_days,
                grace_days=policy.grace_days,
            ),
            transaction_behaviour=customer.transaction_behaviour_score,
            relationship_days=max((ctx.now - customer.created_at).days, 0),
        ),
        model,
    )
    unchanged = (
        customer.risk_level == rating.level
        and customer.risk_score == rating.score
        and customer.risk_factors == rating.as_json()
    )
    if unchanged:
        return
    before = (customer.risk_level, customer.risk_score)
    customer.risk_level = rating.level
    customer.risk_score = rating.score
    customer.risk_factors = rating.as_json()
    customer.rated_at = ctx.now
    if audit_change and before != (rating.level, rating.score):
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_RISK_RATED,
            target=customer.id,
            customer_id=customer.id,
            details={
                "reason": reason,
                "from": {"level": before[0], "score": before[1]},
                "to": {"level": rating.level, "score": rating.score},
            },
        )


# ----------------------------------------------------------------------------- reading


def load(session: Session, customer_id: str, *, for_update: bool = False) -> Customer:
    """Return the customer row; NotFound if there is none."""
    customer = session.get(Customer, customer_id, with_for_update=for_update or None)
    if customer is None:
        raise NotFound("customer", customer_id)
    return customer


def view(session: Session, customer: Customer, *, vault: Vault) -> CustomerView:
    """Return the customer decrypted, with its parties and verification state."""

    def clear(column: str) -> str | None:
        return decrypt_field(vault, "customers", customer.id, getattr(customer, column), column)

    parties = session.execute(
        select(CustomerParty)
        .where(CustomerParty.customer_id == customer.id)
        .order_by(CustomerParty.id)
    ).scalars()
    channels = passed_channels(session, customer)
    born = clear("date_of_birth_enc")
    return CustomerView(
        id=customer.id,
        type=customer.type,
        status=customer.status,
        restriction_reason=customer.restriction_reason,
        name=clear("name_enc") or "",
        id_type=customer.id_type,
        id_number=clear("id_number_enc") or "",
        id_valid_from=customer.id_valid_from,
        id_valid_until=customer.id_valid_until,
        nationality=customer.nationality,
        date_of_birth=date.fromisoformat(born) if born else None,
        gender=clear("gender_enc"),
        phone=clear("phone_enc"),
        address=clear("address_enc"),
        occupation=clear("occupation_enc"),
        industry=customer.industry,
        business_scope=customer.business_scope,
        financial_institution=customer.financial_institution,
        screening_status=customer.screening_status,
        risk_level=customer.risk_level,
        risk_score=customer.risk_score,
        verified_channels=channels,
        max_account_class=max_account_class(customer.type, channels),
        reverification_due_on=customer.reverification_due_on,
        created_by=customer.created_by,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        parties=tuple(_party_view(party, vault) for party in parties),
    )


def _party_view(party: CustomerParty, vault: Vault) -> PartyView:
    def clear(column: str) -> str:
        return (
            decrypt_field(vault, "customer_parties", party.id, getattr(party, column), column) or ""
        )

    return PartyView(
        id=party.id,
        role=party.role,
        name=clear("name_enc"),
        id_type=party.id_type,
        id_number=clear("id_number_enc"),
        nationality=party.nationality,
        ownership_pct=Decimal(party.ownership_bp) / 100 if party.ownership_bp is not None else None,
        screening_status=party.screening_status,
    )


def find_by_phone(session: Session, phone: str, *, indexer: BlindIndexer) -> list[Customer]:
    """Return the customers registered with ``phone`` (exact, through the blind index)."""
    problems: list[FieldProblem] = []
    e164 = v.phone_e164(phone, "phone", problems)
    if problems:
        raise InvalidIdentity(problems)
    candidates = indexer.candidates(PHONE_INDEX, e164)
    return list(
        session.execute(
            select(Customer).where(Customer.phone_index.in_(candidates)).order_by(Customer.id)
        ).scalars()
    )


def find_by_document(
    session: Session, id_type: str, id_number: str, *, indexer: BlindIndexer
) -> Customer | None:
    """Return the customer holding an identity document, if any (exact, blind index)."""
    try:
        kind = v.IdType(id_type)
    except ValueError:
        raise InvalidIdentity(
            [FieldProblem("id_type", f"unknown identity document type {id_type!r}")]
        ) from None
    value = document_value(kind.value, v.compact_document_number(id_number))
    candidates = indexer.candidates(DOCUMENT_INDEX, value)
    return session.execute(
        select(Customer).where(Customer.document_index.in_(candidates))
    ).scalar_one_or_none()


def masked_snapshot(customer: Customer, vault: Vault) -> dict[str, Any]:
    """Return the changeable fields, masked, for before/after audit details."""

    def clear(column: str) -> str | None:
        return decrypt_field(vault, "customers", customer.id, getattr(customer, column), column)

    phone = clear("phone_enc")
    address = clear("address_enc")
    return {
        "phone": mask_phone(phone) if phone else None,
        "address": mask_text(address) if address else None,
        "occupation": clear("occupation_enc"),
        "business_scope": customer.business_scope,
        "id_number": mask_id_number(clear("id_number_enc") or ""),
        "id_valid_from": customer.id_valid_from.isoformat() if customer.id_valid_from else None,
        "id_valid_until": customer.id_valid_until.isoformat() if customer.id_valid_until else None,
    }


# ----------------------------------------------------------------------------- revealing

REVEALABLE = ("name", "id_number", "date_of_birth", "gender", "phone", "address")


def reveal(
    session: Session,
    customer_id: str,
    fields: Sequence[str],
    *,
    reason: str,
    ctx: Context,
    vault: Vault,
) -> dict[str, str | None]:
    """Return chosen fields in clear to an officer who states why; the reveal is audited (K5)."""
    problems = [
        FieldProblem("fields", f"{f!r} is not one of {', '.join(REVEALABLE)}")
        for f in fields
        if f not in REVEALABLE
    ]
    if not fields:
        problems.append(FieldProblem("fields", "name at least one field"))
    if len(reason.strip()) < 10:
        problems.append(FieldProblem("reason", "state the reason in at least 10 characters"))
    if problems:
        raise InvalidIdentity(problems)
    customer = load(session, customer_id)
    shown = {
        name: decrypt_field(
            vault, "customers", customer.id, getattr(customer, f"{name}_enc"), f"{name}_enc"
        )
        for name in dict.fromkeys(fields)
    }
    audit.record(
        session,
        ctx,
        AuditAction.CUSTOMER_PII_REVEALED,
        target=customer.id,
        customer_id=customer.id,
        details={"fields": list(shown), "reason": reason.strip()},
    )
    return shown


# ----------------------------------------------------------------------------- access


def is_visible(customer: Customer, actor: Actor) -> bool:
    """Return whether ``actor`` may see ``customer``.

    Staff see every customer; an onboarding app sees the customers it registered.
    """
    return actor.kind is not ActorKind.CLIENT or customer.created_by == actor.id


def visible_to(actor: Actor) -> Callable[[Customer], None]:
    """Return the check that hides a customer the actor may not see (404, not 403)."""

    def check(customer: Customer) -> None:
        if not is_visible(customer, actor):
            raise NotFound("customer", customer.id)

    return check


def acting_for(
    session: Session, customer_id: str, actor: Actor, *, writing: bool = False
) -> Customer:
    """Return the customer ``actor`` may act for: visible (else 404), and not closed to write."""
    customer = load(session, customer_id)
    visible_to(actor)(customer)
    if writing and customer.status == "closed":
        raise CustomerClosed(customer.id)
    return customer


def timeline(
    session: Session, customer_id: str, *, before_id: int | None, limit: int
) -> Sequence[audit.EventView]:
    """Return everything recorded about the customer, newest first (the customer view)."""
    return audit.list_events(
        session,
        audit.EventFilter(customer_id=customer_id),
        before_id=before_id,
        after_id=None,
        limit=limit,
        newest_first=True,
    )
