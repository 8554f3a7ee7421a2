"""Refusals of the accounts module; each carries the data the caller needs (API.md codes)."""

from __future__ import annotations

from custodia.core.errors import DomainError, ErrorKind, InvalidFields
from custodia.core.rules import article


class AccountError(DomainError):
    """Base of the accounts module's refusals."""


class InvalidPaymentRequest(InvalidFields, AccountError):
    """Fields of an account or money-movement request that fail validation."""


class VerificationInsufficient(AccountError):
    """The customer's verification does not allow this account class (R5, R3)."""

    code = "verification_insufficient"
    kind = ErrorKind.INVALID
    title = "Verification insufficient for this account class"

    def __init__(self, requested: str, allowed: str | None, rule: str) -> None:
        super().__init__(
            f"A Class {requested} account needs more verification; the customer may open "
            f"{'Class ' + allowed if allowed else 'no account'} now.",
            requested_class=requested,
            max_account_class=allowed,
            rule="account_class_by_verification",
            regulation=rule,
            article=article(rule),
        )


class CustomerNotEligible(AccountError):
    """The customer may not hold a payment account now (R4, restricted, not verified)."""

    code = "customer_not_eligible"
    kind = ErrorKind.INVALID
    title = "Customer not eligible"

    def __init__(self, customer_id: str, reason: str, *, regulation: str | None = None) -> None:
        fields: dict[str, str] = {"customer_id": customer_id, "reason": reason}
        if regulation is not None:
            fields |= {"regulation": regulation, "article": article(regulation)}
        super().__init__(f"Customer {customer_id} may not do this: {reason}.", **fields)


class AccountClassNotPermitted(AccountError):
    """The account class does not allow this (Class I only first, one Class III, investments)."""

    code = "account_class_not_permitted"
    kind = ErrorKind.INVALID
    title = "Not permitted for this account class"

    def __init__(self, account_class: str, reason: str) -> None:
        super().__init__(
            f"Not permitted for a Class {account_class} account: {reason}.",
            account_class=account_class,
            reason=reason,
            rule="account_class_operations",
            regulation="R5",
            article=article("R5"),
        )


class AccountFrozen(AccountError):
    """A frozen account refuses debits (API.md: 403 ``account_frozen``; K2)."""

    code = "account_frozen"
    kind = ErrorKind.FORBIDDEN
    title = "Account frozen"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"Account {account_id} is frozen.", account_id=account_id)


class AccountNotActive(AccountError):
    """The account is closing or closed (or restricted for this operation)."""

    code = "account_not_active"
    kind = ErrorKind.CONFLICT
    title = "Account not active"

    def __init__(self, account_id: str, status: str) -> None:
        super().__init__(
            f"Account {account_id} is {status}.", account_id=account_id, account_status=status
        )


class LimitExceeded(AccountError):
    """A limit of R5 or K4 would be exceeded (API.md: 422 ``limit_exceeded``)."""

    code = "limit_exceeded"
    kind = ErrorKind.INVALID
    title = "Limit exceeded"

    def __init__(
        self, *, rule: str, regulation: str, period: str, limit: int, used: int, requested: int
    ) -> None:
        super().__init__(
            f"The {rule} limit of {limit} (minor units) for {period} would be exceeded: "
            f"{used} used, {requested} requested.",
            rule=rule,
            regulation=regulation,
            article=article(regulation),
            period=period,
            limit=limit,
            used=used,
            requested=requested,
            remaining=max(limit - used, 0),
        )


class NotSameCustomer(AccountError):
    """A bank card, or account, of someone else (API.md: 422 ``not_same_customer``; R7)."""

    code = "not_same_customer"
    kind = ErrorKind.INVALID
    title = "Not the same customer"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, regulation="R7", article=article("R7"))


class BankCardNotSameName(AccountError):
    """A card whose holder is not the customer (API.md: 422 ``bank_card_not_same_name``)."""

    code = "bank_card_not_same_name"
    kind = ErrorKind.INVALID
    title = "Bank card holder is not the customer"

    def __init__(self, mismatch: list[str]) -> None:
        super().__init__(
            "A bank card is bound only when its holder is the customer (same name and identity "
            "number).",
            mismatch=mismatch,
            regulation="R7",
            article=article("R7"),
        )


class SensitiveDataRejected(AccountError):
    """A body carrying CVV, PIN, track or expiry data (API.md: 422; K5): nothing is kept."""

    code = "sensitive_data_rejected"
    kind = ErrorKind.INVALID
    title = "Sensitive card data rejected"

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            "Card verification codes, PINs, track data and expiry dates are never accepted or "
            "stored; send the card number, holder and bank only.",
            fields=fields,
            regulation="K5",
            article=article("K5"),
        )


class BalanceNotZero(AccountError):
    """An account closes only at a zero balance (API.md: 409 ``balance_not_zero``)."""

    code = "balance_not_zero"
    kind = ErrorKind.CONFLICT
    title = "Balance not zero"

    def __init__(self, account_id: str, balance: int) -> None:
        super().__init__(
            f"Account {account_id} still holds {balance}; withdraw it to a same-name bank card "
            "first.",
            account_id=account_id,
            balance=balance,
        )


class RefundExceedsPayment(AccountError):
    """Refunds of a payment never add up to more than the payment (B3)."""

    code = "refund_exceeds_payment"
    kind = ErrorKind.INVALID
    title = "Refund exceeds the payment"

    def __init__(self, payment_id: str, amount: int, refunded: int, requested: int) -> None:
        super().__init__(
            f"Payment {payment_id} of {amount} has {refunded} refunded; {requested} more would "
            "exceed it.",
            payment_id=payment_id,
            amount=amount,
            refunded=refunded,
            requested=requested,
            remaining=amount - refunded,
            regulation="B3",
            article=article("B3"),
        )


class AuthenticationRequired(AccountError):
    """A debit needs at least one of the customer's factors (B4: identity and intent)."""

    code = "authentication_required"
    kind = ErrorKind.UNAUTHENTICATED
    title = "Customer verification required"

    def __init__(self) -> None:
        super().__init__(
            "Confirm the operation with the customer's factors in authentication.factors "
            "(password, totp, signature).",
            regulation="B4",
            article=article("B4"),
        )


class BankDeclined(AccountError):
    """The bank declined the card debit or payout; nothing was posted."""

    code = "bank_declined"
    kind = ErrorKind.INVALID
    title = "Declined by the bank"

    def __init__(self, reason: str | None) -> None:
        super().__init__(f"The bank declined: {reason or 'no reason given'}.", reason=reason)


class BankUnavailableError(AccountError):
    """The bank did not answer; nothing was posted (retry with the same Idempotency-Key)."""

    code = "bank_unavailable"
    kind = ErrorKind.UNAVAILABLE
    title = "Bank unavailable"
    transient = True

    def __init__(self) -> None:
        super().__init__("The bank did not answer; try again with the same Idempotency-Key.")


class OrderAlreadyPaid(AccountError):
    """A merchant's order id is paid once; a new order needs a new id."""

    code = "order_already_paid"
    kind = ErrorKind.CONFLICT
    title = "Order already paid"

    def __init__(self, merchant_id: str, order_id: str, transaction_id: str) -> None:
        super().__init__(
            f"Order {order_id} of merchant {merchant_id} was paid by {transaction_id}.",
            order_id=order_id,
            transaction_id=transaction_id,
        )
