"""Domain errors: a stable machine-readable ``code`` plus the data a caller needs.

The domain never speaks HTTP. Each error names its *kind* (invalid input, conflict, not
found …); ``custodia.api.problems`` turns the kind into a status code and the error into an
RFC 9457 problem document whose extra members are :meth:`DomainError.problem_fields`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class ErrorKind(StrEnum):
    """What sort of refusal an error is; the API maps each kind to one status code."""

    BAD_REQUEST = "bad_request"
    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_MANY_REQUESTS = "too_many_requests"
    UNAVAILABLE = "unavailable"


class DomainError(Exception):
    """Base of every refusal the service can explain to its caller.

    Subclasses set ``code``, ``kind`` and ``title`` and pass the data that explains the
    refusal as keyword arguments; those become members of the problem document.
    """

    code: ClassVar[str] = "domain_error"
    kind: ClassVar[ErrorKind] = ErrorKind.INVALID
    title: ClassVar[str] = "The request was refused"
    #: Whether a replay under the same idempotency key should re-run the request instead
    #: of repeating this refusal (true for refusals about the request's own timing).
    transient: ClassVar[bool] = False

    #: Members every problem document has: an error's data may not overwrite them.
    RESERVED: ClassVar[frozenset[str]] = frozenset(
        {"type", "title", "status", "detail", "instance", "code", "request_id"}
    )

    def __init__(self, detail: str, **data: Any) -> None:
        clash = self.RESERVED.intersection(data)
        if clash:
            raise TypeError(f"{type(self).__name__}: {sorted(clash)} are problem members")
        super().__init__(detail)
        self.detail = detail
        self.data = data

    def problem_fields(self) -> dict[str, Any]:
        """Return the extra members of the problem document (always includes ``code``)."""
        return {"code": self.code, **self.data}

    def headers(self) -> dict[str, str]:
        """Return HTTP headers the refusal calls for (``Retry-After`` …); none by default."""
        return {}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field and what is wrong with it (``field`` is the path in the request body)."""

    field: str
    message: str


class InvalidFields(DomainError):
    """Fields of a request that fail validation, each named with what is wrong (422).

    Subclasses give the title and detail that say what kind of data was refused.
    """

    code = "validation_failed"
    kind = ErrorKind.INVALID
    title = "The request is not valid"
    detail_text: ClassVar[str] = "One or more fields are missing or wrong; see errors."

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__(
            self.detail_text, errors=[{"field": p.field, "message": p.message} for p in problems]
        )


class ConfigError(Exception):
    """The service was configured wrongly; the CLI prints the message and exits with 2."""


class NotFound(DomainError):
    """A resource does not exist, or the caller may not know that it exists."""

    code = "not_found"
    kind = ErrorKind.NOT_FOUND
    title = "Not found"

    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(f"No {resource} with id {resource_id}.")


class IdempotencyKeyMissing(DomainError):
    """A request that moves money came without an ``Idempotency-Key`` header."""

    code = "idempotency_key_missing"
    kind = ErrorKind.BAD_REQUEST
    title = "Idempotency-Key header required"
    transient = True

    def __init__(self) -> None:
        super().__init__("This operation requires an Idempotency-Key header.")


class IdempotencyKeyInvalid(DomainError):
    """The ``Idempotency-Key`` header is empty, too long or not printable ASCII."""

    code = "idempotency_key_invalid"
    kind = ErrorKind.BAD_REQUEST
    title = "Invalid Idempotency-Key header"
    transient = True

    def __init__(self, max_length: int) -> None:
        super().__init__(
            f"An Idempotency-Key is 1 to {max_length} printable ASCII characters.",
            max_length=max_length,
        )


class IdempotencyKeyReused(DomainError):
    """The key was already used for a request with a different method, path or body."""

    code = "idempotency_key_reused"
    kind = ErrorKind.INVALID
    title = "Idempotency-Key reused with another request"
    transient = True

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a different request; use a new key for a new "
            "request."
        )


class IdempotencyKeyInFlight(DomainError):
    """Another request with the same key has not finished yet."""

    code = "idempotency_key_in_flight"
    kind = ErrorKind.CONFLICT
    title = "A request with this Idempotency-Key is in flight"
    transient = True

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly to "
            "receive its result."
        )


class Unauthenticated(DomainError):
    """No credential, or one that is unknown, expired or revoked (API.md: 401)."""

    code = "unauthenticated"
    kind = ErrorKind.UNAUTHENTICATED
    title = "Authentication required"
    #: About the credential, not the request: never stored under an idempotency key.
    transient = True

    def __init__(
        self, detail: str = "Send a valid credential in the Authorization header."
    ) -> None:
        super().__init__(detail)


class Forbidden(DomainError):
    """The caller is known but its role may not do this (API.md: 403)."""

    code = "forbidden"
    kind = ErrorKind.FORBIDDEN
    title = "Forbidden"

    def __init__(self, detail: str = "Your role may not perform this operation.") -> None:
        super().__init__(detail)
