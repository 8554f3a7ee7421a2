"""The bank side of money movement: card debits for top-ups, payouts for withdrawals (R7).

A top-up debits the customer's own bank card into the institution's reserve account; a
withdrawal pays from the reserve account to the customer's own card. The bank is reached
through a :class:`BankAdapter`: :class:`SandboxBank` ships for development and tests, and
:class:`HttpBank` speaks the signed JSON protocol of ``docs/bank-protocol.md`` (signed exactly
like ``docs/verification-protocol.md``, whose :func:`~custodia.kyc.verification.sign` and
headers it reuses). ``CUSTODIA_BANK_ADAPTER`` chooses the adapter (:func:`bank_from_config`).

REGULATION.md R7 allows money to move between a bank account and a payment account only when
both belong to the same customer. No adapter checks that: the caller has already matched the
card to the customer before it asks, and the adapter only carries the instruction.

Every instruction carries our transaction id as ``reference``; the bank answers a repeated
reference once, so asking again after :class:`BankUnavailable` can never move money twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

import httpx
import msgspec
from stdnum import luhn

from custodia.core.errors import ConfigError
from custodia.core.money import minor_unit_exponent
from custodia.kyc.verification import (
    KEY_ID_HEADER,
    MAX_CLOCK_SKEW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

SETTING = "CUSTODIA_BANK_ADAPTER"

_Operation = Literal["debit_card", "payout"]
_PATHS: dict[_Operation, str] = {"debit_card": "/v1/card-debits", "payout": "/v1/payouts"}


def _digits(card_number: str) -> str:
    return "".join(ch for ch in card_number if ch in "0123456789")


def _masked(card_number: str) -> str:
    digits = _digits(card_number)
    return f"{digits[:4]} **** **** {digits[-4:]}" if len(digits) >= 12 else "****"


@dataclass(frozen=True, slots=True)
class BankRequest:
    """One card debit (top-up) or payout (withdrawal) asked of the bank.

    ``reference`` is our transaction id: the bank answers a repeated reference once.
    ``card_number`` is the full card number (PAN), decrypted only for this call; neither it
    nor ``holder_name`` ever appears in ``repr``. ``amount`` is in minor units (fen), > 0.
    """

    reference: str
    card_number: str
    holder_name: str
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not self.reference:
            raise ValueError("a bank request needs a reference")
        # bool is an int subclass; True fen is a bug, not an amount (as in Money).
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError(f"amount must be an int of minor units, not {type(self.amount)}")
        if self.amount <= 0:
            raise ValueError("amount must be positive")
        minor_unit_exponent(self.currency)

    def __repr__(self) -> str:
        return (
            f"BankRequest(reference={self.reference!r}, "
            f"card_number={_masked(self.card_number)!r}, holder_name='***', "
            f"amount={self.amount!r}, currency={self.currency!r})"
        )


@dataclass(frozen=True, slots=True)
class BankAnswer:
    """The bank's final word: ``succeeded`` with its own reference, or ``declined`` and why."""

    status: Literal["succeeded", "declined"]
    bank_reference: str | None
    reason: str | None


class BankUnavailable(Exception):
    """The bank did not answer usably: nothing is known; ask again later with the same reference.

    Raised for a timeout, a transport error, a 5xx, an answer whose signature or timestamp
    does not check out, or a bank that refused the request itself.
    """


class BankAdapter(Protocol):
    """Something that moves money between a customer's own card and the reserve account (R7)."""

    name: str

    def debit_card(self, request: BankRequest) -> BankAnswer:
        """Debit the card into the reserve account; raise BankUnavailable if nothing is known."""
        ...

    def payout(self, request: BankRequest) -> BankAnswer:
        """Pay from the reserve account to the card; raise BankUnavailable if nothing is known."""
        ...


# ----------------------------------------------------------------------------- sandbox


