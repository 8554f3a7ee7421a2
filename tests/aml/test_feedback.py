"""Monitoring feeds the customer risk rating (K1: transaction behaviour; L2: reported → high)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from custodia.aml.feedback import behaviour_score
from custodia.aml.windows import Subject
from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.settings import Settings
from custodia.kyc.customers import passed_channels_of
from custodia.kyc.models import Customer
from custodia.kyc.rating import RiskInputs, RiskModel, rate
from tests.accounts.conftest import onboard
from tests.aml.conftest import CNY, Feed
from tests.factories import StaffLogin, audit_actions, bearer, make_client

Client = TestClient[Any]


def _risk(client: Client, staff: StaffLogin, customer_id: str) -> tuple[str, float, int]:
    body = client.get(f"/v1/customers/{customer_id}/risk", headers=staff.headers).json()
    [behaviour] = [f["score"] for f in body["factors"] if f["name"] == "transaction_behaviour"]
    return body["level"], body["score"], behaviour


def _work(client: Client, staff: StaffLogin, alert_id: str, decision: str) -> None:
    assigned = client.post(
        f"/v1/aml/alerts/{alert_id}/assign", json={"assignee": staff.username},
        headers=staff.headers,
    )  # fmt: skip
    assert assigned.status_code == 200, assigned.text
    decided = client.post(
        f"/v1/aml/alerts/{alert_id}/decision",
        json={"decision": decision, "reason": "looked at the counterparties"},
        headers=staff.headers,
    )
    assert decided.status_code == 200, decided.text


def _alerted(client: Client, clock: ManualClock, app: dict[str, str], feed: Feed) -> Any:
    """A real customer with one large-value alert (score 90) from monitoring."""
    customer = onboard(client, app, clock)
    feed.people[customer.id] = Subject(customer.id, "individual", "low", "clear", "CN")
    feed.rate = True
    feed.move(customer.id, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer.id)
    return customer, alert


def test_an_alert_raises_the_behaviour_factor_and_clearing_it_restores_the_rating(
    client: Client, clock: ManualClock, app: dict[str, str], officer: StaffLogin, feed: Feed
) -> None:
    """K1: an unresolved alert scores the behaviour factor; a false positive undoes it."""
    customer = onboard(client, app, clock)
    before = _risk(client, officer, customer.id)
    assert before[2] == 3  # no view yet: the baseline
    feed.people[customer.id] = Subject(customer.id, "individual", "low", "clear", "CN")
    feed.rate = True
    feed.move(customer.id, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer.id)
    _, score, behaviour = _risk(client, officer, customer.id)
    assert behaviour == max(4, min(9, -(-alert.score // 10)))
    assert score > before[1]
    timeline = client.get(f"/v1/customers/{customer.id}/timeline", headers=officer.headers)
    rated = [e for e in timeline.json()["items"] if e["action"] == "kyc:customer:risk_rated"]
    assert rated and rated[0]["details"]["reason"] == "aml_alert_raised"

    _work(client, officer, alert.id, "false_positive")
    assert _risk(client, officer, customer.id) == before


def test_a_reported_customer_becomes_high_risk(
    client: Client, clock: ManualClock, app: dict[str, str], officer: StaffLogin, feed: Feed
) -> None:
    """Issue 7 item 5: once an alert is reported, the customer is rated high whatever else."""
    customer, alert = _alerted(client, clock, app, feed)
    assert _risk(client, officer, customer.id)[0] != "high"
    _work(client, officer, alert.id, "report")
    level, _, behaviour = _risk(client, officer, customer.id)
    assert (level, behaviour) == ("high", 10)
    account = client.get(f"/v1/customers/{customer.id}", headers=officer.headers).json()
    assert account["risk_level"] == "high"


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ([], None),
        ([("open", None, 12)], 4),
        ([("in_review", None, 67)], 7),
        ([("escalated", None, 100), ("open", None, 30)], 9),
        ([("closed", "false_positive", 100), ("closed", "no_action", 95)], None),
        ([("closed", "reported", 20), ("open", None, 60)], 10),
    ],
)
def test_the_behaviour_score_follows_the_customers_alerts(
    runtime: Runtime, feed: Feed, alerts: list[tuple[str, str | None, int]], expected: int | None
) -> None:
    """The factor as :mod:`custodia.aml.feedback` defines it, from the alert rows."""
    from sqlalchemy import text  # noqa: PLC0415

    customer_id = feed.customer()

    def work(session: Any) -> int | None:
        now = feed.clock.now()
        for case, status in (("case_o", "open"), ("case_c", "closed")):
            session.execute(
                text(
                    "INSERT INTO aml_cases (id, customer_id, status, opened_at, closed_at) "
                    "VALUES (:c, :cus, :st, :now, :closed)"
                ),
                {"c": case, "cus": customer_id, "st": status, "now": now,
                 "closed": now if status == "closed" else None},
            )  # fmt: skip
        for n, (status, decision, score) in enumerate(alerts):
            closed = status == "closed"
            session.execute(
                text(
                    "INSERT INTO aml_alerts (id, case_id, customer_id, rule, rule_version, "
                    "params, pattern, score, severity, details, status, decision, assignee, "
                    "due_at, created_at, updated_at, closed_at, closed_by) VALUES (:id, :c, "
                    ":cus, 'velocity', 1, '{}', :p, :score, 'low', '{}', :st, :d, NULL, :now, "
                    ":now, :now, :closed, :by)"
                ),
                {"id": f"alr_{n}", "c": "case_c" if closed else "case_o", "cus": customer_id,
                 "p": f"p{n}", "score": score, "st": status, "d": decision, "now": now,
                 "closed": now if closed else None, "by": "staff:stf_x" if closed else None},
            )  # fmt: skip
        return behaviour_score(session, customer_id)

    assert runtime.db.run(work) == expected


def test_a_behaviour_score_of_ten_rates_high_even_when_everything_else_is_low() -> None:
    """rate(): the reported score overrides the weighted level, as a confirmed match does."""
    inputs = RiskInputs(
        corporate=False, financial_institution=False, external_channels=5, in_person=True,
        occupation="teacher", nationality="CN", screening_status="clear",
        document_state="valid", transaction_behaviour=9, relationship_days=4000,
    )  # fmt: skip
    assert rate(inputs, RiskModel()).level == "low"
    reported = dataclasses.replace(inputs, transaction_behaviour=10)
    assert rate(reported, RiskModel()).level == "high"


@pytest.fixture
def committing_client(committing_runtime: Runtime, settings: Settings) -> Iterator[Client]:
    """An HTTP client for the app on the committing database (the outbox commits batches)."""
    with TestClient(create_app(settings, runtime=committing_runtime)) as test_client:
        yield test_client


def test_a_batch_re_rates_a_customer_once_after_all_of_its_alerts(
    committing_client: Client, committing_runtime: Runtime, clock: ManualClock
) -> None:
    """The worker re-rates each customer whose alerts a batch changed once, at its end (K1)."""
    runtime, client = committing_runtime, committing_client
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    payer = onboard(client, app, clock, funds=100 * CNY)
    listed = [onboard(client, app, clock) for _ in range(2)]
    for payee in listed:
        assert payer.transfer(payee.account, 10 * CNY).status_code == 201
    # The first payee a potential match (70), the second a confirmed one (90): the batch's
    # second finding is the stronger, which re-rated the payer a second time one by one.
    runtime.db.run(
        lambda s: s.execute(
            text(
                "UPDATE customers SET screening_status = CASE id WHEN :a THEN 'potential_match' "
                "ELSE 'confirmed_match' END WHERE id IN (:a, :b)"
            ),
            {"a": listed[0].id, "b": listed[1].id},
        )
    )
    rated_before = audit_actions(runtime, customer_id=payer.id).count("kyc:customer:risk_rated")

    assert runtime.outbox_processor().process_batch() == 3  # the top-up and both transfers

    feed = Feed(runtime, clock)
    patterns = sorted(a.pattern for a in feed.alerts(payer.id, rule="watchlist"))
    assert patterns == sorted(f"counterparty:{p.id}" for p in listed)  # two alerts, one batch
    rated = audit_actions(runtime, customer_id=payer.id).count("kyc:customer:risk_rated")
    assert rated == rated_before + 1
    scores = runtime.db.run(
        lambda s: dict(
            s.execute(
                text(
                    "SELECT id, transaction_behaviour_score FROM customers WHERE id IN (:a, :b, :c)"
                ),
                {"a": payer.id, "b": listed[0].id, "c": listed[1].id},
            ).all()
        )
    )
    # Each from its strongest unresolved alert (the listed: their own): 90 → 9, 70 → 7.
    assert scores == {payer.id: 9, listed[0].id: 7, listed[1].id: 9}


def test_the_channels_of_a_batch_of_customers_are_read_as_one_by_one(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """The batch's re-rating reads every customer's verified channels in one query: the
    channels passed for each one's current document."""
    people = [onboard(client, app, clock, account_class=c) for c in ("I", "II")]
    # A face-to-face check of an earlier document no longer counts.
    runtime.db.run(
        lambda s: s.execute(
            text(
                "INSERT INTO verifications (id, customer_id, channel, adapter, result, "
                "document_version, actor_kind, actor_id, created_at) VALUES ('ver_old', :c, "
                "'face_to_face', 'branch', 'passed', 0, 'staff', 'stf_x', :at)"
            ),
            {"c": people[0].id, "at": clock.now()},
        )
    )

    def both(session: Any) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
        customers = [session.get(Customer, p.id) for p in people]
        single = {  # the reference, in SQL of its own
            p.id: tuple(
                session.execute(
                    text(
                        "SELECT DISTINCT v.channel FROM verifications v JOIN customers c "
                        "ON c.id = v.customer_id AND c.document_version = v.document_version "
                        "WHERE v.customer_id = :c AND v.result = 'passed' ORDER BY 1"
                    ),
                    {"c": p.id},
                ).scalars()
            )
            for p in people
        }
        return passed_channels_of(session, customers), single

    together, single = runtime.db.run(both)
    assert together == single
    assert "face_to_face" not in together[people[0].id]
    assert 0 < len(together[people[0].id]) < len(together[people[1].id])  # not vacuous
