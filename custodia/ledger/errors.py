"""Refusals of the ledger; each carries the figures that explain it."""

from __future__ import annotations

from custodia.core.errors import DomainError, ErrorKind
from custodia.core.rules import article


class LedgerError(DomainError):
    """Base of the ledger's refusals."""


class InsufficientFunds(LedgerError):
    """The debit would overdraw the account (API.md: 422 ``insufficient_funds``; B1)."""

    code = "insufficient_funds"
    kind = ErrorKind.INVALID
    title = "Insufficient funds"

    def __init__(self, account_id: str, available: int, requested: int, currency: str) -> None:
        super().__init__(
            f"Account {account_id} has {available} {currency} (minor units) available; "
            f"{requested} were requested. A payment account is never overdrawn (Art. 3).",
            account_id=account_id,
            available=available,
            requested=requested,
            currency=currency,
            rule="no_overdraft",
            regulation="B1",
            article=article("B1"),
        )


class LedgerAccountNotFound(LedgerError):
    """No ledger account with this id in this currency."""

    code = "ledger_account_not_found"
    kind = ErrorKind.NOT_FOUND
    title = "Ledger account not found"

    def __init__(self, account_id: str, currency: str) -> None:
        super().__init__(
            f"No {currency} ledger account {account_id}.", account_id=account_id, currency=currency
        )


class HoldNotActive(LedgerError):
    """The hold was captured, voided or expired already."""

    code = "hold_not_active"
    kind = ErrorKind.CONFLICT
    title = "Hold not active"

    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(f"Hold {hold_id} is {status}.", hold_id=hold_id, hold_status=status)


class AlreadyReversed(LedgerError):
    """A transaction is reversed at most once."""

    code = "already_reversed"
    kind = ErrorKind.CONFLICT
    title = "Transaction already reversed"

    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            f"Transaction {transaction_id} has been reversed already.",
            transaction_id=transaction_id,
        )
