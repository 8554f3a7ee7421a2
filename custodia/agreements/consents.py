"""Consents: the customer's decision on an agreement version, kept as signed evidence (A1–A3).

- A customer accepts or declines one published version. The record holds the agreement's
  id, kind, version, locale and content hash, the channel, IP and user agent, when the text
  was shown and when the customer decided, the factor that confirmed it when the agreement
  asks for one, and the prominent clauses the customer confirmed having read (A2). It is
  immutable (a trigger), and its receipt is signed by the service (``receipts``).
- The gate (:func:`require_consent`, A3): an operation under an agreement needs the
  customer's acceptance of the version *in force*; once a new version takes effect, consent
  to the old one no longer counts. A version can be accepted ahead of its effective date.
- Declining ends the relationship under the agreement: the event
  ``agreements.consent_declined`` tells the accounts module to close the customer's accounts
  (withdraw to the customer's own card, then close) from ``service_ends_at`` on: at once
  for the version in force, at its effective date for an announced one.
- Publishing a new version tells every customer who accepted an older one
  (``agreements.customer_notified``, once per customer and version), in batches.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.agreements import receipts
from custodia.agreements.errors import (
    AgreementSuperseded,
    ConsentRequired,
    InvalidAgreement,
    VerificationRequired,
)
from custodia.agreements.models import LOCALES, Agreement, AgreementNotice, Consent
from custodia.agreements.templates import (
    PAYMENT_SERVICE,
    VERSION_PUBLISHED,
    ensure_published,
    in_force,
    rfc3339,
)
from custodia.core import audit
from custodia.core.actors import SYSTEM, Context
from custodia.core.errors import FieldProblem
from custodia.core.factors import Factor
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.outbox import OutboxMessage, publish
from custodia.core.signing import Signer
from custodia.core.vault import Vault

CONSENT_DECLINED = "agreements.consent_declined"
CUSTOMER_NOTIFIED = "agreements.customer_notified"
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{1,31}")
MAX_USER_AGENT = 500


class Confirmer(Protocol):
    """Checks the customer's factors for a consent; returns a reference to what was used.

    Raises the credential module's authentication error when a factor is wrong. ``message``
    is the signing string a ``signature`` factor must have signed.
    """

    def __call__(
        self,
        session: Session,
        customer_id: str,
        method: str,
        factors: Sequence[Factor],
        *,
        message: bytes,
        now: datetime,
    ) -> str:
        """Return a reference to the factor that confirmed the consent."""
        ...


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """``POST /v1/customers/{id}/consents``."""

    agreement_id: str
    accepted: bool
    channel: str
    ip: str
    user_agent: str
    shown_at: datetime
    factors: tuple[Factor, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent with its signed receipt."""

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
    verification: str
    verification_ref: str | None
    prominent_clauses: tuple[str, ...]
    receipt: dict[str, Any]


def signing_string(
    customer_id: str, agreement_id: str, content_sha256: str, *, accepted: bool
) -> bytes:
    """Return what a device key signs to confirm a consent (docs/api.md)."""
    decision = "accepted" if accepted else "declined"
    lines = ("custodia-v1", "consent", customer_id, agreement_id, content_sha256, decision)
    return "\n".join(lines).encode()


def _payload(row: Consent, ip: str) -> dict[str, Any]:
    return {
        "format": receipts.RECEIPT_FORMAT,
        "key_id": row.receipt_key_id,
        "consent_id": row.id,
        "customer_id": row.customer_id,
        "agreement_id": row.agreement_id,
        "agreement_kind": row.agreement_kind,
        "agreement_version": row.agreement_version,
        "agreement_locale": row.agreement_locale,
        "content_sha256": row.content_sha256,
        "accepted": row.accepted,
        "channel": row.channel,
        "ip": ip,
        "user_agent": row.user_agent,
        "shown_at": rfc3339(row.shown_at),
        "decided_at": rfc3339(row.decided_at),
        "verification": {"method": row.verification, "reference": row.verification_ref},
        "prominent_clauses": list(row.prominent_clauses["keys"]),
    }


def _view(row: Consent, vault: Vault) -> ConsentView:
    ip = vault.decrypt(row.ip_enc, table="consents", column="ip_enc", row_id=row.id)
    return ConsentView(
        id=row.id,
        customer_id=row.customer_id,
        agreement_id=row.agreement_id,
        agreement_kind=row.agreement_kind,
        agreement_version=row.agreement_version,
        agreement_locale=row.agreement_locale,
        content_sha256=row.content_sha256,
        accepted=row.accepted,
        channel=row.channel,
        ip=ip,
        user_agent=row.user_agent,
        shown_at=row.shown_at,
        decided_at=row.decided_at,
        verification=row.verification,
        verification_ref=row.verification_ref,
        prominent_clauses=tuple(row.prominent_clauses["keys"]),
        receipt=receipts.assemble(_payload(row, ip), row.receipt_key_id, row.receipt_signature),
    )


