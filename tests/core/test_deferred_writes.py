"""Deferred writes: sent with the COMMIT, without a read that would cost a round trip."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context
from custodia.core.audit import AuditAction
from custodia.core.clock import ManualClock
from custodia.core.db import Database, Sql, create_db_engine, deferred_mark, drop_deferred_since
from custodia.core.ids import IdGenerator
from custodia.core.models import AuditInbox, OutboxEvent
from custodia.core.outbox import publish
from custodia.core.settings import Settings
from tests.conftest import _truncate_all

ALICE = Actor(ActorKind.STAFF, "stf_alice")


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[tuple[str, bool]]]:
    """Every statement the engine sends, with whether it went as an executemany."""
    seen: list[tuple[str, bool]] = []

    def before(*args: Any) -> None:
        seen.append((args[2], args[5]))  # statement, executemany

    event.listen(engine, "before_cursor_execute", before)
    yield seen
    event.remove(engine, "before_cursor_execute", before)


def _sent(statements: list[tuple[str, bool]]) -> list[tuple[list[str], bool]]:
    return [(sql.split()[:3], many) for sql, many in statements if not sql.startswith("BEGIN")]


def test_one_audit_row_and_one_event_are_sent_without_reading_anything_first(
    committing_db: Database, clock: ManualClock, statements: list[tuple[str, bool]]
) -> None:
    def work(session: Session) -> None:
        ctx = Context(ALICE, clock.now(), "req_1")
        audit.record(session, ctx, AuditAction.CLIENT_REVOKED, target="cli_9")
        publish(session, "test.deferred", {"n": 1}, ids=IdGenerator(), now=clock.now())
        assert session.info["custodia_deferred_writes"]  # queued, not yet sent
        assert _sent(statements) == []

    committing_db.run(work)
    # No `select nextval(...)` for the audit row's id: a single-row INSERT would want the new
    # key back, and on PostgreSQL that read would split the pipeline into round trips.
    assert not any("nextval" in sql for sql, _ in statements)
    assert _sent(statements) == [
        (["INSERT", "INTO", "audit_inbox"], False),
        (["INSERT", "INTO", "outbox_events"], False),
    ]
    count = lambda model: committing_db.run(  # noqa: E731
        lambda s: s.scalar(select(func.count()).select_from(model))
    )
    assert (count(AuditInbox), count(OutboxEvent)) == (1, 1)


def test_rows_of_one_statement_go_as_one_batch(
    committing_db: Database, clock: ManualClock, statements: list[tuple[str, bool]]
) -> None:
    def work(session: Session) -> None:
        ctx = Context(ALICE, clock.now(), "req_1")
        for n in range(3):
            audit.record(session, ctx, AuditAction.CLIENT_CREATED, target=f"cli_{n}")

    committing_db.run(work)
    assert _sent(statements) == [(["INSERT", "INTO", "audit_inbox"], True)]
    targets = committing_db.run(lambda s: sorted(s.scalars(select(AuditInbox.target))))
    assert targets == ["cli_0", "cli_1", "cli_2"]


def test_writes_queued_inside_a_rolled_back_savepoint_are_dropped(
    committing_db: Database, clock: ManualClock
) -> None:
    def work(session: Session) -> None:
        ctx = Context(ALICE, clock.now(), "req_1")
        audit.record(session, ctx, AuditAction.CLIENT_CREATED, target="cli_kept")
        mark = deferred_mark(session)
        audit.record(session, ctx, AuditAction.CLIENT_CREATED, target="cli_undone")
        drop_deferred_since(session, mark)

    committing_db.run(work)
    targets = committing_db.run(lambda s: list(s.scalars(select(AuditInbox.target))))
    assert targets == ["cli_kept"]


@pytest.mark.postgres_only  # pipeline mode is PostgreSQL's
def test_a_connection_is_back_in_the_pool_only_after_its_pipeline_ended(
    backend: str, settings: Settings, engine: Engine, clock: ManualClock
) -> None:
    """Threads sharing one pooled connection never get it while it is in pipeline mode."""
    _truncate_all(engine)
    one = create_db_engine(
        settings.resolved_database_url,
        msgspec.structs.replace(settings, db_pool_size=1, db_pool_timeout_s=30),
    )
    one.pool._max_overflow = 0  # type: ignore[attr-defined] # exactly one connection to share
    database = Database(one)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        ctx = Context(ALICE, clock.now(), f"req_{n}")
        for i in range(150):
            try:
                database.run(
                    lambda s, i=i: audit.record(
                        s, ctx, AuditAction.CLIENT_CREATED, target=f"cli_{n}_{i}"
                    )
                )
                database.fetch_one(Sql("SELECT 1"), {})
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one.dispose()
    try:
        assert errors == []
        inbox = Database(engine).run(lambda s: s.scalar(select(func.count(AuditInbox.id))))
        assert inbox == 600
    finally:
        _truncate_all(engine)
