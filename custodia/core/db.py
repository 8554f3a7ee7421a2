"""Engines for SQLite and PostgreSQL, the unit of work, and the retry loop around it.

One command = one transaction (STYLE.md 4). :meth:`Database.run` opens a unit of work,
hands its session to the command, commits explicitly, and re-runs the *whole* command when
the database says the transaction lost a race: serialization failure (SQLSTATE 40001),
deadlock (40P01) or a busy SQLite file. Retries are bounded, spaced by exponential backoff
with full jitter, and counted in the metrics. Because a command may run more than once, it
must do nothing but database work (no HTTP calls, no e-mails) inside ``run``.

SQLite: WAL, foreign keys on, a busy timeout, and every write transaction opened with
``BEGIN IMMEDIATE`` so that the write lock is taken up front and two writers never deadlock
on a lock upgrade. The driver's own transaction handling is switched off so that SQLAlchemy
savepoints and transactional DDL work (the SQLAlchemy "pysqlite serializable" recipe).

PostgreSQL: psycopg 3 through SQLAlchemy's pool; statement parameters are never rendered
into error messages (they may carry personal data).

Reads made on every request (an API key's lookup) can skip SQLAlchemy altogether:
:class:`Sql` holds hand-written SQL and :meth:`Database.fetch_one` runs it on a pooled
driver connection, outside any transaction, as a server-side prepared statement on
PostgreSQL. That costs a fifth of the client CPU of the same read through the ORM.
"""

from __future__ import annotations

import copy
import fcntl
import os
import random
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Text, any_, bindparam, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from custodia.core.errors import ConfigError
from custodia.core.settings import Settings, parse_database_url

T = TypeVar("T")

Backend = Literal["sqlite", "postgresql"]
Isolation = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

#: SQLSTATEs after which re-running the whole transaction is the right answer.
RETRYABLE_SQLSTATES = {"40001": "serialization_failure", "40P01": "deadlock"}
#: SQLite primary result codes that mean another connection holds the lock.
_SQLITE_BUSY_CODES = {5: "sqlite_busy", 6: "sqlite_locked"}

_BEGIN_OPTION = "custodia_sqlite_begin"


class RetryObserver(Protocol):
    """Receives a note of every retried and every abandoned unit of work."""

    def db_retry(self, reason: str) -> None:
        """Count one retry for ``reason``."""
        ...

    def db_retries_exhausted(self, reason: str) -> None:
        """Count one unit of work given up after its last retry."""
        ...


