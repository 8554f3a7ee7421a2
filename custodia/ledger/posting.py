"""Posting value between ledger accounts: never overdrawn, always balanced (REGULATION.md B1).

- :func:`post` applies a transaction's legs to the stored balances and writes the journal, in
  the caller's unit of work. Each account's net change is applied once
  (one statement for all of them); a net debit of a no-overdraft account is conditional: it
  succeeds only if ``balance - held`` covers it, so concurrent debits can never overdraw
  (B1, Art. 3).
  The journal rows are plain inserts sent with the commit (``custodia.core.db.defer``).
- Holds (:func:`authorize`, :func:`capture`, :func:`void`, :func:`expire_holds`) reserve value
  without posting it: they lower the available balance only.
- :func:`reverse` posts the mirror image of a transaction as a new transaction, once.

The ledger knows nothing of customers: the accounts module decides *whether* a movement is
allowed (class, limits, factors, status) and then asks the ledger to post it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, insert, or_, select, true, update
from sqlalchemy.orm import Session

from custodia.core.db import defer
from custodia.core.errors import NotFound
from custodia.core.models import table_of
from custodia.core.money import minor_unit_exponent
from custodia.ledger.errors import (
    AlreadyReversed,
    HoldNotActive,
    InsufficientFunds,
    LedgerAccountNotFound,
)
from custodia.ledger.models import (
    OVERDRAWABLE_KINDS,
    LedgerAccount,
    LedgerEntry,
    LedgerHold,
    LedgerTransaction,
)

_ACCOUNTS = table_of(LedgerAccount)
_HOLDS = table_of(LedgerHold)
_LINK_CAPTURE = (
    update(_HOLDS)
    .where(_HOLDS.c.id == bindparam("hold_id"))
    .values(capture_transaction_id=bindparam("transaction_id"))
)
_INSERT_TRANSACTION = insert(LedgerTransaction.__table__).inline()  # type: ignore[arg-type]
_INSERT_ENTRY = insert(LedgerEntry.__table__).inline()  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Leg:
    """``amount`` minor units from ``debit`` to ``credit``."""

    debit: str
    credit: str
    amount: int

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount <= 0:
            raise ValueError(f"a leg moves a positive integer amount, not {self.amount!r}")
        if self.debit == self.credit:
            raise ValueError("a leg moves value between two different accounts")


def system_account_id(kind: str, currency: str) -> str:
    """Return the id of the institution's ``kind`` account in ``currency`` (``reserve:CNY``)."""
    return f"{kind}:{currency}"


#: The institution's own accounts in each currency: the bank side, fee income, suspense.
SYSTEM_ACCOUNTS = ("reserve", "fees", "suspense")


def install_system_accounts(connection: Connection, currency: str, *, now: datetime) -> int:
    """Create the institution's accounts in ``currency`` that do not exist yet; return how many.

    Run by the migration that creates the ledger (for CNY).
    """
    existing = set(
        connection.execute(
            select(_ACCOUNTS.c.id).where(
                _ACCOUNTS.c.id.in_([system_account_id(k, currency) for k in SYSTEM_ACCOUNTS])
            )
        ).scalars()
    )
    rows = [
        {
            "id": system_account_id(kind, currency),
            "kind": kind,
            "currency": currency,
            "allow_overdraft": kind in OVERDRAWABLE_KINDS,
            "balance": 0,
            "held": 0,
            "created_at": now,
        }
        for kind in SYSTEM_ACCOUNTS
        if system_account_id(kind, currency) not in existing
    ]
    if rows:
        connection.execute(insert(_ACCOUNTS), rows)
    return len(rows)


def open_account(
    session: Session, account_id: str, *, kind: str, currency: str, now: datetime
) -> None:
    """Create an empty ledger account; only the bank side and suspense may overdraw."""
    minor_unit_exponent(currency)  # an unknown currency is refused here
    session.execute(
        insert(LedgerAccount).values(
            id=account_id,
            kind=kind,
            currency=currency,
            allow_overdraft=kind in OVERDRAWABLE_KINDS,
            balance=0,
            held=0,
            created_at=now,
        )
    )


