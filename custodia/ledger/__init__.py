"""The double-entry ledger: balances that can never be overdrawn, a journal that never changes.

Knows nothing of customers (DESIGN.md): it moves value between ledger accounts and keeps
the accounting invariants. See :mod:`custodia.ledger.models` for the design.
"""

from custodia.ledger.errors import (
    AlreadyReversed,
    HoldNotActive,
    InsufficientFunds,
    LedgerAccountNotFound,
    LedgerError,
)
from custodia.ledger.posting import (
    Leg,
    authorize,
    balance_of,
    capture,
    expire_holds,
    open_account,
    post,
    reverse,
    system_account_id,
    void,
    void_referenced,
)
from custodia.ledger.reconciliation import Mismatch, Reconciliation, reconcile, replay

__all__ = [
    "AlreadyReversed",
    "HoldNotActive",
    "InsufficientFunds",
    "LedgerAccountNotFound",
    "LedgerError",
    "Leg",
    "Mismatch",
    "Reconciliation",
    "authorize",
    "balance_of",
    "capture",
    "expire_holds",
    "open_account",
    "post",
    "reconcile",
    "replay",
    "reverse",
    "system_account_id",
    "void",
    "void_referenced",
]
