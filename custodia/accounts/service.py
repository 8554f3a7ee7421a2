"""Opening and closing payment accounts, their status, bank cards and merchants.

- Opening (R3, R4, R5, A1): the customer is verified enough for the class (Class I: one
  external channel; II: three; III: five or face to face; corporate: three or face to
  face), not a financial institution, not restricted or under screening review, and has
  accepted the payment-service agreement in force. Class I only as the customer's first
  account; at most one Class III account (a partial UNIQUE index holds it too).
- Status: compliance freezes and unfreezes (K2); an account closes only at a zero balance;
  a customer who declined the agreement has its accounts put to ``closing`` (withdraw to the
  own card, then close).
- Bank cards (R7, K5): bound only when the holder's name and identity number are the
  customer's; the number is kept as a vault blob, a masked form and a blind index.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key
from stdnum import luhn

from custodia import agreements, kyc, ledger
from custodia.accounts.errors import (
    AccountClassNotPermitted,
    AccountNotActive,
    BalanceNotZero,
    BankCardNotSameName,
    CustomerNotEligible,
    InvalidPaymentRequest,
    VerificationInsufficient,
)
from custodia.accounts.models import BankCard, Merchant, PaymentAccount, PaymentTransaction
from custodia.core import audit
from custodia.core.actors import SYSTEM, Context
from custodia.core.errors import FieldProblem, NotFound
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.masking import mask_card
from custodia.core.outbox import OutboxMessage, publish
from custodia.core.vault import BlindIndexer, Vault
from custodia.kyc.customers import decrypt_field, passed_channels
from custodia.kyc.models import Customer

CARD_INDEX = "card_number"
ACCOUNT_OPENED = "accounts.account_opened"
_CLASS_RANK = {"I": 1, "II": 2, "III": 3}


@dataclass(frozen=True, slots=True)
class AccountView:
    """A payment account with its balances (minor units)."""

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


def _view(session: Session, row: PaymentAccount) -> AccountView:
    balance, available = ledger.balance_of(session, row.id)
    return AccountView(
        id=row.id,
        customer_id=row.customer_id,
        account_class=row.account_class,
        currency=row.currency,
        status=row.status,
        status_reason=row.status_reason,
        balance=balance,
        available=available,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
    )


def load(session: Session, account_id: str, *, for_update: bool = False) -> PaymentAccount:
    """Return the payment account ``account_id`` (NotFound if there is none)."""
    row = session.get(PaymentAccount, account_id, with_for_update=for_update or None)
    if row is None:
        raise NotFound("account", account_id)
    return row


def prefetch(session: Session, *account_ids: str) -> None:
    """Load the accounts and their customers in one query; later reads hit the session.

    A money movement reads both parties' accounts and customers: one round trip instead
    of four. The session holds its objects weakly, so they are kept in ``session.info``
    for the unit of work.
    """
    missing = [
        account_id
        for account_id in account_ids
        if identity_key(PaymentAccount, account_id) not in session.identity_map
    ]
    if missing:
        rows = session.execute(
            select(PaymentAccount, Customer)
            .join(Customer, Customer.id == PaymentAccount.customer_id)
            .where(PaymentAccount.id.in_(missing))
        ).all()
        session.info.setdefault(_PREFETCHED, []).extend(obj for row in rows for obj in row)


_PREFETCHED = "custodia_prefetched"


def view(session: Session, account_id: str) -> AccountView:
    """Return the account with its posted and available balance."""
    return _view(session, load(session, account_id))


def list_for_customer(session: Session, customer_id: str) -> list[AccountView]:
    """Return the customer's accounts, oldest first."""
    rows = session.scalars(
        select(PaymentAccount)
        .where(PaymentAccount.customer_id == customer_id)
        .order_by(PaymentAccount.id)
    ).all()
    return [_view(session, row) for row in rows]


# -------------------------------------------------------------------------------- opening


