"""The audit trail: recorded in the business transaction, sealed in a chain, tamper-evident."""

from __future__ import annotations

import threading
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context
from custodia.core.audit import AuditAction, Checkpoint, Failure
from custodia.core.clock import ManualClock
from custodia.core.db import Database
from custodia.core.keys import KeyFile, KeyPurpose, generate_key_file, rotate
from custodia.core.models import AuditEvent, AuditInbox
from custodia.core.settings import Environment
from tests.conftest import START, triggers_bypassed

ALICE = Actor(ActorKind.STAFF, "stf_alice")


def _ctx(clock: ManualClock, request_id: str = "req_1") -> Context:
    return Context(ALICE, clock.now(), request_id)


def _write(db: Database, clock: ManualClock, count: int, *, start: int = 0) -> None:
    def work(session: Session) -> None:
        for i in range(start, start + count):
            audit.record(
                session,
                _ctx(clock, f"req_{i}"),
                AuditAction.CLIENT_CREATED,
                target=f"cli_{i:04d}",
                details={"n": i, "name": f"client {i}"},
            )

    db.run(work)


def _seal(db: Database, keys: KeyFile, clock: ManualClock) -> int:
    return db.run(lambda s: audit.seal_pending(s, keys, clock.now()))


def _verify(
    db: Database, keys: KeyFile, checkpoint: Checkpoint | None = None
) -> audit.VerifyReport:
    return db.run(lambda s: audit.verify(s, keys, checkpoint=checkpoint), read_only=True)


def _tamper(db: Database, *statements: str) -> None:
    """Run raw SQL with the append-only triggers switched off, as an intruder could."""

    def work(session: Session) -> None:
        with triggers_bypassed(session.connection()):
            for statement in statements:
                session.execute(text(statement))

    db.run(work)


@pytest.fixture
def chain(db: Database, keys: KeyFile, clock: ManualClock) -> Database:
    """Ten sealed events."""
    _write(db, clock, 10)
    assert _seal(db, keys, clock) == 10
    return db


# ------------------------------------------------------------------------------ writing


def test_an_event_records_actor_action_target_request_and_masked_details(
    db: Database, clock: ManualClock
) -> None:
    db.run(
        lambda s: audit.record(
            s,
            _ctx(clock),
            AuditAction.STAFF_CREATED,
            target="stf_bob",
            details={"id_number": "11010519491231002X", "note": "call 13812345678"},
        )
    )
    event = db.run(lambda s: s.execute(select(AuditInbox)).scalar_one())
    assert (event.actor_kind, event.actor_id, event.action) == (
        "staff",
        "stf_alice",
        "access:staff:created",
    )
    assert (event.target, event.request_id, event.at) == ("stf_bob", "req_1", clock.now())
    assert "11010519491231002X" not in event.details
    assert "13812345678" not in event.details
    assert msgspec.json.decode(event.details)["note"] == "call 138****5678"


def test_an_event_exists_only_if_its_transaction_commits(db: Database, clock: ManualClock) -> None:
    def fails(session: Session) -> None:
        audit.record(session, _ctx(clock), AuditAction.STAFF_LOGIN)
        raise RuntimeError("the business change failed")

    with pytest.raises(RuntimeError):
        db.run(fails)
    assert db.run(lambda s: s.execute(select(AuditInbox)).all()) == []


def test_action_tags_are_source_subject_action() -> None:
    for action in AuditAction:
        assert len(action.value.split(":")) == 3, action


# ------------------------------------------------------------------------------ sealing


