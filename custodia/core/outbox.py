"""The transactional outbox: events written with the business change, delivered after it.

A service calls :func:`publish` inside its unit of work, so an event exists exactly when the
change that caused it committed. ``custodia worker`` (or the in-process worker in
development) runs :class:`OutboxProcessor`, which delivers events to the consumers
registered for their type:

- A batch is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
  workers share the backlog without ever taking the same event; on SQLite writers are
  serialized by ``BEGIN IMMEDIATE`` and one worker at a time holds the batch.
- Consumers run **in the transaction that marks the event done**, each event in its own
  savepoint. A consumer that only writes to the database therefore takes effect exactly
  once: if the worker dies mid-batch, the whole batch rolls back and is claimed again.
  Consumers that call the outside world must be idempotent themselves (the webhook
  consumer records deliveries and retries them on its own).
- A consumer that fails has its savepoint rolled back; the event is retried later with
  exponential backoff (``outbox_retry_base_s`` … ``outbox_retry_max_s``), its last error is
  kept (redacted), and after ``outbox_max_attempts`` it is marked ``dead`` for an operator
  (``custodia outbox status`` / ``custodia outbox retry``). Serialization failures and
  deadlocks are not a consumer's fault: they re-run the whole batch.
- A worker claims only the event types it has consumers for, so a worker that lacks a
  consumer never swallows events meant for one. Events of a type nobody consumes yet wait
  as ``pending`` for the release that adds a consumer; ``custodia outbox status`` counts
  them apart, and they cost a claim nothing: the pending events are indexed by type first,
  and a batch is claimed one type at a time, oldest first within the type. The types take
  turns going first, so a flood of one type never starves another.
- A consumer may also give a *batch* form (``register(..., batch=...)``): consecutive
  events of its type in a claimed batch then go to it at once, in one savepoint, and are
  marked done together; that lets it read what the events share once. If the batch form
  fails, its savepoint rolls back and those events are delivered one by one as above, so
  a bad event holds up only itself and each event still takes effect exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from custodia.core.clock import Clock
from custodia.core.db import (
    Database,
    defer,
    deferred_mark,
    drop_deferred_since,
    one_of,
    retry_reason,
)
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.logging import get_logger, redact_text
from custodia.core.metrics import Metrics, OutboxBacklog
from custodia.core.models import OutboxEvent

_log = get_logger("custodia.outbox")
_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event as a consumer sees it."""

    id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime
    attempt: int


Consumer = Callable[[Session, OutboxMessage], None]
#: Handles consecutive events of one type at once, as if each had gone to its ``Consumer``.
BatchConsumer = Callable[[Session, Sequence[OutboxMessage]], None]
_INSERT_EVENT = insert(OutboxEvent.__table__).inline()  # type: ignore[arg-type]


def publish(
    session: Session,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    ids: IdGenerator,
    now: datetime,
    available_at: datetime | None = None,
) -> str:
    """Record an event in the current transaction and return its id (``evt_…``).

    ``available_at`` delays delivery until then (default: at once).
    """
    event_id = ids.new(IdPrefix.EVENT)
    # A plain INSERT, not an ORM object: cheaper on every command's path, and nothing
    # reads the event back in the transaction that wrote it.
    defer(
        session,
        _INSERT_EVENT,
        {
            "id": event_id,
            "event_type": event_type,
            "payload": dict(payload),
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "available_at": available_at or now,
        },
    )
    return event_id


@dataclass
class ConsumerRegistry:
    """Which consumers handle which event types, in registration order."""

    _consumers: dict[str, list[tuple[str, Consumer]]] = field(default_factory=dict)
    _batches: dict[str, dict[str, BatchConsumer]] = field(default_factory=dict)

    def register(
        self, event_type: str, name: str, consumer: Consumer, *, batch: BatchConsumer | None = None
    ) -> None:
        """Deliver events of ``event_type`` to ``consumer`` (``name`` appears in logs).

        ``batch``, if given, handles several consecutive events of the type at once with
        the same effect as ``consumer`` on each in turn.
        """
        entries = self._consumers.setdefault(event_type, [])
        if any(existing == name for existing, _ in entries):
            raise ValueError(f"consumer {name!r} is already registered for {event_type!r}")
        entries.append((name, consumer))
        if batch is not None:
            self._batches.setdefault(event_type, {})[name] = batch

    def event_types(self) -> list[str]:
        """Return the event types that have at least one consumer."""
        return sorted(self._consumers)

    def consumers_for(self, event_type: str) -> list[tuple[str, Consumer]]:
        """Return the consumers of ``event_type``."""
        return list(self._consumers.get(event_type, ()))

    def batch_consumers_for(self, event_type: str) -> list[tuple[str, BatchConsumer]] | None:
        """Return the batch forms of every consumer of ``event_type`` (None: not all have one)."""
        batches = self._batches.get(event_type, {})
        entries = self._consumers.get(event_type, [])
        if not entries or any(name not in batches for name, _ in entries):
            return None
        return [(name, batches[name]) for name, _ in entries]


