"""Window aggregates are index range scans of one customer's rows, never a journal scan."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from custodia.aml import monitoring, windows
from custodia.aml.config import rule_states
from custodia.aml.windows import Measure, Movement, Window
from custodia.api.runtime import Runtime
from custodia.core.actors import SYSTEM, Context
from custodia.core.clock import ManualClock
from tests.aml.conftest import CNY, Feed

_INDEXES = ("ix_aml_movements_customer_at",)


def test_every_rule_query_on_movements_uses_a_customer_index(
    runtime: Runtime,
    engine: Engine,
    clock: ManualClock,
    feed: Feed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 7 item 2: one aggregate query per side, every query on a per-customer index.

    The earlier movements are two days old and the dormancy period and the hours history
    are lowered, so that the rare follow-up reads (Dormant's previous movement, the hours
    of UnusualHours) run too and are planned like the rest.
    """
    customer = feed.customer(risk_level="high")
    for n in range(3):
        at = clock.now() - timedelta(days=2) + n * timedelta(minutes=1)
        feed.move(customer, (n + 1) * 10_000 * CNY, rule="large_value", at=at)
    feed.set_params("dormant_reactivated", dormant_days=1)
    feed.set_params("unusual_hours", min_history=2)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        # SELECT, WITH (write and measure), INSERT … SELECT (an alert's evidence linked)
        if "FROM aml_movements" in statement and statement.lstrip().startswith(
            ("SELECT", "WITH", "INSERT")
        ):
            captured.append((statement, params))

    # On PostgreSQL the side is written and measured by a set statement sent on the driver,
    # and an alert's evidence linked by another.
    pipelined = windows.pipelined

    def through_pipeline(connection: Any, statements: list[tuple[str, Any]]) -> Any:
        captured.extend(pair for pair in statements if "FROM aml_movements" in pair[0])
        return pipelined(connection, statements)

    monkeypatch.setattr(windows, "pipelined", through_pipeline)
    movement = Movement(
        transaction_id="txn_plan", customer_id=customer, direction="out", type="transfer",
        amount=50_000 * CNY, currency="CNY", counterparty="cus_other", cross_border=False,
        channel="api", at=clock.now(),
    )  # fmt: skip
    ctx = Context(SYSTEM, clock.now())
    event.listen(engine, "before_cursor_execute", capture)
    try:
        raised = runtime.db.run(
            lambda s: monitoring.observe(
                s, movement, feed.people, rule_states(s, ctx.now),
                policy=runtime.monitoring_policy, ctx=ctx, ids=runtime.ids,
            )
        )  # fmt: skip
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    aggregates = [statement for statement, _ in captured if "FILTER (WHERE" in statement]
    assert len(aggregates) == 1  # one query answers every rule's window aggregates
    assert aggregates[0].count("FILTER (WHERE") >= 15  # nine rules asked something
    assert {"dormant_reactivated", "high_risk_large"} <= {
        r.rule for r in feed.alerts(customer) if r.id in {x.alert_id for x in raised}
    }
    follow_ups = [statement for statement, _ in captured if "FILTER (WHERE" not in statement]
    assert any("INSERT INTO aml_alert_transactions" in statement for statement in follow_ups)
    assert any("max(aml_movements.at)" in statement for statement in follow_ups)  # previous()
    reads_instants = any(
        statement.startswith("SELECT aml_movements.at ") for statement in follow_ups
    )
    # UnusualHours: PostgreSQL counts the movements near the hour in the aggregate query;
    # SQLite, which has no time zones, reads the instants.
    assert reads_instants == (engine.dialect.name == "sqlite")

    def plans(statement: str, params: Any) -> str:
        def explain(session: Any) -> str:
            conn = session.connection()
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
                conn.exec_driver_sql("SET LOCAL enable_seqscan = on")
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            return "\n".join(str(r[-1]) for r in rows)

        return str(runtime.db.run(explain))

    for statement, params in captured:
        plan = plans(statement, params)
        assert any(index in plan for index in _INDEXES), (statement, plan)
        assert "Seq Scan on aml_movements" not in plan, plan
        assert "SCAN aml_movements\n" not in plan + "\n", plan