def _check_eligible(session: Session, customer: Customer, account_class: str) -> None:
    """Refuse a customer or class the rules do not allow (see the module docstring)."""
    if customer.status == "closed":
        raise CustomerNotEligible(customer.id, "the customer relationship has ended")
    if customer.status == "restricted":
        raise CustomerNotEligible(
            customer.id, f"restricted ({customer.restriction_reason or 'by compliance'})"
        )
    if customer.financial_institution:
        raise CustomerNotEligible(
            customer.id, "financial institutions hold no payment accounts", regulation="R4"
        )
    if customer.screening_status in {"potential_match", "confirmed_match"}:
        raise CustomerNotEligible(
            customer.id, "a watchlist match is under compliance review", regulation="K1"
        )
    corporate = customer.type == "corporate"
    if corporate != (account_class == "corporate"):
        raise AccountClassNotPermitted(
            account_class,
            "corporate customers open corporate accounts; individuals Class I, II or III",
        )
    allowed = kyc.max_account_class(customer.type, passed_channels(session, customer))
    rule = "R3" if corporate else "R5"
    if allowed is None or (
        not corporate and _CLASS_RANK[account_class] > _CLASS_RANK.get(allowed, 0)
    ):
        raise VerificationInsufficient(account_class, allowed, rule)


def open_account(
    session: Session,
    customer_id: str,
    account_class: str,
    *,
    currency: str,
    ctx: Context,
    ids: IdGenerator,
) -> AccountView:
    """Open a payment account when every rule allows it (R3–R5, A1); audited."""
    if account_class not in {"I", "II", "III", "corporate"}:
        raise InvalidPaymentRequest([FieldProblem("account_class", "I, II, III or corporate")])
    if currency != "CNY":
        raise InvalidPaymentRequest([FieldProblem("currency", "payment accounts are in CNY")])
    # Locked, so that two openings for one customer see each other (first account, one III).
    customer = kyc.load(session, customer_id, for_update=True)
    _check_eligible(session, customer, account_class)
    existing = session.execute(
        select(PaymentAccount.account_class, PaymentAccount.status).where(
            PaymentAccount.customer_id == customer_id
        )
    ).all()
    if account_class == "I" and existing:
        raise AccountClassNotPermitted("I", "Class I is only for the customer's first account")
    if account_class == "III" and any(c == "III" and s != "closed" for c, s in existing):
        raise AccountClassNotPermitted("III", "a customer holds at most one Class III account")
    consent_id = agreements.require_consent(session, customer_id, now=ctx.now)
    account_id = ids.new(IdPrefix.ACCOUNT)
    ledger.open_account(session, account_id, kind="customer_wallet", currency=currency, now=ctx.now)
    row = PaymentAccount(
        id=account_id,
        customer_id=customer_id,
        account_class=account_class,
        currency=currency,
        status="active",
        status_reason=None,
        consent_id=consent_id,
        opened_at=ctx.now,
        closed_at=None,
        updated_at=ctx.now,
        created_by=str(ctx.actor),
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.ACCOUNT_OPENED,
        target=account_id,
        customer_id=customer_id,
        details={"account_class": account_class, "currency": currency, "consent_id": consent_id},
    )
    publish(
        session,
        ACCOUNT_OPENED,
        {"account_id": account_id, "customer_id": customer_id, "account_class": account_class},
        ids=ids,
        now=ctx.now,
    )
    return AccountView(
        id=account_id,
        customer_id=customer_id,
        account_class=account_class,
        currency=currency,
        status="active",
        status_reason=None,
        balance=0,
        available=0,
        opened_at=ctx.now,
        closed_at=None,
    )


# --------------------------------------------------------------------------------- status


def _set_status(
    session: Session,
    account: PaymentAccount,
    status: str,
    *,
    reason: str | None,
    action: audit.AuditAction,
    ctx: Context,
) -> None:
    before = account.status
    account.status = status
    account.status_reason = reason
    account.updated_at = ctx.now
    if status == "closed":
        account.closed_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        action,
        target=account.id,
        customer_id=account.customer_id,
        details={"from": before, "to": status, "reason": reason},
    )


