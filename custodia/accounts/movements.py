"""Money movement: top-up, withdrawal, transfer, merchant payment, refund.

Each runs in the caller's one unit of work (with its idempotency claim): the account and
customer checks, the customer's factors (K3, B4), the limits consumed (R5, R6, K4), the
ledger posting (B1: never overdrawn), the transaction record (B2), an audit event and an
outbox event. A refusal anywhere rolls all of it back.

- Top-up (R7): from the customer's own card; the bank debits the card first (outside the
  transaction, by a reference stable under the request's idempotency key) and only a
  confirmed debit credits the wallet (reserve → wallet).
- Withdrawal (R7): to the customer's own card, never capped for Class II/III (a Class I's
  count towards its lifetime limit); the wallet is debited into suspense at once and the
  worker asks the bank to pay out — confirmed, suspense → reserve; declined, the money
  returns to the wallet.
- Transfer and merchant payment: between payment accounts, or to a merchant's settlement
  account; a corporate transfer over 50,000 CNY states its purpose (B2). Investment
  products are for Class III accounts only, after the partner-product risk warning (R5,
  A4).
- Refund (B3): back to the original payer account only; refunds of a payment never add up
  to more than the payment.

Frozen accounts refuse debits (K2); a restricted customer may only withdraw to their own
card; a closing account may only be emptied to the customer's own card. An account whose
settlement compliance delayed (K2, ``settlement_delayed_by``) still receives transfers and
refunds, but each such credit is held at once (a ledger hold under the measure's id) until
compliance releases it: it is in the balance, not in the available balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from custodia import agreements, kyc, ledger
from custodia.accounts import limits
from custodia.accounts.bank import BankAdapter, BankAnswer, BankRequest
from custodia.accounts.errors import (
    AccountClassNotPermitted,
    AccountFrozen,
    AccountNotActive,
    AuthenticationRequired,
    BankDeclined,
    CustomerNotEligible,
    InvalidPaymentRequest,
    NotSameCustomer,
    OrderAlreadyPaid,
    RefundExceedsPayment,
)
from custodia.accounts.models import (
    BankCard,
    LimitUsage,
    Merchant,
    PaymentAccount,
    PaymentRefunds,
    PaymentTransaction,
)
from custodia.accounts.service import (
    card_number,
    load,
    load_merchant,
    prefetch,
    settlement_hold_id,
    settlement_hold_reference,
)
from custodia.agreements import RiskWarningPolicy
from custodia.core import audit
from custodia.core.actors import SYSTEM, Context
from custodia.core.db import defer
from custodia.core.errors import FieldProblem, NotFound
from custodia.core.factors import Factor
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.models import table_of
from custodia.core.outbox import Consumer, OutboxMessage, publish
from custodia.core.passwords import SecretHasher
from custodia.core.vault import Vault
from custodia.kyc.customers import decrypt_field
from custodia.kyc.models import Customer

RESERVE = ledger.system_account_id("reserve", "CNY")
SUSPENSE = ledger.system_account_id("suspense", "CNY")
TRANSACTION_POSTED = "accounts.transaction_posted"
PAYOUT_REQUESTED = "accounts.payout_requested"
#: Merchant categories whose goods are investment products (R5: Class III only).
INVESTMENT_MCCS = frozenset({"6211", "6051"})
MAX_AMOUNT = 10**13  # minor units; far above any limit, below 64-bit trouble
#: A delayed settlement's hold lasts until compliance releases it (K2): it never expires.
HELD_UNTIL_RELEASED = datetime(9999, 12, 31, tzinfo=UTC)

_RECORD = insert(table_of(PaymentTransaction)).inline()
_REFUNDS = table_of(PaymentRefunds)
_INSERT_REFUNDS = insert(_REFUNDS).inline()


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What money movement needs besides the session and the context."""

    vault: Vault
    hasher: SecretHasher
    ids: IdGenerator
    limits: limits.LimitPolicy
    warnings: RiskWarningPolicy
    #: A corporate transfer above this states its purpose (B2: 50,000 CNY).
    purpose_threshold: int = 50_000 * 100