def _sides(clock: ManualClock, customers: list[str], tag: str) -> list[tuple[Movement, Any]]:
    """Return one new side per customer, with measures of four shapes between them."""
    now = clock.now()
    sides = []
    for n, customer in enumerate(customers):
        movement = Movement(
            transaction_id=f"txn_{tag}{n}", customer_id=customer, direction="out" if n % 2 else "in",
            type="transfer", amount=(n + 1) * 1_000 * CNY, currency="CNY",
            counterparty=f"cus_peer{n % 3}", cross_border=n == 4, channel="api", at=now,
        )  # fmt: skip
        day = Measure("totals", now - timedelta(days=1), now, movement.direction)
        if n % 3 == 0:
            measures = {
                "day": day,
                "peers": Measure("counterparties", now - timedelta(days=3), now),
            }
        elif n % 3 == 1:
            measures = {
                "day": day,
                "big": Measure("totals", now - timedelta(days=5), now, min_amount=2_000 * CNY),
                "last": Measure("latest", now - timedelta(days=5), now, other_than=movement.transaction_id),
            }  # fmt: skip
        elif n == len(customers) - 1:  # a side no enabled rule asked anything of
            measures = {}
        else:
            measures = {
                "round": Measure("totals", now - timedelta(days=5), now, multiple_of=1_000 * CNY),
                "near": Measure(
                    "totals", now - timedelta(days=5), now, near_hour=now.hour, zone="Asia/Shanghai"
                ),
            }
        sides.append((movement, measures))
    return sides


def test_a_run_of_sides_is_written_and_measured_as_one_by_one(
    runtime: Runtime, clock: ManualClock, feed: Feed
) -> None:
    """PostgreSQL measures a run's sides of one shape in one statement: the figures of
    writing each side and then measuring it with the plain measure query."""
    customers = [feed.customer() for _ in range(9)]
    for n, customer in enumerate(customers):  # some history: two days, five rows each
        for k in range(5):
            at = clock.now() - timedelta(hours=10 * k + n + 1)
            feed.move(customer, (k + 1) * 500 * CNY, rule="large_value", at=at,
                      direction="in" if k % 2 else "out", counterparty=f"cus_peer{k}")  # fmt: skip

    def both(session: Any) -> tuple[list[Any], list[Any], int]:
        window = Window(session)
        nested = session.begin_nested()  # the reference: each side written, then measured
        single = []
        for movement, asked in _sides(clock, customers, "a"):
            windows.record(session, movement)
            single.append(window.measure(movement.customer_id, asked))
        nested.rollback()
        together = window.record_and_measure_all(_sides(clock, customers, "a"))
        written = session.execute(
            text("SELECT count(*) FROM aml_movements WHERE transaction_id LIKE 'txn_a%'")
        ).scalar_one()
        return single, together, written

    single, together, written = runtime.db.run(both)
    assert together == single
    assert written == len(customers)
    # Not vacuous: the figures count the history and each side's own new movement.
    assert all(answer["day"].count >= 1 for answer in together if "day" in answer)
    assert any(answer.get("last") is not None for answer in together)


def test_a_run_takes_each_customer_once(runtime: Runtime, clock: ManualClock, feed: Feed) -> None:
    customer = feed.customer()
    sides = _sides(clock, [customer, customer], "b")
    with pytest.raises(ValueError, match="each customer once"):
        runtime.db.run(lambda s: Window(s).record_and_measure_all(sides))


@pytest.mark.postgres_only
def test_the_set_statement_reads_each_customer_on_its_index(
    runtime: Runtime, clock: ManualClock, feed: Feed
) -> None:
    customers = [feed.customer() for _ in range(3)]
    [(movement, measures)] = _sides(clock, customers[:1], "c")
    values = windows._values(movement, measures)
    sql = windows._set_statement(("explain",), list(measures.values()), values)
    params = windows._set_params([values])

    def explain(session: Any) -> str:
        driver = session.connection().connection.driver_connection
        with driver.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            rows = cursor.execute("EXPLAIN " + sql, params).fetchall()
        return "\n".join(str(r[0]) for r in rows)

    plan = runtime.db.run(explain)
    assert any(index in plan for index in _INDEXES), plan
    assert "Seq Scan on aml_movements" not in plan, plan


def test_a_measure_near_an_hour_names_the_zone_too(clock: ManualClock) -> None:
    now = clock.now()
    with pytest.raises(ValueError, match="both the hour and the zone"):
        Measure("totals", now - timedelta(days=1), now, near_hour=3)
    with pytest.raises(ValueError, match="both the hour and the zone"):
        Measure("totals", now - timedelta(days=1), now, zone="Asia/Shanghai")
