"""The unit of work and its retry loop, against real database races."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from custodia.core.db import (
    Database,
    RetryPolicy,
    Sql,
    create_db_engine,
    one_of,
    retry_reason,
)
from custodia.core.errors import ConfigError
from custodia.core.ids import IdGenerator
from custodia.core.metrics import Metrics
from custodia.core.models import OutboxEvent
from custodia.core.outbox import publish
from custodia.core.settings import parse_database_url
from tests.conftest import make_settings

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


def _retries(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("custodia_db_retries_total", {"reason": reason})
    return value or 0.0


def _event(db: Database) -> str:
    return db.run(lambda s: publish(s, "test.event", {"n": 1}, ids=IdGenerator(), now=NOW))


def _attempts_of(db: Database, event_id: str) -> int:
    return db.run(
        lambda s: s.execute(
            select(OutboxEvent.attempts).where(OutboxEvent.id == event_id)
        ).scalar_one()
    )


def test_one_of_finds_a_batch_of_keys_in_one_parameter_on_postgresql(db: Database) -> None:
    """A hundred keys: the same rows as IN; one array parameter on PostgreSQL, not a hundred."""
    ids = IdGenerator()
    events = db.run(
        lambda s: [publish(s, "test.event", {"n": n}, ids=ids, now=NOW) for n in range(120)]
    )
    wanted = [*events[::2][:100], "evt_unknown"]  # sixty that exist, one that does not

    def found(session: Session) -> tuple[list[str], str]:
        statement = select(OutboxEvent.id).where(one_of(session, OutboxEvent.id, wanted))
        compiled = statement.compile(session.get_bind())
        return sorted(session.execute(statement).scalars()), str(compiled)

    rows, sql = db.run(found)
    assert rows == sorted(events[::2])
    if db.backend == "postgresql":
        assert "= ANY (" in sql
        assert sql.count("%(") == 1
    else:
        assert " IN (" in sql


def test_unit_of_work_rolls_back_unless_committed(db: Database) -> None:
    """Leaving a unit of work without commit() discards its writes."""
    with db.unit_of_work() as uow:
        publish(uow.session, "test.event", {}, ids=IdGenerator(), now=NOW)
        uow.session.flush()
    assert db.run(lambda s: s.query(OutboxEvent).count()) == 0


def test_run_commits_the_work(db: Database) -> None:
    """run() commits what the work wrote and returns its result."""
    event_id = _event(db)
    assert db.run(lambda s: s.get(OutboxEvent, event_id)) is not None


@pytest.mark.postgres_only
def test_serialization_failure_reruns_the_whole_unit(
    committing_db: Database, engine: Engine
) -> None:
    """A 40001 under REPEATABLE READ re-runs the work, which then succeeds; the retry is counted."""
    metrics = Metrics()
    db = Database(engine, observer=metrics, retry=RetryPolicy(attempts=3, base_delay_s=0.001))
    event_id = _event(db)
    calls = 0

    def work(session: Session) -> int:
        nonlocal calls
        calls += 1
        session.execute(select(OutboxEvent.attempts).where(OutboxEvent.id == event_id)).one()
        if calls == 1:  # a concurrent transaction changes the row after our snapshot
            with engine.begin() as other:
                other.execute(
                    text("UPDATE outbox_events SET attempts = attempts + 1 WHERE id = :id"),
                    {"id": event_id},
                )
        session.execute(
            text("UPDATE outbox_events SET attempts = attempts + 10 WHERE id = :id"),
            {"id": event_id},
        )
        return calls

    assert db.run(work, isolation="REPEATABLE READ") == 2
    assert _attempts_of(db, event_id) == 11
    assert _retries(metrics, "serialization_failure") == 1


def _bump(unit: Any, event_id: str) -> None:
    """Add one to an event's attempts through a session or a driver connection."""
    if isinstance(unit, Session):
        unit.execute(
            text("UPDATE outbox_events SET attempts = attempts + 1 WHERE id = :id"),
            {"id": event_id},
        )
    else:
        unit.execute("UPDATE outbox_events SET attempts = attempts + 1 WHERE id = %s", (event_id,))


