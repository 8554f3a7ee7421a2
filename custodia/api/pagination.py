"""Cursor pagination (API.md "Conventions": ``?limit=`` up to 200 and ``?cursor=``).

A cursor is opaque to clients: URL-safe base64 of a small JSON object saying where the
next page starts. A cursor that does not decode is refused with 422 ``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import msgspec
from litestar.params import QueryParameter

from custodia.core.errors import DomainError, ErrorKind

MAX_LIMIT = 200
DEFAULT_LIMIT = 50

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Items per page (max 200).")]
Cursor = Annotated[
    str | None, QueryParameter(max_length=500, description="`next_cursor` of the previous page.")
]


class InvalidCursor(DomainError):
    """The cursor was not made by this API."""

    code = "invalid_cursor"
    kind = ErrorKind.INVALID
    title = "Invalid cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not one this API returned; start again without it.")


def encode_cursor(position: dict[str, Any]) -> str:
    """Return the opaque cursor for ``position``."""
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(cursor: str, fields: type[msgspec.Struct]) -> Any:
    """Return the position a cursor holds, as a ``fields`` struct; InvalidCursor if bad."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=fields, strict=True)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidCursor from None