class SandboxBank:
    """A deterministic stand-in for the bank (development and tests); never moves money.

    Rules, applied in this order to the card number's digits (spaces are ignored):

    - a card number failing the Luhn check → declined ``card_invalid``;
    - a card number ending in ``0002`` → declined ``insufficient_funds_at_bank`` (card
      debit) or ``payout_rejected`` (payout);
    - a card number ending in ``0003`` → :class:`BankUnavailable` (the bank is down);
    - otherwise → succeeded with ``bank_reference`` ``sbx-<reference>``.

    The same reference always gets the same answer: like a real bank, the sandbox answers a
    repeated reference (per operation, within one process) with its first answer, whatever
    the repeated request says. It does not check R7; the caller has.
    """

    name = "sandbox"

    def __init__(self) -> None:
        self._answers: dict[tuple[_Operation, str], BankAnswer] = {}
        self._lock = threading.Lock()

    def debit_card(self, request: BankRequest) -> BankAnswer:
        """Answer a card debit by the rules of the class docstring."""
        return self._answer("debit_card", request, "insufficient_funds_at_bank")

    def payout(self, request: BankRequest) -> BankAnswer:
        """Answer a payout by the rules of the class docstring."""
        return self._answer("payout", request, "payout_rejected")

    def _answer(self, operation: _Operation, request: BankRequest, refusal: str) -> BankAnswer:
        with self._lock:
            known = self._answers.get((operation, request.reference))
            if known is not None:
                return known
            digits = _digits(request.card_number)
            if not digits or not luhn.is_valid(digits):
                answer = BankAnswer("declined", None, "card_invalid")
            elif digits.endswith("0002"):
                answer = BankAnswer("declined", None, refusal)
            elif digits.endswith("0003"):
                # Nothing happened at a bank that is down, so nothing is remembered.
                raise BankUnavailable("sandbox bank is down for cards ending in 0003")
            else:
                answer = BankAnswer("succeeded", f"sbx-{request.reference}", None)
            self._answers[(operation, request.reference)] = answer
            return answer


class DisabledBank:
    """The adapter of a production without a configured bank: every call raises BankUnavailable."""

    name = "disabled"

    def debit_card(self, request: BankRequest) -> BankAnswer:  # noqa: ARG002 - the protocol's
        """Raise BankUnavailable: no bank adapter is configured."""
        raise BankUnavailable("no bank adapter configured")

    def payout(self, request: BankRequest) -> BankAnswer:  # noqa: ARG002 - the protocol's
        """Raise BankUnavailable: no bank adapter is configured."""
        raise BankUnavailable("no bank adapter configured")


# ----------------------------------------------------------------------------- HTTP


class _WireRequest(msgspec.Struct, kw_only=True):
    reference: str
    card_number: str
    holder_name: str
    amount: int
    currency: str


class _WireAnswer(msgspec.Struct, kw_only=True):
    reference: str
    status: Literal["succeeded", "declined"]
    bank_reference: str | None = None
    reason: str | None = None


class _Unusable(Exception):
    """An answer that arrived but tells nothing (its message never holds request data)."""


# Statuses that say "not now" rather than "not this request".
_RETRYABLE_4XX = frozenset({408, 425, 429})


def _backoff_s(attempt: int) -> float:
    """Return the pause before retry ``attempt`` (1, 2 …): exponential, capped, jittered."""
    return min(2.0, 0.2 * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)  # noqa: S311 - jitter


