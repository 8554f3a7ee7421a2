"""``/v1/agreements`` and a customer's consents and risk warnings (API.md "Agreements and consent").

Controllers translate: decode strictly, call one service, encode. Compliance leads draft and
publish agreement texts; onboarding apps show the text in force, record the customer's
decision (with a receipt signed by the service) and the risk warnings shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from custodia import agreements, kyc
from custodia.agreements.receipts import ALGORITHM, RECEIPT_FORMAT
from custodia.api.credentials import failures_counted
from custodia.api.idempotency import respond_idempotently
from custodia.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from custodia.api.runtime import Runtime
from custodia.api.security import context_of, current_principal
from custodia.core.actors import ActorKind
from custodia.core.errors import NotFound
from custodia.core.factors import Factor
from custodia.core.signing import b64

Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Locale = Annotated[str, msgspec.Meta(min_length=1, max_length=10)]
Title = Annotated[str, msgspec.Meta(max_length=200)]
Verification = Literal["none", "totp", "signature"]


class ClauseIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One clause; ``prominent`` marks material terms (some are always prominent)."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    title: Title
    body: Annotated[str, msgspec.Meta(max_length=20_000)]
    prominent: bool = False


class AgreementIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/agreements``: a new draft."""

    kind: Kind
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    locale: Locale
    title: Title
    effective_at: datetime
    clauses: Annotated[list[ClauseIn], msgspec.Meta(max_length=100)]
    consent_verification: Verification = "none"


class AgreementPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /v1/agreements/{id}``: change a draft.

    Optional fields are bounded by the domain's validation, not by the schema (Litestar
    cannot put length limits on optional fields).
    """

    title: str | None = None
    effective_at: datetime | None = None
    clauses: list[ClauseIn] | None = None
    consent_verification: Verification | None = None


class ClauseOut(msgspec.Struct, kw_only=True):
    """One clause as shown to the customer."""

    key: str
    title: str
    body: str
    prominent: bool


class AgreementOut(msgspec.Struct, kw_only=True):
    """An agreement version."""

    id: str
    kind: str
    version: str
    locale: str
    title: str
    status: str
    effective_at: datetime
    consent_verification: str
    content_sha256: str | None
    published_at: datetime | None
    clauses: list[ClauseOut]
    created_at: datetime
    updated_at: datetime


class UpcomingOut(msgspec.Struct, kw_only=True):
    """A published version that is not in force yet (A3: announced 30 days ahead)."""

    id: str
    version: str
    effective_at: datetime
    content_sha256: str | None


class CurrentAgreementOut(AgreementOut, kw_only=True):
    """The version in force, and any announced successor the customer may accept ahead."""

    upcoming: list[UpcomingOut]


class AgreementPage(msgspec.Struct, kw_only=True):
    """Agreements, oldest first."""

    items: list[AgreementOut]
    next_cursor: str | None


class PublicKeyOut(msgspec.Struct, kw_only=True):
    """One signing key."""

    key_id: str
    public_key: str
    primary: bool


class SigningKeyOut(msgspec.Struct, kw_only=True):
    """What a verifier needs: the keys, the algorithm and the canonical form of receipts."""

    algorithm: str
    key_id: str
    public_key: str
    keys: list[PublicKeyOut]
    receipt_format: str
    canonicalization: str


class FactorIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A factor confirming a consent: ``totp`` with ``code``, or ``signature``."""

    type: Literal["totp", "signature"]
    code: str | None = None
    key_id: str | None = None
    signature: str | None = None


class AuthenticationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The factors of a consent, as in money movement."""

    factors: Annotated[list[FactorIn], msgspec.Meta(min_length=1, max_length=3)]


class ConsentIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/customers/{id}/consents``: the customer's decision on a version."""

    agreement_id: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    accepted: bool
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    ip: Annotated[str, msgspec.Meta(min_length=1, max_length=45)]
    user_agent: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    shown_at: datetime
    authentication: AuthenticationIn | None = None


class ConsentVerificationOut(msgspec.Struct, kw_only=True):
    """How the consent was confirmed."""

    method: str
    reference: str | None


class ConsentOut(msgspec.Struct, kw_only=True):
    """A consent and its signed receipt."""

    id: str
    customer_id: str
    agreement_id: str
    agreement_kind: str
    agreement_version: str
    agreement_locale: str
    content_sha256: str
    accepted: bool
    channel: str
    ip: str
    user_agent: str
    shown_at: datetime
    decided_at: datetime
    verification: ConsentVerificationOut
    prominent_clauses: list[str]
    receipt: dict[str, Any]