def _refusal(session: Session, account_id: str, currency: str, requested: int) -> Exception:
    row = session.execute(
        select(LedgerAccount.balance, LedgerAccount.held).where(
            LedgerAccount.id == account_id, LedgerAccount.currency == currency
        )
    ).first()
    if row is None:
        return LedgerAccountNotFound(account_id, currency)
    return InsufficientFunds(account_id, row.balance - row.held, requested, currency)


def _apply(session: Session, deltas: dict[str, int], currency: str) -> None:
    """Change every balance by its delta in one statement; a decrease only if covered.

    The accounts are named in id order; any account not updated (missing, another
    currency, or a debit the available balance does not cover) refuses the whole posting.
    """
    ids = sorted(deltas)
    change = case(deltas, value=_ACCOUNTS.c.id)
    debited = [account_id for account_id in ids if deltas[account_id] < 0]
    covered = or_(
        _ACCOUNTS.c.allow_overdraft,
        _ACCOUNTS.c.id.not_in(debited) if debited else true(),
        _ACCOUNTS.c.balance - _ACCOUNTS.c.held + change >= 0,
    )
    updated = set(
        session.execute(
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.id.in_(ids), _ACCOUNTS.c.currency == currency, covered)
            .values(balance=_ACCOUNTS.c.balance + change)
            .returning(_ACCOUNTS.c.id)
        ).scalars()
    )
    for account_id in ids:
        if account_id not in updated:
            raise _refusal(session, account_id, currency, -deltas[account_id])


def post(
    session: Session,
    *,
    transaction_id: str,
    kind: str,
    currency: str,
    legs: Sequence[Leg],
    now: datetime,
    reversal_of: str | None = None,
) -> None:
    """Post ``legs`` as one transaction: balances updated, journal written (see module doc).

    Raises InsufficientFunds (nothing is posted: the caller's unit of work rolls back) or
    LedgerAccountNotFound for an account missing in this currency.
    """
    if not legs:
        raise ValueError("a transaction has at least one leg")
    net: dict[str, int] = defaultdict(int)
    for leg in legs:
        net[leg.debit] -= leg.amount
        net[leg.credit] += leg.amount
    moved = {account_id: delta for account_id, delta in net.items() if delta}
    if moved:
        _apply(session, moved, currency)
    defer(
        session,
        _INSERT_TRANSACTION,
        {
            "id": transaction_id,
            "kind": kind,
            "currency": currency,
            "reversal_of": reversal_of,
            "created_at": now,
        },
    )
    for leg in legs:
        defer(
            session,
            _INSERT_ENTRY,
            {
                "transaction_id": transaction_id,
                "debit_account": leg.debit,
                "credit_account": leg.credit,
                "currency": currency,
                "amount": leg.amount,
                "created_at": now,
            },
        )


def balance_of(session: Session, account_id: str) -> tuple[int, int]:
    """Return the account's posted balance and its available balance (posted minus holds)."""
    row = session.execute(
        select(LedgerAccount.balance, LedgerAccount.held).where(LedgerAccount.id == account_id)
    ).first()
    if row is None:
        raise LedgerAccountNotFound(account_id, "")
    return row.balance, row.balance - row.held


# ---------------------------------------------------------------------------------- holds


def authorize(
    session: Session,
    hold_id: str,
    *,
    account_id: str,
    currency: str,
    amount: int,
    expires_at: datetime,
    now: datetime,
    reference: str | None = None,
) -> None:
    """Reserve ``amount`` of the account's available balance until ``expires_at``.

    ``reference`` names what placed the hold, so that :func:`void_referenced` can find it.
    """
    if type(amount) is not int or amount <= 0:
        raise ValueError(f"a hold is a positive integer amount, not {amount!r}")
    result = session.execute(
        update(_ACCOUNTS)
        .where(
            _ACCOUNTS.c.id == account_id,
            _ACCOUNTS.c.currency == currency,
            or_(_ACCOUNTS.c.allow_overdraft, _ACCOUNTS.c.balance - _ACCOUNTS.c.held >= amount),
        )
        .values(held=_ACCOUNTS.c.held + amount)
    )
    if int(getattr(result, "rowcount", 0) or 0) != 1:
        raise _refusal(session, account_id, currency, amount)
    session.execute(
        insert(_HOLDS).values(
            id=hold_id,
            account_id=account_id,
            currency=currency,
            amount=amount,
            status="active",
            expires_at=expires_at,
            created_at=now,
            resolved_at=None,
            capture_transaction_id=None,
            reference=reference,
        )
    )