@dataclass(frozen=True, slots=True)
class Authorisation:
    """The customer's factors for one debit and where the request came from (B2, B4)."""

    factors: tuple[Factor, ...]
    idempotency_key: str
    channel: str = "api"
    terminal_type: str = "api"


@dataclass(frozen=True, slots=True)
class Party:
    """A payer or payee as the record keeps it (name in clear only in memory)."""

    customer_id: str | None
    name: str | None
    account_id: str


@dataclass(frozen=True, slots=True)
class TransactionView:
    """A transaction and every field of its record (B2)."""

    id: str
    type: str
    status: str
    amount: int
    currency: str
    debit_account: str
    credit_account: str
    payer: Party
    payee: Party
    merchant_id: str | None
    merchant_name: str | None
    merchant_code: str | None
    mcc: str | None
    bank_card_id: str | None
    bank_card_masked: str | None
    bank_name: str | None
    channel: str
    terminal_type: str
    authentication: dict[str, Any]
    purpose: str | None
    order_id: str | None
    description: str | None
    original_transaction_id: str | None
    trace_id: str | None
    bank_reference: str | None
    created_at: datetime
    completed_at: datetime | None


def signing_string(
    operation: str, *, idempotency_key: str, payer: str, payee: str, amount: int, currency: str
) -> bytes:
    """Return what a device key signs for a debit (API.md "Authentication factors")."""
    fields = ("custodia-v1", operation, idempotency_key, payer, payee, str(amount), currency)
    return "\n".join(fields).encode()


def bank_reference_for(scope: str, idempotency_key: str, operation: str) -> str:
    """Return the bank reference of a request: the same for every retry of it."""
    digest = sha256(f"{scope}\x1f{idempotency_key}\x1f{operation}".encode()).hexdigest()
    return f"bnk_{digest[:32]}"


# ----------------------------------------------------------------------------- checks


def _check_amount(amount: int) -> None:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise InvalidPaymentRequest([FieldProblem("amount", "a positive integer in minor units")])


def _name(vault: Vault, customer: Customer) -> str:
    return decrypt_field(vault, "customers", customer.id, customer.name_enc, "name_enc") or ""


def _payer_allowed(account: PaymentAccount, customer: Customer, *, withdrawal: bool) -> None:
    """Refuse a debit the account's or customer's status does not allow (K2, K7, A3)."""
    if account.status == "frozen":
        raise AccountFrozen(account.id)
    if account.status == "closed":
        raise AccountNotActive(account.id, "closed")
    if customer.status == "closed":
        raise CustomerNotEligible(customer.id, "the customer relationship has ended")
    if not withdrawal:
        if account.status in {"closing", "restricted"}:
            raise AccountNotActive(account.id, account.status)
        if customer.status == "restricted":
            raise CustomerNotEligible(
                customer.id,
                "a restricted customer may only withdraw to their own bank card",
                regulation="K7",
            )


def _payee_allowed(account: PaymentAccount) -> None:
    if account.status in {"closed", "closing"}:
        raise AccountNotActive(account.id, account.status)


def _verify(
    session: Session,
    customer_id: str,
    auth: Authorisation,
    message: bytes,
    *,
    now: datetime,
    c: Collaborators,
) -> kyc.VerifiedFactors:
    if not auth.factors:
        raise AuthenticationRequired
    return kyc.verify_factors(
        session, customer_id, auth.factors, message=message, now=now, hasher=c.hasher, vault=c.vault
    )


def _consume_limits(
    session: Session,
    account: PaymentAccount,
    customer: Customer,
    amount: int,
    kinds: tuple[str, ...],
    *,
    own_card_withdrawal: bool,
    now: datetime,
    c: Collaborators,
) -> None:
    charges = limits.charges(
        account_class=account.account_class,
        customer_type=customer.type,
        own_card_withdrawal=own_card_withdrawal,
        factor_types=kinds,
        # Read only when that tier applies: a signature alone is one kind (K3).
        signature_limit=limits.signature_daily_limit(session, customer.id, c.limits)
        if limits.daily_tier(kinds) == "two_kinds_signature"
        else c.limits.signature_daily_default,
        now=now,
        policy=c.limits,
    )
    limits.consume(session, customer.id, amount, charges)


