"""Uploaded watchlists and the per-process screening index built from them (REGULATION.md L3).

Uploading replaces every list named in the file (its entries and a new version), audits the
upload and publishes ``kyc.watchlist_uploaded``, whose consumer re-screens every customer in
batches (:mod:`custodia.kyc.rescreening`). Each process keeps one :class:`ScreeningIndex` in
memory and rebuilds it when the lists' version changes, which it checks with one small query
per screening transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.audit import AuditAction
from custodia.core.ids import IdGenerator
from custodia.core.outbox import publish
from custodia.kyc.models import Watchlist, WatchlistEntry
from custodia.kyc.screening import ListedEntry, Match, ScreeningIndex, UploadedEntry, group_by_list

WATCHLIST_UPLOADED = "kyc.watchlist_uploaded"


@dataclass(frozen=True, slots=True)
class UploadedList:
    """What one upload did to one list."""

    list_id: str
    version: int
    entries: int


def upload(
    session: Session,
    entries: Sequence[UploadedEntry],
    *,
    ctx: Context,
    ids: IdGenerator,
) -> list[UploadedList]:
    """Replace every list named in ``entries`` with its new entries; re-screening follows."""
    results: list[UploadedList] = []
    for list_id, rows in group_by_list(entries).items():
        current = session.get(Watchlist, list_id, with_for_update=True)
        sources = {row.source for row in rows if row.source}
        source = ", ".join(sorted(sources)) if sources else list_id
        if current is None:
            current = Watchlist(
                id=list_id,
                source=source[:200],
                version=1,
                entry_count=len(rows),
                uploaded_by=ctx.actor.id,
                uploaded_at=ctx.now,
            )
            session.add(current)
            session.flush()
        else:
            session.execute(delete(WatchlistEntry).where(WatchlistEntry.list_id == list_id))
            current.version += 1
            current.entry_count = len(rows)
            current.source = source[:200]
            current.uploaded_by = ctx.actor.id
            current.uploaded_at = ctx.now
        session.execute(
            insert(WatchlistEntry),
            [
                {
                    "list_id": list_id,
                    "reference": row.reference,
                    "name": row.name,
                    "aliases": {"names": list(row.aliases)},
                    "date_of_birth": row.date_of_birth,
                    "nationality": row.nationality,
                    "source": row.source,
                }
                for row in rows
            ],
        )
        results.append(UploadedList(list_id, current.version, len(rows)))
        audit.record(
            session,
            ctx,
            AuditAction.WATCHLIST_UPLOADED,
            target=list_id,
            details={"version": current.version, "entries": len(rows), "source": source[:200]},
        )
    publish(
        session,
        WATCHLIST_UPLOADED,
        {"lists": [r.list_id for r in results]},
        ids=ids,
        now=ctx.now,
    )
    return results


def list_version(session: Session) -> tuple[int, int]:
    """Return a value that changes whenever any list is uploaded."""
    total, count = session.execute(
        select(func.coalesce(func.sum(Watchlist.version), 0), func.count())
    ).one()
    return int(total), int(count)


def load_index(session: Session, version: tuple[int, int]) -> ScreeningIndex:
    """Build the screening index from every listed entry."""
    rows = session.execute(
        select(
            WatchlistEntry.id,
            WatchlistEntry.list_id,
            WatchlistEntry.reference,
            WatchlistEntry.name,
            WatchlistEntry.aliases,
            WatchlistEntry.date_of_birth,
            WatchlistEntry.nationality,
        ).order_by(WatchlistEntry.id)
    ).all()
    entries = [
        ListedEntry(
            id=row.id,
            list_id=row.list_id,
            reference=row.reference,
            name=row.name,
            aliases=tuple((row.aliases or {}).get("names", ())),
            date_of_birth=row.date_of_birth,
            nationality=row.nationality,
        )
        for row in rows
    ]
    return ScreeningIndex(entries, version)


class Screener:
    """Screens names against the current lists, keeping the index between transactions."""

    def __init__(
        self,
        threshold: int,
        *,
        check_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.check_interval_s = check_interval_s
        self._monotonic = monotonic
        self._checked_at = -float("inf")
        self._index: ScreeningIndex | None = None
        self._lock = threading.Lock()

    def index(self, session: Session, *, fresh: bool = False) -> ScreeningIndex:
        """Return the index of the lists (rebuilt when they changed).

        Whether they changed is asked at most every ``check_interval_s`` (a new upload is
        used within a second), or every time with ``fresh`` (re-screening after an upload).
        """
        index = self._index
        recently = self._monotonic() - self._checked_at < self.check_interval_s
        if index is not None and recently and not fresh:
            return index
        version = list_version(session)
        self._checked_at = self._monotonic()
        if index is not None and index.version == version:
            return index
        with self._lock:
            if self._index is None or self._index.version != version:
                self._index = load_index(session, version)
            return self._index

    def screen(
        self,
        session: Session,
        name: str,
        *,
        date_of_birth: date | None,
        nationality: str | None,
        fresh: bool = False,
    ) -> list[Match]:
        """Return the list entries ``name`` matches (``fresh``: against the lists as of now)."""
        return self.index(session, fresh=fresh).screen(
            name,
            date_of_birth=date_of_birth,
            nationality=nationality,
            threshold=self.threshold,
        )
