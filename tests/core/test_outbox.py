"""The transactional outbox: delivery, retries, dead letters, and concurrent workers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from custodia.core.clock import ManualClock
from custodia.core.db import Database
from custodia.core.ids import IdGenerator
from custodia.core.metrics import Metrics
from custodia.core.models import OutboxEvent
from custodia.core.outbox import (
    ConsumerRegistry,
    OutboxMessage,
    OutboxProcessor,
    backlog,
    list_events,
    publish,
    purge_delivered,
    requeue_dead,
    without_consumer,
)


def _publish(
    db: Database, clock: ManualClock, event_type: str = "thing.happened", **payload: object
) -> str:
    return db.run(
        lambda s: publish(s, event_type, payload, ids=IdGenerator(clock), now=clock.now())
    )


def _processor(
    db: Database, registry: ConsumerRegistry, clock: ManualClock, **kwargs: object
) -> OutboxProcessor:
    return OutboxProcessor(db, registry, clock=clock, metrics=Metrics(), **kwargs)  # type: ignore[arg-type]


def _event(db: Database, event_id: str) -> OutboxEvent:
    found = db.run(lambda s: s.get(OutboxEvent, event_id))
    assert found is not None
    return found


def test_events_reach_their_consumer_once(db: Database, clock: ManualClock) -> None:
    seen: list[OutboxMessage] = []
    registry = ConsumerRegistry()
    registry.register("thing.happened", "recorder", lambda _s, m: seen.append(m))
    event_id = _publish(db, clock, n=7)
    clock.advance(timedelta(seconds=3))
    processor = _processor(db, registry, clock)

    assert processor.process_batch() == 1
    assert processor.process_batch() == 0
    assert [(m.id, m.payload, m.attempt) for m in seen] == [(event_id, {"n": 7}, 1)]
    event = _event(db, event_id)
    assert (event.status, event.attempts, event.processed_at) == ("done", 1, clock.now())
    lag_sum = processor.metrics.registry.get_sample_value(
        "custodia_outbox_lag_seconds_sum", {"event_type": "thing.happened"}
    )
    assert lag_sum == 3.0


def test_events_without_a_consumer_wait_apart_from_the_backlog(
    db: Database, clock: ManualClock
) -> None:
    """Unclaimed and uncounted in /metrics' backlog; kept for the consumer a release adds."""
    waiting = _publish(db, clock, "nobody.listens")
    registry = ConsumerRegistry()
    registry.register("thing.happened", "recorder", lambda _s, _m: None)
    assert _processor(db, registry, clock).process_batch() == 0
    clock.advance(timedelta(seconds=90))
    state = db.run(lambda s: backlog(s, clock.now(), registry.event_types()))
    assert (state.pending, state.dead, state.oldest_pending_age_s) == (0, 0, 0.0)
    assert db.run(lambda s: without_consumer(s, registry.event_types())) == {"nobody.listens": 1}

    seen: list[str] = []
    registry.register("nobody.listens", "late", lambda _s, m: seen.append(m.id))
    assert _processor(db, registry, clock).process_batch() == 1
    assert seen == [waiting]
    assert db.run(lambda s: without_consumer(s, registry.event_types())) == {}


def test_the_backlog_counts_due_events_from_when_they_fell_due(
    db: Database, clock: ManualClock
) -> None:
    """An event delivered later (a refusal at the end of its notice) is not late before then."""
    ids = IdGenerator(clock)
    db.run(
        lambda s: publish(
            s,
            "thing.happened",
            {},
            ids=ids,
            now=clock.now(),
            available_at=clock.now() + timedelta(days=30),
        )
    )
    clock.advance(timedelta(days=29))
    state = db.run(lambda s: backlog(s, clock.now(), ["thing.happened"]))
    assert (state.pending, state.oldest_pending_age_s) == (0, 0.0)
    clock.advance(timedelta(days=1, seconds=40))
    state = db.run(lambda s: backlog(s, clock.now(), ["thing.happened"]))
    assert (state.pending, state.oldest_pending_age_s) == (1, 40.0)