def _authentication(verified: kyc.VerifiedFactors | None) -> dict[str, Any]:
    if verified is None:
        return {"factors": [], "kinds": [], "reference": None}
    return {
        "factors": list(verified.kinds),
        "kinds": sorted(limits.factor_kinds(verified.kinds)),
        "reference": verified.reference,
    }


def _debit(
    session: Session,
    operation: str,
    *,
    account: PaymentAccount,
    customer: Customer,
    payee: str,
    amount: int,
    auth: Authorisation,
    ctx: Context,
    c: Collaborators,
) -> tuple[str, kyc.VerifiedFactors]:
    """Verify the customer's factors, consume the limits and post the debit.

    ``payee`` is what the signing string names: the payee account, the merchant, or for a
    withdrawal the bank card (the ledger then credits suspense until the payout). Returns
    the new transaction's id and the factors that authorised it.
    """
    withdrawal = operation == "withdrawal"
    verified = _verify(
        session,
        customer.id,
        auth,
        signing_string(
            operation,
            idempotency_key=auth.idempotency_key,
            payer=account.id,
            payee=payee,
            amount=amount,
            currency="CNY",
        ),
        now=ctx.now,
        c=c,
    )
    _consume_limits(
        session, account, customer, amount, verified.kinds,
        own_card_withdrawal=withdrawal, now=ctx.now, c=c,
    )  # fmt: skip
    transaction_id = c.ids.new(IdPrefix.TRANSACTION)
    ledger.post(
        session,
        transaction_id=transaction_id,
        kind=operation,
        currency="CNY",
        legs=[ledger.Leg(account.id, SUSPENSE if withdrawal else payee, amount)],
        now=ctx.now,
    )
    return transaction_id, verified


def record_of(
    *,
    transaction_id: str,
    type_: str,
    status: str,
    amount: int,
    payer: Party,
    payee: Party,
    ctx: Context,
    auth: Authorisation | None,
    verified: kyc.VerifiedFactors | None,
    c: Collaborators,
    merchant: Merchant | None = None,
    card: BankCard | None = None,
    purpose: str | None = None,
    order_id: str | None = None,
    description: str | None = None,
    original: str | None = None,
    bank_reference: str | None = None,
) -> tuple[TransactionView, dict[str, Any]]:
    """Return the view of a new transaction and its record's row (names sealed, K5).

    :func:`_record` writes the row with its audit and outbox events; on PostgreSQL a
    transfer's events are written by the transfer function (``custodia.accounts.fastpath``).
    """

    def sealed(name: str | None, column: str) -> bytes | None:
        if not name:
            return None
        return c.vault.encrypt(
            name, table="payment_transactions", column=column, row_id=transaction_id
        )

    view = TransactionView(
        id=transaction_id,
        type=type_,
        status=status,
        amount=amount,
        currency="CNY",
        debit_account=payer.account_id,
        credit_account=payee.account_id,
        payer=payer,
        payee=payee,
        merchant_id=merchant.id if merchant else None,
        merchant_name=merchant.name if merchant else None,
        merchant_code=merchant.merchant_code if merchant else None,
        mcc=merchant.mcc if merchant else None,
        bank_card_id=card.id if card else None,
        bank_card_masked=card.masked_number if card else None,
        bank_name=card.bank_name if card else None,
        channel=auth.channel if auth else "api",
        terminal_type=auth.terminal_type if auth else "api",
        authentication=_authentication(verified),
        purpose=purpose,
        order_id=order_id,
        description=description,
        original_transaction_id=original,
        trace_id=ctx.request_id,
        bank_reference=bank_reference,
        created_at=ctx.now,
        completed_at=ctx.now if status != "pending" else None,
    )
    row = {
        "id": view.id,
        "type": view.type,
        "status": view.status,
        "amount": view.amount,
        "currency": view.currency,
        "debit_account": view.debit_account,
        "credit_account": view.credit_account,
        "payer_customer_id": payer.customer_id,
        "payee_customer_id": payee.customer_id,
        "payer_name_enc": sealed(payer.name if payer.customer_id else None, "payer_name_enc"),
        "payee_name_enc": sealed(payee.name if payee.customer_id else None, "payee_name_enc"),
        "merchant_id": view.merchant_id,
        "merchant_name": view.merchant_name,
        "merchant_code": view.merchant_code,
        "mcc": view.mcc,
        "bank_card_id": view.bank_card_id,
        "bank_card_masked": view.bank_card_masked,
        "bank_name": view.bank_name,
        "channel": view.channel,
        "terminal_type": view.terminal_type,
        "authentication": view.authentication,
        "purpose": purpose,
        "order_id": order_id,
        "description": description,
        "original_transaction_id": original,
        "trace_id": ctx.request_id,
        "bank_reference": bank_reference,
        "created_at": ctx.now,
        "completed_at": view.completed_at,
    }
    return view, row


