"""Payment accounts, bank cards, merchants, money movement, transactions (API.md).

Controllers translate: decode strictly, check who may act for whom, call one service in one
unit of work, encode. Money movement requires an ``Idempotency-Key``; a wrong factor is
counted in its own transaction before the 401 goes out; a top-up asks the bank between the
checks and the posting (never inside a transaction), under a bank reference derived from
the idempotency key so that a retry can never debit the card twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.orm import Session

from custodia import kyc, ledger
from custodia.accounts import fastpath, movements
from custodia.accounts import service as accounts
from custodia.accounts.bank import BankUnavailable
from custodia.accounts.errors import (
    BankUnavailableError,
    InvalidPaymentRequest,
    SensitiveDataRejected,
)
from custodia.accounts.limits import agree_signature_limit, headroom
from custodia.accounts.models import PaymentAccount
from custodia.api.credentials import failures_counted
from custodia.api.idempotency import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    idempotent_request,
    replay_if_done,
    respond_idempotently,
)
from custodia.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from custodia.api.problems import render_refusal
from custodia.api.runtime import Runtime
from custodia.api.security import confirmed, context_of, current_principal
from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.errors import FieldProblem, NotFound
from custodia.core.factors import Factor
from custodia.core.idempotency import check_key, run_claiming
from custodia.core.masking import mask_name
from custodia.core.rules import article

Amount = Annotated[int, msgspec.Meta(gt=0, le=10**13, description="Minor units (fen).")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Currency = Annotated[str, msgspec.Meta(min_length=3, max_length=3)]


# ----------------------------------------------------------------------------- structs


class FactorIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One factor: ``password`` (``value``), ``totp`` (``code``) or ``signature``."""

    type: Literal["password", "totp", "signature"]
    value: str | None = None
    code: str | None = None
    key_id: str | None = None
    signature: str | None = None


class AuthenticationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The customer's factors for this operation."""

    factors: Annotated[list[FactorIn], msgspec.Meta(max_length=3)]


class OpenAccountIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/accounts``."""

    customer_id: Id
    account_class: Literal["I", "II", "III", "corporate"]
    currency: Currency = "CNY"


class LimitOut(msgspec.Struct, kw_only=True):
    """One limit and its headroom."""

    rule: str
    article: str
    period: str
    limit: int
    used: int
    remaining: int


class AccountOut(msgspec.Struct, kw_only=True):
    """A payment account."""

    id: str
    customer_id: str
    account_class: str
    currency: str
    status: str
    status_reason: str | None
    balance: int
    available: int
    opened_at: datetime
    closed_at: datetime | None
    limits: list[LimitOut] | None = None


class AccountPage(msgspec.Struct, kw_only=True):
    """A customer's accounts."""

    items: list[AccountOut]
    next_cursor: str | None = None


class StatusIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Why compliance freezes or unfreezes an account."""

    reason: Reason


class CardOut(msgspec.Struct, kw_only=True):
    """A bound bank card, masked."""

    id: str
    customer_id: str
    masked_number: str
    bank_name: str
    status: str
    created_at: datetime


class CardIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/customers/{id}/bank-cards``."""

    card_number: Annotated[str, msgspec.Meta(min_length=1, max_length=30)]
    holder_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    bank_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    holder_id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class PaymentLimitsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The daily limit the customer agreed for payments with an e-signature (minor units)."""

    signature_daily_limit: Amount


class PaymentLimitsOut(msgspec.Struct, kw_only=True):
    """The agreed limit."""

    customer_id: str
    signature_daily_limit: int


class CardPage(msgspec.Struct, kw_only=True):
    """A customer's cards."""

    items: list[CardOut]
    next_cursor: str | None = None


class MerchantIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/merchants``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    legal_customer_id: Id
    mcc: Annotated[str, msgspec.Meta(min_length=4, max_length=4)]
    webhook_url: str | None = None


class MerchantOut(msgspec.Struct, kw_only=True):
    """A merchant."""

    id: str
    name: str
    merchant_code: str
    mcc: str
    legal_customer_id: str
    settlement_account_id: str
    webhook_url: str | None
    status: str
    created_at: datetime


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/top-ups``."""

    account_id: Id
    bank_card_id: Id
    amount: Amount
    currency: Currency = "CNY"
    channel: str | None = None
    terminal_type: str | None = None


class WithdrawalIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/withdrawals``."""

    account_id: Id
    bank_card_id: Id
    amount: Amount
    currency: Currency = "CNY"
    authentication: AuthenticationIn
    channel: str | None = None
    terminal_type: str | None = None


class TransferIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/transfers``."""

    from_account_id: Id
    to_account_id: Id
    amount: Amount
    currency: Currency = "CNY"
    purpose: str | None = None
    channel: str | None = None
    terminal_type: str | None = None
    authentication: AuthenticationIn


class PaymentIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/payments`` (a merchant's key)."""

    account_id: Id
    amount: Amount
    currency: Currency = "CNY"
    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    investment: bool = False
    channel: str | None = None
    terminal_type: str | None = None
    authentication: AuthenticationIn


class RefundIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/payments/{id}/refunds``."""

    amount: Amount
    currency: Currency = "CNY"
    reason: str | None = None


class PartyOut(msgspec.Struct, kw_only=True):
    """A payer or payee: name (masked for apps and merchants) and account."""

    name: str | None
    account: str
    customer_id: str | None


class MerchantRefOut(msgspec.Struct, kw_only=True):
    """The merchant of a payment or refund (B2)."""

    id: str
    name: str | None
    code: str | None
    mcc: str | None


class TransactionOut(msgspec.Struct, kw_only=True):
    """A transaction with every field of its record (B2)."""

    id: str
    type: str
    status: str
    amount: int
    currency: str
    debit_account: str
    credit_account: str
    created_at: datetime
    completed_at: datetime | None
    channel: str
    terminal_type: str
    payer: PartyOut
    payee: PartyOut
    merchant: MerchantRefOut | None
    bank_card: dict[str, str | None] | None
    authentication: dict[str, Any]
    purpose: str | None
    order_id: str | None
    description: str | None
    original_transaction_id: str | None
    trace_id: str | None
    bank_reference: str | None


class TransactionPage(msgspec.Struct, kw_only=True):
    """An account's transactions, newest first."""

    items: list[TransactionOut]
    next_cursor: str | None


class ReconciliationOut(msgspec.Struct, kw_only=True):
    """Prepaid funds against the reserve account, one currency (minor units)."""

    currency: str
    customer_funds: int
    merchant_funds: int
    fees: int
    suspense: int
    reserve: int
    difference: int
    total: int
    ok: bool


class ReconciliationPage(msgspec.Struct, kw_only=True):
    """Every currency's reconciliation."""

    items: list[ReconciliationOut]
    ok: bool


class _IdPosition(msgspec.Struct, forbid_unknown_fields=True):
    id: str


# ---------------------------------------------------------------------------- helpers


def _account_out(view: accounts.AccountView, limits: list[LimitOut] | None = None) -> AccountOut:
    return AccountOut(
        id=view.id,
        customer_id=view.customer_id,
        account_class=view.account_class,
        currency=view.currency,
        status=view.status,
        status_reason=view.status_reason,
        balance=view.balance,
        available=view.available,
        opened_at=view.opened_at,
        closed_at=view.closed_at,
        limits=limits,
    )


def _card_out(view: accounts.CardView) -> CardOut:
    return CardOut(
        id=view.id,
        customer_id=view.customer_id,
        masked_number=view.masked_number,
        bank_name=view.bank_name,
        status=view.status,
        created_at=view.created_at,
    )


def _merchant_out(view: accounts.MerchantView) -> MerchantOut:
    return MerchantOut(**{f: getattr(view, f) for f in MerchantOut.__struct_fields__})


def _shown_name(name: str | None, customer_id: str | None, actor: Actor) -> str | None:
    """Staff see names in clear; apps and merchants see people's names masked (K5)."""
    if name is None or customer_id is None or actor.kind is ActorKind.STAFF:
        return name
    return mask_name(name)


