"""``/v1/audit``: the audit trail for auditors and compliance staff (API.md "Audit trail")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from custodia.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from custodia.api.runtime import Runtime
from custodia.core import audit
from custodia.core.errors import DomainError, ErrorKind


class ActorOut(msgspec.Struct, kw_only=True):
    """Who acted."""

    kind: str
    id: str


class AuditEventOut(msgspec.Struct, kw_only=True):
    """One audit event.

    ``seq`` is its place in the sealed chain: null for a moment after the operation, until
    the sealer has chained it.
    """

    seq: int | None
    id: int
    at: datetime
    actor: ActorOut
    action: str
    target: str | None
    customer_id: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditEventPage(msgspec.Struct, kw_only=True):
    """A page of events and the cursor of the next one (null on the last page)."""

    items: list[AuditEventOut]
    next_cursor: str | None


class VerifyOut(msgspec.Struct, kw_only=True):
    """The result of recomputing the whole chain."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None
    failure: str | None
    head: str
    sealed: int
    pending: int
    detail: str


class _Position(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    order: Literal["asc", "desc"]


class NaiveTimestamp(DomainError):
    """A timestamp filter without a UTC offset."""

    code = "validation_failed"
    kind = ErrorKind.INVALID
    title = "The request is not valid"

    def __init__(self, field: str) -> None:
        super().__init__(
            "Timestamps need a UTC offset (RFC 3339).",
            errors=[{"field": field, "message": "timestamp without offset"}],
        )


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise NaiveTimestamp(field)
    return value


class AuditController(Controller):
    """Read and verify the audit trail."""

    path = "/v1/audit"
    tags = ["audit"]

    @get("/events", operation_id="audit_events_list", sync_to_thread=True, summary="Audit events")
    def events(
        self,
        *,
        runtime: NamedDependency[Runtime],
        actor: Annotated[str | None, QueryParameter(max_length=100)] = None,
        target: Annotated[str | None, QueryParameter(max_length=100)] = None,
        customer_id: Annotated[str | None, QueryParameter(max_length=40)] = None,
        action: Annotated[str | None, QueryParameter(max_length=100)] = None,
        start: Annotated[datetime | None, QueryParameter(name="from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to")] = None,
        order: Annotated[Literal["asc", "desc"], QueryParameter()] = "desc",
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> AuditEventPage:
        """Events matching the filters, newest first unless ``order=asc``; ``to`` excluded."""
        filters = audit.EventFilter(
            actor=actor,
            target=target,
            customer_id=customer_id,
            action=action,
            start=_aware(start, "from"),
            end=_aware(end, "to"),
        )
        position = decode_cursor(cursor, _Position) if cursor else None
        if position is not None and position.order != order:
            position = None
        newest_first = order == "desc"
        boundary = position.id if position else None
        rows = runtime.db.run(
            lambda s: audit.list_events(
                s,
                filters,
                before_id=boundary if newest_first else None,
                after_id=None if newest_first else boundary,
                limit=limit + 1,
                newest_first=newest_first,
            ),
            read_only=True,
        )
        page = rows[:limit]
        next_cursor = (
            encode_cursor({"id": page[-1].id, "order": order}) if len(rows) > limit else None
        )
        return AuditEventPage(
            items=[
                AuditEventOut(
                    seq=e.seq,
                    id=e.id,
                    at=e.at,
                    actor=ActorOut(kind=e.actor_kind, id=e.actor_id),
                    action=e.action,
                    target=e.target,
                    customer_id=e.customer_id,
                    request_id=e.request_id,
                    details=e.details,
                )
                for e in page
            ],
            next_cursor=next_cursor,
        )

    @get("/verify", operation_id="audit_verify", sync_to_thread=True, summary="Verify the chain")
    def verify(self, runtime: NamedDependency[Runtime]) -> VerifyOut:
        """Recompute every seal; ``ok`` false names the first bad event and why."""
        report = runtime.db.run(lambda s: audit.verify(s, runtime.keys), read_only=True)
        return VerifyOut(
            ok=report.ok,
            events_checked=report.events_checked,
            first_bad_seq=report.first_bad_seq,
            failure=report.failure.value if report.failure else None,
            head=report.head,
            sealed=report.sealed,
            pending=report.pending,
            detail=report.detail,
        )
