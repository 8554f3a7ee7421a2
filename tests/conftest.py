"""Test fixtures: every database test runs on SQLite and, when available, PostgreSQL.

Backends
    SQLite always. PostgreSQL when ``CUSTODIA_TEST_POSTGRES_URL`` is set (then it is
    *required*: an unreachable server fails the run, it never skips) or when a server
    answers on 127.0.0.1:5432 (then a throw-away database is created for the run and
    dropped at the end). The terminal summary says which backends ran.

Schema
    Built by the Alembic migrations, never by ``create_all`` (STYLE.md 11).

Isolation
    ``db`` wraps each test in a transaction rolled back at the end; services' commits
    become savepoints. ``committing_db`` really commits (for concurrency and trigger
    tests) and empties the tables afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import structlog
from litestar.testing import TestClient
from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.engine import make_url

from custodia.agreements.templates import install_defaults
from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core import migrate
from custodia.core.audit import GENESIS
from custodia.core.clock import ManualClock
from custodia.core.db import Database, RetryPolicy, create_db_engine
from custodia.core.ids import IdGenerator
from custodia.core.keys import KeyFile, generate_key_file
from custodia.core.logging import clear_context
from custodia.core.models import AuditChainHead
from custodia.core.settings import Environment, Settings, load_settings
from custodia.ledger.posting import install_system_accounts
from custodia.migrations.ddl import drop_guard_triggers, guard_triggers

AUTO_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


@dataclass
class PostgresTarget:
    """Where the PostgreSQL tests run, and whether the run owns (and drops) the database."""

    url: str | None
    required: bool
    reason: str
    owned_database: str | None = None
    admin_url: str | None = None


def _admin_url_for(url: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


def _create_database(admin_url: str, prefix: str = "custodia_test") -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=name)
        .render_as_string(hide_password=False)
    )


def _find_postgres() -> PostgresTarget:
    url = os.environ.get("CUSTODIA_TEST_POSTGRES_URL")
    if url:
        try:
            with psycopg.connect(
                make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                connect_timeout=5,
            ):
                pass
        except psycopg.Error as exc:
            pytest.exit(
                f"CUSTODIA_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {exc}",
                returncode=3,
            )
        return PostgresTarget(
            url, required=True, reason="CUSTODIA_TEST_POSTGRES_URL", admin_url=_admin_url_for(url)
        )
    try:
        name = _create_database(AUTO_PG_ADMIN_URL)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PostgresTarget(None, required=False, reason=f"not available ({first})")
    return PostgresTarget(
        _with_database(AUTO_PG_ADMIN_URL, name),
        required=False,
        reason="server found on 127.0.0.1:5432",
        owned_database=name,
        admin_url=AUTO_PG_ADMIN_URL,
    )


_PG: PostgresTarget | None = None
_RAN: set[str] = set()


def postgres_target() -> PostgresTarget:
    """Return (finding it once per run) where PostgreSQL tests run."""
    global _PG  # noqa: PLW0603 - one discovery per test run
    if _PG is None:
        _PG = _find_postgres()
    return _PG


def available_backends() -> list[str]:
    """Return the backends this run tests on."""
    return ["sqlite", "postgresql"] if postgres_target().url else ["sqlite"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a database once per available backend."""
    if "backend" not in metafunc.fixturenames:
        return
    backends = available_backends()
    if metafunc.definition.get_closest_marker("postgres_only"):
        backends = [b for b in backends if b == "postgresql"]
    if metafunc.definition.get_closest_marker("sqlite_only"):
        backends = [b for b in backends if b == "sqlite"]
    metafunc.parametrize("backend", backends, scope="session")


def pytest_report_header() -> str:
    """Say up front which databases the suite will use."""
    target = postgres_target()
    pg = f"postgresql ({target.reason})" if target.url else f"postgresql {target.reason}"
    return f"custodia backends: sqlite, {pg}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report which backends actually ran tests."""
    target = postgres_target()
    ran = ", ".join(sorted(_RAN)) or "none"
    terminalreporter.write_sep("-", "database backends")
    terminalreporter.write_line(f"backends that ran database tests: {ran}")
    if not target.url:
        terminalreporter.write_line(
            f"PostgreSQL {target.reason}: database tests ran on SQLite only"
        )


def pytest_configure() -> None:
    """Find PostgreSQL once, before collection decides which backends tests run on."""
    postgres_target()


def pytest_unconfigure() -> None:
    """Drop the throw-away PostgreSQL database this run created (after every report)."""
    target = _PG
    if target is not None and target.owned_database and target.admin_url:
        with contextlib.suppress(psycopg.Error):
            _drop_database(target.admin_url, target.owned_database)


