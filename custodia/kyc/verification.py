"""Identity verification through external channels (REGULATION.md R1, R3, R5).

A channel (``public_security_id``, ``bank_card`` …) is answered by an adapter. Adapters sit
behind :class:`VerificationAdapter`: the sandbox ships for development and tests, and the
HTTP adapter speaks the JSON protocol of ``docs/verification-protocol.md`` to a provider.
``CUSTODIA_VERIFICATION_CHANNELS`` maps channels to adapters; in development unlisted
channels use the sandbox, in production they are switched off and the sandbox is refused.

A verification is three steps, so that no database transaction waits on the network and a
retried transaction never calls the provider twice: read what the provider needs, ask the
adapter, then record the attempt — passed, failed, or ``error`` when the channel could not
answer — with the caller and time, audit it, and recompute what the customer may open.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import httpx
import msgspec
from sqlalchemy.orm import Session
from stdnum import luhn

from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.audit import AuditAction
from custodia.core.db import Database
from custodia.core.errors import ConfigError
from custodia.core.ids import IdPrefix
from custodia.core.outbox import publish
from custodia.kyc.customers import (
    decrypt_field,
    load,
    max_account_class,
    passed_channels,
    rerate,
)
from custodia.kyc.errors import (
    ChannelNotConfigured,
    ChannelUnavailable,
    CustomerClosed,
    FieldProblem,
    InvalidIdentity,
)
from custodia.kyc.models import CHANNELS, Customer, Verification
from custodia.kyc.onboarding import Services

CUSTOMER_VERIFIED = "kyc.customer_verified"
SANDBOX_OUTCOME = "sandbox_outcome"  # evidence key that forces a sandbox answer


@dataclass(frozen=True, slots=True)
class Subject:
    """What a channel is asked to confirm about the customer (decrypted for this call only)."""

    customer_id: str
    customer_type: str
    name: str
    id_type: str
    id_number: str
    date_of_birth: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    """One question to one channel."""

    request_id: str
    channel: str
    subject: Subject
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AdapterAnswer:
    """The channel's answer: ``passed`` or ``failed``, why, and its own reference."""

    result: str
    reason: str | None = None
    reference: str | None = None


class AdapterUnavailable(Exception):
    """The channel could not answer (timeout, connection refused, 5xx after retries)."""


class VerificationAdapter(Protocol):
    """Something that verifies a subject through one channel."""

    name: str

    def verify(self, request: VerificationRequest) -> AdapterAnswer:
        """Answer the request; raise AdapterUnavailable if the channel cannot answer now."""
        ...


# ----------------------------------------------------------------------------- sandbox


def _same_name(a: str, b: str) -> bool:
    def fold(text: str) -> str:
        return "".join(unicodedata.normalize("NFKC", text).casefold().split())

    return fold(a) == fold(b)


def _same_number(a: str, b: str) -> bool:
    def fold(text: str) -> str:
        return "".join(ch for ch in unicodedata.normalize("NFKC", text).upper() if ch.isalnum())

    return fold(a) == fold(b)


class SandboxAdapter:
    """A deterministic stand-in for every channel (development and tests).

    - An empty ``evidence`` passes for a customer whose registered data is valid.
    - Evidence that contradicts the registered data fails: ``name`` or ``holder_name`` →
      ``name_mismatch``; ``id_number`` or ``holder_id_number`` → ``id_number_mismatch``;
      ``phone`` → ``phone_mismatch``; a ``card_number`` failing the Luhn check →
      ``card_number_invalid`` (``bank_card`` checks the card holder against the customer).
    - ``{"sandbox_outcome": "fail"}`` fails with ``sandbox_forced_failure``;
      ``{"sandbox_outcome": "unavailable"}`` behaves like a channel that is down.
    """

    name = "sandbox"

    def verify(self, request: VerificationRequest) -> AdapterAnswer:
        """Answer from the registered data alone (see the class docstring)."""
        evidence, subject = request.evidence, request.subject
        forced = evidence.get(SANDBOX_OUTCOME)
        if forced == "unavailable":
            raise AdapterUnavailable("sandbox told to be unavailable")
        if forced == "fail":
            return AdapterAnswer("failed", "sandbox_forced_failure", f"sbx-{request.request_id}")
        for key in ("name", "holder_name"):
            if key in evidence and not _same_name(str(evidence[key]), subject.name):
                return AdapterAnswer("failed", "name_mismatch", f"sbx-{request.request_id}")
        for key in ("id_number", "holder_id_number"):
            if key in evidence and not _same_number(str(evidence[key]), subject.id_number):
                return AdapterAnswer("failed", "id_number_mismatch", f"sbx-{request.request_id}")
        if "phone" in evidence and (
            subject.phone is None or not _same_number(str(evidence["phone"]), subject.phone)
        ):
            return AdapterAnswer("failed", "phone_mismatch", f"sbx-{request.request_id}")
        card = evidence.get("card_number")
        if card is not None and not luhn.is_valid(
            "".join(ch for ch in str(card) if ch.isdigit()) or "x"
        ):
            return AdapterAnswer("failed", "card_number_invalid", f"sbx-{request.request_id}")
        return AdapterAnswer("passed", None, f"sbx-{request.request_id}")