def freeze(session: Session, account_id: str, *, reason: str, ctx: Context) -> AccountView:
    """Freeze an account: debits are refused at once (K2); audited with the reason."""
    account = load(session, account_id, for_update=True)
    if account.status in {"closed"}:
        raise AccountNotActive(account_id, account.status)
    _set_status(
        session, account, "frozen", reason=reason, action=audit.AuditAction.ACCOUNT_FROZEN, ctx=ctx
    )
    return _view(session, account)


def unfreeze(session: Session, account_id: str, *, reason: str, ctx: Context) -> AccountView:
    """Lift a freeze; the account is active again; audited with the reason."""
    account = load(session, account_id, for_update=True)
    if account.status != "frozen":
        raise AccountNotActive(account_id, account.status)
    _set_status(
        session,
        account,
        "active",
        reason=reason,
        action=audit.AuditAction.ACCOUNT_UNFROZEN,
        ctx=ctx,
    )
    return _view(session, account)


def delay_settlement(session: Session, account_id: str, *, action_id: str, ctx: Context) -> bool:
    """Hold the account's incoming value from now on, under measure ``action_id`` (K2).

    Returns False (and changes nothing) when the account is closed or already delayed.
    Credits are held by :mod:`custodia.accounts.movements` and the PostgreSQL transfer
    function as they are posted; nothing already in the balance is touched.
    """
    account = load(session, account_id, for_update=True)
    if account.status == "closed" or account.settlement_delayed_by is not None:
        return False
    account.settlement_delayed_by = action_id
    account.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.ACCOUNT_SETTLEMENT_DELAYED,
        target=account.id,
        customer_id=account.customer_id,
        details={"measure": action_id},
    )
    return True


def settlement_hold_id(transaction_id: str) -> str:
    """Return the id of the hold on ``transaction_id``'s credit (``hld_`` + its ULID).

    One credit is held at most once, so the hold is named after it; the PostgreSQL transfer
    function names it the same way (migration 0010).
    """
    return f"{IdPrefix.HOLD.value}_{transaction_id.partition('_')[2]}"


def settlement_hold_reference(action_id: str) -> str:
    """Return the ledger reference of the holds a delayed settlement places (K2)."""
    return f"aml:{action_id}"


def release_settlement(
    session: Session, account_id: str, *, reason: str, ctx: Context
) -> int | None:
    """End the account's delayed settlement, release what it held; return the amount (K2).

    Returns None when the account's settlement was not delayed (nothing changes).
    """
    account = load(session, account_id, for_update=True)
    measure = account.settlement_delayed_by
    if measure is None:
        return None
    holds, released = ledger.void_referenced(
        session, settlement_hold_reference(measure), account.id, now=ctx.now
    )
    account.settlement_delayed_by = None
    account.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.ACCOUNT_SETTLEMENT_RELEASED,
        target=account.id,
        customer_id=account.customer_id,
        details={"measure": measure, "reason": reason, "holds": holds, "amount": released},
    )
    return released


def close(session: Session, account_id: str, *, ctx: Context) -> AccountView:
    """Close an account whose balance is zero (409 ``balance_not_zero`` otherwise)."""
    account = load(session, account_id, for_update=True)
    if account.status == "closed":
        raise AccountNotActive(account_id, "closed")
    if account.status == "frozen":
        raise AccountNotActive(account_id, "frozen")
    balance, available = ledger.balance_of(session, account_id)
    if balance != 0 or available != 0:
        raise BalanceNotZero(account_id, balance)
    pending = session.scalar(
        select(PaymentTransaction.id).where(
            PaymentTransaction.debit_account == account_id,
            PaymentTransaction.status == "pending",
        )
    )
    if pending is not None:  # a payout in flight may still come back to this account
        raise AccountNotActive(account_id, "payout_pending")
    _set_status(
        session, account, "closed", reason=None, action=audit.AuditAction.ACCOUNT_CLOSED, ctx=ctx
    )
    return _view(session, account)


