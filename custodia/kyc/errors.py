"""Refusals of the KYC package; each carries what the caller needs to fix the request."""

from __future__ import annotations

from datetime import date

from custodia.core.errors import DomainError, ErrorKind, FieldProblem, InvalidFields

__all__ = [
    "ChannelNotConfigured",
    "ChannelUnavailable",
    "CustomerClosed",
    "CustomerExists",
    "DocumentExpired",
    "FieldProblem",
    "InvalidIdentity",
    "InvalidWatchlist",
    "KycError",
]


class KycError(DomainError):
    """Base of the KYC package's refusals."""


class InvalidIdentity(InvalidFields, KycError):
    """Identity data that fails validation: every bad field is listed (API.md: 422)."""

    title = "The identity data is not valid"
    detail_text = "One or more identity fields are missing or wrong; see errors."


class DocumentExpired(KycError):
    """The identity document's validity has ended (API.md: 422 ``id_document_expired``)."""

    code = "id_document_expired"
    kind = ErrorKind.INVALID
    title = "Identity document expired"

    def __init__(self, field: str, valid_until: date) -> None:
        super().__init__(
            f"The identity document expired on {valid_until.isoformat()}; register the renewed "
            "document.",
            field=field,
            valid_until=valid_until.isoformat(),
        )


class CustomerExists(KycError):
    """This identity document already belongs to a customer (API.md: 409)."""

    code = "customer_exists"
    kind = ErrorKind.CONFLICT
    title = "Customer already registered"

    def __init__(self) -> None:
        super().__init__(
            "A customer with this identity document is already registered: one document, one "
            "customer (Art. 6)."
        )


class ChannelUnavailable(KycError):
    """The external verification channel did not answer; nothing was decided (retry later)."""

    code = "verification_unavailable"
    kind = ErrorKind.UNAVAILABLE
    title = "Verification channel unavailable"
    transient = True

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(
            f"The {channel} channel could not be reached ({reason}); try again later.",
            channel=channel,
        )


class ChannelNotConfigured(KycError):
    """No adapter is configured for the channel in this deployment."""

    code = "channel_not_configured"
    kind = ErrorKind.INVALID
    title = "Verification channel not configured"

    def __init__(self, channel: str) -> None:
        super().__init__(f"No adapter is configured for the {channel} channel.", channel=channel)


class CustomerClosed(KycError):
    """The customer relationship has ended; nothing more can be recorded for it."""

    code = "customer_closed"
    kind = ErrorKind.CONFLICT
    title = "Customer closed"

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"Customer {customer_id} is closed.", customer_id=customer_id)


class InvalidWatchlist(KycError):
    """An uploaded watchlist cannot be read; the lines at fault are named."""

    code = "invalid_watchlist"
    kind = ErrorKind.INVALID
    title = "Watchlist not readable"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "The list was not loaded; fix these lines and upload it again.",
            errors=problems[:50],
            error_count=len(problems),
        )