def transaction_out(view: movements.TransactionView, actor: Actor) -> TransactionOut:
    """Return the API form of a transaction for ``actor``."""
    return TransactionOut(
        id=view.id,
        type=view.type,
        status=view.status,
        amount=view.amount,
        currency=view.currency,
        debit_account=view.debit_account,
        credit_account=view.credit_account,
        created_at=view.created_at,
        completed_at=view.completed_at,
        channel=view.channel,
        terminal_type=view.terminal_type,
        payer=PartyOut(
            name=_shown_name(view.payer.name, view.payer.customer_id, actor),
            account=view.payer.account_id,
            customer_id=view.payer.customer_id,
        ),
        payee=PartyOut(
            name=_shown_name(view.payee.name, view.payee.customer_id, actor),
            account=view.payee.account_id,
            customer_id=view.payee.customer_id,
        ),
        merchant=MerchantRefOut(
            id=view.merchant_id, name=view.merchant_name, code=view.merchant_code, mcc=view.mcc
        )
        if view.merchant_id
        else None,
        bank_card={
            "id": view.bank_card_id,
            "masked_number": view.bank_card_masked,
            "bank_name": view.bank_name,
        }
        if view.bank_card_id
        else None,
        authentication=view.authentication,
        purpose=view.purpose,
        order_id=view.order_id,
        description=view.description,
        original_transaction_id=view.original_transaction_id,
        trace_id=view.trace_id,
        bank_reference=view.bank_reference,
    )


def _scope(actor: Actor) -> str:
    return f"{actor.kind.value}:{actor.id}"


def _factors(auth: AuthenticationIn | None) -> tuple[Factor, ...]:
    return tuple(
        Factor(type=f.type, value=f.value, code=f.code, key_id=f.key_id, signature=f.signature)
        for f in (auth.factors if auth else [])
    )


def _authorisation(
    key: str, auth: AuthenticationIn | None, channel: str | None, terminal: str | None
) -> movements.Authorisation:
    problems = [
        FieldProblem(name, "a lower-case word of 2 to 32 letters, digits or _")
        for name, value in (("channel", channel), ("terminal_type", terminal))
        if value is not None
        and not (2 <= len(value) <= 32 and value.replace("_", "").isalnum() and value.islower())
    ]
    if problems:
        raise InvalidPaymentRequest(problems)
    return movements.Authorisation(
        factors=_factors(auth),
        idempotency_key=key,
        channel=channel or "api",
        terminal_type=terminal or "api",
    )


def _cny(currency: str) -> None:
    if currency != "CNY":
        raise InvalidPaymentRequest([FieldProblem("currency", "payment accounts are in CNY")])


def _acting_for_account(session: Session, account_id: str, actor: Actor, *also: str) -> None:
    """Hide an account whose customer the actor may not act for (404, not 403).

    ``also`` names accounts the operation reads next: loaded in the same query.
    """
    accounts.prefetch(session, account_id, *also)
    account = session.get(PaymentAccount, account_id)
    if account is None:
        raise NotFound("account", account_id)
    kyc.acting_for(session, account.customer_id, actor)


def _idempotency_key(request: Request[Any, Any, Any]) -> str:
    """Return the request's (required) Idempotency-Key; the body is fingerprinted later, once."""
    key = check_key(request.headers.get(IDEMPOTENCY_HEADER), required=True)
    assert key is not None  # noqa: S101 - required=True raises instead
    return key


def _move(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    data: msgspec.Struct,
    work: Any,
) -> Response[bytes]:
    ctx = context_of(request, runtime)
    with failures_counted(runtime, ctx):
        return respond_idempotently(
            request,
            runtime,
            data,
            scope=_scope(ctx.actor),
            required=True,
            status_code=201,
            work=lambda s: transaction_out(work(s, ctx), ctx.actor),
        )


def transfer_command(
    request: Request[Any, Any, Any], data: TransferIn
) -> tuple[movements.Transfer, movements.Authorisation]:
    """Return a transfer request's command and authorisation (refusing a bad one first)."""
    _cny(data.currency)
    auth = _authorisation(
        _idempotency_key(request), data.authentication, data.channel, data.terminal_type
    )
    cmd = movements.Transfer(data.from_account_id, data.to_account_id, data.amount, data.purpose)
    return cmd, auth


def transfer_in_one_call(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    data: msgspec.Struct,
    cmd: movements.Transfer,
    auth: movements.Authorisation,
) -> Response[bytes]:
    """Run a transfer on PostgreSQL's one-call path (``custodia.accounts.fastpath``)."""
    ctx = context_of(request, runtime)
    idem = idempotent_request(request, data, scope=_scope(ctx.actor), required=True)
    assert idem is not None  # noqa: S101 - required=True raises instead

    with failures_counted(runtime, ctx):
        stored, replayed = run_claiming(
            runtime.db,
            runtime.idempotency,
            idem,
            lambda: fastpath.transfer(
                runtime.db, cmd, auth, idem, ctx=ctx, c=runtime.money, keys=runtime.device_keys,
                parties=runtime.parties, store=runtime.idempotency,
                render=lambda view: msgspec.json.encode(transaction_out(view, ctx.actor)),
            ),
            now=ctx.now,
            render_refusal=render_refusal,
        )  # fmt: skip
    return Response(
        stored.body,
        status_code=stored.status,
        media_type=stored.content_type,
        headers={REPLAYED_HEADER: "true"} if replayed else {},
    )