@dataclass(frozen=True, slots=True)
class _Outcome:
    event_type: str
    outcome: str
    lag_s: float


class OutboxProcessor:
    """Claims batches of due events and hands them to their consumers."""

    def __init__(
        self,
        db: Database,
        registry: ConsumerRegistry,
        *,
        clock: Clock,
        metrics: Metrics,
        batch_size: int = 100,
        max_attempts: int = 10,
        retry_base: timedelta = timedelta(seconds=1),
        retry_max: timedelta = timedelta(minutes=15),
    ) -> None:
        self.db = db
        self.registry = registry
        self.clock = clock
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._turn = 0  # which consumed type is claimed first in the next batch

    def backoff(self, attempts: int) -> timedelta:
        """Return how long to wait before attempt ``attempts + 1``."""
        return min(self.retry_max, self.retry_base * (1 << max(attempts - 1, 0)))

    def process_batch(self) -> int:
        """Deliver one batch in one transaction; return how many events were handled."""
        event_types = self.registry.event_types()
        if not event_types:
            return 0
        first = self._turn % len(event_types)
        self._turn += 1
        in_turn = event_types[first:] + event_types[:first]
        outcomes = self.db.run(lambda session: self._deliver(session, in_turn))
        for outcome in outcomes:
            self.metrics.outbox_handled.labels(outcome.event_type, outcome.outcome).inc()
            if outcome.outcome == "done":
                self.metrics.outbox_lag.labels(outcome.event_type).observe(outcome.lag_s)
        return len(outcomes)

    def _claim(self, session: Session, event_types: list[str], now: datetime) -> list[OutboxEvent]:
        """Claim up to ``batch_size`` due events, the types in the order given.

        One statement per type, each a range of ``ix_outbox_events_pending`` (type, due,
        id): one statement for all the types would have to read past the events of every
        other type, consumed or not, to find the oldest.
        """
        claimed: list[OutboxEvent] = []
        for event_type in event_types:
            room = self.batch_size - len(claimed)
            if room <= 0:
                break
            claimed += (
                session.execute(
                    select(OutboxEvent)
                    .where(
                        OutboxEvent.status == "pending",
                        OutboxEvent.event_type == event_type,
                        OutboxEvent.available_at <= now,
                    )
                    .order_by(OutboxEvent.available_at, OutboxEvent.id)
                    .limit(room)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
        return claimed

    def _deliver(self, session: Session, event_types: list[str]) -> list[_Outcome]:
        now = self.clock.now()
        events = self._claim(session, event_types, now)
        # The claim changes nothing in memory: each event's attempt is counted with its
        # outcome, so the savepoints' flushes have nothing of the claim to write, and the
        # events delivered are marked done together by one statement.
        outcomes: list[_Outcome] = []
        done: list[OutboxEvent] = []
        for event_type, run in groupby(events, key=lambda e: e.event_type):
            group = list(run)
            batch = self.registry.batch_consumers_for(event_type)
            if batch is not None and len(group) > 1 and self._together(session, group, batch):
                done += group
                continue
            for event in group:
                failed = self._one(session, event, now)
                if failed is None:
                    done.append(event)
                else:
                    outcomes.append(failed)
        return self._mark_done(session, done) + outcomes

    @staticmethod
    def _message(event: OutboxEvent) -> OutboxMessage:
        return OutboxMessage(
            id=event.id,
            event_type=event.event_type,
            payload=event.payload,
            created_at=event.created_at,
            attempt=event.attempts + 1,  # counted with the outcome
        )

    def _together(
        self, session: Session, events: list[OutboxEvent], batch: list[tuple[str, BatchConsumer]]
    ) -> bool:
        """Run the batch consumers on ``events`` in one savepoint; False if that failed."""
        messages = [self._message(event) for event in events]
        mark = deferred_mark(session)
        try:
            with session.begin_nested():
                for _name, consumer in batch:
                    consumer(session, messages)
        except Exception as exc:
            drop_deferred_since(session, mark)  # the consumers' events went with it
            if retry_reason(exc) is not None:
                raise  # a lost race, not the consumer's fault: re-run the whole batch
            _log.info(
                "outbox_batch_split",
                event_type=events[0].event_type,
                events=len(events),
                error=redact_text(f"{type(exc).__name__}: {exc}")[:200],
            )
            return False
        return True

    def _one(self, session: Session, event: OutboxEvent, now: datetime) -> _Outcome | None:
        """Deliver one event in its own savepoint; None if done, else the failure's outcome.

        A failure schedules a retry (or marks the event dead).
        """
        mark = deferred_mark(session)
        try:
            with session.begin_nested():
                for _name, consumer in self.registry.consumers_for(event.event_type):
                    consumer(session, self._message(event))
        except Exception as exc:
            drop_deferred_since(session, mark)  # the consumer's events went with it
            if retry_reason(exc) is not None:
                raise  # a lost race, not the consumer's fault: re-run the whole batch
            return self._failed(event, exc, now)
        return None

    def _mark_done(self, session: Session, events: list[OutboxEvent]) -> list[_Outcome]:
        """Mark ``events`` done in one statement, each attempt counted; return their outcomes."""
        if not events:
            return []
        processed = self.clock.now()
        session.execute(
            update(OutboxEvent)
            .where(one_of(session, OutboxEvent.id, [event.id for event in events]))
            .values(
                status="done",
                processed_at=processed,
                last_error=None,
                attempts=OutboxEvent.attempts + 1,
            )
            # The claimed objects are not read again before the commit expires them:
            # evaluating the new values on each of them in Python would be wasted.
            .execution_options(synchronize_session=False)
        )
        return [
            _Outcome(e.event_type, "done", max((processed - e.created_at).total_seconds(), 0.0))
            for e in events
        ]

    def _failed(self, event: OutboxEvent, exc: Exception, now: datetime) -> _Outcome:
        event.attempts += 1
        event.last_error = redact_text(f"{type(exc).__name__}: {exc}")[:_MAX_ERROR_CHARS]
        if event.attempts >= self.max_attempts:
            event.status = "dead"
            _log.error(
                "outbox_event_dead",
                event_id=event.id,
                event_type=event.event_type,
                attempts=event.attempts,
                error=event.last_error,
            )
            return _Outcome(event.event_type, "dead", 0.0)
        event.available_at = now + self.backoff(event.attempts)
        _log.warning(
            "outbox_event_failed",
            event_id=event.id,
            event_type=event.event_type,
            attempts=event.attempts,
            retry_at=event.available_at.isoformat(),
            error=event.last_error,
        )
        return _Outcome(event.event_type, "retry", 0.0)


def backlog(session: Session, now: datetime, event_types: Sequence[str]) -> OutboxBacklog:
    """Return what waits for the consumers of ``event_types``, and how many events are dead.

    ``pending`` counts the events of those types that are due (an event delivered later,
    such as a refusal's at the end of its notice, is not late before then); the oldest
    one's age is counted from when it became due, or from its next attempt after a
    failure. Events of other types are not read: a type nobody consumes would otherwise
    make the backlog grow, and its age alarm, forever (see :func:`without_consumer`).
    """
    pending, oldest = session.execute(
        select(func.count(), func.min(OutboxEvent.available_at)).where(
            OutboxEvent.status == "pending",
            OutboxEvent.event_type.in_(list(event_types)),
            OutboxEvent.available_at <= now,
        )
    ).one()
    dead = session.execute(select(func.count()).where(OutboxEvent.status == "dead")).scalar_one()
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return OutboxBacklog(pending=int(pending), dead=int(dead), oldest_pending_age_s=max(age, 0.0))


def without_consumer(session: Session, event_types: Sequence[str]) -> dict[str, int]:
    """Return how many events of each type outside ``event_types`` wait, by type.

    These wait for a consumer a later release adds; no worker claims them meanwhile. Their
    count reads every one of them, so it is for an operator's question, not for metrics.
    """
    rows = session.execute(
        select(OutboxEvent.event_type, func.count())
        .where(
            OutboxEvent.status == "pending",
            OutboxEvent.event_type.not_in(list(event_types)),
        )
        .group_by(OutboxEvent.event_type)
        .order_by(OutboxEvent.event_type)
    ).all()
    return {str(event_type): int(count) for event_type, count in rows}


@dataclass(frozen=True, slots=True)
class EventSummary:
    """What an operator sees of one event (the payload stays in the database)."""

    id: str
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    available_at: datetime
    last_error: str | None


def list_events(session: Session, status: str, *, limit: int = 50) -> list[EventSummary]:
    """Return up to ``limit`` events in ``status``, oldest first."""
    rows = session.execute(
        select(OutboxEvent)
        .where(OutboxEvent.status == status)
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
    ).scalars()
    return [
        EventSummary(
            id=e.id,
            event_type=e.event_type,
            status=e.status,
            attempts=e.attempts,
            created_at=e.created_at,
            available_at=e.available_at,
            last_error=e.last_error,
        )
        for e in rows
    ]


def requeue_dead(session: Session, now: datetime, event_id: str | None = None) -> int:
    """Give dead events (or the one named) a fresh set of attempts; return how many."""
    statement = update(OutboxEvent).where(OutboxEvent.status == "dead")
    if event_id is not None:
        statement = statement.where(OutboxEvent.id == event_id)
    result = session.execute(
        statement.values(status="pending", attempts=0, available_at=now).execution_options(
            synchronize_session=False
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def purge_delivered(session: Session, older_than: datetime, *, batch: int = 1000) -> int:
    """Delete up to ``batch`` events delivered before ``older_than``; return how many."""
    old = (
        select(OutboxEvent.id)
        .where(OutboxEvent.status == "done", OutboxEvent.processed_at < older_than)
        .limit(batch)
    )
    result = session.execute(
        delete(OutboxEvent)
        .where(OutboxEvent.id.in_(old))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