def audit_details(view: TransactionView) -> dict[str, Any]:
    """Return what the audit event of a money movement records (no names: B2 is the record)."""
    return {
        "amount": view.amount,
        "currency": view.currency,
        "debit_account": view.payer.account_id,
        "credit_account": view.payee.account_id,
        "status": view.status,
        "factors": view.authentication["factors"],
    }


def posted_event(view: TransactionView) -> dict[str, Any]:
    """Return the payload of the outbox event every posted money movement publishes."""
    return {
        "transaction_id": view.id,
        "type": view.type,
        "amount": view.amount,
        "status": view.status,
    }


def _hold_if_delayed(
    session: Session, account: PaymentAccount, amount: int, transaction_id: str, *, ctx: Context
) -> None:
    """Hold a credit to an account whose settlement compliance delayed (K2, Art. 23).

    The hold never expires: compliance releases it (``lift``, or the alert's decision).
    The PostgreSQL transfer function does the same (migration 0010).
    """
    if account.settlement_delayed_by is None:
        return
    ledger.authorize(
        session,
        settlement_hold_id(transaction_id),
        account_id=account.id,
        currency="CNY",
        amount=amount,
        expires_at=HELD_UNTIL_RELEASED,
        now=ctx.now,
        reference=settlement_hold_reference(account.settlement_delayed_by),
    )


def _record(session: Session, *, ctx: Context, c: Collaborators, **fields: Any) -> TransactionView:
    """Write the record (``fields``: :func:`record_of`'s), its audit and outbox events."""
    view, row = record_of(ctx=ctx, c=c, **fields)
    defer(session, _RECORD, row)
    type_, payer, payee, merchant = view.type, view.payer, view.payee, fields.get("merchant")
    action = {
        "top_up": audit.AuditAction.TOP_UP,
        "withdrawal": audit.AuditAction.WITHDRAWAL,
        "transfer": audit.AuditAction.TRANSFER,
        "payment": audit.AuditAction.PAYMENT,
        "refund": audit.AuditAction.REFUND,
    }[type_]
    details = audit_details(view)
    for customer_id in {payer.customer_id, payee.customer_id} - {None}:
        audit.record(session, ctx, action, target=view.id, customer_id=customer_id, details=details)
    if merchant is not None and payer.customer_id is None and payee.customer_id is None:
        audit.record(session, ctx, action, target=view.id, details=details)
    publish(session, TRANSACTION_POSTED, posted_event(view), ids=c.ids, now=ctx.now)
    return view


def _customer_party(vault: Vault, customer: Customer, account_id: str) -> Party:
    return Party(customer.id, _name(vault, customer), account_id)


# ------------------------------------------------------------------------------- transfer