def consumers() -> dict[str, Callable[[Session, OutboxMessage], None]]:
    """Return the consumer that puts a customer's accounts to ``closing`` after a refusal.

    The event is delivered at ``service_ends_at`` (A3: the old terms stand until then).
    """

    def on_declined(session: Session, message: OutboxMessage) -> None:
        if message.payload.get("kind") != agreements.PAYMENT_SERVICE:
            return
        customer_id = str(message.payload["customer_id"])
        ctx = Context(SYSTEM, message.created_at, f"declined:{message.id}")
        state = agreements.consent_state(
            session, customer_id, agreements.PAYMENT_SERVICE, now=message.created_at
        )
        if state.satisfied:  # accepted again since: nothing ends
            return
        accounts = session.scalars(
            select(PaymentAccount)
            .where(
                PaymentAccount.customer_id == customer_id,
                PaymentAccount.status.in_(("active", "restricted")),
            )
            .with_for_update()
        ).all()
        for account in accounts:
            _set_status(
                session,
                account,
                "closing",
                reason="agreement_declined",
                action=audit.AuditAction.ACCOUNT_CLOSING,
                ctx=ctx,
            )

    return {agreements.CONSENT_DECLINED: on_declined}


# ------------------------------------------------------------------------------ bank cards


@dataclass(frozen=True, slots=True)
class BindCard:
    """``POST /v1/customers/{id}/bank-cards``."""

    card_number: str
    holder_name: str
    bank_name: str
    holder_id_number: str


@dataclass(frozen=True, slots=True)
class CardView:
    """A bound card, masked."""

    id: str
    customer_id: str
    masked_number: str
    bank_name: str
    status: str
    created_at: datetime


def _card_view(row: BankCard) -> CardView:
    return CardView(
        row.id, row.customer_id, row.masked_number, row.bank_name, row.status, row.created_at
    )