class ConsentStateOut(msgspec.Struct, kw_only=True):
    """Whether the customer's consent to the version in force stands (the gate's answer)."""

    kind: str
    agreement_ids: list[str]
    satisfied: bool
    consent_id: str | None


class ConsentPage(msgspec.Struct, kw_only=True):
    """The customer's consents, newest first, and where the gate stands."""

    items: list[ConsentOut]
    next_cursor: str | None
    state: ConsentStateOut


class WarningIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/customers/{id}/risk-warnings``: a warning shown before an operation."""

    kind: Kind
    shown_at: datetime
    acknowledged: bool
    subject: str | None = None  # bounded by the domain's validation
    channel: str | None = None


class WarningOut(msgspec.Struct, kw_only=True):
    """A recorded risk warning."""

    id: str
    customer_id: str
    kind: str
    subject: str | None
    shown_at: datetime
    acknowledged: bool
    channel: str | None
    created_at: datetime


class WarningPage(msgspec.Struct, kw_only=True):
    """The customer's risk warnings, newest first."""

    items: list[WarningOut]
    next_cursor: str | None


class _IdPosition(msgspec.Struct, forbid_unknown_fields=True):
    id: str


# ---------------------------------------------------------------------------- translation


def _clauses(items: list[ClauseIn]) -> tuple[agreements.Clause, ...]:
    return tuple(
        agreements.Clause(key=c.key, title=c.title, body=c.body, prominent=c.prominent)
        for c in items
    )