# ----------------------------------------------------------------------------- HTTP

SIGNATURE_HEADER = "X-Custodia-Signature"
TIMESTAMP_HEADER = "X-Custodia-Timestamp"
KEY_ID_HEADER = "X-Custodia-Key-Id"
MAX_CLOCK_SKEW_S = 300


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the protocol's signature of ``body`` sent at ``timestamp`` (``v1=<hex>``)."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class _WireSubject(msgspec.Struct, kw_only=True):
    name: str
    id_type: str
    id_number: str
    date_of_birth: str | None
    phone: str | None


class _WireRequest(msgspec.Struct, kw_only=True):
    request_id: str
    channel: str
    subject: _WireSubject
    evidence: dict[str, Any]


class _WireAnswer(msgspec.Struct, kw_only=True):
    request_id: str
    result: str
    reason: str | None = None
    reference: str | None = None


class HttpAdapter:
    """Asks a verification provider over HTTPS with signed JSON (docs/verification-protocol.md).

    Timeouts and transport errors and 5xx answers are retried (bounded, with jittered
    backoff) under the same ``request_id``, which the provider uses to answer a repeated
    question once; answers whose signature or timestamp do not check out are refused.
    """

    name = "http"

    def __init__(
        self,
        *,
        url: str,
        key_id: str,
        secret: bytes,
        timeout_s: float = 5.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/verifications"
        self.key_id = key_id
        self._secret = secret
        self.retries = retries
        self._clock = clock
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)), transport=transport
        )

    def _request_body(self, request: VerificationRequest) -> bytes:
        s = request.subject
        wire = _WireRequest(
            request_id=request.request_id,
            channel=request.channel,
            subject=_WireSubject(
                name=s.name,
                id_type=s.id_type,
                id_number=s.id_number,
                date_of_birth=s.date_of_birth,
                phone=s.phone,
            ),
            evidence=dict(request.evidence),
        )
        return msgspec.json.encode(wire)

    def _check_answer(self, response: httpx.Response, request_id: str) -> AdapterAnswer:
        timestamp = response.headers.get(TIMESTAMP_HEADER, "")
        signature = response.headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > MAX_CLOCK_SKEW_S:
            raise AdapterUnavailable("answer without a fresh timestamp")
        if not hmac.compare_digest(sign(self._secret, timestamp, response.content), signature):
            raise AdapterUnavailable("answer signature does not verify")
        try:
            answer = msgspec.json.decode(response.content, type=_WireAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AdapterUnavailable(f"answer is not the protocol's JSON: {exc}") from None
        if answer.request_id != request_id or answer.result not in {"passed", "failed"}:
            raise AdapterUnavailable("answer does not answer this request")
        return AdapterAnswer(answer.result, answer.reason, answer.reference)

    def verify(self, request: VerificationRequest) -> AdapterAnswer:
        """Ask the provider; retry what may succeed on a second try."""
        body = self._request_body(request)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(2.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))  # noqa: S311 - jitter
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                KEY_ID_HEADER: self.key_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
                "Idempotency-Key": request.request_id,
            }
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
                continue
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise AdapterUnavailable(
                    f"provider refused the request: HTTP {response.status_code}"
                )
            return self._check_answer(response, request.request_id)
        raise AdapterUnavailable(f"no answer after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()


# ----------------------------------------------------------------------------- routing


class _ChannelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    adapter: str
    url: str | None = None
    key_id: str | None = None
    secret: str | None = None
    timeout_s: float = 5.0
    retries: int = 2


class ChannelRouter:
    """Which adapter answers which channel."""

    def __init__(self, adapters: Mapping[str, VerificationAdapter]) -> None:
        self._adapters = dict(adapters)

    def adapter_for(self, channel: str) -> VerificationAdapter:
        """Return the channel's adapter; ChannelNotConfigured if it has none."""
        adapter = self._adapters.get(channel)
        if adapter is None:
            raise ChannelNotConfigured(channel)
        return adapter

    @classmethod
    def from_config(cls, raw: str, *, production: bool) -> ChannelRouter:
        """Build the router from ``CUSTODIA_VERIFICATION_CHANNELS`` (JSON; see the docstring)."""
        try:
            config = msgspec.json.decode(raw or "{}", type=dict[str, _ChannelConfig])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"CUSTODIA_VERIFICATION_CHANNELS is not valid: {exc}") from None
        unknown = set(config) - set(CHANNELS)
        if unknown:
            raise ConfigError(f"CUSTODIA_VERIFICATION_CHANNELS: unknown channels {sorted(unknown)}")
        adapters: dict[str, VerificationAdapter] = {}
        sandbox = SandboxAdapter()
        for channel in CHANNELS:
            entry = config.get(channel)
            if entry is None:
                if not production:
                    adapters[channel] = sandbox
                continue
            if entry.adapter == "sandbox":
                if production:
                    raise ConfigError(
                        "CUSTODIA_VERIFICATION_CHANNELS: production refuses the sandbox "
                        f"for {channel}"
                    )
                adapters[channel] = sandbox
            elif entry.adapter == "http":
                if not (entry.url and entry.key_id and entry.secret):
                    raise ConfigError(
                        f"CUSTODIA_VERIFICATION_CHANNELS: {channel} needs url, key_id and secret"
                    )
                adapters[channel] = HttpAdapter(
                    url=entry.url,
                    key_id=entry.key_id,
                    secret=entry.secret.encode(),
                    timeout_s=entry.timeout_s,
                    retries=entry.retries,
                )
            elif entry.adapter != "disabled":
                raise ConfigError(
                    f"CUSTODIA_VERIFICATION_CHANNELS: {channel} adapter must be sandbox, "
                    "http or disabled"
                )
        return cls(adapters)