def _same_name(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return "".join(unicodedata.normalize("NFKC", s).casefold().split())

    return norm(a) == norm(b)


def _same_number(a: str, b: str) -> bool:
    return (
        a.replace(" ", "").replace("-", "").upper() == b.replace(" ", "").replace("-", "").upper()
    )


def bind_card(
    session: Session,
    customer_id: str,
    cmd: BindCard,
    *,
    ctx: Context,
    ids: IdGenerator,
    vault: Vault,
    indexer: BlindIndexer,
) -> CardView:
    """Bind the customer's own card (R7): the holder must be the customer; audited."""
    digits = "".join(ch for ch in cmd.card_number if ch.isdigit())
    problems = []
    if not 12 <= len(digits) <= 19 or digits != cmd.card_number.replace(" ", "").replace("-", ""):
        problems.append(FieldProblem("card_number", "12 to 19 digits"))
    elif not luhn.is_valid(digits):
        problems.append(FieldProblem("card_number", "not a valid card number (check digit)"))
    if not cmd.bank_name.strip() or len(cmd.bank_name) > 100:
        problems.append(FieldProblem("bank_name", "1 to 100 characters"))
    if problems:
        raise InvalidPaymentRequest(problems)
    customer = kyc.load(session, customer_id)
    name = decrypt_field(vault, "customers", customer.id, customer.name_enc, "name_enc") or ""
    number = (
        decrypt_field(vault, "customers", customer.id, customer.id_number_enc, "id_number_enc")
        or ""
    )
    mismatch = [
        field
        for field, ok in (
            ("holder_name", _same_name(cmd.holder_name, name)),
            ("holder_id_number", _same_number(cmd.holder_id_number, number)),
        )
        if not ok
    ]
    if mismatch:
        raise BankCardNotSameName(mismatch)
    existing = session.scalar(
        select(BankCard).where(
            BankCard.customer_id == customer_id,
            BankCard.card_index.in_(indexer.candidates(CARD_INDEX, digits)),
        )
    )
    if existing is not None:  # binding the same card again changes nothing
        return _card_view(existing)
    card_id = ids.new(IdPrefix.BANK_CARD)
    row = BankCard(
        id=card_id,
        customer_id=customer_id,
        card_number_enc=vault.encrypt(
            digits, table="bank_cards", column="card_number_enc", row_id=card_id
        ),
        card_index=indexer.compute(CARD_INDEX, digits),
        masked_number=mask_card(digits),
        bank_name=cmd.bank_name.strip(),
        status="active",
        created_at=ctx.now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.BANK_CARD_BOUND,
        target=card_id,
        customer_id=customer_id,
        details={"masked_number": row.masked_number, "bank_name": row.bank_name},
    )
    return _card_view(row)


def list_cards(session: Session, customer_id: str) -> list[CardView]:
    """Return the customer's active cards."""
    rows = session.scalars(
        select(BankCard)
        .where(BankCard.customer_id == customer_id, BankCard.status == "active")
        .order_by(BankCard.id)
    ).all()
    return [_card_view(r) for r in rows]


def card_number(vault: Vault, card: BankCard) -> str:
    """Return a card's number in clear, for the bank call only."""
    return vault.decrypt(
        card.card_number_enc, table="bank_cards", column="card_number_enc", row_id=card.id
    )


# ------------------------------------------------------------------------------- merchants


@dataclass(frozen=True, slots=True)
class NewMerchant:
    """``POST /v1/merchants``."""

    name: str
    legal_customer_id: str
    mcc: str
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class MerchantView:
    """A merchant as the API shows it."""

    id: str
    name: str
    merchant_code: str
    mcc: str
    legal_customer_id: str
    settlement_account_id: str
    webhook_url: str | None
    status: str
    created_at: datetime


def _merchant_view(row: Merchant) -> MerchantView:
    return MerchantView(
        id=row.id,
        name=row.name,
        merchant_code=row.merchant_code,
        mcc=row.mcc,
        legal_customer_id=row.legal_customer_id,
        settlement_account_id=row.id,
        webhook_url=row.webhook_url,
        status=row.status,
        created_at=row.created_at,
    )


def create_merchant(
    session: Session, cmd: NewMerchant, *, ctx: Context, ids: IdGenerator
) -> MerchantView:
    """Register a merchant of an active corporate customer, with its settlement account."""
    problems: list[FieldProblem] = []
    if not cmd.name.strip() or len(cmd.name) > 200:
        problems.append(FieldProblem("name", "1 to 200 characters"))
    if not (len(cmd.mcc) == 4 and cmd.mcc.isdigit()):
        problems.append(FieldProblem("mcc", "a four-digit merchant category code"))
    if cmd.webhook_url is not None and not cmd.webhook_url.startswith(("https://", "http://")):
        problems.append(FieldProblem("webhook_url", "an http(s) URL"))
    customer = session.get(Customer, cmd.legal_customer_id)
    if customer is None:
        problems.append(FieldProblem("legal_customer_id", "there is no customer with this id"))
    elif customer.type != "corporate":
        problems.append(FieldProblem("legal_customer_id", "a merchant is a corporate customer"))
    if problems:
        raise InvalidPaymentRequest(problems)
    assert customer is not None  # noqa: S101 - checked above
    if customer.status != "active":
        raise CustomerNotEligible(customer.id, f"the customer is {customer.status}")
    merchant_id = ids.new(IdPrefix.MERCHANT)
    ledger.open_account(
        session, merchant_id, kind="merchant_settlement", currency="CNY", now=ctx.now
    )
    row = Merchant(
        id=merchant_id,
        name=cmd.name.strip(),
        merchant_code="CM" + merchant_id.split("_", 1)[1][-12:].upper(),
        mcc=cmd.mcc,
        legal_customer_id=customer.id,
        webhook_url=cmd.webhook_url,
        status="active",
        created_by=str(ctx.actor),
        created_at=ctx.now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.MERCHANT_CREATED,
        target=merchant_id,
        customer_id=customer.id,
        details={"name": row.name, "mcc": row.mcc, "merchant_code": row.merchant_code},
    )
    return _merchant_view(row)


def load_merchant(session: Session, merchant_id: str) -> Merchant:
    """Return the merchant ``merchant_id`` (NotFound if there is none)."""
    row = session.get(Merchant, merchant_id)
    if row is None:
        raise NotFound("merchant", merchant_id)
    return row


def merchant_view(session: Session, merchant_id: str) -> MerchantView:
    """Return the merchant as the API shows it."""
    return _merchant_view(load_merchant(session, merchant_id))