class HttpBank:
    """Asks a bank over HTTPS with signed JSON (docs/bank-protocol.md); does not check R7.

    Timeouts, transport errors, 5xx (and 408/425/429) answers, and 200 answers that do not
    check out (signature, fresh timestamp, same reference, known status, JSON) are retried —
    at most ``retries`` times, with jittered backoff, under the same reference, which the bank
    answers once. A 4xx is final: a signed ``declined`` answer is returned, anything else
    raises BankUnavailable at once. The card number never reaches an exception message.
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
        self.url = url.rstrip("/")
        self.key_id = key_id
        self._secret = secret
        self.retries = retries
        self._clock = clock
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            transport=transport,
            follow_redirects=False,
        )

    def debit_card(self, request: BankRequest) -> BankAnswer:
        """Ask the bank to debit the card into the reserve account (POST /v1/card-debits)."""
        return self._ask("debit_card", request)

    def payout(self, request: BankRequest) -> BankAnswer:
        """Ask the bank to pay from the reserve account to the card (POST /v1/payouts)."""
        return self._ask("payout", request)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _ask(self, operation: _Operation, request: BankRequest) -> BankAnswer:
        body = msgspec.json.encode(
            _WireRequest(
                reference=request.reference,
                card_number=request.card_number,
                holder_name=request.holder_name,
                amount=request.amount,
                currency=request.currency,
            )
        )
        url = self.url + _PATHS[operation]
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(_backoff_s(attempt))
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                KEY_ID_HEADER: self.key_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
                "Idempotency-Key": request.reference,
            }
            try:
                response = self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                # The type only: a transport error's text is not ours to vouch for.
                last = type(exc).__name__
                continue
            status = response.status_code
            if status >= 500 or status in _RETRYABLE_4XX:
                last = f"HTTP {status}"
                continue
            try:
                answer = self._check(response, request.reference)
            except _Unusable as exc:
                if status != 200:
                    raise BankUnavailable(f"bank refused the request: HTTP {status}") from None
                last = str(exc)
                continue
            if status == 200 or answer.status == "declined":
                return answer
            raise BankUnavailable(f"bank answered succeeded with HTTP {status}")
        raise BankUnavailable(f"no usable answer after {self.retries + 1} attempts ({last})")

    def _check(self, response: httpx.Response, reference: str) -> BankAnswer:
        timestamp = response.headers.get(TIMESTAMP_HEADER, "")
        signature = response.headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > MAX_CLOCK_SKEW_S:
            raise _Unusable("answer without a fresh timestamp")
        if not hmac.compare_digest(sign(self._secret, timestamp, response.content), signature):
            raise _Unusable("answer signature does not verify")
        try:
            wire = msgspec.json.decode(response.content, type=_WireAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise _Unusable("answer is not the protocol's JSON") from None
        if wire.reference != reference:
            raise _Unusable("answer is for another reference")
        if wire.status == "succeeded" and not wire.bank_reference:
            raise _Unusable("succeeded answer without a bank reference")
        if wire.status == "declined" and not wire.reason:
            raise _Unusable("declined answer without a reason")
        return BankAnswer(wire.status, wire.bank_reference, wire.reason)


# ----------------------------------------------------------------------------- configuration


class _BankSetting(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    adapter: Literal["sandbox", "http", "disabled"]
    url: str | None = None
    key_id: str | None = None
    secret: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2


def bank_from_config(raw: str, *, production: bool) -> BankAdapter:
    """Build the adapter ``CUSTODIA_BANK_ADAPTER`` names; production refuses the sandbox.

    ``raw`` is JSON: ``{"adapter": "sandbox" | "http" | "disabled", "url", "key_id",
    "secret" (base64), "timeout_s", "retries"}``. Empty, it means the sandbox in development
    and :class:`DisabledBank` in production. In production the ``http`` adapter's url must be
    ``https://`` (card numbers cross it). Anything wrong raises ConfigError naming the setting.
    """
    if not raw.strip():
        return DisabledBank() if production else SandboxBank()
    try:
        setting = msgspec.json.decode(raw, type=_BankSetting)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{SETTING} is not valid: {exc}") from None
    if setting.adapter == "disabled":
        return DisabledBank()
    if setting.adapter == "sandbox":
        if production:
            raise ConfigError(f"{SETTING}: production refuses the sandbox (it moves no money)")
        return SandboxBank()
    if not (setting.url and setting.key_id and setting.secret):
        raise ConfigError(f"{SETTING}: the http adapter needs url, key_id and secret")
    if not setting.url.startswith(("https://", "http://")):
        raise ConfigError(f"{SETTING}: url must start with https://")
    if production and not setting.url.startswith("https://"):
        raise ConfigError(f"{SETTING}: production needs an https:// url")
    try:
        secret = base64.b64decode(setting.secret, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{SETTING}: secret must be base64") from None
    if not secret:
        raise ConfigError(f"{SETTING}: secret must not be empty")
    return HttpBank(
        url=setting.url,
        key_id=setting.key_id,
        secret=secret,
        timeout_s=setting.timeout_s,
        retries=setting.retries,
    )