@dataclass(frozen=True, slots=True)
class Transfer:
    """``POST /v1/transfers``."""

    from_account_id: str
    to_account_id: str
    amount: int
    purpose: str | None = None


def transfer(
    session: Session, cmd: Transfer, auth: Authorisation, *, ctx: Context, c: Collaborators
) -> TransactionView:
    """Move value between two payment accounts (see the module docstring)."""
    _check_amount(cmd.amount)
    if cmd.from_account_id == cmd.to_account_id:
        raise InvalidPaymentRequest([FieldProblem("to_account_id", "a different account")])
    prefetch(session, cmd.from_account_id, cmd.to_account_id)
    payer_account = load(session, cmd.from_account_id)
    payee_account = load(session, cmd.to_account_id)
    payer = kyc.load(session, payer_account.customer_id)
    _payer_allowed(payer_account, payer, withdrawal=False)
    _payee_allowed(payee_account)
    purpose = (cmd.purpose or "").strip() or None
    if payer.type == "corporate" and cmd.amount > c.purpose_threshold and purpose is None:
        raise InvalidPaymentRequest(
            [FieldProblem("purpose", "a corporate transfer over 50,000 CNY states its purpose")]
        )
    transaction_id, verified = _debit(
        session, "transfer", account=payer_account, customer=payer, payee=payee_account.id,
        amount=cmd.amount, auth=auth, ctx=ctx, c=c,
    )  # fmt: skip
    _hold_if_delayed(session, payee_account, cmd.amount, transaction_id, ctx=ctx)
    payee = kyc.load(session, payee_account.customer_id)
    return _record(
        session,
        transaction_id=transaction_id,
        type_="transfer",
        status="succeeded",
        amount=cmd.amount,
        payer=_customer_party(c.vault, payer, payer_account.id),
        payee=_customer_party(c.vault, payee, payee_account.id),
        ctx=ctx,
        auth=auth,
        verified=verified,
        c=c,
        purpose=purpose,
    )


# -------------------------------------------------------------------------------- payment


@dataclass(frozen=True, slots=True)
class Payment:
    """``POST /v1/payments``: the payer's balance pays the merchant."""

    merchant_id: str
    account_id: str
    amount: int
    order_id: str
    description: str | None = None
    investment: bool = False


def pay(
    session: Session, cmd: Payment, auth: Authorisation, *, ctx: Context, c: Collaborators
) -> TransactionView:
    """Pay a merchant from the payer's balance (see the module docstring)."""
    _check_amount(cmd.amount)
    if not 1 <= len(cmd.order_id) <= 64:
        raise InvalidPaymentRequest([FieldProblem("order_id", "1 to 64 characters")])
    merchant = load_merchant(session, cmd.merchant_id)
    if merchant.status != "active":
        raise AccountNotActive(merchant.id, merchant.status)
    account = load(session, cmd.account_id)
    payer = kyc.load(session, account.customer_id)
    _payer_allowed(account, payer, withdrawal=False)
    used = session.scalar(
        select(PaymentTransaction.id).where(
            PaymentTransaction.merchant_id == merchant.id,
            PaymentTransaction.order_id == cmd.order_id,
            PaymentTransaction.type == "payment",
        )
    )
    if used is not None:
        raise OrderAlreadyPaid(merchant.id, cmd.order_id, used)
    if cmd.investment or merchant.mcc in INVESTMENT_MCCS:
        if account.account_class != "III":
            raise AccountClassNotPermitted(
                account.account_class, "only Class III balances may buy investment products"
            )
        agreements.require_warning(
            session,
            payer.id,
            "investment_purchase",
            subject=merchant.id,
            now=ctx.now,
            policy=c.warnings,
        )
    transaction_id, verified = _debit(
        session, "payment", account=account, customer=payer, payee=merchant.id,
        amount=cmd.amount, auth=auth, ctx=ctx, c=c,
    )  # fmt: skip
    view = _record(
        session,
        transaction_id=transaction_id,
        type_="payment",
        status="succeeded",
        amount=cmd.amount,
        payer=_customer_party(c.vault, payer, account.id),
        payee=Party(None, merchant.name, merchant.id),
        ctx=ctx,
        auth=auth,
        verified=verified,
        c=c,
        merchant=merchant,
        order_id=cmd.order_id,
        description=cmd.description,
    )
    defer(
        session,
        _INSERT_REFUNDS,
        {"payment_id": transaction_id, "amount": cmd.amount, "refunded": 0},
    )
    return view