def test_event_types_take_turns_so_a_flood_of_one_starves_no_other(
    db: Database, clock: ManualClock
) -> None:
    seen: list[str] = []
    registry = ConsumerRegistry()
    for event_type in ("a.flood", "b.trickle"):
        registry.register(event_type, "recorder", lambda _s, m: seen.append(m.event_type))
    for _ in range(6):
        _publish(db, clock, "a.flood")
    clock.advance(timedelta(seconds=1))
    _publish(db, clock, "b.trickle")  # the youngest event of all
    processor = _processor(db, registry, clock, batch_size=3)

    assert processor.process_batch() == 3  # a.flood's turn: its three oldest
    assert processor.process_batch() == 3  # b.trickle's turn, then a.flood fills the batch
    assert seen == ["a.flood"] * 3 + ["b.trickle"] + ["a.flood"] * 2
    assert processor.process_batch() == 1
    assert processor.process_batch() == 0


def _plans(
    db: Database, run: Callable[[], object], chosen: Callable[[str], bool]
) -> list[list[tuple[str | None, int]]]:
    """Run ``run``; return, per statement ``chosen`` of those it executed, its scans.

    Each scan as (index name or None for a sequential scan, rows its filter removed), from
    ``EXPLAIN ANALYZE`` of the statement run again with its parameters (PostgreSQL).
    """
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, params, _context, _many):  # type: ignore[no-untyped-def]
        if chosen(statement):
            statements.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    plans = []
    with db.engine.begin() as conn:
        for statement, params in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
            nodes, scans = [plan.scalar_one()[0]["Plan"]], []
            while nodes:
                node = nodes.pop()
                nodes += node.get("Plans", [])
                if "Index Name" in node or node["Node Type"].startswith("Seq"):
                    scans.append((node.get("Index Name"), node.get("Rows Removed by Filter", 0)))
            plans.append(scans)
    return plans


def _old_events(db: Database, clock: ManualClock, status: str, event_type: str) -> None:
    """Insert 2,000 events an hour old, around Python, and refresh the statistics."""
    at = clock.now() - timedelta(hours=1)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox_events (id, event_type, payload, status, attempts,"
                " created_at, available_at)"
                " SELECT :prefix || i, :type, '{}', :status, 0, :at, :at"
                " FROM generate_series(1, 2000) AS i"
            ),
            {"prefix": f"evt_{status}", "type": event_type, "status": status, "at": at},
        )
        conn.execute(text("ANALYZE outbox_events"))


@pytest.mark.postgres_only
def test_a_claim_reads_only_the_index_range_of_its_type(
    committing_db: Database, clock: ManualClock
) -> None:
    """The claim's plan, with 2,000 older events of a type nobody consumes.

    Walking the pending events in due order (the index before migration 0015) read all of
    them to reach the first event of a consumed type.
    """
    _old_events(committing_db, clock, "pending", "nobody.listens")
    _publish(committing_db, clock)
    registry = ConsumerRegistry()
    registry.register("thing.happened", "c", lambda _s, _m: None)
    processor = _processor(committing_db, registry, clock)
    plans = _plans(committing_db, processor.process_batch, lambda s: "SKIP LOCKED" in s)
    assert plans == [[("ix_outbox_events_pending", 0)]]


@pytest.mark.postgres_only
def test_the_dead_count_reads_its_own_index_not_the_outbox(
    committing_db: Database, clock: ManualClock
) -> None:
    """Every /metrics counts the dead events: never by reading the delivered ones."""
    _old_events(committing_db, clock, "pending", "nobody.listens")
    _old_events(committing_db, clock, "done", "thing.happened")
    _publish(committing_db, clock)

    def read() -> None:
        committing_db.run(lambda s: backlog(s, clock.now(), ["thing.happened"]))

    # The pending count's plan depends on the outbox's proportions (measured at scale in
    # docs/aml.md); the dead count has an index of what is normally nothing.
    dead_count = _plans(committing_db, read, lambda s: "count(" in s and "min(" not in s)
    assert dead_count == [[("ix_outbox_events_dead", 0)]]


