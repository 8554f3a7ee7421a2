"""The idempotency store: claim, replay, refusal, expiry, and the race between two requests."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custodia.core.clock import ManualClock
from custodia.core.db import Database
from custodia.core.errors import (
    DomainError,
    ErrorKind,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
)
from custodia.core.idempotency import (
    IdempotencyStore,
    IdempotentRequest,
    StoredResponse,
    canonical_body,
    check_key,
    fingerprint,
    run_idempotent,
)
from custodia.core.ids import IdGenerator
from custodia.core.models import IdempotencyRecord, OutboxEvent
from custodia.core.outbox import publish

STORE = IdempotencyStore(ttl=timedelta(hours=24), lock_wait_ms=100)


class Refused(DomainError):
    code = "refused"
    kind = ErrorKind.INVALID


def _request(key: str = "key-1", body: object = None) -> IdempotentRequest:
    body = {"amount": 100} if body is None else body
    return IdempotentRequest("client:1", key, fingerprint("POST", "/v1/x", canonical_body(body)))


def _refusal(exc: DomainError) -> StoredResponse:
    return StoredResponse(422, exc.code.encode(), "application/problem+json")


def _events(db: Database) -> int:
    return db.run(lambda s: s.execute(select(func.count()).select_from(OutboxEvent)).scalar_one())


def _publishing_work(clock: ManualClock, calls: list[int]):
    def work(session: Session) -> StoredResponse:
        calls.append(1)
        event_id = publish(session, "test", {}, ids=IdGenerator(clock), now=clock.now())
        return StoredResponse(201, event_id.encode(), "application/json")

    return work


@pytest.mark.parametrize("key", ["a", "Order-2026-11-22/42", "x" * 255, "uuid 1f2e"])
def test_well_formed_keys_are_accepted(key: str) -> None:
    assert check_key(key, required=True) == key


@pytest.mark.parametrize("key", ["", " leading-space", "x" * 256, "t\u00e9st", "tab\tkey"])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid):
        check_key(key, required=False)


def test_a_missing_key_is_refused_only_where_required() -> None:
    assert check_key(None, required=False) is None
    with pytest.raises(IdempotencyKeyMissing):
        check_key(None, required=True)


def test_fingerprint_ignores_key_order_but_not_content() -> None:
    a = fingerprint("POST", "/v1/x", canonical_body({"a": 1, "b": [1, 2]}))
    b = fingerprint("POST", "/v1/x", canonical_body({"b": [1, 2], "a": 1}))
    assert a == b
    assert a != fingerprint("POST", "/v1/x", canonical_body({"a": 2, "b": [1, 2]}))
    assert a != fingerprint("POST", "/v1/y", canonical_body({"a": 1, "b": [1, 2]}))
    assert a != fingerprint("PUT", "/v1/x", canonical_body({"a": 1, "b": [1, 2]}))


def test_the_first_request_runs_and_a_retry_replays(db: Database, clock: ManualClock) -> None:
    calls: list[int] = []
    work = _publishing_work(clock, calls)
    first, replayed = run_idempotent(
        db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal
    )
    assert (first.status, replayed) == (201, False)
    again, replayed = run_idempotent(
        db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal
    )
    assert again == first
    assert replayed is True
    assert calls == [1]
    assert _events(db) == 1


def test_the_same_key_with_another_body_is_refused(db: Database, clock: ManualClock) -> None:
    work = _publishing_work(clock, [])
    run_idempotent(db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal)
    with pytest.raises(IdempotencyKeyReused):
        run_idempotent(
            db,
            STORE,
            _request(body={"amount": 101}),
            work,
            now=clock.now(),
            render_refusal=_refusal,
        )
    assert _events(db) == 1


def test_keys_are_scoped_by_caller(db: Database, clock: ManualClock) -> None:
    calls: list[int] = []
    work = _publishing_work(clock, calls)
    mine = _request()
    theirs = IdempotentRequest("client:2", mine.key, mine.fingerprint)
    for request in (mine, theirs):
        run_idempotent(db, STORE, request, work, now=clock.now(), render_refusal=_refusal)
    assert calls == [1, 1]


def test_a_refusal_is_stored_and_replayed(db: Database, clock: ManualClock) -> None:
    """A refused request stays refused under its key, even if it would succeed now."""
    outcomes = iter([Refused("no"), None])

    def work(session: Session) -> StoredResponse:
        error = next(outcomes)
        if error is not None:
            raise error
        return StoredResponse(201, b"ok", "application/json")

    first, replayed = run_idempotent(
        db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal
    )
    assert (first.status, first.body, replayed) == (422, b"refused", False)
    again, replayed = run_idempotent(
        db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal
    )
    assert (again.status, again.body, replayed) == (422, b"refused", True)


def test_transient_errors_are_not_stored(db: Database, clock: ManualClock) -> None:
    def in_flight(session: Session) -> StoredResponse:
        raise IdempotencyKeyInFlight

    with pytest.raises(IdempotencyKeyInFlight):
        run_idempotent(db, STORE, _request(), in_flight, now=clock.now(), render_refusal=_refusal)
    stored = db.run(lambda s: s.execute(select(func.count()).select_from(IdempotencyRecord)))
    assert stored.scalar_one() == 0


def test_a_crash_leaves_no_claim_behind(db: Database, clock: ManualClock) -> None:
    """The claim commits with the work or not at all: after a crash the key is free."""

    def crash(session: Session) -> StoredResponse:
        publish(session, "test", {}, ids=IdGenerator(clock), now=clock.now())
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        run_idempotent(db, STORE, _request(), crash, now=clock.now(), render_refusal=_refusal)
    calls: list[int] = []
    response, replayed = run_idempotent(
        db,
        STORE,
        _request(),
        _publishing_work(clock, calls),
        now=clock.now(),
        render_refusal=_refusal,
    )
    assert (response.status, replayed, calls) == (201, False, [1])
    assert _events(db) == 1


def test_an_expired_key_can_be_used_again(db: Database, clock: ManualClock) -> None:
    calls: list[int] = []
    work = _publishing_work(clock, calls)
    run_idempotent(db, STORE, _request(), work, now=clock.now(), render_refusal=_refusal)
    clock.advance(timedelta(hours=24, seconds=1))
    _, replayed = run_idempotent(
        db, STORE, _request(body={"amount": 7}), work, now=clock.now(), render_refusal=_refusal
    )
    assert replayed is False
    assert calls == [1, 1]


def test_purge_deletes_only_expired_records(db: Database, clock: ManualClock) -> None:
    work = _publishing_work(clock, [])
    run_idempotent(db, STORE, _request("old"), work, now=clock.now(), render_refusal=_refusal)
    clock.advance(timedelta(hours=23))
    run_idempotent(db, STORE, _request("new"), work, now=clock.now(), render_refusal=_refusal)
    clock.advance(timedelta(hours=2))
    assert db.run(lambda s: STORE.purge_expired(s, clock.now())) == 1
    keys = db.run(lambda s: s.execute(select(IdempotencyRecord.key)).scalars().all())
    assert keys == ["new"]


def _race(db: Database, clock: ManualClock, store: IdempotencyStore) -> list[object]:
    """Two threads send the same request under one key while the first is still working."""
    calls: list[int] = []
    started = threading.Event()

    def slow(session: Session) -> StoredResponse:
        calls.append(1)
        event_id = publish(session, "test", {}, ids=IdGenerator(clock), now=clock.now())
        session.flush()
        started.set()
        threading.Event().wait(0.5)
        return StoredResponse(201, event_id.encode(), "application/json")

    results: list[object] = []

    def send(wait_for_first: bool) -> None:
        if wait_for_first:
            started.wait(5)
        try:
            results.append(
                run_idempotent(
                    db, store, _request(), slow, now=clock.now(), render_refusal=_refusal
                )
            )
        except DomainError as exc:
            results.append(exc)

    threads = [threading.Thread(target=send, args=(i == 1,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert calls == [1], "the work ran more than once"
    return results


def test_concurrent_duplicates_execute_once(committing_db: Database, clock: ManualClock) -> None:
    """While one request holds the key, its twin waits and then replays the same response."""
    patient = IdempotencyStore(ttl=timedelta(hours=24), lock_wait_ms=5000)
    results = _race(committing_db, clock, patient)
    assert len(results) == 2
    assert all(isinstance(r, tuple) for r in results)
    responses = {r[0] for r in results}  # type: ignore[index]
    assert len(responses) == 1
    assert sorted(r[1] for r in results) == [False, True]  # type: ignore[index]
    assert _events(committing_db) == 1


@pytest.mark.postgres_only
def test_an_impatient_duplicate_gets_in_flight(committing_db: Database, clock: ManualClock) -> None:
    """On PostgreSQL a duplicate that cannot wait long enough is told the key is in flight."""
    impatient = IdempotencyStore(ttl=timedelta(hours=24), lock_wait_ms=50)
    results = _race(committing_db, clock, impatient)
    assert sum(isinstance(r, IdempotencyKeyInFlight) for r in results) == 1
    assert sum(isinstance(r, tuple) and r[1] is False for r in results) == 1
    assert _events(committing_db) == 1
    # Once the first request has finished, a retry replays its response.
    replay, replayed = run_idempotent(
        committing_db,
        impatient,
        _request(),
        _publishing_work(clock, []),
        now=clock.now(),
        render_refusal=_refusal,
    )
    assert replayed is True
    assert replay.status == 201