# ----------------------------------------------------------------------------- service


@dataclass(frozen=True, slots=True)
class VerificationView:
    """A recorded attempt (API.md: ``{"id", "channel", "result", "reason"}`` and more)."""

    id: str
    customer_id: str
    channel: str
    result: str
    reason: str | None
    evidence_ref: str | None
    created_at: Any
    verified_channels: tuple[str, ...]
    max_account_class: str | None
    customer_status: str


def _subject(customer: Customer, services: Services) -> Subject:
    vault = services.vault

    def clear(column: str) -> str | None:
        return decrypt_field(vault, "customers", customer.id, getattr(customer, column), column)

    return Subject(
        customer_id=customer.id,
        customer_type=customer.type,
        name=clear("name_enc") or "",
        id_type=customer.id_type,
        id_number=clear("id_number_enc") or "",
        date_of_birth=clear("date_of_birth_enc"),
        phone=clear("phone_enc"),
    )


def _evidence_ref(
    services: Services, evidence: Mapping[str, Any], answer: AdapterAnswer | None
) -> str | None:
    if answer is not None and answer.reference:
        return answer.reference[:200]
    if not evidence:
        return None
    canonical = msgspec.json.encode(dict(evidence), order="sorted").decode()
    # Keyed, so a reference to a card number cannot be turned back into the number.
    return "ev:" + services.blind_index.compute("verification_evidence", canonical)[:32]


@dataclass(frozen=True, slots=True)
class PreparedVerification:
    """A channel's answer (or its silence), ready to be recorded."""

    id: str
    customer_id: str
    channel: str
    adapter: str
    document_version: int
    answer: AdapterAnswer | None
    failure: str | None
    evidence_ref: str | None


def prepare_verification(
    db: Database,
    *,
    customer_id: str,
    channel: str,
    evidence: Mapping[str, Any],
    services: Services,
    router: ChannelRouter,
    visible: Callable[[Customer], None],
) -> PreparedVerification:
    """Read what the channel needs and ask it; no transaction is open while it answers.

    ``visible`` raises NotFound when the caller may not see the customer.
    """
    if channel not in CHANNELS:
        raise InvalidIdentity([FieldProblem("channel", f"one of: {', '.join(CHANNELS)}")])
    adapter = router.adapter_for(channel)

    def read(session: Session) -> tuple[Subject, int]:
        customer = load(session, customer_id)
        visible(customer)
        if customer.status == "closed":
            raise CustomerClosed(customer_id)
        return _subject(customer, services), customer.document_version

    subject, document_version = db.run(read, read_only=True)
    verification_id = services.ids.new(IdPrefix.VERIFICATION)
    answer: AdapterAnswer | None = None
    failure: str | None = None
    try:
        answer = adapter.verify(VerificationRequest(verification_id, channel, subject, evidence))
    except AdapterUnavailable as exc:
        failure = str(exc)
    return PreparedVerification(
        id=verification_id,
        customer_id=customer_id,
        channel=channel,
        adapter=adapter.name,
        document_version=document_version,
        answer=answer,
        failure=failure,
        evidence_ref=_evidence_ref(services, evidence, answer),
    )