def test_sealing_numbers_events_without_gaps_and_verification_passes(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    _write(chain, clock, 5, start=10)
    assert _verify(chain, keys).pending == 5
    assert _seal(chain, keys, clock) == 5
    seqs = chain.run(
        lambda s: s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars().all()
    )
    assert seqs == list(range(1, 16))
    report = _verify(chain, keys)
    assert (report.ok, report.events_checked, report.sealed, report.pending) == (True, 15, 15, 0)
    assert report.first_bad_seq is None


def test_sealing_moves_each_event_unchanged_from_the_inbox(
    db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    """Every column of an inbox event arrives in the trail as written (PostgreSQL moves a
    batch in one statement, its rows as JSON): text that needs escaping, absent fields,
    an instant to the microsecond; the inbox is left empty."""
    clock.advance(timedelta(microseconds=123_457))
    awkward = 'quote " backslash \\ 中文 \U0001f4b0 tab\t end'

    def work(session: Session) -> None:
        audit.record(session, _ctx(clock, awkward), AuditAction.CLIENT_CREATED,
                     target=awkward, customer_id="cus_1", details={"text": awkward})  # fmt: skip
        audit.record(session, Context(ALICE, clock.now()), AuditAction.STAFF_LOGIN)

    db.run(work)
    columns = [getattr(AuditInbox, name) for name in audit._FIELDS[1:]]
    written = db.run(lambda s: s.execute(select(*columns).order_by(AuditInbox.id)).all())
    assert _seal(db, keys, clock) == 2
    stored = [getattr(AuditEvent, name) for name in audit._FIELDS[1:]]
    sealed = db.run(lambda s: s.execute(select(*stored).order_by(AuditEvent.seq)).all())
    assert sealed == written
    assert sealed[0].at == clock.now() and sealed[1].target is None
    assert msgspec.json.decode(sealed[0].details) == {"text": awkward}
    assert db.run(lambda s: s.execute(select(AuditInbox.id)).all()) == []
    assert _verify(db, keys).ok


def test_sealing_with_nothing_pending_does_nothing(
    db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    assert _seal(db, keys, clock) == 0
    assert _verify(db, keys).ok


def test_seals_made_under_an_older_audit_key_still_verify(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    rotated = rotate(keys, KeyPurpose.AUDIT)
    _write(chain, clock, 3, start=10)
    _seal(chain, rotated, clock)
    assert _verify(chain, rotated).ok


@pytest.mark.postgres_only
def test_a_late_commit_is_sealed_after_events_that_committed_before_it(
    committing_db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    """Ids are taken at insert, commits land in another order: the chain never breaks."""
    early_inserted = threading.Event()
    release = threading.Event()

    def slow(session: Session) -> None:
        audit.record(session, _ctx(clock, "req_slow"), AuditAction.STAFF_LOGIN)
        session.flush()  # takes the lower id now ...
        early_inserted.set()
        release.wait(10)  # ... and commits after the other one

    worker = threading.Thread(target=committing_db.run, args=(slow,))
    worker.start()
    assert early_inserted.wait(10)
    _write(committing_db, clock, 1, start=1)
    assert _seal(committing_db, keys, clock) == 1  # only the committed one
    release.set()
    worker.join(10)
    assert _seal(committing_db, keys, clock) == 1
    rows = committing_db.run(
        lambda s: s.execute(
            select(AuditEvent.seq, AuditEvent.request_id).order_by(AuditEvent.seq)
        ).all()
    )
    assert [tuple(r) for r in rows] == [(1, "req_1"), (2, "req_slow")]
    assert _verify(committing_db, keys).ok


@pytest.mark.postgres_only
def test_recording_takes_no_lock_that_unrelated_transactions_wait_for(
    committing_db: Database, clock: ManualClock
) -> None:
    """A transaction that recorded an event and stays open does not block another writer."""
    holding = threading.Event()
    release = threading.Event()

    def long_running(session: Session) -> None:
        audit.record(session, _ctx(clock, "req_long"), AuditAction.STAFF_LOGIN)
        session.flush()
        holding.set()
        release.wait(10)

    worker = threading.Thread(target=committing_db.run, args=(long_running,))
    worker.start()
    assert holding.wait(10)
    done = threading.Event()
    other = threading.Thread(target=lambda: (_write(committing_db, clock, 3), done.set()))
    other.start()
    assert done.wait(5), "an unrelated audit write waited for an open transaction"
    release.set()
    worker.join(10)
    other.join(10)


# ------------------------------------------------------------------------------ append-only


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET details = '{}'",
        "UPDATE audit_events SET hash = hash",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE seq = 10",
    ],
)
def test_the_database_refuses_to_change_sealed_events(chain: Database, statement: str) -> None:
    """Raw SQL, around every Python check: the triggers refuse it."""
    with pytest.raises(DatabaseError, match="append-only"):
        chain.run(lambda s: s.execute(text(statement)))


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_inbox SET actor_id = 'x'", "DELETE FROM audit_inbox"]
)
def test_the_database_refuses_to_change_or_drop_an_unsealed_event(
    db: Database, clock: ManualClock, statement: str
) -> None:
    """Before sealing, an event can neither be edited nor quietly removed from the inbox."""
    _write(db, clock, 2)
    with pytest.raises(DatabaseError, match="append-only"):
        db.run(lambda s: s.execute(text(statement)))


@pytest.mark.postgres_only
@pytest.mark.parametrize("table", ["audit_events", "audit_inbox"])
def test_postgres_refuses_truncate_of_the_trail(chain: Database, table: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"):
        chain.run(lambda s: s.execute(text(f"TRUNCATE {table} CASCADE")))


# ------------------------------------------------------------------------------ tampering


def _expect(report: audit.VerifyReport, failure: Failure, seq: int | None) -> None:
    assert not report.ok
    assert (report.failure, report.first_bad_seq) == (failure, seq), report.detail


def test_one_flipped_byte_in_a_stored_event_is_found_as_modified(
    chain: Database, keys: KeyFile
) -> None:
    _tamper(
        chain,
        "UPDATE audit_events SET details = replace(details, 'client 3', 'client 8') WHERE seq = 4",
    )
    _expect(_verify(chain, keys), Failure.MODIFIED, 4)


def test_a_changed_actor_is_found_as_modified(chain: Database, keys: KeyFile) -> None:
    _tamper(chain, "UPDATE audit_events SET actor_id = 'stf_mallory' WHERE seq = 7")
    _expect(_verify(chain, keys), Failure.MODIFIED, 7)


def test_a_changed_hash_is_found_as_modified(chain: Database, keys: KeyFile) -> None:
    _tamper(
        chain, "UPDATE audit_events SET hash = audit_events.hash || audit_events.hash WHERE seq = 2"
    )
    _expect(_verify(chain, keys), Failure.MODIFIED, 2)


def test_a_deleted_middle_event_is_found_as_missing(chain: Database, keys: KeyFile) -> None:
    _tamper(chain, "DELETE FROM audit_events WHERE seq = 5")
    _expect(_verify(chain, keys), Failure.MISSING, 5)


def test_a_deleted_event_with_the_rest_renumbered_is_found_where_the_numbers_shift(
    chain: Database, keys: KeyFile
) -> None:
    """Closing the gap needs new seqs, and the seq is inside every hash: caught at 5."""
    _tamper(
        chain,
        "DELETE FROM audit_events WHERE seq = 5",
        *[f"UPDATE audit_events SET seq = {seq - 1} WHERE seq = {seq}" for seq in range(6, 11)],
    )
    _expect(_verify(chain, keys), Failure.MODIFIED, 5)


_COLUMNS = "event_id, at, actor_kind, actor_id, action, target, customer_id, request_id, details"


def _swap(db: Database, a: int, b: int, columns: str) -> None:
    _tamper(
        db,
        f"CREATE TEMPORARY TABLE swap AS SELECT * FROM audit_events WHERE seq IN ({a}, {b})",
        f"UPDATE audit_events SET event_id = -event_id WHERE seq IN ({a}, {b})",
        f"UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM swap WHERE swap.seq = {b}) WHERE seq = {a}",
        f"UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM swap WHERE swap.seq = {a}) WHERE seq = {b}",
        "UPDATE audit_events SET event_id = -event_id WHERE event_id < 0",
        "DROP TABLE swap",
    )


def test_two_swapped_events_are_found_as_reordered(chain: Database, keys: KeyFile) -> None:
    _swap(chain, 3, 8, _COLUMNS)
    _expect(_verify(chain, keys), Failure.REORDERED, 3)


def test_swapped_contents_keeping_the_event_ids_are_found_as_reordered(
    chain: Database, keys: KeyFile
) -> None:
    _swap(chain, 2, 6, _COLUMNS.removeprefix("event_id, "))
    _expect(_verify(chain, keys), Failure.REORDERED, 2)


def test_a_chain_recomputed_without_the_key_is_found_at_the_first_change(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    """An intruder edits event 6 and re-chains 6..10 with a key of their own: caught at 6."""
    _tamper(chain, "UPDATE audit_events SET actor_id = 'stf_mallory' WHERE seq = 6")
    forged = generate_key_file(Environment.DEVELOPMENT, START)
    _rechain(chain, forged, from_seq=6)
    _expect(_verify(chain, keys), Failure.MODIFIED, 6)


def _rechain(db: Database, keys: KeyFile, *, from_seq: int) -> None:
    """Recompute every hash from ``from_seq`` on with ``keys`` (bypassing the triggers)."""
    secret = keys.secret(KeyPurpose.AUDIT)
    columns = [getattr(AuditEvent, name) for name in audit._FIELDS]

    def work(session: Session) -> None:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.hash, *columns).order_by(AuditEvent.seq)
        ).all()
        previous = audit.GENESIS
        with triggers_bypassed(session.connection()):
            for row in rows:
                seq, stored, event = row[0], row[1], row[2:]
                if seq >= from_seq:
                    stored = audit._mac(secret, previous, audit.canonical_bytes(seq, *event))
                    session.execute(
                        text("UPDATE audit_events SET hash = :h, key_id = '1' WHERE seq = :s"),
                        {"h": stored, "s": seq},
                    )
                previous = stored

    db.run(work)


# ------------------------------------------------------------------------------ checkpoints


def _checkpoint(db: Database, keys: KeyFile, clock: ManualClock) -> Checkpoint:
    return db.run(lambda s: audit.make_checkpoint(s, keys, clock.now()), read_only=True)


def test_a_chain_that_grew_after_a_checkpoint_still_matches_it(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    checkpoint = _checkpoint(chain, keys, clock)
    assert checkpoint.size == 10
    _write(chain, clock, 4, start=10)
    _seal(chain, keys, clock)
    report = _verify(chain, keys, checkpoint)
    assert report.ok, report.detail
    assert report.checkpoint_size == 10


def test_a_tail_truncated_below_the_checkpoint_is_found(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    checkpoint = _checkpoint(chain, keys, clock)
    _tamper(chain, "DELETE FROM audit_events WHERE seq >= 8")
    assert _verify(chain, keys).ok  # without the checkpoint the shorter chain looks whole
    _expect(_verify(chain, keys, checkpoint), Failure.TRUNCATED, 8)


def test_a_chain_rewritten_with_the_real_key_is_found_by_the_checkpoint(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    """Even an insider holding the audit key cannot rewrite history under a checkpoint."""
    checkpoint = _checkpoint(chain, keys, clock)
    _tamper(chain, "UPDATE audit_events SET actor_id = 'stf_mallory' WHERE seq = 3")
    _rechain(chain, keys, from_seq=3)
    assert _verify(chain, keys).ok
    _expect(_verify(chain, keys, checkpoint), Failure.HEAD_MISMATCH, 10)


def test_a_forged_checkpoint_is_refused(chain: Database, keys: KeyFile, clock: ManualClock) -> None:
    checkpoint = _checkpoint(chain, keys, clock)
    forged = msgspec.structs.replace(checkpoint, size=9)
    _expect(_verify(chain, keys, forged), Failure.BAD_CHECKPOINT, None)


def test_a_checkpoint_verifies_offline_with_its_public_key(
    chain: Database, keys: KeyFile, clock: ManualClock
) -> None:
    import base64  # noqa: PLC0415

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    checkpoint = _checkpoint(chain, keys, clock)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(checkpoint.public_key))
    public.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())


# ------------------------------------------------------------------------------ reading


def test_listing_filters_and_pages_newest_first(chain: Database, clock: ManualClock) -> None:
    def page(**kw: object) -> list[audit.EventView]:
        args: dict[str, object] = {
            "before_id": None,
            "after_id": None,
            "limit": 4,
            "newest_first": True,
        }
        args.update(kw)
        filters = args.pop("filters", audit.EventFilter())
        return list(chain.run(lambda s: audit.list_events(s, filters, **args), read_only=True))  # type: ignore[arg-type]

    first = page()
    assert [e.seq for e in first] == [10, 9, 8, 7]
    second = page(before_id=first[-1].id)
    assert [e.seq for e in second] == [6, 5, 4, 3]
    only = page(filters=audit.EventFilter(target="cli_0004"))
    assert [e.target for e in only] == ["cli_0004"]
    assert only[0].details == {"n": 4, "name": "client 4"}
    asc = page(newest_first=False, limit=2)
    assert [e.seq for e in asc] == [1, 2]


def test_pending_state_reports_the_backlog_and_its_age(
    db: Database, keys: KeyFile, clock: ManualClock
) -> None:
    _write(db, clock, 2)
    clock.advance(timedelta(seconds=3))
    state = db.run(lambda s: audit.pending_state(s, clock.now()))
    assert (state.pending, state.oldest_pending_age_s) == (2, 3.0)
    _seal(db, keys, clock)
    assert db.run(lambda s: audit.pending_state(s, clock.now())).pending == 0


@pytest.mark.parametrize("key_length", [16, 32, 64, 65, 200])
def test_the_fast_hmac_equals_the_standard_one(key_length: int) -> None:
    """The verifier's prepared-state HMAC is RFC 2104 HMAC-SHA256, key lengths included."""
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415
    import os  # noqa: PLC0415

    key = os.urandom(key_length)
    previous, canonical = os.urandom(32), b'[1,2,"x"]'
    expected = hmac.new(key, previous + canonical, hashlib.sha256).digest()
    assert audit._KeyedHmac(key).chain(previous, canonical) == expected


def test_canonical_bytes_are_the_same_whatever_form_the_instant_comes_in(
    clock: ManualClock,
) -> None:
    from datetime import UTC  # noqa: PLC0415

    at = clock.now().replace(microsecond=123456)
    forms = [
        at,
        at.astimezone(UTC).replace(tzinfo=None),
        at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "),
        at.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")),
        audit._micros(at),
    ]
    encoded = {
        audit.canonical_bytes(1, 2, form, "staff", "s", "a:b:c", None, None, None, "{}")
        for form in forms
    }
    assert len(encoded) == 1