def agreement_out(view: agreements.AgreementView) -> AgreementOut:
    """Return the API form of an agreement."""
    return AgreementOut(
        id=view.id,
        kind=view.kind,
        version=view.version,
        locale=view.locale,
        title=view.title,
        status=view.status,
        effective_at=view.effective_at,
        consent_verification=view.consent_verification,
        content_sha256=view.content_sha256,
        published_at=view.published_at,
        clauses=[
            ClauseOut(key=c.key, title=c.title, body=c.body, prominent=c.prominent)
            for c in view.clauses
        ],
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def consent_out(view: agreements.ConsentView) -> ConsentOut:
    """Return the API form of a consent."""
    return ConsentOut(
        id=view.id,
        customer_id=view.customer_id,
        agreement_id=view.agreement_id,
        agreement_kind=view.agreement_kind,
        agreement_version=view.agreement_version,
        agreement_locale=view.agreement_locale,
        content_sha256=view.content_sha256,
        accepted=view.accepted,
        channel=view.channel,
        ip=view.ip,
        user_agent=view.user_agent,
        shown_at=view.shown_at,
        decided_at=view.decided_at,
        verification=ConsentVerificationOut(
            method=view.verification, reference=view.verification_ref
        ),
        prominent_clauses=list(view.prominent_clauses),
        receipt=view.receipt,
    )


def _warning_out(view: agreements.WarningView) -> WarningOut:
    return WarningOut(
        id=view.id,
        customer_id=view.customer_id,
        kind=view.kind,
        subject=view.subject,
        shown_at=view.shown_at,
        acknowledged=view.acknowledged,
        channel=view.channel,
        created_at=view.created_at,
    )


def _scope(request: Request[Any, Any, Any]) -> str:
    actor = current_principal(request).actor
    return f"{actor.kind.value}:{actor.id}"


def _after(cursor: str | None) -> str | None:
    return decode_cursor(cursor, _IdPosition).id if cursor else None


def _next(items: list[Any], limit: int) -> str | None:
    return encode_cursor({"id": items[limit - 1].id}) if len(items) > limit else None


class AgreementsController(Controller):
    """Agreement texts: drafts and publication by compliance, the version in force for apps."""

    path = "/v1/agreements"
    tags = ["agreements"]

    @post(
        "/",
        operation_id="agreements_create",
        status_code=201,
        sync_to_thread=True,
        summary="Draft an agreement version",
    )
    def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AgreementIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Store a draft (editable until published)."""
        ctx = context_of(request, runtime)
        draft = agreements.DraftAgreement(
            kind=data.kind,
            version=data.version,
            locale=data.locale,
            title=data.title,
            effective_at=data.effective_at,
            clauses=_clauses(data.clauses),
            consent_verification=data.consent_verification,
        )
        return respond_idempotently(
            request,
            runtime,
            data,
            scope=_scope(request),
            required=False,
            status_code=201,
            work=lambda s: agreement_out(
                agreements.create_draft(
                    s, draft, ctx=ctx, ids=runtime.ids, policy=runtime.agreement_policy
                )
            ),
        )

    @get("/", operation_id="agreements_list", sync_to_thread=True, summary="List agreements")
    def list_(
        self,
        *,
        runtime: NamedDependency[Runtime],
        kind: Annotated[str | None, QueryParameter(max_length=40)] = None,
        locale: Annotated[str | None, QueryParameter(max_length=10)] = None,
        status: Annotated[Literal["draft", "published"] | None, QueryParameter()] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> AgreementPage:
        """Return every version, drafts included, oldest first."""
        found = runtime.db.run(
            lambda s: agreements.list_agreements(
                s, kind=kind, locale=locale, status=status, after_id=_after(cursor), limit=limit + 1
            ),
            read_only=True,
        )
        return AgreementPage(
            items=[agreement_out(a) for a in found[:limit]], next_cursor=_next(found, limit)
        )

    @get(
        "/current",
        operation_id="agreements_current",
        sync_to_thread=True,
        summary="The version in force (what a customer must see)",
    )
    def current(
        self,
        runtime: NamedDependency[Runtime],
        kind: Annotated[str, QueryParameter(max_length=40)] = agreements.PAYMENT_SERVICE,
        locale: Annotated[str, QueryParameter(max_length=10)] = "zh-CN",
    ) -> CurrentAgreementOut:
        """Return the version in force now, and announced successors (A3)."""
        now = runtime.clock.now()

        def work(session: Any) -> CurrentAgreementOut:
            row = agreements.in_force(session, kind, locale, now)
            if row is None:
                raise NotFound("agreement in force", f"{kind}/{locale}")
            out = agreement_out(agreements.agreement_view(row))
            return CurrentAgreementOut(
                **msgspec.structs.asdict(out),
                upcoming=[
                    UpcomingOut(
                        id=a.id,
                        version=a.version,
                        effective_at=a.effective_at,
                        content_sha256=a.content_sha256,
                    )
                    for a in agreements.upcoming(session, kind, locale, now)
                ],
            )

        return runtime.db.run(work, read_only=True)

    @get(
        "/signing-key",
        operation_id="agreements_signing_key",
        sync_to_thread=False,
        summary="Public keys that verify consent receipts",
    )
    def signing_key(self, runtime: NamedDependency[Runtime]) -> SigningKeyOut:
        """Return the service's Ed25519 public keys (the primary signs new receipts)."""
        signer = runtime.signer
        keys = signer.public_keys()
        return SigningKeyOut(
            algorithm=ALGORITHM,
            key_id=signer.primary_id,
            public_key=b64(keys[signer.primary_id]),
            keys=[
                PublicKeyOut(key_id=kid, public_key=b64(raw), primary=kid == signer.primary_id)
                for kid, raw in sorted(keys.items())
            ],
            receipt_format=RECEIPT_FORMAT,
            canonicalization="RFC 8785 (JSON Canonicalization Scheme) of the receipt's payload",
        )

    @get(
        "/{agreement_id:str}",
        operation_id="agreements_get",
        sync_to_thread=True,
        summary="Read an agreement version",
    )
    def read(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        agreement_id: FromPath[str],
    ) -> AgreementOut:
        """Return one version; drafts only to staff."""
        actor = current_principal(request).actor

        def work(session: Any) -> AgreementOut:
            row = agreements.load_agreement(session, agreement_id)
            if row.status != "published" and actor.kind is not ActorKind.STAFF:
                raise NotFound("agreement", agreement_id)
            return agreement_out(agreements.agreement_view(row))

        return runtime.db.run(work, read_only=True)

    @patch(
        "/{agreement_id:str}",
        operation_id="agreements_update",
        sync_to_thread=True,
        summary="Change a draft",
    )
    def update(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AgreementPatch],
        runtime: NamedDependency[Runtime],
        agreement_id: FromPath[str],
    ) -> AgreementOut:
        """Change a draft's title, effective date, clauses or consent verification."""
        ctx = context_of(request, runtime)
        changes = agreements.DraftChanges(
            title=data.title,
            effective_at=data.effective_at,
            clauses=_clauses(data.clauses) if data.clauses is not None else None,
            consent_verification=data.consent_verification,
        )
        return runtime.db.run(
            lambda s: agreement_out(
                agreements.update_draft(
                    s, agreement_id, changes, ctx=ctx, policy=runtime.agreement_policy
                )
            )
        )

    @post(
        "/{agreement_id:str}/publish",
        operation_id="agreements_publish",
        status_code=200,
        sync_to_thread=True,
        summary="Publish a draft (the text freezes)",
    )
    def publish(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        agreement_id: FromPath[str],
    ) -> AgreementOut:
        """Publish: mandatory clauses present, effective date after the notice period."""
        ctx = context_of(request, runtime)
        return runtime.db.run(
            lambda s: agreement_out(
                agreements.publish(
                    s, agreement_id, ctx=ctx, ids=runtime.ids, policy=runtime.agreement_policy
                )
            )
        )