def test_a_failing_consumer_is_retried_with_backoff(db: Database, clock: ManualClock) -> None:
    """The consumer's writes roll back, the error is kept (redacted), the event waits."""
    registry = ConsumerRegistry()
    fail = True

    def flaky(session: Session, message: OutboxMessage) -> None:
        publish(session, "side.effect", {}, ids=IdGenerator(clock), now=clock.now())
        session.flush()
        if fail:
            raise ValueError("card 6222021234567890128 declined")

    registry.register("thing.happened", "flaky", flaky)
    processor = _processor(db, registry, clock, retry_base=timedelta(seconds=10))
    event_id = _publish(db, clock)

    assert processor.process_batch() == 1
    event = _event(db, event_id)
    assert (event.status, event.attempts) == ("pending", 1)
    assert event.available_at == clock.now() + timedelta(seconds=10)
    assert event.last_error is not None
    assert "6222021234567890128" not in event.last_error
    assert "ValueError" in event.last_error
    side_effects = db.run(
        lambda s: s.execute(
            select(func.count()).where(OutboxEvent.event_type == "side.effect")
        ).scalar_one()
    )
    assert side_effects == 0

    assert processor.process_batch() == 0  # not due yet
    clock.advance(timedelta(seconds=10))
    assert processor.process_batch() == 1
    assert _event(db, event_id).available_at == clock.now() + timedelta(seconds=20)

    fail = False
    clock.advance(timedelta(seconds=20))
    assert processor.process_batch() == 1
    event = _event(db, event_id)
    assert (event.status, event.attempts, event.last_error) == ("done", 3, None)


def test_an_event_is_dead_after_its_last_attempt_and_can_be_requeued(
    db: Database, clock: ManualClock
) -> None:
    registry = ConsumerRegistry()

    def broken(_s: Session, _m: OutboxMessage) -> None:
        raise RuntimeError("consumer bug")

    registry.register("thing.happened", "broken", broken)
    processor = _processor(db, registry, clock, max_attempts=3, retry_base=timedelta(0))
    event_id = _publish(db, clock)
    for _ in range(5):
        processor.process_batch()
    event = _event(db, event_id)
    assert (event.status, event.attempts) == ("dead", 3)
    assert db.run(lambda s: backlog(s, clock.now(), ["thing.happened"])).dead == 1
    dead = processor.metrics.registry.get_sample_value(
        "custodia_outbox_events_total", {"event_type": "thing.happened", "outcome": "dead"}
    )
    assert dead == 1

    assert db.run(lambda s: requeue_dead(s, clock.now())) == 1
    event = _event(db, event_id)
    assert (event.status, event.attempts) == ("pending", 0)


def test_consumers_of_one_event_succeed_or_fail_together(db: Database, clock: ManualClock) -> None:
    """Consumers share the event's savepoint: a failing one undoes the other's writes."""
    registry = ConsumerRegistry()

    def writer(session: Session, _m: OutboxMessage) -> None:
        publish(session, "written", {}, ids=IdGenerator(clock), now=clock.now())

    def failer(_s: Session, _m: OutboxMessage) -> None:
        raise RuntimeError("no")

    registry.register("thing.happened", "writer", writer)
    registry.register("thing.happened", "failer", failer)
    _publish(db, clock)
    _processor(db, registry, clock).process_batch()
    written = db.run(
        lambda s: s.execute(
            select(func.count()).where(OutboxEvent.event_type == "written")
        ).scalar_one()
    )
    assert written == 0