class _NoObserver:
    def db_retry(self, reason: str) -> None:
        pass

    def db_retries_exhausted(self, reason: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a unit of work is re-run."""

    attempts: int = 5
    base_delay_s: float = 0.005
    max_delay_s: float = 0.2

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Return the sleep before retry number ``attempt`` (1-based): full jitter."""
        ceiling = min(self.max_delay_s, self.base_delay_s * float(1 << (attempt - 1)))
        return ceiling * rng()


class Sql:
    """Hand-written SQL for a hot-path read, with ``:name`` parameters (see the module doc).

    Only plain values come back (text, integers, NULL): no SQLAlchemy type conversion runs,
    so select columns whose raw value is what the caller wants.
    """

    __slots__ = ("_pyformat", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._pyformat = re.sub(r":(\w+)", r"%(\1)s", text)

    def for_backend(self, backend: Backend) -> str:
        """Return the statement in the driver's parameter style."""
        return self._pyformat if backend == "postgresql" else self.text


#: A function that runs one :class:`Sql` read and returns its first row (or None).
FetchOne = Callable[[Sql, Mapping[str, Any]], tuple[Any, ...] | None]


DEFERRED = "custodia_deferred_writes"


def defer(session: Session, statement: Any, params: dict[str, Any]) -> None:
    """Queue a write whose result nobody reads; :meth:`Database.run` sends it at commit.

    Build an INSERT with ``.inline()`` (see :func:`_execute_deferred`). Inside a savepoint,
    take :func:`deferred_mark` first and :func:`drop_deferred_since` if the savepoint rolls
    back, so that its queued writes go with it.
    """
    session.info.setdefault(DEFERRED, []).append((statement, params))


def deferred_mark(session: Session) -> int:
    """Return how many writes are queued now (see :func:`defer`)."""
    return len(session.info.get(DEFERRED, ()))


def drop_deferred_since(session: Session, mark: int) -> None:
    """Forget the writes queued after ``mark`` (their savepoint was rolled back)."""
    del session.info.get(DEFERRED, [])[mark:]


def flush_deferred(session: Session) -> None:
    """Send the writes queued so far now, for work that must read them back (bulk loads)."""
    session.flush()
    _execute_deferred(session, session.info.pop(DEFERRED, []))


def _execute_deferred(session: Session, deferred: list[tuple[Any, dict[str, Any]]]) -> None:
    """Send the queued writes, a run of the same statement as one executemany.

    Deferred INSERTs are built with ``.inline()``: a single-row INSERT would otherwise make
    SQLAlchemy want the new primary key, which on PostgreSQL without RETURNING means a
    ``nextval`` read before the INSERT, splitting the pipeline into round trips.
    """
    if not deferred:
        return
    connection = session.connection()
    for _, run in groupby(deferred, key=lambda write: id(write[0])):
        batch = list(run)
        connection.execute(batch[0][0], [params for _, params in batch])


def upsert_insert(session: Session) -> Any:
    """Return the INSERT construct of the session's backend (``on_conflict_do_…`` included)."""
    return insert_of(session.get_bind().dialect.name)


def insert_of(dialect: str) -> Any:
    """Return the INSERT construct of the backend named ``dialect`` (see :func:`upsert_insert`)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def one_of(session: Session, column: Any, values: Iterable[str]) -> Any:
    """Return ``column IN values`` for a batch of text keys, as the session's backend likes it.

    On PostgreSQL one array parameter (``= ANY(%s)``): an expanded ``IN`` of more than 50
    values is a statement psycopg will not cache, so it scans the whole text for ``%s``
    again on every execution, in Python — 4 % of a monitoring worker's time for a batch's
    hundred customers alone. SQLite takes the plain ``IN``.
    """
    found = list(values)
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(found)
    return column == any_(bindparam(None, found, type_=postgresql.ARRAY(Text)))


def backend_of(engine: Engine | Connection) -> Backend:
    """Return which of the two supported databases ``engine`` talks to."""
    name = engine.dialect.name
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql":
        return "postgresql"
    raise ConfigError(f"unsupported database dialect {name}")


def create_db_engine(url: str, settings: Settings) -> Engine:
    """Create the engine for ``url`` configured as described in the module docstring."""
    parsed = parse_database_url(url)
    if parsed.drivername.startswith("sqlite"):
        return _sqlite_engine(parsed, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    return create_engine(
        parsed,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_s,
        hide_parameters=True,
    )


def _sqlite_engine(url: URL, *, busy_timeout_ms: int) -> Engine:
    database = url.database or ""
    if database in {"", ":memory:"}:
        raise ConfigError(
            "CUSTODIA_DATABASE_URL: an in-memory SQLite database cannot be shared by the "
            "server's threads; give a file path such as sqlite:///var/custodia.db"
        )
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Hand transaction control to SQLAlchemy (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def retry_reason(exc: BaseException) -> str | None:
    """Return why ``exc`` calls for re-running the transaction, or None if it does not."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return RETRYABLE_SQLSTATES[sqlstate]
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return _SQLITE_BUSY_CODES.get(code & 0xFF)
        message = str(orig)
        if "database is locked" in message or "database is busy" in message:
            return "sqlite_busy"
    return None


def sqlstate_of(exc: BaseException) -> str | None:
    """Return the PostgreSQL SQLSTATE behind ``exc`` (None for other errors)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


class UnitOfWork:
    """One transaction: commits only when told to, rolls back on every other exit."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._committed = False

    def commit(self) -> None:
        """Commit the transaction; a failure here propagates to the caller."""
        self.session.commit()
        self._committed = True

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                self.session.rollback()
        finally:
            self.session.close()


class Database:
    """The engine, the session factory and the retry loop; one per process."""

    def __init__(
        self,
        engine: Engine,
        *,
        retry: RetryPolicy | None = None,
        observer: RetryObserver | None = None,
        bind: Connection | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        pipeline: bool = True,
    ) -> None:
        self.engine = engine
        self.backend: Backend = backend_of(engine)
        self.pipeline = pipeline
        self.retry = retry or RetryPolicy()
        self.observer: RetryObserver = observer or _NoObserver()
        self._sleep = sleep
        self._rng = rng
        self._bind = bind
        if bind is not None:
            # Test mode: every unit of work is a savepoint inside a transaction that the
            # test rolls back at the end (STYLE.md 11).
            self._writer = sessionmaker(
                bind=bind, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
            self._reader = self._writer
        else:
            self._writer = sessionmaker(bind=engine, expire_on_commit=False)
            reader_engine = engine.execution_options(
                **(
                    {_BEGIN_OPTION: "DEFERRED"}
                    if self.backend == "sqlite"
                    else {"postgresql_readonly": True}
                )
            )
            self._reader = sessionmaker(bind=reader_engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a writer that finds the file locked polls
        # (sleeping 1, 2, 5 … ms): writers queue on a lock instead (see _SqliteWriters).
        self._queue_writers = self.backend == "sqlite" and bind is None
        self._sqlite_writers = (
            _SqliteWriters(Path(f"{engine.url.database}.writers")) if self._queue_writers else None
        )
        self._writers: AbstractContextManager[Any] = self._sqlite_writers or nullcontext()
        self._autocommit = engine.execution_options(
            isolation_level="AUTOCOMMIT" if self.backend == "postgresql" else "SERIALIZABLE",
            **({_BEGIN_OPTION: "DEFERRED"} if self.backend == "sqlite" else {}),
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, observer: RetryObserver | None = None
    ) -> Database:
        """Build the database of ``settings`` (engine, pool, retry policy)."""
        engine = create_db_engine(settings.resolved_database_url, settings)
        policy = RetryPolicy(
            attempts=settings.db_retry_attempts,
            base_delay_s=settings.db_retry_base_delay_ms / 1000,
            max_delay_s=settings.db_retry_max_delay_ms / 1000,
        )
        return cls(engine, retry=policy, observer=observer)

    def unit_of_work(
        self, *, read_only: bool = False, isolation: Isolation | None = None
    ) -> UnitOfWork:
        """Open one transaction; use as a context manager and call ``commit()``.

        ``isolation`` raises PostgreSQL's level for this transaction (SQLite transactions
        are always serializable, so it is ignored there).
        """
        factory = self._reader if read_only else self._writer
        session = factory()
        if isolation is not None and self.backend == "postgresql" and self._bind is None:
            session.connection(execution_options={"isolation_level": isolation})
        return UnitOfWork(session)

    def run(
        self,
        work: Callable[[Session], T],
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
    ) -> T:
        """Run ``work`` in one committed transaction, re-running it on a lost race.

        ``work`` must only touch the database: it may run several times. Any other
        exception propagates after the transaction is rolled back.
        """
        attempt = 1
        while True:
            try:
                with (
                    self._writers if not read_only else nullcontext(),
                    self.unit_of_work(read_only=read_only, isolation=isolation) as uow,
                ):
                    result = work(uow.session)
                    self._commit(uow, read_only=read_only)
                    return result
            except DBAPIError as exc:
                if not self._backed_off(exc, attempt):
                    raise
                attempt += 1

    def _commit(self, uow: UnitOfWork, *, read_only: bool) -> None:
        """Write the deferred statements and commit, in one round trip on PostgreSQL.

        What a command only writes through :func:`defer` (audit events, outbox events, new
        rows) needs no answer before the commit: on PostgreSQL it is sent in psycopg's
        pipeline mode together with the COMMIT. A round trip costs ~0.2 ms of client CPU
        on this kind of machine, so this saves a third of the CPU of a typical command. An
        error of any of these statements still rolls the whole unit back.
        """
        session = uow.session
        # The ORM checks the row counts of its UPDATEs as it goes, which pipeline mode
        # cannot answer until the end: its pending changes go first, the plain way.
        session.flush()
        deferred: list[tuple[Any, dict[str, Any]]] = session.info.pop(DEFERRED, [])
        if deferred and self.backend == "postgresql" and self.pipeline and not read_only:
            raw: Any = session.connection().connection.driver_connection
            dbapi_error = self.engine.dialect.loaded_dbapi.Error
            try:
                with raw.pipeline() as pipeline:
                    _execute_deferred(session, deferred)
                    if self._bind is None:
                        raw.commit()  # the writes and the COMMIT: one round trip
                    else:
                        # Test mode: the unit is a savepoint; the writes' errors must surface
                        # before it is released, or the session would take it for done.
                        pipeline.sync()
            except dbapi_error as exc:
                raise DBAPIError.instance(
                    None, None, exc, dbapi_error, hide_parameters=True, dialect=self.engine.dialect
                ) from exc
            # Only now, out of pipeline mode, may the session hand the connection back to the
            # pool (it does so as it commits): another thread must never get it mid-pipeline.
            # The driver has committed already and sends nothing more; in test mode this
            # releases the savepoint.
            uow.commit()
            return
        _execute_deferred(session, deferred)
        uow.commit()

    def run_driver(self, work: Callable[[Any], T], *, one_statement: bool = False) -> T:
        """Run ``work`` on a pooled driver connection in one transaction, without the ORM.

        For the hot path (``custodia.accounts.fastpath``). On SQLite ``work`` gets the
        ``sqlite3`` connection (:meth:`_run_sqlite_driver`). On PostgreSQL psycopg's, not
        in pipeline mode: psycopg's
        pipeline costs more client CPU than the round trips it saves for a few statements
        (measured: 1.97 → 1.45 ms of CPU per transfer, wall time 4.2 → 3.5 ms). Re-run on a
        lost race like :meth:`run`. In test mode the transaction is a savepoint inside the
        test's transaction.

        ``one_statement`` (PostgreSQL): ``work`` sends exactly one statement, which is the
        transaction (autocommit): no ``BEGIN`` and ``COMMIT`` round trips around it.
        """
        if self.backend == "sqlite":
            return self._run_sqlite_driver(work)
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        attempt = 1
        while True:
            fairy = None if self._bind is not None else self.engine.raw_connection()
            try:
                driver: Any = self._test_driver() if fairy is None else fairy.driver_connection
                try:
                    if one_statement and fairy is not None:
                        # Switched client-side, without a round trip; back before the
                        # connection returns to the pool.
                        driver.autocommit = True
                        try:
                            return work(driver)
                        finally:
                            driver.autocommit = False
                    with driver.transaction():
                        return work(driver)
                except dbapi_error as exc:
                    if fairy is not None and self.engine.dialect.is_disconnect(exc, driver, None):
                        fairy.invalidate(exc)
                    raise DBAPIError.instance(
                        None,
                        None,
                        exc,
                        dbapi_error,
                        hide_parameters=True,
                        dialect=self.engine.dialect,
                    ) from exc
            except DBAPIError as exc:
                if not self._backed_off(exc, attempt):
                    raise
                attempt += 1
            finally:
                if fairy is not None:
                    fairy.close()

    def _run_sqlite_driver(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on a pooled ``sqlite3`` connection in a write transaction.

        ``BEGIN IMMEDIATE`` as every SQLite write here, with this process's other driver
        units that queued meanwhile, each in its own savepoint: what ``work`` did is
        committed if it returns and rolled back if it raises, and this returns only once
        its transaction has committed (:meth:`_SqliteWriters.run_batched`). Re-run on a
        busy file like :meth:`run`. In test mode the transaction is a savepoint inside the
        test's transaction.
        """
        attempt = 1
        while True:
            try:
                if self._sqlite_writers is None:  # test mode
                    return _in_savepoint(self._bind.connection.driver_connection, work)  # type: ignore[union-attr]
                return self._sqlite_writers.run_batched(self.engine.raw_connection, work)
            except sqlite3.Error as exc:
                error = DBAPIError.instance(
                    None, None, exc, sqlite3.Error, hide_parameters=True,
                    dialect=self.engine.dialect,
                )  # fmt: skip
                if not self._backed_off(error, attempt):
                    raise error from exc
                attempt += 1

    def _backed_off(self, exc: BaseException, attempt: int) -> bool:
        """Return whether a unit that lost a race on ``attempt`` runs again, after waiting.

        False for an error that is no lost race, or when the policy's attempts are spent
        (counted): the caller re-raises.
        """
        reason = retry_reason(exc)
        if reason is None:
            return False
        if attempt >= self.retry.attempts:
            self.observer.db_retries_exhausted(reason)
            return False
        self.observer.db_retry(reason)
        self._sleep(self.retry.delay(attempt, self._rng))
        return True

    def _test_driver(self) -> Any:
        """Return the test transaction's driver connection, its transaction begun."""
        assert self._bind is not None  # noqa: S101 - test mode only
        self._bind.exec_driver_sql("SELECT 1")  # psycopg begins lazily: make the BEGIN happen
        return self._bind.connection.driver_connection

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run one read outside any transaction: a single round trip on PostgreSQL.

        For lookups on every request (credentials) that need no snapshot across
        statements. In test mode the read runs inside the test's transaction.
        """
        if self._bind is not None:
            return work(self._bind)
        with self._autocommit.connect() as conn:
            return work(conn)

    def fetch_one(self, query: Sql, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Return the first row of ``query`` run on the driver, outside any transaction.

        A pooled connection the server has closed (a restart) is thrown away and the read,
        which changes nothing, is tried on the next one. In test mode it runs inside the
        test's transaction, through SQLAlchemy.
        """
        sql = query.for_backend(self.backend)
        if self._bind is not None:
            row = self._bind.exec_driver_sql(sql, dict(params)).first()
            return None if row is None else tuple(row)
        pool: Any = self.engine.pool
        attempts = pool.size() + 1 if hasattr(pool, "size") else 1
        for attempt in range(1, attempts + 1):
            fairy = self.engine.raw_connection()
            driver: Any = fairy.driver_connection
            try:
                found = self._fetch_on_driver(driver, sql, params)
            except self.engine.dialect.loaded_dbapi.Error as exc:
                if not self.engine.dialect.is_disconnect(exc, driver, None):
                    raise
                fairy.invalidate(exc)
                if attempt == attempts:
                    raise
                continue
            finally:
                fairy.close()
            return None if found is None else tuple(found)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch_on_driver(self, driver: Any, sql: str, params: Mapping[str, Any]) -> Any:
        if self.backend == "postgresql":
            # Autocommit for this one read only: the connection goes back to the pool as it
            # came (psycopg switches it client-side, without a round trip).
            driver.autocommit = True
            try:
                return driver.execute(sql, params, prepare=True).fetchone()
            finally:
                driver.autocommit = False
        cursor = driver.execute(sql, params)  # sqlite3 opens no transaction for a SELECT
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Yield a plain connection in a transaction (for migrations and maintenance)."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def describe_url(url: str) -> str:
    """Return ``url`` with any password hidden, for logs and reports."""
    try:
        return parse_database_url(url).render_as_string(hide_password=True)
    except ConfigError:
        return "<invalid url>"


class _SqliteWriters:
    """SQLite's writers queued: this process's threads on a lock, processes on a lock file.

    SQLite lets one writer in at a time, and a writer that finds the file locked polls it,
    sleeping 1, 2, 5 … up to 100 ms between tries: under load a writer may sleep long after
    the file is free. Here a writer first takes this process's lock, then an exclusive
    ``flock`` on ``<database>.writers``, which the kernel hands to the next waiting process
    as soon as it is released: no polling, and two server processes can prepare their
    requests on two cores while their writes take turns. Re-entrant within a thread. A
    writer that does not know the file (a ``sqlite3`` shell) still meets SQLite's own lock
    and busy timeout: correctness never depends on this queue.

    Driver units (:meth:`run_batched`, the transfer's one-call path) are also committed
    together: the threads that queued while another transaction held the lock go in as
    one transaction, each unit in its own savepoint, and SQLite fsyncs its WAL once for
    all of them instead of once each (group commit).
    """

    #: The most units one transaction takes; the rest wait for the next.
    BATCH = 64

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.RLock()
        self._depth = 0  # changed only by the thread holding _local
        self._fd: int | None = None
        self._pid = 0
        self._queue: deque[_Unit] = deque()  # appended by any thread, taken under _local

    def run_batched(self, connect: Callable[[], Any], work: Callable[[Any], T]) -> T:
        """Run ``work`` in a write transaction shared with the units queued beside it.

        The unit queues, then waits for this process's lock. Whoever holds it next takes
        the file lock, then every unit queued by then (up to :attr:`BATCH`: those that
        came while it waited for the file too) and a pooled connection from ``connect``,
        and runs them (:func:`_commit_batch`); a thread whose unit another thread ran finds
        it done. ``work`` may thus run on another thread, after other
        units and before others in the same transaction: it must only use the connection
        it is given (what :meth:`Database.run` asks of its work already). Returns once
        the transaction that ran ``work`` has committed; raises what ``work`` raised (its
        savepoint rolled back) or what failed the transaction.
        """
        unit = _Unit(work)
        self._queue.append(unit)
        while True:
            with self._local:
                if unit.done:
                    break
                batch: list[_Unit] = []
                try:
                    with self:
                        # Taken only now: those that queued while this thread waited for
                        # the file (another process's batch) join this batch.
                        batch = [
                            self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))
                        ]
                        fairy = connect()
                        try:
                            _commit_batch(fairy.driver_connection, batch)
                        finally:
                            fairy.close()
                except BaseException as exc:  # the lock file or the pool failed the batch
                    if not batch:  # the file's lock failed before any was taken: this one
                        with suppress(ValueError):  # fails (the others try it themselves)
                            self._queue.remove(unit)
                        batch = [unit]
                    for waiting in batch:
                        if not waiting.done:
                            waiting.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
        if unit.error is not None:
            raise unit.error
        return unit.result  # type: ignore[no-any-return]

    def __enter__(self) -> None:
        self._local.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._local.release()
            raise
        self._depth += 1

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._local.release()

    def _file(self) -> int:
        """Return this process's descriptor of the lock file (a forked child opens its own)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


@dataclass(eq=False)
class _Unit:
    """One caller's driver work, waiting for a batch; ``done`` once its batch has ended."""

    work: Callable[[Any], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        """End the unit with ``error``: a copy, so that no two threads raise one object."""
        with suppress(Exception):  # one that cannot be copied is shared, as raised
            error = copy.copy(error)
        self.result, self.error, self.done = None, error, True


def _commit_batch(driver: Any, batch: list[_Unit]) -> None:
    """Run ``batch`` in one ``BEGIN IMMEDIATE`` transaction, each unit in its own savepoint.

    A unit that raises is rolled back to its savepoint and ends with its exception; the
    others go on. A unit ends with its result only once ``COMMIT`` has returned. If the
    transaction itself fails (``BEGIN``, ``COMMIT`` — a deferred constraint, a full disk —
    or an error after which SQLite has rolled everything back), it is rolled back and
    each unit of the batch runs again in a transaction of its own, so that one unit's
    failure never fails another; a unit alone ends with the error (its caller retries a
    busy file or sees the error).
    """
    results: list[tuple[_Unit, Any, BaseException | None]] = []
    try:
        driver.execute("BEGIN IMMEDIATE")
        for unit in batch:
            driver.execute("SAVEPOINT custodia_unit")
            try:
                outcome: tuple[_Unit, Any, BaseException | None] = (unit, unit.work(driver), None)
            except Exception as exc:
                if not driver.in_transaction:  # SQLite rolled back the whole transaction
                    raise
                driver.execute("ROLLBACK TO custodia_unit")
                outcome = (unit, None, exc)
            driver.execute("RELEASE custodia_unit")
            results.append(outcome)
        driver.execute("COMMIT")
    except BaseException as exc:
        try:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
        except BaseException:
            for unit in batch:
                unit.fail(exc)
            raise
        if isinstance(exc, Exception) and len(batch) > 1:
            for unit in batch:
                _commit_batch(driver, [unit])
            return
        for unit in batch:
            unit.fail(exc)
        if not isinstance(exc, Exception):
            raise  # an interrupt stops the thread that led the batch too
        return
    for unit, result, error in results:
        unit.result, unit.error, unit.done = result, error, True


def _in_savepoint(driver: Any, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a savepoint of the open transaction (test mode)."""
    driver.execute("SAVEPOINT custodia_driver")
    try:
        result = work(driver)
    except BaseException:
        driver.execute("ROLLBACK TO custodia_driver")
        driver.execute("RELEASE custodia_driver")
        raise
    driver.execute("RELEASE custodia_driver")
    return result
