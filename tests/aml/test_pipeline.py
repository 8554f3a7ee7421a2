"""The monitoring pipeline under failure and concurrency (issue 7 item 1).

Every posted transaction reaches the rules through the outbox; several workers share the
backlog on PostgreSQL; each event is evaluated once; a worker that dies loses nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from custodia import aml
from custodia.aml.alerts import Raised, raise_alert, severity_of
from custodia.aml.config import rule_states
from custodia.aml.models import AmlAlert, AmlAlertTransaction, AmlMovement
from custodia.aml.monitoring import SCREENING_HIT, TRANSACTION_POSTED
from custodia.aml.rules import Finding
from custodia.aml.windows import Window
from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core.actors import SYSTEM, Context, Role
from custodia.core.clock import ManualClock
from custodia.core.metrics import Metrics
from custodia.core.models import OutboxEvent
from custodia.core.outbox import ConsumerRegistry, OutboxMessage, OutboxProcessor, publish
from custodia.core.settings import Settings
from tests.accounts.conftest import Customer, onboard
from tests.aml.conftest import CNY, LEAD, Feed, deliver
from tests.factories import StaffLogin, bearer, make_client, person_body

Client = TestClient[Any]


@pytest.fixture
def committing_client(committing_runtime: Runtime, settings: Settings) -> Iterator[Client]:
    """An HTTP client for the app on the committing database."""
    with TestClient(create_app(settings, runtime=committing_runtime)) as test_client:
        yield test_client


def _post_transfers(
    client: Client, runtime: Runtime, clock: ManualClock, count: int
) -> tuple[Customer, list[Customer], list[str]]:
    """Fund a payer and send ``count`` transfers to two payees; return the transfer ids."""
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    payer = onboard(client, app, clock, funds=900 * CNY)
    payees = [onboard(client, app, clock) for _ in range(2)]
    sent = []
    for n in range(count):
        done = payer.transfer(payees[n % 2].account, 10 * CNY)
        assert done.status_code == 201, done.text
        sent.append(done.json()["id"])
    return payer, payees, sent


def _every_transfer_is_a_large_value(runtime: Runtime, clock: ManualClock) -> None:
    """Lower L1's threshold to one fen, so that every movement belongs to an alert."""
    change = aml.RuleChange(params={"individual_domestic": 1})
    ctx = Context(LEAD, clock.now())
    runtime.db.run(lambda s: aml.update_rule(s, "large_value", change, ctx=ctx))


def _monitoring_only(runtime: Runtime, wrap: Any = None) -> ConsumerRegistry:
    registry = ConsumerRegistry()
    consumer = aml.consumers(runtime.monitoring_policy, clock=runtime.clock, ids=runtime.ids)[
        TRANSACTION_POSTED
    ]
    registry.register(TRANSACTION_POSTED, "aml", wrap(consumer) if wrap else consumer)
    return registry


def _processor(runtime: Runtime, registry: ConsumerRegistry, batch_size: int) -> OutboxProcessor:
    return OutboxProcessor(
        runtime.db, registry, clock=runtime.clock, metrics=Metrics(), batch_size=batch_size
    )


def _state(runtime: Runtime, payer: Customer) -> dict[str, Any]:
    def read(s: Session) -> dict[str, Any]:
        events = s.execute(
            select(OutboxEvent.status, OutboxEvent.attempts).where(
                OutboxEvent.event_type == TRANSACTION_POSTED
            )
        ).all()
        sides = Counter(s.execute(select(AmlMovement.transaction_id, AmlMovement.direction)).all())
        out_alerts = (
            s.execute(
                select(AmlAlert.id).where(
                    AmlAlert.customer_id == payer.id, AmlAlert.pattern.like("out:%")
                )
            )
            .scalars()
            .all()
        )
        links = Counter(
            s.execute(
                select(AmlAlertTransaction.transaction_id).where(
                    AmlAlertTransaction.alert_id.in_(out_alerts)
                )
            ).scalars()
        )
        return {
            "events": Counter(events),
            "sides": sides,
            "out_alerts": len(out_alerts),
            "links": links,
            "movements": s.execute(select(func.count()).select_from(AmlMovement)).scalar_one(),
        }

    return runtime.db.run(read, read_only=True)