class CustomerConsentsController(Controller):
    """A customer's consents and the risk warnings shown to them."""

    path = "/v1/customers/{customer_id:str}"
    tags = ["agreements"]

    @post(
        "/consents",
        operation_id="customers_consent",
        status_code=201,
        sync_to_thread=True,
        summary="Record the customer's decision on an agreement",
    )
    def consent(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ConsentIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> Response[bytes]:
        """Record an acceptance or a refusal, with a receipt signed by the service."""
        ctx = context_of(request, runtime)
        factors = tuple(
            Factor(type=f.type, code=f.code, key_id=f.key_id, signature=f.signature)
            for f in (data.authentication.factors if data.authentication else [])
        )
        consent_request = agreements.ConsentRequest(
            agreement_id=data.agreement_id,
            accepted=data.accepted,
            channel=data.channel,
            ip=data.ip,
            user_agent=data.user_agent,
            shown_at=data.shown_at,
            factors=factors,
        )

        def work(session: Any) -> ConsentOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            return consent_out(
                agreements.record(
                    session,
                    customer_id,
                    consent_request,
                    ctx=ctx,
                    ids=runtime.ids,
                    vault=runtime.vault,
                    signer=runtime.signer,
                    confirm=runtime.confirm_consent,
                )
            )

        with failures_counted(runtime, ctx, customer_id):
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
        "/consents",
        operation_id="customers_consents",
        sync_to_thread=True,
        summary="The customer's consents",
    )
    def consents(
        self,
        *,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
        kind: Annotated[str, QueryParameter(max_length=40)] = agreements.PAYMENT_SERVICE,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> ConsentPage:
        """Return every consent with its version, hash and receipt, and where the gate stands."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> ConsentPage:
            kyc.acting_for(session, customer_id, ctx.actor)
            found = agreements.list_consents(
                session, customer_id, vault=runtime.vault, before_id=_after(cursor), limit=limit + 1
            )
            state = agreements.consent_state(session, customer_id, kind, now=ctx.now)
            return ConsentPage(
                items=[consent_out(c) for c in found[:limit]],
                next_cursor=_next(found, limit),
                state=ConsentStateOut(
                    kind=state.kind,
                    agreement_ids=list(state.in_force),
                    satisfied=state.satisfied,
                    consent_id=state.consent_id,
                ),
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/risk-warnings",
        operation_id="customers_risk_warning",
        status_code=201,
        sync_to_thread=True,
        summary="Record a risk warning shown",
    )
    def risk_warning(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[WarningIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> Response[bytes]:
        """Record that a risk warning was shown before a high-risk operation (A4)."""
        ctx = context_of(request, runtime)
        warning = agreements.WarningRequest(
            kind=data.kind,
            shown_at=data.shown_at,
            acknowledged=data.acknowledged,
            subject=data.subject,
            channel=data.channel,
        )

        def work(session: Any) -> WarningOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            return _warning_out(
                agreements.record_warning(
                    session,
                    customer_id,
                    warning,
                    ctx=ctx,
                    ids=runtime.ids,
                    policy=runtime.warning_policy,
                )
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
        "/risk-warnings",
        operation_id="customers_risk_warnings",
        sync_to_thread=True,
        summary="Risk warnings shown to the customer",
    )
    def risk_warnings(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> WarningPage:
        """Return the customer's recorded warnings, newest first."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> WarningPage:
            kyc.acting_for(session, customer_id, ctx.actor)
            found = agreements.list_warnings(
                session, customer_id, before_id=_after(cursor), limit=limit + 1
            )
            return WarningPage(
                items=[_warning_out(w) for w in found[:limit]], next_cursor=_next(found, limit)
            )

        return runtime.db.run(work, read_only=True)