def _check_request(
    request: ConsentRequest, agreement: Agreement | None, now: datetime
) -> tuple[Agreement, str]:
    problems: list[FieldProblem] = []
    if agreement is None:
        problems.append(FieldProblem("agreement_id", "there is no agreement with this id"))
    if not _CHANNEL.fullmatch(request.channel):
        problems.append(
            FieldProblem("channel", "a lower-case word such as app, web, mini_program, counter")
        )
    ip = ""
    try:
        ip = str(ipaddress.ip_address(request.ip.strip()))
    except ValueError:
        problems.append(FieldProblem("ip", "an IPv4 or IPv6 address"))
    user_agent = request.user_agent.strip()
    if not user_agent:
        problems.append(FieldProblem("user_agent", "must not be empty"))
    elif len(user_agent) > MAX_USER_AGENT:
        problems.append(FieldProblem("user_agent", f"at most {MAX_USER_AGENT} characters"))
    if request.shown_at.tzinfo is None:
        problems.append(FieldProblem("shown_at", "give an instant with a UTC offset"))
    elif request.shown_at > now:
        problems.append(FieldProblem("shown_at", "is later than the decision being recorded"))
    elif (
        agreement is not None
        and agreement.published_at
        and request.shown_at < agreement.published_at
    ):
        problems.append(FieldProblem("shown_at", "is before the agreement was published"))
    for n, factor in enumerate(request.factors):
        if factor.type not in {"totp", "signature"}:
            problems.append(FieldProblem(f"authentication.factors[{n}].type", "totp or signature"))
    if problems or agreement is None:
        raise InvalidAgreement(problems)
    return agreement, ip


def record(
    session: Session,
    customer_id: str,
    request: ConsentRequest,
    *,
    ctx: Context,
    ids: IdGenerator,
    vault: Vault,
    signer: Signer,
    confirm: Confirmer,
) -> ConsentView:
    """Record the customer's decision on a published, not superseded version; sign the receipt.

    The caller has checked that the customer exists and may be acted for. A declined
    version in force publishes ``agreements.consent_declined``.
    """
    agreement, ip = _check_request(request, session.get(Agreement, request.agreement_id), ctx.now)
    ensure_published(agreement)
    current = in_force(session, agreement.kind, agreement.locale, ctx.now)
    if current is not None and current.effective_at > agreement.effective_at:
        raise AgreementSuperseded(agreement.id, current.id)
    assert agreement.content_sha256 is not None  # noqa: S101 - published (checked above)
    method, reference = "none", None
    required = agreement.consent_verification
    if required != "none" and not any(f.type == required for f in request.factors):
        raise VerificationRequired(required)
    if request.factors:
        method = required if required != "none" else request.factors[0].type
        reference = confirm(
            session,
            customer_id,
            method,
            request.factors,
            message=signing_string(
                customer_id, agreement.id, agreement.content_sha256, accepted=request.accepted
            ),
            now=ctx.now,
        )
    consent_id = ids.new(IdPrefix.CONSENT)
    prominent = [c["key"] for c in agreement.clauses["clauses"] if c["prominent"]]
    row = Consent(
        id=consent_id,
        customer_id=customer_id,
        agreement_id=agreement.id,
        agreement_kind=agreement.kind,
        agreement_version=agreement.version,
        agreement_locale=agreement.locale,
        content_sha256=agreement.content_sha256,
        accepted=request.accepted,
        channel=request.channel,
        ip_enc=vault.encrypt(ip, table="consents", column="ip_enc", row_id=consent_id),
        user_agent=request.user_agent.strip(),
        shown_at=request.shown_at,
        decided_at=ctx.now,
        verification=method,
        verification_ref=reference,
        prominent_clauses={"keys": prominent},
        receipt_key_id=signer.primary_id,
        receipt_signature="",
        actor_kind=ctx.actor.kind.value,
        actor_id=ctx.actor.id,
        request_id=ctx.request_id,
    )
    signed = receipts.sign(_payload(row, ip), signer)
    row.receipt_signature = signed["signature"]
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CONSENT_ACCEPTED
        if request.accepted
        else audit.AuditAction.CONSENT_DECLINED,
        target=consent_id,
        customer_id=customer_id,
        details={
            "agreement_id": agreement.id,
            "kind": agreement.kind,
            "version": agreement.version,
            "locale": agreement.locale,
            "content_sha256": agreement.content_sha256,
            "channel": request.channel,
            "verification": method,
        },
    )
    if not request.accepted:
        # Declining the version in force ends service under it now; declining an announced
        # one, when that version takes effect (until then the old terms stand, A3).
        ends_at = max(agreement.effective_at, ctx.now)
        publish(
            session,
            CONSENT_DECLINED,
            {
                "customer_id": customer_id,
                "agreement_id": agreement.id,
                "kind": agreement.kind,
                "service_ends_at": rfc3339(ends_at),
            },
            ids=ids,
            now=ctx.now,
            available_at=ends_at,
        )
    return _view(row, vault)