def _batch_registry(
    clock: ManualClock, batches: list[list[str]], poison: str | None = None
) -> ConsumerRegistry:
    """A consumer with a batch form; both write one ``handled`` event per event."""

    def handle(session: Session, message: OutboxMessage) -> None:
        if message.payload.get("poison"):
            raise RuntimeError("bad event")
        publish(session, "handled", {"source": message.id}, ids=IdGenerator(clock), now=clock.now())

    def handle_all(session: Session, messages: Sequence[OutboxMessage]) -> None:
        batches.append([m.id for m in messages])
        for message in messages:
            handle(session, message)

    registry = ConsumerRegistry()
    registry.register("thing.happened", "c", handle, batch=handle_all)
    return registry


def _handled(db: Database) -> Counter[str]:
    return Counter(
        db.run(
            lambda s: [
                e.payload["source"]
                for e in s.execute(select(OutboxEvent).where(OutboxEvent.event_type == "handled"))
                .scalars()
                .all()
            ]
        )
    )


def test_a_batch_consumer_takes_consecutive_events_at_once(
    db: Database, clock: ManualClock
) -> None:
    """Consecutive events of its type go to the batch form together, in order, once each."""
    batches: list[list[str]] = []
    ids = []
    for n in range(5):
        ids.append(_publish(db, clock, n=n))
        clock.advance(timedelta(seconds=1))  # one after the other (ids of one instant: random)
    processor = _processor(db, _batch_registry(clock, batches), clock)
    assert processor.process_batch() == 5
    assert batches == [ids]
    assert _handled(db) == Counter(ids)
    assert {_event(db, i).status for i in ids} == {"done"}


def test_a_failing_batch_falls_back_to_one_event_at_a_time(
    db: Database, clock: ManualClock
) -> None:
    """A bad event undoes the batch's savepoint; the others are delivered one by one."""
    batches: list[list[str]] = []
    good = [_publish(db, clock, n=i) for i in range(3)]
    bad = _publish(db, clock, poison=True)
    good.append(_publish(db, clock, n=4))
    processor = _processor(db, _batch_registry(clock, batches), clock)
    assert processor.process_batch() == 5
    assert len(batches) == 1  # tried once together, then event by event
    assert _handled(db) == Counter(good)  # once each: the failed batch left nothing
    assert [_event(db, i).status for i in good] == ["done"] * 4
    failed = _event(db, bad)
    assert (failed.status, failed.attempts) == ("pending", 1)
    assert failed.last_error == "RuntimeError: bad event"


def test_a_crash_in_a_batch_consumer_loses_and_duplicates_nothing(
    committing_db: Database, clock: ManualClock
) -> None:
    """A worker killed inside the batch form commits nothing; the next one does it all."""

    class Killed(BaseException):
        """Stands for the process dying (not an Exception: nothing may catch it)."""

    batches: list[list[str]] = []
    registry = _batch_registry(clock, batches)
    [(_, handle_all)] = registry.batch_consumers_for("thing.happened") or []

    def dying(session: Session, messages: Sequence[OutboxMessage]) -> None:
        handle_all(session, messages[:3])
        raise Killed

    ids = [_publish(committing_db, clock, n=i) for i in range(6)]
    crashing = ConsumerRegistry()
    crashing.register("thing.happened", "c", lambda _s, _m: None, batch=dying)
    with pytest.raises(Killed):
        _processor(committing_db, crashing, clock).process_batch()
    assert committing_db.run(lambda s: backlog(s, clock.now(), ["thing.happened"])).pending == 6
    assert _handled(committing_db) == Counter()

    assert _processor(committing_db, registry, clock).process_batch() == 6
    assert _handled(committing_db) == Counter(ids)