# --------------------------------------------------------------------------------- logging


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Let a test call ``configure_logging``; put logging back as it was afterwards."""
    root = logging.getLogger()
    # pytest installs its own capture handlers for each test phase and removes them itself.
    kept = [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]
    level = root.level
    access = logging.getLogger("uvicorn.access")
    access_disabled = access.disabled
    alembic = logging.getLogger("alembic")
    alembic_level = alembic.level

    yield

    clear_context()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
            root.removeHandler(handler)
            handler.close()
    for handler in kept:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    access.disabled = access_disabled
    alembic.setLevel(alembic_level)


# --------------------------------------------------------------------------------- settings


def make_settings(tmp: Path, database_url: str, **overrides: object) -> Settings:
    """Return test settings rooted in ``tmp`` (no environment variables are read)."""
    values: dict[str, object] = {
        "var_dir": str(tmp),
        "database_url": database_url,
        "env": Environment.DEVELOPMENT,
        "inprocess_workers": False,
        "sqlite_busy_timeout_ms": 5000,
        # scrypt at its production cost (128 MiB, ~0.4 s) would make the suite crawl; the
        # parameters are stored with each hash, so tests of rehashing still mean something.
        "scrypt_log2_n": 4,
        # Tests upload a list and screen at once: look at the lists' version every time.
        "screening_list_check_s": 0,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def backend_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database URL of the backend under test (one migrated database per run)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'custodia.db'}"
    target = postgres_target()
    assert target.url is not None
    return target.url


@pytest.fixture(scope="session")
def settings(backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the backend under test."""
    return make_settings(tmp_path_factory.mktemp("var"), backend_url)


@pytest.fixture(scope="session")
def engine(settings: Settings, backend: str) -> Iterator[Engine]:
    """An engine on a database migrated from empty to head."""
    eng = create_db_engine(settings.resolved_database_url, settings)
    if backend == "postgresql":
        with eng.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(eng)
    _RAN.add(backend)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def keys() -> KeyFile:
    """Development keys generated for the run."""
    return generate_key_file(Environment.DEVELOPMENT, START)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock(START)


@pytest.fixture
def db(engine: Engine) -> Iterator[Database]:
    """A database whose every change is rolled back after the test."""
    with engine.connect() as connection:
        outer = connection.begin()
        yield Database(engine, bind=connection, retry=RetryPolicy(attempts=1))
        outer.rollback()


@contextlib.contextmanager
def triggers_bypassed(conn: Connection) -> Iterator[None]:
    """Switch off the append-only triggers inside ``conn``'s transaction, as an intruder with
    full database rights could (PostgreSQL: replica role; SQLite: drop and re-create)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SET LOCAL session_replication_role = replica"))
    else:
        for statement in drop_guard_triggers(dialect):
            conn.execute(text(statement))
    try:
        yield
    finally:
        if dialect == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = origin"))
        else:
            for statement in guard_triggers(dialect):
                conn.execute(text(statement))


def _truncate_all(engine: Engine) -> None:
    tables = [t.name for t in reversed(migrate.target_metadata().sorted_tables)]
    with engine.begin() as conn, triggers_bypassed(conn):
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
        # The migrations seed the chain head and the default agreements; put them back.
        conn.execute(insert(AuditChainHead).values(id=1, seq=0, hash=GENESIS))
        install_defaults(conn, now=START, ids=IdGenerator())
        install_system_accounts(conn, "CNY", now=START)


@pytest.fixture
def committing_db(engine: Engine) -> Iterator[Database]:
    """A database that really commits; every table is emptied after the test."""
    _truncate_all(engine)
    yield Database(engine)
    _truncate_all(engine)


@pytest.fixture
def runtime(settings: Settings, db: Database, keys: KeyFile, clock: ManualClock) -> Runtime:
    """The collaborators of one test, on the rolled-back database."""
    return Runtime(settings=settings, db=db, keys=keys, clock=clock)


@pytest.fixture
def committing_runtime(
    settings: Settings, committing_db: Database, keys: KeyFile, clock: ManualClock
) -> Runtime:
    """The collaborators of one test, on the committing database."""
    return Runtime(settings=settings, db=committing_db, keys=keys, clock=clock)


@pytest.fixture
def client(runtime: Runtime, settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """An HTTP client for the app on the rolled-back database."""
    with TestClient(create_app(settings, runtime=runtime)) as test_client:
        yield test_client


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new, empty database of the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    target = postgres_target()
    assert target.url is not None
    assert target.admin_url is not None
    name = _create_database(target.admin_url, "custodia_fresh")
    try:
        yield _with_database(target.url, name)
    finally:
        _drop_database(target.admin_url, name)
