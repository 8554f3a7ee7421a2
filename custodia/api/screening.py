"""``/v1/aml/watchlists`` and ``/v1/aml/screenings``: lists and screening (REGULATION.md L3)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, RawBody
from sqlalchemy import select

from custodia import kyc
from custodia.api.runtime import Runtime
from custodia.api.security import context_of
from custodia.kyc.errors import FieldProblem, InvalidIdentity
from custodia.kyc.models import Watchlist
from custodia.kyc.screening import parse_list
from custodia.kyc.validation import country


class UploadedListOut(msgspec.Struct, kw_only=True):
    """One list as loaded."""

    list_id: str
    version: int
    entries: int


class UploadOut(msgspec.Struct, kw_only=True):
    """What an upload loaded; re-screening of every customer follows in the background."""

    lists: list[UploadedListOut]
    rescreening: str = "queued"


class WatchlistOut(msgspec.Struct, kw_only=True):
    """A loaded list."""

    list_id: str
    source: str
    version: int
    entries: int
    uploaded_by: str
    uploaded_at: datetime


class WatchlistPage(msgspec.Struct, kw_only=True):
    """Every loaded list."""

    items: list[WatchlistOut]
    next_cursor: str | None = None


class ScreeningIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A name to screen, with what helps tell people apart."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    date_of_birth: date | None = None
    nationality: str | None = None  # checked by the handler: ISO 3166-1 alpha-2


class MatchOut(msgspec.Struct, kw_only=True):
    """A listed entry the name matched."""

    list_id: str
    reference: str | None
    name: str
    matched_name: str
    aliases: list[str]
    date_of_birth: str | None
    nationality: str | None
    score: int
    name_score: int


class ScreeningOut(msgspec.Struct, kw_only=True):
    """Matches at or above the threshold, best first."""

    threshold: int
    matches: list[MatchOut]


class ScreeningController(Controller):
    """Watchlists and screening for compliance staff."""

    path = "/v1/aml"
    tags = ["aml"]

    @post(
        "/watchlists",
        operation_id="aml_watchlists_upload",
        status_code=201,
        sync_to_thread=True,
        summary="Upload watchlists (CSV or JSON lines)",
    )
    def upload(
        self, request: Request[Any, Any, Any], body: RawBody, runtime: NamedDependency[Runtime]
    ) -> UploadOut:
        """Replace the lists named in the file; every customer is re-screened afterwards.

        ``Content-Type: text/csv`` (columns list_id, name, aliases separated by ``;``,
        date_of_birth, nationality, source, reference) or ``application/x-ndjson``.
        """
        entries = parse_list(body, request.headers.get("content-type", ""))
        ctx = context_of(request, runtime)
        loaded = runtime.db.run(lambda s: kyc.upload(s, entries, ctx=ctx, ids=runtime.ids))
        return UploadOut(
            lists=[
                UploadedListOut(list_id=r.list_id, version=r.version, entries=r.entries)
                for r in loaded
            ]
        )

    @get(
        "/watchlists",
        operation_id="aml_watchlists_list",
        sync_to_thread=True,
        summary="Loaded watchlists",
    )
    def lists(self, runtime: NamedDependency[Runtime]) -> WatchlistPage:
        """Every loaded list with its version and size."""
        rows = runtime.db.run(
            lambda s: list(s.execute(select(Watchlist).order_by(Watchlist.id)).scalars()),
            read_only=True,
        )
        return WatchlistPage(
            items=[
                WatchlistOut(
                    list_id=w.id,
                    source=w.source,
                    version=w.version,
                    entries=w.entry_count,
                    uploaded_by=w.uploaded_by,
                    uploaded_at=w.uploaded_at,
                )
                for w in rows
            ]
        )

    @post(
        "/screenings",
        operation_id="aml_screen",
        status_code=200,
        sync_to_thread=True,
        summary="Screen a name against the watchlists",
    )
    def screen(
        self, data: JSONBody[ScreeningIn], runtime: NamedDependency[Runtime]
    ) -> ScreeningOut:
        """Return the listed entries the name matches, with scores."""
        nationality = None
        if data.nationality is not None:
            problems: list[FieldProblem] = []
            nationality = country(data.nationality, "nationality", problems)
            if problems:
                raise InvalidIdentity(problems)
        matches = runtime.db.run(
            lambda s: runtime.screener.screen(
                s, data.name, date_of_birth=data.date_of_birth, nationality=nationality, fresh=True
            ),
            read_only=True,
        )
        return ScreeningOut(
            threshold=runtime.screener.threshold,
            matches=[
                MatchOut(
                    list_id=m.entry.list_id,
                    reference=m.entry.reference,
                    name=m.entry.name,
                    matched_name=m.matched_name,
                    aliases=list(m.entry.aliases),
                    date_of_birth=m.entry.date_of_birth,
                    nationality=m.entry.nationality,
                    score=m.score,
                    name_score=m.name_score,
                )
                for m in matches
            ],
        )