# --------------------------------------------------------------------------------- refund


def refund(
    session: Session,
    merchant_id: str,
    payment_id: str,
    amount: int,
    *,
    reason: str | None,
    ctx: Context,
    c: Collaborators,
) -> TransactionView:
    """Refund part or all of a payment to its original payer account (B3, Art. 21)."""
    _check_amount(amount)
    payment = session.get(PaymentTransaction, payment_id)
    if payment is None or payment.type != "payment" or payment.merchant_id != merchant_id:
        raise NotFound("payment", payment_id)
    done = session.execute(
        update(_REFUNDS)
        .where(
            _REFUNDS.c.payment_id == payment_id, _REFUNDS.c.refunded + amount <= _REFUNDS.c.amount
        )
        .values(refunded=_REFUNDS.c.refunded + amount)
    )
    if int(getattr(done, "rowcount", 0) or 0) != 1:
        refunded = session.scalar(
            select(PaymentRefunds.refunded).where(PaymentRefunds.payment_id == payment_id)
        )
        raise RefundExceedsPayment(payment_id, payment.amount, int(refunded or 0), amount)
    payer_account = load(session, payment.debit_account)
    _payee_allowed(payer_account)
    merchant = load_merchant(session, merchant_id)
    payer = kyc.load(session, payer_account.customer_id)
    transaction_id = c.ids.new(IdPrefix.TRANSACTION)
    ledger.post(
        session,
        transaction_id=transaction_id,
        kind="refund",
        currency="CNY",
        legs=[ledger.Leg(merchant.id, payer_account.id, amount)],
        now=ctx.now,
    )
    _hold_if_delayed(session, payer_account, amount, transaction_id, ctx=ctx)
    return _record(
        session,
        transaction_id=transaction_id,
        type_="refund",
        status="succeeded",
        amount=amount,
        payer=Party(None, merchant.name, merchant.id),
        payee=_customer_party(c.vault, payer, payer_account.id),
        ctx=ctx,
        auth=None,
        verified=None,
        c=c,
        merchant=merchant,
        description=(reason or "").strip()[:200] or None,
        original=payment_id,
    )


# ------------------------------------------------------------------------------ bank side


def _own_card(session: Session, card_id: str, customer: Customer) -> BankCard:
    card = session.get(BankCard, card_id)
    if card is None or card.status != "active":
        raise NotFound("bank card", card_id)
    if card.customer_id != customer.id:
        raise NotSameCustomer(
            "Money moves between a payment account and a bank card of the same customer only."
        )
    return card


@dataclass(frozen=True, slots=True)
class TopUpPlan:
    """A checked top-up, ready for the bank's card debit."""

    account_id: str
    card_id: str
    amount: int
    request: BankRequest


def prepare_top_up(
    session: Session, account_id: str, card_id: str, amount: int, *, reference: str, vault: Vault
) -> TopUpPlan:
    """Check a top-up before the bank is asked (R7: the customer's own card)."""
    _check_amount(amount)
    account = load(session, account_id)
    customer = kyc.load(session, account.customer_id)
    if account.status != "active":
        raise AccountNotActive(account.id, account.status)
    if customer.status in {"restricted", "closed"}:
        raise CustomerNotEligible(
            customer.id, f"the customer is {customer.status}", regulation="K7"
        )
    card = _own_card(session, card_id, customer)
    return TopUpPlan(
        account_id=account.id,
        card_id=card.id,
        amount=amount,
        request=BankRequest(
            reference=reference,
            card_number=card_number(vault, card),
            holder_name=_name(vault, customer),
            amount=amount,
            currency="CNY",
        ),
    )