def test_a_consumer_name_is_registered_once() -> None:
    registry = ConsumerRegistry()
    registry.register("a", "x", lambda _s, _m: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", "x", lambda _s, _m: None)


def test_a_crash_mid_batch_loses_and_duplicates_nothing(
    committing_db: Database, clock: ManualClock
) -> None:
    """A worker killed half-way through a batch leaves every event for the next worker."""
    handled: list[str] = []
    crash_on = 5

    class Killed(BaseException):
        """Stands for the process dying (not an Exception: nothing may catch it)."""

    def consumer(session: Session, message: OutboxMessage) -> None:
        if crash_on and len(handled) == crash_on:
            raise Killed
        handled.append(message.id)
        publish(session, "handled", {"source": message.id}, ids=IdGenerator(clock), now=clock.now())

    registry = ConsumerRegistry()
    registry.register("thing.happened", "c", consumer)
    ids = [_publish(committing_db, clock, n=i) for i in range(10)]
    processor = _processor(committing_db, registry, clock)
    with pytest.raises(Killed):
        processor.process_batch()
    assert committing_db.run(lambda s: backlog(s, clock.now(), ["thing.happened"])).pending == 10

    handled.clear()
    crash_on = 0
    assert processor.process_batch() == 10
    sources = committing_db.run(
        lambda s: [
            e.payload["source"]
            for e in s.execute(select(OutboxEvent).where(OutboxEvent.event_type == "handled"))
            .scalars()
            .all()
        ]
    )
    assert sorted(sources) == sorted(ids)


@pytest.mark.postgres_only
def test_two_workers_handle_each_event_exactly_once(
    committing_db: Database, clock: ManualClock
) -> None:
    """SKIP LOCKED: two workers drain one backlog without ever sharing an event."""
    total = 400
    committing_db.run(
        lambda s: [
            publish(s, "thing.happened", {"n": i}, ids=IdGenerator(clock), now=clock.now())
            for i in range(total)
        ]
    )
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def consumer(session: Session, message: OutboxMessage) -> None:
        with lock:
            calls[message.id] += 1
        publish(session, "handled", {"source": message.id}, ids=IdGenerator(clock), now=clock.now())

    registry = ConsumerRegistry()
    registry.register("thing.happened", "c", consumer)
    per_worker = Counter[int]()

    def drain(worker: int) -> None:
        processor = _processor(committing_db, registry, clock, batch_size=10)
        while (handled := processor.process_batch()) > 0:
            per_worker[worker] += handled

    threads = [threading.Thread(target=drain, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert len(calls) == total
    assert set(calls.values()) == {1}
    assert per_worker[0] > 0
    assert per_worker[1] > 0
    assert per_worker[0] + per_worker[1] == total
    handled_sources = committing_db.run(
        lambda s: Counter(
            e.payload["source"]
            for e in s.execute(select(OutboxEvent).where(OutboxEvent.event_type == "handled"))
            .scalars()
            .all()
        )
    )
    assert len(handled_sources) == total
    assert set(handled_sources.values()) == {1}


def test_purge_forgets_only_old_delivered_events(db: Database, clock: ManualClock) -> None:
    registry = ConsumerRegistry()
    registry.register("thing.happened", "c", lambda _s, _m: None)
    old = _publish(db, clock)
    _processor(db, registry, clock).process_batch()
    clock.advance(timedelta(days=8))
    waiting = _publish(db, clock, "nobody.listens")
    assert db.run(lambda s: purge_delivered(s, clock.now() - timedelta(days=7))) == 1
    assert db.run(lambda s: s.get(OutboxEvent, old)) is None
    assert db.run(lambda s: s.get(OutboxEvent, waiting)) is not None


def test_dead_events_are_listed_with_their_error(db: Database, clock: ManualClock) -> None:
    registry = ConsumerRegistry()

    def broken(_s: Session, _m: OutboxMessage) -> None:
        raise RuntimeError("no route to 13812345678")

    registry.register("thing.happened", "broken", broken)
    event_id = _publish(db, clock)
    _publish(db, clock, "nobody.listens")
    _processor(db, registry, clock, max_attempts=1).process_batch()
    dead = db.run(lambda s: list_events(s, "dead"))
    assert [(e.id, e.attempts) for e in dead] == [(event_id, 1)]
    assert dead[0].last_error == "RuntimeError: no route to 138****5678"
    assert [e.event_type for e in db.run(lambda s: list_events(s, "pending"))] == ["nobody.listens"]
