"""Every error leaves as RFC 9457 ``application/problem+json`` with a stable ``code``.

Domain errors map by their kind; Litestar's HTTP exceptions (unknown route, wrong method,
body too large, bad query parameters) and msgspec's decoding errors map here too, and
anything unexpected becomes a 500 problem that carries the request id and nothing of the
internals (the traceback goes to the log, redacted). Every problem carries ``request_id``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from custodia.core.errors import DomainError, ErrorKind
from custodia.core.idempotency import StoredResponse
from custodia.core.logging import context_value, get_logger

PROBLEM_TYPE_BASE = "urn:custodia:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

STATUS_BY_KIND: Mapping[ErrorKind, int] = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.INVALID: 422,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_MANY_REQUESTS: 429,
    ErrorKind.UNAVAILABLE: 503,
}

#: Codes for the HTTP-level errors that Litestar raises before any handler runs.
CODE_BY_STATUS: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

_log = get_logger("custodia.api")


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str | None,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the members of a problem document, request id included."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body["code"] = code
    if extra:
        body.update(extra)
    request_id = context_value("request_id")
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _exception(
    status: int,
    code: str,
    title: str,
    detail: str | None,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemDetailsException:
    body = problem_body(status, code, title, detail, extra=extra)
    extras = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail"}}
    return ProblemDetailsException(
        status_code=status,
        type_=body["type"],
        title=title,
        detail=detail or "",
        extra=extras,
        headers=headers,
    )


def status_of(error: DomainError) -> int:
    """Return the HTTP status of a domain error."""
    return STATUS_BY_KIND[error.kind]


def from_domain_error(exc: DomainError) -> ProblemDetailsException:
    """Map a domain error to its problem (status by kind, extra members from its data)."""
    return _exception(
        status_of(exc),
        exc.code,
        exc.title,
        exc.detail,
        extra=exc.problem_fields(),
        headers=exc.headers() or None,
    )


def render_refusal(exc: DomainError) -> StoredResponse:
    """Render a domain error as the stored response an idempotent request replays."""
    status = status_of(exc)
    body = problem_body(status, exc.code, exc.title, exc.detail, extra=exc.problem_fields())
    return StoredResponse(status, msgspec.json.encode(body), PROBLEM_MEDIA_TYPE)


_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required field|unknown field) `(?P<field>[^`]+)`")


def _field_error(message: str) -> dict[str, str]:
    path = ""
    match = _MSGSPEC_PATH.search(message)
    if match:
        message = message[: match.start()]
        path = match["path"].removeprefix(".")
    named = _NAMED_FIELD.search(message)
    if named:
        path = f"{path}.{named['field']}" if path else named["field"]
    return {"field": path or "$", "message": message}


def from_validation_error(exc: msgspec.ValidationError) -> ProblemDetailsException:
    """Map a body that decoded but broke the schema to 422 with the field and the rule."""
    return _exception(
        422,
        "validation_failed",
        "The request body is not valid",
        "A field is missing, unknown, of the wrong type or out of range.",
        extra={"errors": [_field_error(str(exc))]},
    )


def from_decode_error(exc: msgspec.DecodeError) -> ProblemDetailsException:
    """Map a body that is not JSON to 400."""
    return _exception(400, "malformed_json", "The request body is not valid JSON", str(exc))


#: What to tell the caller for HTTP-level refusals that carry no useful detail of their own.
_DETAIL_BY_STATUS: Mapping[int, str] = {
    404: "There is no resource at this path.",
    405: "This path does not accept this method.",
    413: "The request body is larger than this service accepts.",
    415: "Send the request body as application/json.",
}


def from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    """Map Litestar's HTTP exceptions (routing, size, parameters) to problems."""
    if isinstance(exc, ValidationException):
        errors = [
            {"field": str(item.get("key", "$")), "message": str(item.get("message", ""))}
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, Mapping)
        ]
        return _exception(
            422,
            "validation_failed",
            "The request is not valid",
            "A parameter is missing, of the wrong type or out of range.",
            extra={"errors": errors},
        )
    status = exc.status_code
    code = CODE_BY_STATUS.get(status, "http_error")
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = _DETAIL_BY_STATUS.get(status)
    if detail is None and status < 500 and exc.detail and exc.detail != title:
        detail = exc.detail
    return _exception(status, code, title, detail, headers=exc.headers)


def from_unexpected(exc: Exception) -> ProblemDetailsException:
    """Log an unexpected exception (redacted) and answer 500 without any internals."""
    _log.error("unhandled_exception", exc_info=exc)
    return _exception(
        500,
        "internal_error",
        "Internal server error",
        "The request failed unexpectedly; quote the request_id when reporting it.",
    )


def problem_plugin() -> ProblemDetailsPlugin:
    """Return the Litestar plugin that turns every exception into a problem document."""
    mapping: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
        DomainError: from_domain_error,
        msgspec.ValidationError: from_validation_error,
        msgspec.DecodeError: from_decode_error,
        HTTPException: from_http_exception,
        Exception: from_unexpected,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))