def _limits_out(
    session: Session, account: PaymentAccount, now: datetime, runtime: Runtime
) -> list[LimitOut]:
    customer = kyc.load(session, account.customer_id)
    return [
        LimitOut(
            rule=h.rule,
            article=article(h.regulation),
            period=h.period,
            limit=h.limit,
            used=h.used,
            remaining=h.remaining,
        )
        for h in headroom(
            session,
            customer.id,
            account_class=account.account_class,
            customer_type=customer.type,
            now=now,
            policy=runtime.limit_policy,
        )
    ]


# -------------------------------------------------------------------------- controllers


class AccountsController(Controller):
    """Payment accounts (API.md "Payment accounts")."""

    path = "/v1/accounts"
    tags = ["accounts"]

    @post(
        "/",
        operation_id="accounts_open",
        status_code=201,
        sync_to_thread=True,
        summary="Open an account",
    )
    def open(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OpenAccountIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Open a payment account when the customer may hold one of this class."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> AccountOut:
            kyc.acting_for(session, data.customer_id, ctx.actor, writing=True)
            opened = accounts.open_account(
                session,
                data.customer_id,
                data.account_class,
                currency=data.currency,
                ctx=ctx,
                ids=runtime.ids,
            )
            return _account_out(opened)

        return respond_idempotently(
            request, runtime, data, scope=_scope(ctx.actor), required=False, status_code=201,
            work=work,
        )  # fmt: skip

    @get(
        "/{account_id:str}",
        operation_id="accounts_get",
        sync_to_thread=True,
        summary="Read an account",
    )
    def read(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        account_id: FromPath[str],
    ) -> AccountOut:
        """Return the account, its balances and each limit's headroom."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> AccountOut:
            _acting_for_account(session, account_id, ctx.actor)
            account = accounts.load(session, account_id)
            return _account_out(
                accounts.view(session, account_id), _limits_out(session, account, ctx.now, runtime)
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/{account_id:str}/close",
        operation_id="accounts_close",
        status_code=200,
        sync_to_thread=True,
        summary="Close an account",
    )
    def close(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        account_id: FromPath[str],
    ) -> AccountOut:
        """Close the account (its balance must be zero)."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> AccountOut:
            _acting_for_account(session, account_id, ctx.actor)
            return _account_out(accounts.close(session, account_id, ctx=ctx))

        return runtime.db.run(work)

    @post(
        "/{account_id:str}/freeze",
        operation_id="accounts_freeze",
        status_code=200,
        sync_to_thread=True,
        summary="Freeze an account",
    )
    def freeze(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[StatusIn],
        runtime: NamedDependency[Runtime],
        account_id: FromPath[str],
    ) -> AccountOut:
        """Freeze the account: debits are refused at once (K2)."""
        ctx = context_of(request, runtime)
        return runtime.db.run(
            lambda s: _account_out(accounts.freeze(s, account_id, reason=data.reason, ctx=ctx))
        )

    @post(
        "/{account_id:str}/unfreeze",
        operation_id="accounts_unfreeze",
        status_code=200,
        sync_to_thread=True,
        summary="Unfreeze an account",
    )
    def unfreeze(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[StatusIn],
        runtime: NamedDependency[Runtime],
        account_id: FromPath[str],
    ) -> AccountOut:
        """Lift a freeze."""
        ctx = context_of(request, runtime)
        return runtime.db.run(
            lambda s: _account_out(accounts.unfreeze(s, account_id, reason=data.reason, ctx=ctx))
        )

    @get(
        "/{account_id:str}/transactions",
        operation_id="accounts_transactions",
        sync_to_thread=True,
        summary="An account's transactions",
    )
    def transactions(
        self,
        *,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        account_id: FromPath[str],
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: Annotated[datetime | None, QueryParameter()] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> TransactionPage:
        """Return the account's transactions, newest first; ``from`` inclusive, ``to`` exclusive."""
        ctx = context_of(request, runtime)
        problems = [
            FieldProblem(name, "give an instant with a UTC offset")
            for name, value in (("from", from_), ("to", to))
            if value is not None and value.tzinfo is None
        ]
        if problems:
            raise InvalidPaymentRequest(problems)
        before = decode_cursor(cursor, _IdPosition).id if cursor else None

        def work(session: Session) -> TransactionPage:
            _acting_for_account(session, account_id, ctx.actor)
            rows = movements.account_transactions(
                session, account_id, since=from_, until=to, before_id=before, limit=limit + 1
            )
            return TransactionPage(
                items=[
                    transaction_out(movements.transaction_view(r, runtime.vault), ctx.actor)
                    for r in rows[:limit]
                ],
                next_cursor=encode_cursor({"id": rows[limit - 1].id})
                if len(rows) > limit
                else None,
            )

        return runtime.db.run(work, read_only=True)


class CustomerAccountsController(Controller):
    """A customer's accounts and bank cards."""

    path = "/v1/customers/{customer_id:str}"
    tags = ["accounts"]

    @get(
        "/accounts",
        operation_id="customers_accounts",
        sync_to_thread=True,
        summary="A customer's accounts",
    )
    def accounts_(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> AccountPage:
        """Return the customer's accounts with their balances."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> AccountPage:
            kyc.acting_for(session, customer_id, ctx.actor)
            return AccountPage(
                items=[_account_out(a) for a in accounts.list_for_customer(session, customer_id)]
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/payment-limits",
        operation_id="customers_payment_limits",
        status_code=200,
        sync_to_thread=True,
        summary="Record the daily limit agreed for e-signed payments",
    )
    def payment_limits(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PaymentLimitsIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> PaymentLimitsOut:
        """Record the daily limit the customer agreed for payments with an e-signature (K4)."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> PaymentLimitsOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            agreed = agree_signature_limit(
                session, customer_id, data.signature_daily_limit, now=ctx.now,
                policy=runtime.limit_policy,
            )  # fmt: skip
            audit.record(
                session, ctx, audit.AuditAction.PAYMENT_LIMIT_AGREED, target=customer_id,
                customer_id=customer_id, details={"signature_daily_limit": agreed},
            )  # fmt: skip
            return PaymentLimitsOut(customer_id=customer_id, signature_daily_limit=agreed)

        return runtime.db.run(work)

    @post(
        "/bank-cards",
        operation_id="customers_bank_card_bind",
        status_code=201,
        summary="Bind the customer's own bank card",
    )
    async def bind_card(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> CardOut:
        """Bind a same-name card; card security data in the body is refused, never kept."""
        raw = await request.body()
        try:
            document = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            document = None
        if isinstance(document, dict):
            forbidden = sorted(k for k in document if _sensitive(k))
            if forbidden:
                raise SensitiveDataRejected(forbidden)
        data = msgspec.json.decode(raw, type=CardIn, strict=True)
        ctx = context_of(request, runtime)
        cmd = accounts.BindCard(
            card_number=data.card_number,
            holder_name=data.holder_name,
            bank_name=data.bank_name,
            holder_id_number=data.holder_id_number,
        )

        def work(session: Session) -> CardOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            return _card_out(
                accounts.bind_card(
                    session,
                    customer_id,
                    cmd,
                    ctx=ctx,
                    ids=runtime.ids,
                    vault=runtime.vault,
                    indexer=runtime.blind_index,
                )
            )

        return await anyio.to_thread.run_sync(runtime.db.run, work)

    @get(
        "/bank-cards",
        operation_id="customers_bank_cards",
        sync_to_thread=True,
        summary="The customer's bank cards",
    )
    def cards(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> CardPage:
        """Return the customer's cards, masked."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> CardPage:
            kyc.acting_for(session, customer_id, ctx.actor)
            return CardPage(items=[_card_out(c) for c in accounts.list_cards(session, customer_id)])

        return runtime.db.run(work, read_only=True)


#: Body keys that carry card security data (K5): CVV, PIN, track, expiry.
_SENSITIVE = {
    "cvv", "cvv2", "cvc", "cvc2", "cvn", "cvn2", "csc", "securitycode", "pin", "pinblock",
    "cardpin", "track", "track1", "track2", "track3", "trackdata", "magstripe", "expiry",
    "expirydate", "expiration", "expirationdate", "expmonth", "expyear", "exp", "expdate",
    "validthru", "validuntil",
}  # fmt: skip


def _sensitive(key: str) -> bool:
    return "".join(ch for ch in key.casefold() if ch.isalnum()) in _SENSITIVE


class MerchantsController(Controller):
    """Merchants (API.md "Merchants"): a minimal record so that payments have a payee."""

    path = "/v1/merchants"
    tags = ["merchants"]

    @post(
        "/",
        operation_id="merchants_create",
        status_code=201,
        sync_to_thread=True,
        summary="Register a merchant",
    )
    def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[MerchantIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Register a merchant of a corporate customer, with its settlement account."""
        ctx = context_of(request, runtime)
        cmd = accounts.NewMerchant(
            name=data.name,
            legal_customer_id=data.legal_customer_id,
            mcc=data.mcc,
            webhook_url=data.webhook_url,
        )
        return respond_idempotently(
            request, runtime, data, scope=_scope(ctx.actor), required=False, status_code=201,
            work=lambda s: _merchant_out(
                accounts.create_merchant(s, cmd, ctx=ctx, ids=runtime.ids)
            ),
        )  # fmt: skip

    @get(
        "/{merchant_id:str}",
        operation_id="merchants_get",
        sync_to_thread=True,
        summary="Read a merchant",
    )
    def read(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        merchant_id: FromPath[str],
    ) -> MerchantOut:
        """Return the merchant (a merchant's key: its own only)."""
        actor = current_principal(request).actor
        if actor.role is Role.MERCHANT and actor.merchant_id != merchant_id:
            raise NotFound("merchant", merchant_id)
        return runtime.db.run(
            lambda s: _merchant_out(accounts.merchant_view(s, merchant_id)), read_only=True
        )


class MoneyController(Controller):
    """Money movement (API.md "Money movement"): ``Idempotency-Key`` required."""

    path = "/v1"
    tags = ["money movement"]

    @post(
        "/top-ups",
        operation_id="top_ups_create",
        status_code=201,
        sync_to_thread=True,
        summary="Top up from the customer's own card",
    )
    def top_up(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TopUpIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Debit the customer's own card at the bank, then credit the account."""
        _cny(data.currency)
        ctx = context_of(request, runtime)
        idem = idempotent_request(request, data, scope=_scope(ctx.actor), required=True)
        assert idem is not None  # noqa: S101 - required
        replay = replay_if_done(runtime, idem)
        if replay is not None:
            return replay
        auth = _authorisation(idem.key, None, data.channel, data.terminal_type)
        reference = movements.bank_reference_for(idem.scope, idem.key, "top_up")

        def check(session: Session) -> movements.TopUpPlan:
            _acting_for_account(session, data.account_id, ctx.actor)
            return movements.prepare_top_up(
                session, data.account_id, data.bank_card_id, data.amount,
                reference=reference, vault=runtime.vault,
            )  # fmt: skip

        plan = runtime.db.run(check, read_only=True)
        try:
            answer = runtime.bank.debit_card(plan.request)
        except BankUnavailable:
            raise BankUnavailableError from None
        return respond_idempotently(
            request, runtime, data, scope=_scope(ctx.actor), required=True, status_code=201,
            work=lambda s: transaction_out(
                movements.record_top_up(s, plan, answer, auth, ctx=ctx, c=runtime.money),
                ctx.actor,
            ),
        )  # fmt: skip

    @post(
        "/withdrawals",
        operation_id="withdrawals_create",
        status_code=201,
        sync_to_thread=True,
        summary="Withdraw to the customer's own card",
    )
    def withdraw(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[WithdrawalIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Debit the account now; the bank pays out to the customer's own card (pending)."""
        _cny(data.currency)
        auth = _authorisation(
            _idempotency_key(request), data.authentication, data.channel, data.terminal_type
        )
        cmd = movements.Withdrawal(data.account_id, data.bank_card_id, data.amount)

        def work(session: Session, ctx: Context) -> movements.TransactionView:
            _acting_for_account(session, data.account_id, ctx.actor)
            return movements.withdraw(session, cmd, auth, ctx=ctx, c=runtime.money)

        return _move(request, runtime, data, work)

    @post(
        "/transfers",
        operation_id="transfers_create",
        status_code=201,
        sync_to_thread=True,
        summary="Transfer between payment accounts",
    )
    def transfer(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TransferIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Move value from the customer's account to another payment account.

        The common case (a known API key, a device signature) is usually served by
        :class:`custodia.api.transfer_route.TransferRoute` before Litestar routes it, with
        the same two functions: :func:`transfer_command` and :func:`transfer_in_one_call`.
        """
        cmd, auth = transfer_command(request, data)
        if fastpath.eligible(auth, runtime.money.limits):
            return transfer_in_one_call(request, runtime, data, cmd, auth)
        confirmed(runtime, request)  # the general path does not check the key again

        def work(session: Session, ctx: Context) -> movements.TransactionView:
            _acting_for_account(session, data.from_account_id, ctx.actor, data.to_account_id)
            return movements.transfer(session, cmd, auth, ctx=ctx, c=runtime.money)

        return _move(request, runtime, data, work)

    @post(
        "/payments",
        operation_id="payments_create",
        status_code=201,
        sync_to_thread=True,
        summary="Pay a merchant from the balance",
    )
    def pay(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PaymentIn],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        """Pay the calling merchant from the payer's balance."""
        _cny(data.currency)
        actor = current_principal(request).actor
        assert actor.merchant_id is not None  # noqa: S101 - a merchant's key names its merchant
        auth = _authorisation(
            _idempotency_key(request), data.authentication, data.channel, data.terminal_type
        )
        cmd = movements.Payment(
            merchant_id=actor.merchant_id,
            account_id=data.account_id,
            amount=data.amount,
            order_id=data.order_id,
            description=data.description,
            investment=data.investment,
        )
        return _move(
            request,
            runtime,
            data,
            lambda s, ctx: movements.pay(s, cmd, auth, ctx=ctx, c=runtime.money),
        )

    @post(
        "/payments/{payment_id:str}/refunds",
        operation_id="refunds_create",
        status_code=201,
        sync_to_thread=True,
        summary="Refund a payment to its payer",
    )
    def refund(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RefundIn],
        runtime: NamedDependency[Runtime],
        payment_id: FromPath[str],
    ) -> Response[bytes]:
        """Refund part or all of the merchant's payment to the original payer account."""
        _cny(data.currency)
        actor = current_principal(request).actor
        assert actor.merchant_id is not None  # noqa: S101 - a merchant's key names its merchant
        return _move(
            request,
            runtime,
            data,
            lambda s, ctx: movements.refund(
                s,
                actor.merchant_id or "",
                payment_id,
                data.amount,
                reason=data.reason,
                ctx=ctx,
                c=runtime.money,
            ),
        )

    @get(
        "/transactions/{transaction_id:str}",
        operation_id="transactions_get",
        sync_to_thread=True,
        summary="Read a transaction",
    )
    def read_transaction(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        transaction_id: FromPath[str],
    ) -> TransactionOut:
        """Return the transaction (apps: their customers'; merchants: their own)."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> TransactionOut:
            row = movements.get_transaction(session, transaction_id)
            actor = ctx.actor
            if actor.role is Role.MERCHANT:
                if row.merchant_id != actor.merchant_id:
                    raise NotFound("transaction", transaction_id)
            elif actor.kind is ActorKind.CLIENT:
                customers = {row.payer_customer_id, row.payee_customer_id} - {None}
                if not any(kyc.is_visible(kyc.load(session, c), actor) for c in customers if c):
                    raise NotFound("transaction", transaction_id)
            return transaction_out(movements.transaction_view(row, runtime.vault), actor)

        return runtime.db.run(work, read_only=True)


class LedgerController(Controller):
    """Reconciliation of prepaid funds against the reserve account (staff)."""

    path = "/v1/ledger"
    tags = ["ledger"]

    @get(
        "/reconciliation",
        operation_id="ledger_reconciliation",
        sync_to_thread=True,
        summary="Reconcile prepaid funds",
    )
    def reconciliation(self, runtime: NamedDependency[Runtime]) -> ReconciliationPage:
        """Return, per currency, customers' and merchants' funds against the reserve account."""
        found = runtime.db.run(ledger.reconcile, read_only=True, isolation="REPEATABLE READ")
        items = [
            ReconciliationOut(
                currency=r.currency,
                customer_funds=r.customer_funds,
                merchant_funds=r.merchant_funds,
                fees=r.fees,
                suspense=r.suspense,
                reserve=r.reserve,
                difference=r.difference,
                total=r.total,
                ok=r.ok,
            )
            for r in found
        ]
        return ReconciliationPage(items=items, ok=all(i.ok for i in items))