def _release(session: Session, hold_id: str, *, status: str, now: datetime) -> Any:
    """End an active hold (``captured``, ``voided`` or ``expired``) and free its amount."""
    hold = session.execute(select(_HOLDS).where(_HOLDS.c.id == hold_id).with_for_update()).first()
    if hold is None:
        raise HoldNotActive(hold_id, "unknown")
    if hold.status != "active":
        raise HoldNotActive(hold_id, hold.status)
    if status != "expired" and hold.expires_at <= now:
        raise HoldNotActive(hold_id, "expired")
    session.execute(
        update(_HOLDS).where(_HOLDS.c.id == hold_id).values(status=status, resolved_at=now)
    )
    session.execute(
        update(_ACCOUNTS)
        .where(_ACCOUNTS.c.id == hold.account_id)
        .values(held=_ACCOUNTS.c.held - hold.amount)
    )
    return hold


def capture(
    session: Session,
    hold_id: str,
    *,
    credit: str,
    transaction_id: str,
    kind: str,
    now: datetime,
    amount: int | None = None,
) -> int:
    """Post the held value (or ``amount`` ≤ it) to ``credit``; the rest is released."""
    hold = _release(session, hold_id, status="captured", now=now)
    taken = hold.amount if amount is None else amount
    if type(taken) is not int or not 0 < taken <= hold.amount:
        raise ValueError(f"capture between 1 and {hold.amount}, not {taken!r}")
    post(
        session,
        transaction_id=transaction_id,
        kind=kind,
        currency=hold.currency,
        legs=[Leg(hold.account_id, credit, taken)],
        now=now,
    )
    # After the posting's own (deferred) insert, so that the reference finds it.
    defer(session, _LINK_CAPTURE, {"hold_id": hold_id, "transaction_id": transaction_id})
    return int(taken)


def void(session: Session, hold_id: str, *, now: datetime) -> None:
    """Release a hold without posting anything."""
    _release(session, hold_id, status="voided", now=now)


def void_referenced(
    session: Session, reference: str, account_id: str, *, now: datetime
) -> tuple[int, int]:
    """Release every active hold placed under ``reference`` on the account.

    Returns how many holds were released and their total amount.
    """
    held = session.scalars(
        select(LedgerHold.id)
        .where(
            LedgerHold.reference == reference,
            LedgerHold.account_id == account_id,
            LedgerHold.status == "active",
        )
        .order_by(LedgerHold.id)
    ).all()
    released = [_release(session, hold_id, status="voided", now=now) for hold_id in held]
    return len(released), sum(int(hold.amount) for hold in released)


def expire_holds(session: Session, *, now: datetime, limit: int = 500) -> int:
    """Release up to ``limit`` active holds whose time is up; return how many."""
    due = session.scalars(
        select(LedgerHold.id)
        .where(LedgerHold.status == "active", LedgerHold.expires_at <= now)
        .order_by(LedgerHold.expires_at)
        .limit(limit)
    ).all()
    for hold_id in due:
        _release(session, hold_id, status="expired", now=now)
    return len(due)


# ------------------------------------------------------------------------------ reversals


def reverse(session: Session, transaction_id: str, *, reversal_id: str, now: datetime) -> None:
    """Post the mirror image of a transaction as a new one (never an edit); once only."""
    original = session.get(LedgerTransaction, transaction_id)
    if original is None:
        raise NotFound("transaction", transaction_id)
    done = session.scalar(
        select(LedgerTransaction.id).where(LedgerTransaction.reversal_of == transaction_id)
    )
    if done is not None:
        raise AlreadyReversed(transaction_id)
    entries = session.execute(
        select(LedgerEntry.debit_account, LedgerEntry.credit_account, LedgerEntry.amount)
        .where(LedgerEntry.transaction_id == transaction_id)
        .order_by(LedgerEntry.id)
    ).all()
    post(
        session,
        transaction_id=reversal_id,
        kind="reversal",
        currency=original.currency,
        legs=[Leg(e.credit_account, e.debit_account, e.amount) for e in entries],
        now=now,
        reversal_of=transaction_id,
    )