def record_verification(
    session: Session, prepared: PreparedVerification, *, ctx: Context, services: Services
) -> VerificationView:
    """Record the attempt, activate the customer if it now may be, re-rate, audit (R1, R5)."""
    customer = load(session, prepared.customer_id, for_update=True)
    answer = prepared.answer
    result = answer.result if answer is not None else "error"
    reason = answer.reason if answer is not None else "channel_unavailable"
    session.add(
        Verification(
            id=prepared.id,
            customer_id=customer.id,
            channel=prepared.channel,
            adapter=prepared.adapter,
            result=result,
            reason=reason,
            evidence_ref=prepared.evidence_ref,
            document_version=prepared.document_version,
            actor_kind=ctx.actor.kind.value,
            actor_id=ctx.actor.id,
            created_at=ctx.now,
        )
    )
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.CUSTOMER_VERIFICATION,
        target=prepared.id,
        customer_id=customer.id,
        details={
            "channel": prepared.channel,
            "adapter": prepared.adapter,
            "result": result,
            "reason": reason,
        },
    )
    current = result == "passed" and prepared.document_version == customer.document_version
    if current and _may_activate(customer, services.today):
        previous = customer.status
        customer.status = "active"
        customer.restriction_reason = None
        customer.reverification_due_on = None
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_ACTIVATED,
            target=customer.id,
            customer_id=customer.id,
            details={"from": previous, "channel": prepared.channel},
        )
    elif current and customer.reverification_due_on is not None:
        customer.reverification_due_on = None
    customer.updated_at = ctx.now
    rerate(
        session,
        customer,
        vault=services.vault,
        model=services.risk_model,
        ctx=ctx,
        today=services.today,
        policy=services.policy,
        reason=f"verification:{prepared.channel}:{result}",
    )
    publish(
        session,
        CUSTOMER_VERIFIED,
        {"customer_id": customer.id, "channel": prepared.channel, "result": result},
        ids=services.ids,
        now=ctx.now,
    )
    channels = passed_channels(session, customer)
    return VerificationView(
        id=prepared.id,
        customer_id=customer.id,
        channel=prepared.channel,
        result=result,
        reason=reason,
        evidence_ref=prepared.evidence_ref,
        created_at=ctx.now,
        verified_channels=channels,
        max_account_class=max_account_class(customer.type, channels),
        customer_status=customer.status,
    )


def verify_customer(
    db: Database,
    *,
    customer_id: str,
    channel: str,
    evidence: Mapping[str, Any],
    ctx: Context,
    services: Services,
    router: ChannelRouter,
    visible: Callable[[Customer], None],
) -> VerificationView:
    """Verify through ``channel`` and record the attempt (the module docstring's three steps).

    A channel that cannot answer is recorded as an ``error`` attempt and raises
    ChannelUnavailable.
    """
    prepared = prepare_verification(
        db,
        customer_id=customer_id,
        channel=channel,
        evidence=evidence,
        services=services,
        router=router,
        visible=visible,
    )
    view = db.run(lambda s: record_verification(s, prepared, ctx=ctx, services=services))
    if prepared.answer is None:
        raise ChannelUnavailable(channel, prepared.failure or "no answer")
    return view


def _may_activate(customer: Customer, today: date) -> bool:
    """Return whether a passed verification activates the customer.

    It does for a new customer, and for one restricted for an expired document that has
    since been renewed.
    """
    if customer.status == "pending_verification":
        return True
    document_ok = customer.id_valid_until is None or customer.id_valid_until >= today
    return (
        customer.status == "restricted"
        and customer.restriction_reason == "document_expired"
        and document_ok
    )


def list_verifications(session: Session, customer_id: str) -> list[Verification]:
    """Return every attempt for the customer, newest first."""
    from sqlalchemy import select  # noqa: PLC0415

    return list(
        session.execute(
            select(Verification)
            .where(Verification.customer_id == customer_id)
            .order_by(Verification.created_at.desc(), Verification.id.desc())
        ).scalars()
    )
