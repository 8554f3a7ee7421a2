"""``/v1/customers``: real-name onboarding, verification, risk, timeline (API.md "Customers").

Controllers translate: decode the body strictly, build the command, call one service, and
encode the result masked (ID numbers ``110101********1234``, phones ``138****5678``). Only
``POST /v1/customers/{id}/reveal`` shows fields in clear, to officers, with a reason.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from custodia import kyc
from custodia.api.idempotency import idempotent_request, replay_if_done, respond_idempotently
from custodia.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from custodia.api.runtime import Runtime
from custodia.api.security import context_of, current_principal, security_event
from custodia.core.actors import ActorKind
from custodia.core.masking import mask_id_number, mask_name, mask_phone, mask_text
from custodia.kyc.errors import FieldProblem, InvalidIdentity

Text100 = Annotated[str, msgspec.Meta(max_length=100)]
Text300 = Annotated[str, msgspec.Meta(max_length=300)]
DocumentNumber = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]

#: The rating factor monitoring feeds (custodia.aml.feedback): staff only.
_MONITORING_FACTOR = "transaction_behaviour"


class PersonIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An individual's identity fields (also a corporate's legal representative).

    Optional text fields are bounded by the domain's validation (each too-long field is
    named in the 422), not by the schema: Litestar's DTOs cannot carry length limits on
    optional fields.
    """

    name: Text100
    id_type: Annotated[str, msgspec.Meta(max_length=40)]
    id_number: DocumentNumber
    id_valid_from: date | None = None
    id_valid_until: date | None
    nationality: Annotated[str, msgspec.Meta(max_length=3)]
    date_of_birth: date | None = None
    gender: str | None = None
    phone: str | None = None
    address: str | None = None
    occupation: str | None = None


class OwnerIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A beneficial owner holding 25 % or more."""

    name: Text100
    id_type: Annotated[str, msgspec.Meta(max_length=40)]
    id_number: DocumentNumber
    ownership_pct: Decimal
    nationality: str | None = None
    date_of_birth: date | None = None


class CustomerIn(PersonIn, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/customers``: an individual, or a corporate with its representative and owners."""

    type: Literal["individual", "corporate"]
    registered_address: str | None = None
    business_scope: str | None = None
    industry: str | None = None
    legal_representative: PersonIn | None = None
    beneficial_owners: Annotated[list[OwnerIn], msgspec.Meta(max_length=20)] = []
    #: Required for individuals; a corporate's country of registration, ``CN`` if omitted.
    nationality: str | None = None  # type: ignore[assignment]


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A renewed identity document."""

    id_valid_from: date | None = None
    id_valid_until: date | None
    id_number: str | None = None


class CustomerPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /v1/customers/{id}``: contact data and/or a renewed document."""

    phone: str | None = None
    address: str | None = None
    occupation: str | None = None
    business_scope: str | None = None
    document: DocumentIn | None = None


class VerificationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/customers/{id}/verifications``."""

    channel: Annotated[str, msgspec.Meta(max_length=32)]
    evidence: dict[str, Any] = {}


class RevealIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which fields to show in clear, and why."""

    fields: Annotated[list[str], msgspec.Meta(min_length=1, max_length=10)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class PartyOut(msgspec.Struct, kw_only=True):
    """A legal representative or beneficial owner, masked."""

    id: str
    role: str
    name: str
    id_type: str
    id_number: str
    nationality: str | None
    ownership_pct: float | None
    screening_status: str


class CustomerOut(msgspec.Struct, kw_only=True):
    """A customer as callers see it: personal data masked."""

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
    date_of_birth: str | None
    gender: str | None
    phone: str | None
    address: str | None
    occupation: str | None
    industry: str | None
    business_scope: str | None
    financial_institution: bool
    screening_status: str
    risk_level: str
    verified_channels: list[str]
    max_account_class: str | None
    reverification_due_on: date | None
    legal_representative: PartyOut | None
    beneficial_owners: list[PartyOut]
    created_at: datetime
    updated_at: datetime


class CustomerPage(msgspec.Struct, kw_only=True):
    """Customers found by a lookup."""

    items: list[CustomerOut]
    next_cursor: str | None = None


class VerificationOut(msgspec.Struct, kw_only=True):
    """A verification attempt and what the customer may open now."""

    id: str
    channel: str
    result: str
    reason: str | None
    evidence_ref: str | None
    created_at: datetime
    verified_channels: list[str]
    max_account_class: str | None
    customer_status: str


class VerificationItem(msgspec.Struct, kw_only=True):
    """One past attempt."""

    id: str
    channel: str
    adapter: str
    result: str
    reason: str | None
    evidence_ref: str | None
    document_version: int
    actor: dict[str, str]
    created_at: datetime


class VerificationList(msgspec.Struct, kw_only=True):
    """Every attempt, newest first."""

    items: list[VerificationItem]
    next_cursor: str | None = None


class FactorOut(msgspec.Struct, kw_only=True):
    """One rating factor."""

    name: str
    weight: int
    score: int


class RiskOut(msgspec.Struct, kw_only=True):
    """The rating and why (K1): ``score`` is Σ weight·score / Σ weight·10."""

    level: str
    score: float
    factors: list[FactorOut]
    rated_at: datetime


class TimelineItem(msgspec.Struct, kw_only=True):
    """Something that happened to the customer (from the audit trail)."""

    id: int
    seq: int | None
    at: datetime
    actor: dict[str, str]
    action: str
    target: str | None
    details: dict[str, Any]


class TimelinePage(msgspec.Struct, kw_only=True):
    """A page of the customer's history, newest first."""

    items: list[TimelineItem]
    next_cursor: str | None


class RevealOut(msgspec.Struct, kw_only=True):
    """The requested fields in clear."""

    customer_id: str
    fields: dict[str, str | None]


class _TimelinePosition(msgspec.Struct, forbid_unknown_fields=True):
    id: int


# ---------------------------------------------------------------------------- translation


def _person(data: PersonIn) -> kyc.PersonData:
    return kyc.PersonData(
        name=data.name,
        id_type=data.id_type,
        id_number=data.id_number,
        id_valid_from=data.id_valid_from,
        id_valid_until=data.id_valid_until,
        nationality=data.nationality or "",
        date_of_birth=data.date_of_birth,
        gender=data.gender,
        phone=data.phone,
        address=data.address,
        occupation=data.occupation,
    )


def _corporate(data: CustomerIn) -> kyc.RegisterCorporate:
    problems = [
        FieldProblem(name, "required")
        for name, value in (
            ("legal_representative", data.legal_representative),
            ("registered_address", data.registered_address),
            ("business_scope", data.business_scope),
            ("industry", data.industry),
        )
        if value is None
    ]
    if data.id_type != "uscc":
        problems.append(FieldProblem("id_type", "must be uscc for a corporate customer"))
    if problems or data.legal_representative is None:
        raise InvalidIdentity(problems)
    return kyc.RegisterCorporate(
        name=data.name,
        id_number=data.id_number,
        id_valid_until=data.id_valid_until,
        registered_address=data.registered_address or "",
        business_scope=data.business_scope or "",
        industry=data.industry or "",
        legal_representative=_person(data.legal_representative),
        beneficial_owners=tuple(
            kyc.OwnerData(
                name=o.name,
                id_type=o.id_type,
                id_number=o.id_number,
                ownership_pct=o.ownership_pct,
                nationality=o.nationality,
                date_of_birth=o.date_of_birth,
            )
            for o in data.beneficial_owners
        ),
        nationality=data.nationality or "CN",
    )


def _individual(data: CustomerIn) -> kyc.RegisterIndividual:
    stray = [
        FieldProblem(name, "only for corporate customers")
        for name, value in (
            ("legal_representative", data.legal_representative),
            ("registered_address", data.registered_address),
            ("business_scope", data.business_scope),
            ("industry", data.industry),
        )
        if value is not None
    ]
    if data.beneficial_owners:
        stray.append(FieldProblem("beneficial_owners", "only for corporate customers"))
    if data.nationality is None:
        stray.append(FieldProblem("nationality", "required"))
    if stray:
        raise InvalidIdentity(stray)
    return kyc.RegisterIndividual(_person(data))


def _party_out(party: kyc.PartyView) -> PartyOut:
    return PartyOut(
        id=party.id,
        role=party.role,
        name=mask_name(party.name),
        id_type=party.id_type,
        id_number=mask_id_number(party.id_number),
        nationality=party.nationality,
        ownership_pct=float(party.ownership_pct) if party.ownership_pct is not None else None,
        screening_status=party.screening_status,
    )


def customer_out(customer: kyc.CustomerView) -> CustomerOut:
    """Return the customer masked (a company's own name is public and stays in clear)."""
    representative = next((p for p in customer.parties if p.role == "legal_representative"), None)
    corporate = customer.type == "corporate"
    born = customer.date_of_birth
    return CustomerOut(
        id=customer.id,
        type=customer.type,
        status=customer.status,
        restriction_reason=customer.restriction_reason,
        name=customer.name if corporate else mask_name(customer.name),
        id_type=customer.id_type,
        id_number=customer.id_number if corporate else mask_id_number(customer.id_number),
        id_valid_from=customer.id_valid_from,
        id_valid_until=customer.id_valid_until,
        nationality=customer.nationality,
        date_of_birth=f"{born.year}-**-**" if born else None,
        gender=customer.gender,
        phone=mask_phone(customer.phone) if customer.phone else None,
        address=(customer.address if corporate else mask_text(customer.address))
        if customer.address
        else None,
        occupation=customer.occupation,
        industry=customer.industry,
        business_scope=customer.business_scope,
        financial_institution=customer.financial_institution,
        screening_status=customer.screening_status,
        risk_level=customer.risk_level,
        verified_channels=list(customer.verified_channels),
        max_account_class=customer.max_account_class,
        reverification_due_on=customer.reverification_due_on,
        legal_representative=_party_out(representative) if representative else None,
        beneficial_owners=[_party_out(p) for p in customer.parties if p.role == "beneficial_owner"],
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def _scope(request: Request[Any, Any, Any]) -> str:
    actor = current_principal(request).actor
    return f"{actor.kind.value}:{actor.id}"


class CustomersController(Controller):
    """Real-name onboarding (REGULATION.md R1–R7, K1)."""

    path = "/v1/customers"
    tags = ["customers"]

    @post(
        "/",
        operation_id="customers_create",
        status_code=201,
        sync_to_thread=True,
        summary="Register a customer",
    )
    def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CustomerIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Register an individual or a corporate: validated, screened, rated, audited."""
        ctx = context_of(request, runtime)
        command = _corporate(data) if data.type == "corporate" else _individual(data)

        def work(session: Any) -> CustomerOut:
            services = runtime.kyc_services(ctx)
            if isinstance(command, kyc.RegisterCorporate):
                customer = kyc.register_corporate(session, command, ctx=ctx, services=services)
            else:
                customer = kyc.register_individual(session, command, ctx=ctx, services=services)
            return customer_out(customer)

        with kyc.duplicate_documents_refused():
            return respond_idempotently(
                request,
                runtime,
                data,
                scope=_scope(request),
                required=False,
                status_code=201,
                work=work,
            )

    @get("/", operation_id="customers_find", sync_to_thread=True, summary="Find customers")
    def find(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        phone: Annotated[str | None, QueryParameter(max_length=30)] = None,
        id_type: Annotated[str | None, QueryParameter(max_length=40)] = None,
        id_number: Annotated[str | None, QueryParameter(max_length=40)] = None,
    ) -> CustomerPage:
        """Look a customer up by phone or by identity document (exact, via blind indexes)."""
        ctx = context_of(request, runtime)
        if (phone is None) == (id_number is None) or (id_number is not None and id_type is None):
            raise InvalidIdentity(
                [FieldProblem("$", "give either phone, or id_type with id_number")]
            )

        def work(session: Any) -> list[CustomerOut]:
            if phone is not None:
                found = kyc.find_by_phone(session, phone, indexer=runtime.blind_index)
            else:
                one = kyc.find_by_document(
                    session, id_type or "", id_number or "", indexer=runtime.blind_index
                )
                found = [one] if one is not None else []
            return [
                customer_out(kyc.view(session, customer, vault=runtime.vault))
                for customer in found
                if kyc.is_visible(customer, ctx.actor)
            ]

        return CustomerPage(items=runtime.db.run(work, read_only=True))

    @get(
        "/{customer_id:str}",
        operation_id="customers_get",
        sync_to_thread=True,
        summary="Read a customer (masked)",
    )
    def read(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> CustomerOut:
        """Return the customer with status, risk level and verification state."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> CustomerOut:
            customer = kyc.load(session, customer_id)
            kyc.visible_to(ctx.actor)(customer)
            return customer_out(kyc.view(session, customer, vault=runtime.vault))

        return runtime.db.run(work, read_only=True)

    @patch(
        "/{customer_id:str}",
        operation_id="customers_update",
        sync_to_thread=True,
        summary="Update contact data or renew the document",
    )
    def update(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CustomerPatch],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> CustomerOut:
        """Change contact data or renew the document (validated again, verified again)."""
        ctx = context_of(request, runtime)
        document = (
            kyc.DocumentRenewal(
                id_valid_from=data.document.id_valid_from,
                id_valid_until=data.document.id_valid_until,
                id_number=data.document.id_number,
            )
            if data.document
            else None
        )
        command = kyc.UpdateCustomer(
            phone=data.phone,
            address=data.address,
            occupation=data.occupation,
            business_scope=data.business_scope,
            document=document,
        )

        def work(session: Any) -> CustomerOut:
            kyc.visible_to(ctx.actor)(kyc.load(session, customer_id))
            updated = kyc.update(
                session, customer_id, command, ctx=ctx, services=runtime.kyc_services(ctx)
            )
            return customer_out(updated)

        return runtime.db.run(work)

    @post(
        "/{customer_id:str}/verifications",
        operation_id="customers_verify",
        status_code=201,
        sync_to_thread=True,
        summary="Verify the customer through a channel",
    )
    def verify(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[VerificationIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> Response[bytes]:
        """Ask the channel, record the attempt; ``result`` is ``passed`` or ``failed``."""
        ctx = context_of(request, runtime)
        idem = idempotent_request(request, data, scope=_scope(request), required=False)
        replay = replay_if_done(runtime, idem)
        if replay is not None:
            return replay
        services = runtime.kyc_services(ctx)
        prepared = kyc.prepare_verification(
            runtime.db,
            customer_id=customer_id,
            channel=data.channel,
            evidence=data.evidence,
            services=services,
            router=runtime.channels,
            visible=kyc.visible_to(ctx.actor),
        )
        if prepared.answer is None:
            runtime.db.run(
                lambda s: kyc.record_verification(s, prepared, ctx=ctx, services=services)
            )
            raise kyc.ChannelUnavailable(data.channel, prepared.failure or "no answer")

        def work(session: Any) -> VerificationOut:
            done = kyc.record_verification(session, prepared, ctx=ctx, services=services)
            return VerificationOut(
                id=done.id,
                channel=done.channel,
                result=done.result,
                reason=done.reason,
                evidence_ref=done.evidence_ref,
                created_at=done.created_at,
                verified_channels=list(done.verified_channels),
                max_account_class=done.max_account_class,
                customer_status=done.customer_status,
            )

        return respond_idempotently(
            request,
            runtime,
            data,
            scope=_scope(request),
            required=False,
            status_code=201,
            work=work,
        )

    @get(
        "/{customer_id:str}/verifications",
        operation_id="customers_verifications",
        sync_to_thread=True,
        summary="Verification attempts",
    )
    def verifications(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> VerificationList:
        """Every attempt for the customer, newest first."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> VerificationList:
            kyc.visible_to(ctx.actor)(kyc.load(session, customer_id))
            return VerificationList(
                items=[
                    VerificationItem(
                        id=row.id,
                        channel=row.channel,
                        adapter=row.adapter,
                        result=row.result,
                        reason=row.reason,
                        evidence_ref=row.evidence_ref,
                        document_version=row.document_version,
                        actor={"kind": row.actor_kind, "id": row.actor_id},
                        created_at=row.created_at,
                    )
                    for row in kyc.list_verifications(session, customer_id)
                ]
            )

        return runtime.db.run(work, read_only=True)

    @get(
        "/{customer_id:str}/risk",
        operation_id="customers_risk",
        sync_to_thread=True,
        summary="Risk rating and its factors",
    )
    def risk(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> RiskOut:
        """Return the level, the score and each factor's weight and score (K1).

        The ``transaction_behaviour`` factor is monitoring's view of the customer (alerts, a
        suspicious-transaction report): it is shown to staff only, never to the app facing
        the customer, as the timeline is (no tipping-off).
        """
        ctx = context_of(request, runtime)
        staff = ctx.actor.kind is ActorKind.STAFF

        def work(session: Any) -> RiskOut:
            customer = kyc.load(session, customer_id)
            kyc.visible_to(ctx.actor)(customer)
            factors = [
                FactorOut(name=n, weight=w, score=s)
                for n, w, s in customer.risk_factors.get("factors", [])
                if staff or n != _MONITORING_FACTOR
            ]
            return RiskOut(
                level=customer.risk_level,
                score=customer.risk_score / 1000,
                factors=factors,
                rated_at=customer.rated_at,
            )

        return runtime.db.run(work, read_only=True)

    @get(
        "/{customer_id:str}/timeline",
        operation_id="customers_timeline",
        sync_to_thread=True,
        summary="Everything that happened to the customer",
    )
    def timeline(
        self,
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> TimelinePage:
        """Return the customer's history from the audit trail, newest first."""
        position = decode_cursor(cursor, _TimelinePosition) if cursor else None

        def work(session: Any) -> TimelinePage:
            kyc.load(session, customer_id)
            rows = kyc.timeline(
                session, customer_id, before_id=position.id if position else None, limit=limit + 1
            )
            page = rows[:limit]
            return TimelinePage(
                items=[
                    TimelineItem(
                        id=e.id,
                        seq=e.seq,
                        at=e.at,
                        actor={"kind": e.actor_kind, "id": e.actor_id},
                        action=e.action,
                        target=e.target,
                        details=e.details,
                    )
                    for e in page
                ],
                next_cursor=encode_cursor({"id": page[-1].id}) if len(rows) > limit else None,
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/{customer_id:str}/reveal",
        operation_id="customers_reveal",
        status_code=200,
        sync_to_thread=True,
        summary="Show chosen fields in clear (audited)",
    )
    def reveal(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RevealIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> RevealOut:
        """Return fields in clear to an officer who states why; the reveal is audited."""
        ctx = context_of(request, runtime)
        assert ctx.actor.kind is ActorKind.STAFF  # noqa: S101 - officers only (ROUTE_ACCESS)
        shown = runtime.db.run(
            lambda s: kyc.reveal(
                s, customer_id, data.fields, reason=data.reason, ctx=ctx, vault=runtime.vault
            )
        )
        security_event(
            runtime,
            "pii_revealed",
            actor=str(ctx.actor),
            customer_id=customer_id,
            fields=sorted(shown),
        )
        return RevealOut(customer_id=customer_id, fields=shown)