def list_consents(
    session: Session, customer_id: str, *, vault: Vault, before_id: str | None, limit: int
) -> list[ConsentView]:
    """Return the customer's consents, newest first (ids sort by time)."""
    query = (
        select(Consent)
        .where(Consent.customer_id == customer_id)
        .order_by(Consent.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(Consent.id < before_id)
    return [_view(row, vault) for row in session.execute(query).scalars()]


# -------------------------------------------------------------------------------- the gate


@dataclass(frozen=True, slots=True)
class ConsentState:
    """Where a customer stands with one kind of agreement at one instant."""

    kind: str
    in_force: tuple[str, ...]  # the id of the version in force, per locale that has one
    satisfied: bool
    consent_id: str | None  # the acceptance that satisfies the gate


def consent_state(session: Session, customer_id: str, kind: str, *, now: datetime) -> ConsentState:
    """Return whether the customer's latest decision on the version in force is an acceptance.

    The same version in any locale counts. Consent to a superseded version does not (A3).
    """
    current = [
        a.id for locale in LOCALES if (a := in_force(session, kind, locale, now)) is not None
    ]
    if not current:
        return ConsentState(kind, (), satisfied=False, consent_id=None)
    latest = session.execute(
        select(Consent.id, Consent.accepted)
        .where(Consent.customer_id == customer_id, Consent.agreement_id.in_(current))
        # A refusal and an acceptance at the same instant: the refusal stands.
        .order_by(Consent.decided_at.desc(), Consent.accepted.asc())
        .limit(1)
    ).first()
    satisfied = latest is not None and bool(latest.accepted)
    return ConsentState(
        kind,
        tuple(current),
        satisfied=satisfied,
        consent_id=latest.id if satisfied and latest else None,
    )


def require_consent(
    session: Session, customer_id: str, kind: str = PAYMENT_SERVICE, *, now: datetime
) -> str:
    """Refuse (409 ``consent_required``) unless the customer accepted the version in force.

    Called before opening a payment account and before operations under the agreement
    (A1, A3, Art. 7). Returns the id of the consent that allows it.
    """
    state = consent_state(session, customer_id, kind, now=now)
    if not state.satisfied or state.consent_id is None:
        raise ConsentRequired(customer_id, kind, state.in_force[0] if state.in_force else None)
    return state.consent_id


# ------------------------------------------------------------------------------- notices


def consumers(
    ids: IdGenerator, *, batch: int = 200
) -> dict[str, Callable[[Session, OutboxMessage], None]]:
    """Return the outbox consumer that tells customers of a new version, in batches (A3)."""

    def on_published(session: Session, message: OutboxMessage) -> None:
        agreement = session.get(Agreement, str(message.payload["agreement_id"]))
        if agreement is None:
            return
        after = str(message.payload.get("after", ""))
        customers = list(
            session.execute(
                select(Consent.customer_id)
                .where(
                    Consent.agreement_kind == agreement.kind,
                    Consent.agreement_locale == agreement.locale,
                    Consent.agreement_id != agreement.id,
                    Consent.accepted.is_(True),
                    Consent.customer_id > after,
                )
                .group_by(Consent.customer_id)
                .order_by(Consent.customer_id)
                .limit(batch)
            ).scalars()
        )
        notified = set(
            session.execute(
                select(AgreementNotice.customer_id).where(
                    AgreementNotice.agreement_id == agreement.id,
                    AgreementNotice.customer_id.in_(customers),
                )
            ).scalars()
        )
        ctx = Context(SYSTEM, message.created_at, f"notice:{message.id}")
        for customer_id in customers:
            if customer_id in notified:
                continue
            session.add(
                AgreementNotice(customer_id=customer_id, agreement_id=agreement.id, sent_at=ctx.now)
            )
            details = {
                "agreement_id": agreement.id,
                "kind": agreement.kind,
                "version": agreement.version,
                "locale": agreement.locale,
                "effective_at": rfc3339(agreement.effective_at),
            }
            publish(
                session,
                CUSTOMER_NOTIFIED,
                {"customer_id": customer_id, **details},
                ids=ids,
                now=ctx.now,
            )
            audit.record(
                session,
                ctx,
                audit.AuditAction.AGREEMENT_NOTICE_SENT,
                target=agreement.id,
                customer_id=customer_id,
                details=details,
            )
        session.flush()
        if len(customers) == batch:
            publish(
                session,
                VERSION_PUBLISHED,
                {**message.payload, "after": customers[-1]},
                ids=ids,
                now=ctx.now,
            )

    return {VERSION_PUBLISHED: on_published}