def record_top_up(
    session: Session,
    plan: TopUpPlan,
    answer: BankAnswer,
    auth: Authorisation,
    *,
    ctx: Context,
    c: Collaborators,
) -> TransactionView:
    """Credit the wallet for a debit the bank confirmed (reserve → wallet); refuse a decline."""
    if answer.status != "succeeded":
        raise BankDeclined(answer.reason)
    account = load(session, plan.account_id)
    _payee_allowed(account)
    customer = kyc.load(session, account.customer_id)
    card = _own_card(session, plan.card_id, customer)
    transaction_id = c.ids.new(IdPrefix.TRANSACTION)
    ledger.post(
        session,
        transaction_id=transaction_id,
        kind="top_up",
        currency="CNY",
        legs=[ledger.Leg(RESERVE, account.id, plan.amount)],
        now=ctx.now,
    )
    return _record(
        session,
        transaction_id=transaction_id,
        type_="top_up",
        status="succeeded",
        amount=plan.amount,
        payer=Party(customer.id, _name(c.vault, customer), RESERVE),
        payee=_customer_party(c.vault, customer, account.id),
        ctx=ctx,
        auth=auth,
        verified=None,
        c=c,
        card=card,
        bank_reference=answer.bank_reference,
    )


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """``POST /v1/withdrawals``: to the customer's own card."""

    account_id: str
    bank_card_id: str
    amount: int


def withdraw(
    session: Session, cmd: Withdrawal, auth: Authorisation, *, ctx: Context, c: Collaborators
) -> TransactionView:
    """Debit the wallet into suspense now; the worker asks the bank to pay out (R7)."""
    _check_amount(cmd.amount)
    account = load(session, cmd.account_id)
    customer = kyc.load(session, account.customer_id)
    _payer_allowed(account, customer, withdrawal=True)
    card = _own_card(session, cmd.bank_card_id, customer)
    transaction_id, verified = _debit(
        session, "withdrawal", account=account, customer=customer, payee=card.id,
        amount=cmd.amount, auth=auth, ctx=ctx, c=c,
    )  # fmt: skip
    view = _record(
        session,
        transaction_id=transaction_id,
        type_="withdrawal",
        status="pending",
        amount=cmd.amount,
        payer=_customer_party(c.vault, customer, account.id),
        payee=Party(customer.id, _name(c.vault, customer), SUSPENSE),
        ctx=ctx,
        auth=auth,
        verified=verified,
        c=c,
        card=card,
    )
    publish(session, PAYOUT_REQUESTED, {"transaction_id": transaction_id}, ids=c.ids, now=ctx.now)
    return view


def payout_consumer(bank: BankAdapter, c: Collaborators) -> dict[str, Consumer]:
    """Return the outbox consumer that asks the bank to pay a pending withdrawal out.

    The bank answers a repeated reference once, so a redelivery never pays twice; an
    unavailable bank leaves the event to be retried with backoff.
    """

    def on_payout(session: Session, message: OutboxMessage) -> None:
        transaction_id = str(message.payload["transaction_id"])
        record = session.get(PaymentTransaction, transaction_id, with_for_update=True)
        if record is None or record.status != "pending":
            return
        card = session.get(BankCard, record.bank_card_id)
        customer = session.get(Customer, record.payer_customer_id)
        assert card is not None  # noqa: S101 - a withdrawal names its card
        assert customer is not None  # noqa: S101 - and its customer
        answer: BankAnswer = bank.payout(
            BankRequest(
                reference=transaction_id,
                card_number=card_number(c.vault, card),
                holder_name=_name(c.vault, customer),
                amount=record.amount,
                currency=record.currency,
            )
        )
        ctx = Context(SYSTEM, message.created_at, f"payout:{transaction_id}")
        succeeded = answer.status == "succeeded"
        ledger.post(
            session,
            transaction_id=c.ids.new(IdPrefix.TRANSACTION),
            kind="payout" if succeeded else "payout_returned",
            currency=record.currency,
            legs=[
                ledger.Leg(SUSPENSE, RESERVE if succeeded else record.debit_account, record.amount)
            ],
            now=ctx.now,
        )
        if not succeeded:
            _give_back_class_i(session, record, customer.id)
        session.execute(
            update(table_of(PaymentTransaction))
            .where(PaymentTransaction.id == transaction_id)
            .values(
                status="succeeded" if succeeded else "failed",
                bank_reference=answer.bank_reference,
                completed_at=ctx.now,
            )
        )
        audit.record(
            session,
            ctx,
            audit.AuditAction.PAYOUT_COMPLETED if succeeded else audit.AuditAction.PAYOUT_FAILED,
            target=transaction_id,
            customer_id=customer.id,
            details={"amount": record.amount, "reason": answer.reason},
        )

    return {PAYOUT_REQUESTED: on_payout}