def _assert_each_evaluated_once(state: dict[str, Any], sent: list[str], events: int) -> None:
    assert state["events"] == Counter({("done", 1): events})  # one committed delivery each
    assert set(state["sides"].values()) == {1}
    assert all(state["sides"][(t, "out")] == 1 and state["sides"][(t, "in")] == 1 for t in sent)
    assert state["out_alerts"] == 1  # folded into one alert, never duplicated
    assert state["links"] == Counter(dict.fromkeys(sent, 1))


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    committing_client: Client, committing_runtime: Runtime, clock: ManualClock
) -> None:
    """The batch dies with the worker; the next worker evaluates every event exactly once."""
    runtime = committing_runtime
    _every_transfer_is_a_large_value(runtime, clock)
    payer, _, sent = _post_transfers(committing_client, runtime, clock, 12)
    events = len(sent) + 1  # and the top-up

    class Killed(BaseException):
        """Stands for the process dying (not an Exception: nothing may catch it)."""

    calls = 0

    def dying(consumer: Any) -> Any:
        def wrapped(session: Session, message: OutboxMessage) -> None:
            nonlocal calls
            calls += 1
            if calls == 7:
                raise Killed
            consumer(session, message)

        return wrapped

    with pytest.raises(Killed):
        _processor(runtime, _monitoring_only(runtime, dying), batch_size=50).process_batch()
    before = _state(runtime, payer)
    assert before["movements"] == 0
    assert before["events"] == Counter({("pending", 0): events})

    processor = _processor(runtime, _monitoring_only(runtime), batch_size=50)
    assert processor.process_batch() == events
    assert processor.process_batch() == 0
    _assert_each_evaluated_once(_state(runtime, payer), sent, events)


def test_a_batch_evaluates_every_side_as_one_by_one_would(
    committing_client: Client, committing_runtime: Runtime, clock: ManualClock
) -> None:
    """The batch consumer (pipelined on PostgreSQL) sees each earlier side of the batch."""
    runtime = committing_runtime
    _every_transfer_is_a_large_value(runtime, clock)
    payer, payees, sent = _post_transfers(committing_client, runtime, clock, 12)
    assert runtime.outbox_processor().process_batch() == len(sent) + 1  # one batch
    _assert_each_evaluated_once(_state(runtime, payer), sent, len(sent) + 1)
    [alert] = [a for a in Feed(runtime, clock).alerts(payer.id) if a.pattern.startswith("out:")]
    assert (alert.details["count"], alert.details["total"]) == (12, 12 * 10 * CNY)
    for payee in payees:
        [received] = Feed(runtime, clock).alerts(payee.id, rule="large_value")
        assert received.details["count"] == 6  # every other transfer


def test_a_repeated_event_fails_alone_and_the_batch_goes_on(
    committing_client: Client, committing_runtime: Runtime, clock: ManualClock
) -> None:
    """A second event for one transaction breaks the batch (UNIQUE side, raised from the
    pipeline on PostgreSQL); one by one, only that event fails and each side counts once."""
    runtime = committing_runtime
    _, _, sent = _post_transfers(committing_client, runtime, clock, 3)
    runtime.db.run(
        lambda s: publish(
            s, TRANSACTION_POSTED, {"transaction_id": sent[0]}, ids=runtime.ids, now=clock.now()
        )
    )
    assert runtime.outbox_processor().process_batch() == len(sent) + 2  # and the top-up

    def read(s: Session) -> tuple[Counter[tuple[str, int]], list[str], Counter[Any]]:
        events = Counter(
            s.execute(
                select(OutboxEvent.status, OutboxEvent.attempts).where(
                    OutboxEvent.event_type == TRANSACTION_POSTED
                )
            ).all()
        )
        errors = list(
            s.execute(
                select(OutboxEvent.last_error).where(
                    OutboxEvent.status == "pending", OutboxEvent.event_type == TRANSACTION_POSTED
                )
            ).scalars()
        )
        sides = Counter(s.execute(select(AmlMovement.transaction_id, AmlMovement.direction)).all())
        return events, errors, sides

    events, errors, sides = runtime.db.run(read, read_only=True)
    assert events == Counter({("done", 1): len(sent) + 1, ("pending", 1): 1})
    assert len(errors) == 1
    assert "IntegrityError" in (errors[0] or "")
    assert set(sides.values()) == {1}