@pytest.mark.postgres_only
@pytest.mark.parametrize("runner", ["run", "run_driver"])
def test_deadlock_victim_is_retried(committing_db: Database, engine: Engine, runner: str) -> None:
    """Two units locking two rows in opposite order both finish; the deadlock victim re-ran.

    ``run_driver`` is the transfer fast path's unit (a psycopg connection, no ORM).
    """
    metrics = Metrics()
    db = Database(engine, observer=metrics, retry=RetryPolicy(attempts=5, base_delay_s=0.01))
    first, second = _event(db), _event(db)
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def transfer(a: str, b: str) -> None:
        attempts = 0

        def work(unit: Any) -> None:
            nonlocal attempts
            attempts += 1
            _bump(unit, a)
            if attempts == 1:
                barrier.wait()
            _bump(unit, b)

        try:
            getattr(db, runner)(work)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    threads = [
        threading.Thread(target=transfer, args=(first, second)),
        threading.Thread(target=transfer, args=(second, first)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert _attempts_of(db, first) == 2
    assert _attempts_of(db, second) == 2
    assert _retries(metrics, "deadlock") == 1


def test_a_driver_unit_commits_or_if_it_raises_leaves_nothing(
    committing_db: Database, engine: Engine
) -> None:
    """run_driver commits what its work did; an exception rolls it back and reaches the caller.

    On SQLite the work runs on the ``sqlite3`` connection in a ``BEGIN IMMEDIATE``
    transaction, on PostgreSQL on psycopg's.
    """
    db = Database(engine)
    event_id = _event(db)
    mark = "%s" if db.backend == "postgresql" else "?"
    update = f"UPDATE outbox_events SET attempts = {mark} WHERE id = {mark}"

    def work(conn: Any) -> None:
        conn.execute(update, (99, event_id))
        raise LookupError("refused")

    with pytest.raises(LookupError):
        db.run_driver(work)
    assert _attempts_of(db, event_id) == 0
    db.run_driver(lambda conn: conn.execute(update, (3, event_id)))
    assert _attempts_of(db, event_id) == 3


@pytest.mark.sqlite_only
@pytest.mark.parametrize("runner", ["run", "run_driver"])
def test_busy_sqlite_is_retried_until_the_lock_is_released(
    tmp_path: Path, engine: Engine, runner: str
) -> None:
    """A unit that finds the SQLite file locked past its busy timeout backs off and retries.

    ``run_driver`` is the transfer fast path's unit on SQLite (the ``sqlite3`` connection).
    """
    settings = make_settings(tmp_path, str(engine.url), sqlite_busy_timeout_ms=20)
    metrics = Metrics()
    busy_engine = create_db_engine(settings.resolved_database_url, settings)
    db = Database(
        busy_engine,
        observer=metrics,
        retry=RetryPolicy(attempts=30, base_delay_s=0.02, max_delay_s=0.05),
    )
    bumped = _event(db) if runner == "run_driver" else None  # before the file is locked
    holder = sqlite3.connect(
        str(engine.url.database), isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        released.set()

    releaser = threading.Thread(target=release_later)
    releaser.start()
    try:
        if bumped is None:
            event_id = _event(db)
        else:
            event_id = bumped
            db.run_driver(
                lambda c: c.execute("UPDATE outbox_events SET attempts = 7 WHERE id = ?", (bumped,))
            )
    finally:
        releaser.join()
        holder.close()
    assert released.is_set()
    assert _retries(metrics, "sqlite_busy") >= 1
    assert db.run(lambda s: s.get(OutboxEvent, event_id)) is not None
    if bumped is not None:
        assert _attempts_of(db, bumped) == 7
    db.run(lambda s: s.execute(text("DELETE FROM outbox_events WHERE id = :id"), {"id": event_id}))
    busy_engine.dispose()


def _write_in_turns(url: str, var: str, event_id: str, rounds: int) -> None:
    """In its own process: bump the event ``rounds`` times, each write holding the file 5 ms.

    A busy timeout of 1 ms and no retry: a writer that had to poll for the file fails.
    """
    settings = make_settings(Path(var), url, sqlite_busy_timeout_ms=1)
    db = Database(
        create_db_engine(settings.resolved_database_url, settings),
        retry=RetryPolicy(attempts=1),
    )

    def bump(session: Session) -> None:
        session.execute(
            text("UPDATE outbox_events SET attempts = attempts + 1 WHERE id = :id"),
            {"id": event_id},
        )
        time.sleep(0.005)

    for _ in range(rounds):
        db.run(bump)
    db.engine.dispose()


@pytest.mark.sqlite_only
def test_sqlite_writers_of_several_processes_queue_instead_of_polling(
    tmp_path: Path, engine: Engine
) -> None:
    """Two processes writing at once take turns on the lock file: none meets a busy file."""
    import multiprocessing  # noqa: PLC0415

    db = Database(engine)
    event_id = _event(db)
    rounds = 40
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        pool.starmap(
            _write_in_turns, [(str(engine.url), str(tmp_path), event_id, rounds)] * 2
        )  # raises here if either process met "database is locked"
    assert _attempts_of(db, event_id) == 2 * rounds
    assert Path(f"{engine.url.database}.writers").exists()


def test_retries_are_bounded_and_the_last_error_propagates(db: Database) -> None:
    """A unit that always loses the race gives up after the policy's attempts."""
    metrics = Metrics()
    sleeps: list[float] = []
    bounded = Database(
        db.engine,
        observer=metrics,
        retry=RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02),
        sleep=sleeps.append,
        rng=lambda: 1.0,
    )
    calls = 0

    def always_busy(_session: Session) -> None:
        nonlocal calls
        calls += 1
        raise OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(OperationalError):
        bounded.run(always_busy)
    assert calls == 4
    assert sleeps == [0.01, 0.02, 0.02]  # exponential, capped (jitter pinned to its ceiling)
    assert _retries(metrics, "sqlite_busy") == 3
    exhausted = metrics.registry.get_sample_value(
        "custodia_db_retries_exhausted_total", {"reason": "sqlite_busy"}
    )
    assert exhausted == 1


def test_other_database_errors_are_not_retried(db: Database) -> None:
    """An integrity error is the caller's problem: raised at once, never retried."""
    event_id = _event(db)
    calls = 0

    def duplicate(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.add(
            OutboxEvent(
                id=event_id,
                event_type="x",
                payload={},
                status="pending",
                attempts=0,
                created_at=NOW,
                available_at=NOW,
            )
        )
        session.flush()

    with pytest.raises(IntegrityError):
        db.run(duplicate)
    assert calls == 1


def test_retry_reason_classifies_sqlstates() -> None:
    """40001 and 40P01 are retryable, other SQLSTATEs are not."""

    class Fake(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert retry_reason(Fake("40001")) == "serialization_failure"
    assert retry_reason(Fake("40P01")) == "deadlock"
    assert retry_reason(Fake("23505")) is None
    assert retry_reason(sqlite3.OperationalError("database is locked")) == "sqlite_busy"
    assert retry_reason(sqlite3.OperationalError("no such table: x")) is None


def test_sqlite_pragmas_are_set(tmp_path: Path) -> None:
    """The embedded database runs in WAL mode with foreign keys enforced."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'p.db'}")
    eng = create_db_engine(settings.resolved_database_url, settings)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    eng.dispose()


def test_sqlite_writes_take_the_lock_up_front(tmp_path: Path) -> None:
    """A write unit of work holds SQLite's write lock from BEGIN; a read one does not."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'lock.db'}")
    db = Database(create_db_engine(settings.resolved_database_url, settings))
    probe = sqlite3.connect(str(tmp_path / "lock.db"), isolation_level=None, timeout=0)
    with db.unit_of_work() as uow:
        uow.session.execute(text("SELECT 1"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")
    with db.unit_of_work(read_only=True) as uow:
        uow.session.execute(text("SELECT 1"))
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    probe.close()
    db.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h:5432/d", "postgresql+psycopg"),
        ("postgres://u@h/d", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg"),
        ("sqlite:///var/x.db", "sqlite+pysqlite"),
    ],
)
def test_database_urls_choose_the_driver(url: str, driver: str) -> None:
    """PostgreSQL URLs always use psycopg 3; SQLite uses the standard library driver."""
    assert parse_database_url(url).drivername == driver


def test_in_memory_sqlite_is_refused(tmp_path: Path) -> None:
    """An in-memory database cannot be shared by threads, so it is a configuration error."""
    settings = make_settings(tmp_path, "sqlite://")
    with pytest.raises(ConfigError, match="in-memory"):
        create_db_engine(settings.resolved_database_url, settings)


_EVENT_TYPE = Sql("SELECT event_type, attempts FROM outbox_events WHERE id = :id")


def test_fetch_one_reads_outside_a_transaction_and_leaves_the_pool_as_it_was(
    committing_db: Database,
) -> None:
    event_id = _event(committing_db)
    assert committing_db.fetch_one(_EVENT_TYPE, {"id": event_id}) == ("test.event", 0)
    assert committing_db.fetch_one(_EVENT_TYPE, {"id": "evt_none"}) is None

    # The pooled connection it used is transactional again: a failed unit still rolls back.
    def fail(session: Session) -> None:
        publish(session, "test.lost", {}, ids=IdGenerator(), now=NOW)
        session.flush()
        raise RuntimeError

    with pytest.raises(RuntimeError):
        committing_db.run(fail)
    count = committing_db.run(lambda s: s.scalar(select(func.count()).select_from(OutboxEvent)))
    assert count == 1


@pytest.mark.postgres_only
def test_fetch_one_survives_a_server_that_closed_every_pooled_connection(
    committing_db: Database,
) -> None:
    event_id = _event(committing_db)
    engine = committing_db.engine
    held = [engine.raw_connection() for _ in range(3)]  # three connections in the pool
    for fairy in held:
        fairy.close()
    try:
        with engine.connect() as admin:
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert committing_db.fetch_one(_EVENT_TYPE, {"id": event_id}) == ("test.event", 0)
    finally:
        engine.dispose()  # the session's other pooled connections were closed too


def _queued_behind_the_lock(
    writers: Any, run: Any, works: list[Any]
) -> list[tuple[Any, BaseException | None]]:
    """Hold ``writers`` until a thread per work has queued ``run(work)``; return the outcomes."""
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(works)

    def call(i: int, work: Any) -> None:
        try:
            outcomes[i] = (run(work), None)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            outcomes[i] = (None, exc)

    threads = [threading.Thread(target=call, args=(i, w)) for i, w in enumerate(works)]
    with writers:  # as a transaction in progress would
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(writers._queue) < len(works) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(writers._queue) == len(works)
    for t in threads:
        t.join(10)
    return outcomes


class _Batches:
    """A SQLite file with a table ``t`` and a Database on it."""

    def __init__(self, tmp_path: Path) -> None:
        settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'batch.db'}")
        self.db = Database(create_db_engine(settings.resolved_database_url, settings))
        self.db.run(lambda s: s.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY, ran_on INT)")))
        self.path = tmp_path / "batch.db"

    def queued(self, works: list[Any]) -> list[tuple[Any, BaseException | None]]:
        """Queue ``run_driver(work)`` for each work while the writers are held; run them."""
        writers = self.db._sqlite_writers
        return _queued_behind_the_lock(writers, self.db.run_driver, works)

    def rows(self) -> list[tuple[int, int]]:
        """Read the table through a connection of its own: what was committed."""
        with sqlite3.connect(self.path) as probe:
            return probe.execute("SELECT n, ran_on FROM t ORDER BY n").fetchall()


def _insert(n: int, *, fail: bool = False) -> Any:
    def work(conn: Any) -> int:
        conn.execute("INSERT INTO t (n, ran_on) VALUES (?, ?)", (n, threading.get_ident()))
        if fail:
            raise LookupError(f"unit {n} refused")
        return n * 10

    return work


def test_sqlite_driver_units_queued_together_commit_together(tmp_path: Path) -> None:
    """Units that queued while another held the file run as one transaction, one savepoint each.

    Each caller gets its own result or its own exception, and only the unit that raised
    leaves nothing behind.
    """
    batches = _Batches(tmp_path)
    works = [_insert(n, fail=n == 3) for n in range(1, 7)]
    outcomes = batches.queued(works)
    assert [result for result, _ in outcomes] == [10, 20, None, 40, 50, 60]
    errors = [error for _, error in outcomes]
    assert isinstance(errors[2], LookupError)
    assert str(errors[2]) == "unit 3 refused"
    assert [e for i, e in enumerate(errors) if i != 2] == [None] * 5
    rows = batches.rows()
    assert [n for n, _ in rows] == [1, 2, 4, 5, 6]
    assert len({ran_on for _, ran_on in rows}) == 1  # one thread ran them all: one transaction
    batches.db.dispose()


def test_a_unit_that_fails_its_batchs_commit_fails_alone(tmp_path: Path) -> None:
    """A unit reports success only once its transaction committed; one unit fails no other.

    The batch's ``COMMIT`` fails here on a deferred foreign key that one unit broke (as a
    full disk would fail it): the batch is rolled back and each unit runs again alone, so
    the unit that broke it raises and the others commit.
    """
    batches = _Batches(tmp_path)
    batches.db.run(
        lambda s: s.execute(
            text("CREATE TABLE child (id INTEGER PRIMARY KEY, t_n INT REFERENCES t (n))")
        )
    )
    runs: list[str] = []

    def orphan(conn: Any) -> str:
        runs.append("orphan")
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO child (id, t_n) VALUES (1, 999)")
        return "checked only at COMMIT"

    outcomes = batches.queued([_insert(1), orphan, _insert(2)])
    assert [result for result, _ in outcomes] == [10, None, 20]
    error = outcomes[1][1]
    assert isinstance(error, IntegrityError)
    assert "FOREIGN KEY" in str(error)
    assert [e for _, e in (outcomes[0], outcomes[2])] == [None, None]
    assert runs == ["orphan", "orphan"]  # in the batch, then alone
    assert [n for n, _ in batches.rows()] == [1, 2]
    with sqlite3.connect(batches.path) as probe:
        assert probe.execute("SELECT count(*) FROM child").fetchone() == (0,)
    batches.db.dispose()


class _CommitRefused:
    """A ``sqlite3`` connection whose ``COMMIT`` always fails, as on a disk gone read-only."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.driver_connection = self

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def close(self) -> None:
        """Returned to the pool: kept open for the next unit."""


def test_a_transaction_that_fails_for_every_unit_gives_each_caller_its_own_error(
    tmp_path: Path,
) -> None:
    """When no transaction can commit, every caller raises, none sees success, nothing stays."""
    batches = _Batches(tmp_path)
    refused = _CommitRefused(batches.path)
    writers = batches.db._sqlite_writers
    outcomes = _queued_behind_the_lock(
        writers,
        lambda work: writers.run_batched(lambda: refused, work),
        [_insert(1), _insert(2), _insert(3)],
    )
    assert [result for result, _ in outcomes] == [None, None, None]
    errors = [error for _, error in outcomes]
    assert all(isinstance(e, sqlite3.OperationalError) for e in errors), errors
    assert all(str(e) == "disk I/O error" for e in errors)
    assert len({id(e) for e in errors}) == 3  # three threads never raise one object
    assert batches.rows() == []
    assert not refused.in_transaction
    batches.db.run_driver(_insert(5))  # the writers are free again
    assert [n for n, _ in batches.rows()] == [5]
    batches.db.dispose()


def test_a_writer_that_cannot_take_the_lock_file_fails_instead_of_waiting_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock file refused (here: its directory gone read-only): the caller sees the error."""
    batches = _Batches(tmp_path)
    writers = batches.db._sqlite_writers
    assert writers is not None

    def refused() -> int:
        raise PermissionError("lock file refused")

    monkeypatch.setattr(writers, "_file", refused)
    with pytest.raises(PermissionError, match="lock file refused"):
        batches.db.run_driver(_insert(1))
    assert len(writers._queue) == 0
    monkeypatch.undo()
    assert batches.db.run_driver(_insert(2)) == 20
    assert [n for n, _ in batches.rows()] == [2]
    batches.db.dispose()