def _give_back_class_i(session: Session, record: PaymentTransaction, customer_id: str) -> None:
    """Give a returned withdrawal's amount back to the Class I lifetime limit."""
    account = session.get(PaymentAccount, record.debit_account)
    if account is None or account.account_class != "I":
        return
    table = table_of(LimitUsage)
    session.execute(
        update(table)
        .where(
            table.c.customer_id == customer_id,
            table.c.rule == "class_i_lifetime",
            table.c.period == "lifetime",
        )
        .values(used=table.c.used - record.amount)
    )


# --------------------------------------------------------------------------------- reading


def transaction_view(row: PaymentTransaction, vault: Vault) -> TransactionView:
    """Return the record of a transaction, names in clear (the API masks them)."""

    def opened(blob: bytes | None, column: str) -> str | None:
        if blob is None:
            return None
        return vault.decrypt(blob, table="payment_transactions", column=column, row_id=row.id)

    payer_name = opened(row.payer_name_enc, "payer_name_enc")
    payee_name = opened(row.payee_name_enc, "payee_name_enc")
    if row.type == "refund":
        payer_name = row.merchant_name
    if row.type == "payment":
        payee_name = row.merchant_name
    return TransactionView(
        id=row.id,
        type=row.type,
        status=row.status,
        amount=row.amount,
        currency=row.currency,
        debit_account=row.debit_account,
        credit_account=row.credit_account,
        payer=Party(row.payer_customer_id, payer_name, row.debit_account),
        payee=Party(row.payee_customer_id, payee_name, row.credit_account),
        merchant_id=row.merchant_id,
        merchant_name=row.merchant_name,
        merchant_code=row.merchant_code,
        mcc=row.mcc,
        bank_card_id=row.bank_card_id,
        bank_card_masked=row.bank_card_masked,
        bank_name=row.bank_name,
        channel=row.channel,
        terminal_type=row.terminal_type,
        authentication=dict(row.authentication),
        purpose=row.purpose,
        order_id=row.order_id,
        description=row.description,
        original_transaction_id=row.original_transaction_id,
        trace_id=row.trace_id,
        bank_reference=row.bank_reference,
        created_at=row.created_at,
        completed_at=row.completed_at,
    )


def get_transaction(session: Session, transaction_id: str) -> PaymentTransaction:
    """Return the record ``transaction_id`` (NotFound if there is none)."""
    row = session.get(PaymentTransaction, transaction_id)
    if row is None:
        raise NotFound("transaction", transaction_id)
    return row


def account_transactions(
    session: Session,
    account_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[PaymentTransaction]:
    """Return the account's transactions (either side), newest first (K6: a year and more)."""
    query = (
        select(PaymentTransaction)
        .where(
            (PaymentTransaction.debit_account == account_id)
            | (PaymentTransaction.credit_account == account_id)
        )
        .order_by(PaymentTransaction.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(PaymentTransaction.created_at >= since)
    if until is not None:
        query = query.where(PaymentTransaction.created_at < until)
    if before_id is not None:
        query = query.where(PaymentTransaction.id < before_id)
    return list(session.scalars(query))
