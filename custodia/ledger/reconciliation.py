"""Reconciliation and journal replay: the stored balances prove themselves (DESIGN.md invariants).

- :func:`reconcile`: per currency, the prepaid funds the institution owes (customers'
  wallets, merchants' settlement accounts) plus its own fee income and suspense equal the
  money at the reserve bank account; and all balances sum to zero (every entry is balanced).
- :func:`replay`: every stored balance equals what its journal entries add up to, and every
  account's ``held`` equals the sum of its active holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from custodia.ledger.models import LedgerAccount, LedgerEntry, LedgerHold


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One currency's prepaid funds against the reserve account (minor units)."""

    currency: str
    customer_funds: int
    merchant_funds: int
    fees: int
    suspense: int
    reserve: int  # the money at the bank: minus the reserve account's credit-normal balance
    total: int  # the sum of every balance: zero when every entry balanced

    @property
    def difference(self) -> int:
        """Return what the bank holds beyond (or short of) what is owed and earned."""
        return self.reserve - (
            self.customer_funds + self.merchant_funds + self.fees + self.suspense
        )

    @property
    def ok(self) -> bool:
        """Return whether the funds are fully backed and the books balance."""
        return self.difference == 0 and self.total == 0


def reconcile(session: Session) -> list[Reconciliation]:
    """Return the reconciliation of every currency in use."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = session.execute(
        select(
            LedgerAccount.currency, LedgerAccount.kind, func.sum(LedgerAccount.balance)
        ).group_by(LedgerAccount.currency, LedgerAccount.kind)
    )
    for currency, kind, total in rows:
        sums[currency][kind] = int(total or 0)
    return [
        Reconciliation(
            currency=currency,
            customer_funds=by_kind["customer_wallet"],
            merchant_funds=by_kind["merchant_settlement"],
            fees=by_kind["fees"],
            suspense=by_kind["suspense"],
            reserve=-by_kind["reserve"],
            total=sum(by_kind.values()),
        )
        for currency, by_kind in sorted(sums.items())
    ]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An account whose stored figure differs from what the journal or its holds say."""

    account_id: str
    field: str  # "balance" or "held"
    stored: int
    recomputed: int


def replay(session: Session) -> list[Mismatch]:
    """Recompute every balance from the journal and every ``held`` from the holds."""
    moves = union_all(
        select(LedgerEntry.credit_account.label("account"), LedgerEntry.amount.label("amount")),
        select(LedgerEntry.debit_account.label("account"), (-LedgerEntry.amount).label("amount")),
    ).subquery()
    journal = {
        account: int(total or 0)
        for account, total in session.execute(
            select(moves.c.account, func.sum(moves.c.amount)).group_by(moves.c.account)
        )
    }
    holds = {
        account: int(total or 0)
        for account, total in session.execute(
            select(LedgerHold.account_id, func.sum(LedgerHold.amount))
            .where(LedgerHold.status == "active")
            .group_by(LedgerHold.account_id)
        )
    }
    mismatches = []
    for account_id, balance, held in session.execute(
        select(LedgerAccount.id, LedgerAccount.balance, LedgerAccount.held).order_by(
            LedgerAccount.id
        )
    ):
        expected = int(journal.get(account_id) or 0)
        if balance != expected:
            mismatches.append(Mismatch(account_id, "balance", balance, expected))
        expected_held = int(holds.get(account_id) or 0)
        if held != expected_held:
            mismatches.append(Mismatch(account_id, "held", held, expected_held))
    return mismatches