@pytest.mark.postgres_only
def test_two_workers_never_evaluate_an_event_twice(
    committing_client: Client, committing_runtime: Runtime, clock: ManualClock
) -> None:
    """SKIP LOCKED shares the backlog; concurrent findings of one pattern fold into one alert."""
    runtime = committing_runtime
    _every_transfer_is_a_large_value(runtime, clock)
    payer, _, sent = _post_transfers(committing_client, runtime, clock, 40)
    events = len(sent) + 1
    registry = _monitoring_only(runtime)
    per_worker = Counter[int]()

    def drain(worker: int) -> None:
        processor = _processor(runtime, registry, batch_size=3)
        while (handled := processor.process_batch()) > 0:
            per_worker[worker] += handled

    threads = [threading.Thread(target=drain, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert per_worker[0] > 0
    assert per_worker[1] > 0
    assert per_worker[0] + per_worker[1] == events
    _assert_each_evaluated_once(_state(runtime, payer), sent, events)


def test_a_screening_hit_lands_in_the_alert_queue(runtime: Runtime, feed: Feed) -> None:
    """L3: a KYC watchlist hit becomes a watchlist alert, once per hit."""
    customer = feed.customer()
    consumer = aml.consumers(runtime.monitoring_policy, clock=runtime.clock, ids=runtime.ids)[
        SCREENING_HIT
    ]
    message = OutboxMessage(
        id="evt_test",
        event_type=SCREENING_HIT,
        payload={"hit_id": "hit_test", "customer_id": customer, "subject": "customer",
                 "list_id": "TEST", "score": 91},
        created_at=runtime.clock.now(),
        attempt=1,
    )  # fmt: skip
    runtime.db.run(lambda s: consumer(s, message))
    runtime.db.run(lambda s: consumer(s, message))
    [alert] = feed.alerts(customer)
    assert (alert.rule, alert.pattern, alert.score, alert.severity) == (
        "watchlist",
        "hit:hit_test",
        91,
        "high",
    )


def test_onboarding_a_listed_person_puts_the_hit_in_the_alert_queue(
    client: Client, runtime: Runtime, lead: StaffLogin, officer: StaffLogin
) -> None:
    """L3: the KYC screening hit of a new customer reaches the queue through the outbox."""
    loaded = client.post(
        "/v1/aml/watchlists",
        content=b'{"list_id": "TEST", "name": "Zhang Wei", "nationality": "CN"}\n',
        headers={**lead.headers, "Content-Type": "application/x-ndjson"},
    )
    assert loaded.status_code == 201, loaded.text
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    customer = client.post("/v1/customers", json=person_body(name="张伟"), headers=app).json()
    assert customer["screening_status"] == "potential_match"
    deliver(runtime)
    listed = client.get(
        "/v1/aml/alerts", params={"customer_id": customer["id"]}, headers=officer.headers
    ).json()["items"]
    assert [(a["rule"], a["pattern"][:4], a["details"]["source"]) for a in listed] == [
        ("watchlist", "hit:", "screening")
    ]


@pytest.mark.postgres_only
def test_a_worker_waits_for_another_evaluating_the_same_customer(
    committing_client: Client,
    committing_runtime: Runtime,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two batches concerning one customer: the later one's windows count the earlier's.

    Worker "first" evaluates the payer's first transfer and holds its transaction open;
    worker "second" claims the next transfer (SKIP LOCKED) and must wait on the customer's
    lock, then see the first's movement committed — not evaluate blind beside it.
    """
    runtime = committing_runtime
    payer, _, sent = _post_transfers(committing_client, runtime, clock, 2)
    registry_plain = _monitoring_only(runtime)
    assert _processor(runtime, registry_plain, batch_size=1).process_batch() == 1  # the top-up
    evaluated = threading.Event()
    release = threading.Event()
    finished: list[str] = []
    seen: dict[str, int] = {}

    def wrap(consumer: Any) -> Any:
        def wrapped(session: Session, message: OutboxMessage) -> Any:
            done = consumer(session, message)
            if threading.current_thread().name == "first":
                evaluated.set()
                release.wait(30)  # the batch's transaction stays open meanwhile
            finished.append(threading.current_thread().name)
            return done

        return wrapped

    real = Window.record_and_measure_all

    def counted(self: Window, sides: Any) -> Any:
        if threading.current_thread().name == "second":
            seen["payer_movements"] = self.session.execute(
                select(func.count())
                .select_from(AmlMovement)
                .where(AmlMovement.customer_id == payer.id)
            ).scalar_one()
        return real(self, sides)

    monkeypatch.setattr(Window, "record_and_measure_all", counted)
    registry = _monitoring_only(runtime, wrap)

    def drain() -> None:
        _processor(runtime, registry, batch_size=1).process_batch()

    first = threading.Thread(target=drain, name="first")
    first.start()
    assert evaluated.wait(30)
    second = threading.Thread(target=drain, name="second")
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting on the payer's lock, not evaluating beside "first"
    release.set()
    first.join(30)
    second.join(30)
    assert finished == ["first", "second"]
    # The top-up's movement and the first transfer's, both committed before it looked.
    assert seen == {"payer_movements": 2}
    state = _state(runtime, payer)
    assert state["events"] == Counter({("done", 1): len(sent) + 1})


def test_a_runs_unclosed_alerts_are_read_in_one_query(feed: Feed, runtime: Runtime) -> None:
    """``unclosed_alerts``: the unclosed alert of each key asked, nothing for other keys."""
    from custodia.aml.alerts import unclosed_alerts  # noqa: PLC0415

    first, second, quiet, done = (feed.customer() for _ in range(4))
    [a] = feed.move(first, 500_000 * CNY, rule="large_value")
    [b] = feed.move(second, 500_000 * CNY, rule="large_value")
    [c] = feed.move(done, 500_000 * CNY, rule="large_value")
    runtime.db.run(
        lambda s: s.execute(
            update(AmlAlert)
            .where(AmlAlert.id == c.alert_id)
            .values(status="closed", decision="no_action", closed_at=AmlAlert.created_at)
        )
    )
    pattern = {alert.customer_id: alert.pattern for alert in feed.alerts(rule="large_value")}
    keys = [
        (first, "large_value", pattern[first]),
        (second, "large_value", pattern[second]),
        (second, "velocity", pattern[second]),  # another rule: no alert
        (quiet, "large_value", pattern[first]),  # another customer: no alert
        (done, "large_value", pattern[done]),  # closed: no unclosed alert
    ]
    found = runtime.db.run(lambda s: unclosed_alerts(s, keys))
    assert {key: alert.id for key, alert in found.items()} == {
        keys[0]: a.alert_id,
        keys[1]: b.alert_id,
    }
    assert found[keys[0]].score == next(x.score for x in feed.alerts(first))
    assert runtime.db.run(lambda s: unclosed_alerts(s, [])) == {}


def test_a_repeated_finding_folds_into_its_unclosed_alert(
    runtime: Runtime, clock: ManualClock, feed: Feed
) -> None:
    """Duplicates are de-duplicated (issue 7 item 3): the same pattern again is the same
    alert; a stronger finding raises its score and severity and replaces its details, a
    weaker one with nothing new leaves it as it was."""
    customer = feed.customer()

    def found(score: int, n: int) -> Raised:
        def work(session: Session) -> Raised:
            [state] = [s for s in rule_states(session, clock.now()) if s.rule.key == "velocity"]
            finding = Finding(score=score, pattern="out:burst", transactions=(), details={"n": n})
            return raise_alert(
                session, customer, state, finding, ctx=Context(SYSTEM, clock.now()),
                ids=runtime.ids, due=runtime.monitoring_policy.due,
            )  # fmt: skip

        return runtime.db.run(work)

    first = found(40, 1)
    raised_at = clock.now()
    clock.advance(timedelta(minutes=5))
    weaker = found(30, 2)
    [alert] = feed.alerts(customer)
    assert (alert.score, alert.details, alert.updated_at) == (40, {"n": 1}, raised_at)
    clock.advance(timedelta(minutes=5))
    stronger = found(90, 3)
    [alert] = feed.alerts(customer)
    assert first.created and not weaker.created and not stronger.created
    assert first.alert_id == weaker.alert_id == stronger.alert_id == alert.id
    assert (alert.score, alert.severity, alert.details) == (90, severity_of(90), {"n": 3})
    assert alert.updated_at == clock.now()
    assert alert.created_at == raised_at


def test_a_runs_repeated_findings_fold_together_as_one_by_one(
    runtime: Runtime, clock: ManualClock, feed: Feed
) -> None:
    """A run's findings are put in the queue together (``raise_alerts``; on PostgreSQL the
    links of every alert in one pipeline, by shape of evidence window): each alert gains
    exactly its listed transactions and its window's movements, counted once, and only
    the alerts that changed are updated and audited."""
    from custodia.aml.alerts import raise_alerts, unclosed_alerts  # noqa: PLC0415
    from custodia.aml.windows import Measure, evidence_query  # noqa: PLC0415
    from custodia.core import audit  # noqa: PLC0415

    stronger, weaker, quiet, fresh = (feed.customer() for _ in range(4))
    for customer in (stronger, weaker, quiet, fresh):  # history: six rows, 50 minutes apart
        for k in range(6):
            feed.move(customer, (k + 1) * 100 * CNY, rule="round_amount",
                      at=clock.now() - timedelta(minutes=50 * k + 1),
                      direction="in" if k % 2 else "out")  # fmt: skip
    raised_at = clock.now()

    def states(session: Session) -> dict[str, Any]:
        return {s.rule.key: s for s in rule_states(session, clock.now())}

    def put(session: Session, found: list[tuple[str, str, Finding]]) -> list[Raised]:
        by_key = states(session)
        ctx = Context(SYSTEM, clock.now())
        known = unclosed_alerts(session, [(c, rule, f.pattern) for c, rule, f in found])
        return raise_alerts(
            session, [(c, by_key[rule], f, ctx) for c, rule, f in found],
            ids=runtime.ids, due=runtime.monitoring_policy.due, rating=None, known=known,
        )  # fmt: skip

    # Each customer's first finding: an alert that lists nothing yet.
    first = runtime.db.run(
        lambda s: put(s, [(c, "velocity", Finding(50, "p", ())) for c in (stronger, weaker, quiet)])
    )
    assert all(r.created for r in first)
    clock.advance(timedelta(minutes=5))
    now = clock.now()
    outs = Measure("totals", now - timedelta(hours=3), now, direction="out")
    big = Measure("totals", now - timedelta(hours=5), now, min_amount=300 * CNY)
    listed = ("txn_listed_only",)

    def in_window(customer: str, measure: Measure) -> set[str]:
        return set(
            runtime.db.run(lambda s: s.execute(evidence_query(customer, measure)).scalars().all())
        )

    inside = sorted(in_window(stronger, outs))[0]  # listed and in the window: linked once
    found = [
        (stronger, "velocity", Finding(90, "p", (*listed, inside), {"n": 2}, evidence=outs)),
        (weaker, "velocity", Finding(30, "p", (), {"n": 2}, evidence=big)),
        (quiet, "velocity", Finding(40, "p", (), {"n": 2})),  # nothing new, weaker
        (fresh, "velocity", Finding(60, "p", listed, {"n": 1}, evidence=outs)),  # a new alert
    ]
    raised = runtime.db.run(lambda s: put(s, found))
    assert [r.created for r in raised] == [False, False, False, True]
    assert [r.alert_id for r in raised[:3]] == [r.alert_id for r in first]
    expected = {
        stronger: in_window(stronger, outs) | set(listed),
        weaker: in_window(weaker, big),
        quiet: set(),
        fresh: in_window(fresh, outs) | set(listed),
    }
    assert len(expected[stronger]) >= 3 and len(expected[weaker]) >= 3  # not vacuous
    assert expected[stronger] != in_window(stronger, big)  # two shapes, two windows
    for customer, r in zip((stronger, weaker, quiet, fresh), raised, strict=True):
        assert set(feed.transactions(r.alert_id)) == expected[customer], customer
    alerts = {a.customer_id: a for a in feed.alerts(rule="velocity")}
    assert (alerts[stronger].score, alerts[stronger].details) == (90, {"n": 2})
    assert (alerts[weaker].score, alerts[weaker].details) == (50, {"n": 2})  # kept the higher
    assert alerts[weaker].updated_at == now
    assert (alerts[quiet].score, alerts[quiet].details, alerts[quiet].updated_at) == (
        50, {}, raised_at,
    )  # fmt: skip

    def updates(alert_id: str) -> list[Any]:
        events = runtime.db.run(
            lambda s: audit.list_events(
                s, audit.EventFilter(target=alert_id), before_id=None, after_id=None,
                limit=10, newest_first=False,
            ),
            read_only=True,
        )  # fmt: skip
        return [e.details["added_transactions"] for e in events if e.action == "aml:alert:updated"]

    assert updates(raised[0].alert_id) == [len(expected[stronger])]
    assert updates(raised[1].alert_id) == [len(expected[weaker])]
    assert updates(raised[2].alert_id) == []


def test_a_run_s_new_alert_that_loses_its_insert_folds_into_the_winner(
    runtime: Runtime, clock: ManualClock, feed: Feed
) -> None:
    """Another worker raised the same pattern after this run looked for unclosed alerts:
    the insert does nothing and the finding folds into that alert (no second alert, its
    transactions linked); the other findings of the run are raised as usual, in one case
    per customer."""
    from custodia.aml.alerts import raise_alerts  # noqa: PLC0415

    taken, free = feed.customer(), feed.customer()

    def put(session: Session, found: list[tuple[str, str, Finding]]) -> list[Raised]:
        by_key = {s.rule.key: s for s in rule_states(session, clock.now())}
        ctx = Context(SYSTEM, clock.now())
        return raise_alerts(
            session, [(c, by_key[rule], f, ctx) for c, rule, f in found],
            ids=runtime.ids, due=runtime.monitoring_policy.due, rating=None, known={},
        )  # fmt: skip

    [won] = runtime.db.run(lambda s: put(s, [(taken, "velocity", Finding(50, "p", ("txn_a",)))]))
    clock.advance(timedelta(minutes=1))
    found = [
        (taken, "velocity", Finding(70, "p", ("txn_b",))),  # the pattern of `won`
        (free, "velocity", Finding(60, "p", ("txn_c",))),
        (free, "large_value", Finding(40, "q", ("txn_d",))),
    ]
    folded, *raised = runtime.db.run(lambda s: put(s, found))
    assert won.created and not folded.created and all(r.created for r in raised)
    assert (folded.alert_id, folded.case_id) == (won.alert_id, won.case_id)
    assert feed.transactions(won.alert_id) == ["txn_a", "txn_b"]
    assert [a.score for a in feed.alerts(taken)] == [70]
    assert raised[0].case_id == raised[1].case_id != won.case_id  # one case per customer
    assert [feed.transactions(r.alert_id) for r in raised] == [["txn_c"], ["txn_d"]]
    assert {a.rule: a.severity for a in feed.alerts(free)} == {
        "velocity": severity_of(60),
        "large_value": severity_of(40),
    }
