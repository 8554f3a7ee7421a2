"""``/v1/aml/alerts`` and ``/v1/aml/rules`` over HTTP: the queue, the state machine, the rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from custodia.aml.models import AmlCase
from custodia.aml.rules import RULES
from custodia.api.runtime import Runtime
from custodia.core.audit import AuditAction
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Customer, onboard
from tests.aml.conftest import CNY, Feed, deliver
from tests.factories import StaffLogin, audit_actions

Client = TestClient[Any]


def _lower_threshold(client: Client, lead: StaffLogin, amount: int) -> dict[str, Any]:
    changed = client.put(
        "/v1/aml/rules/large_value",
        json={"params": {"individual_domestic": amount}},
        headers=lead.headers,
    )
    assert changed.status_code == 200, changed.text
    return dict(changed.json())


def _pair(client: Client, app: dict[str, str], clock: ManualClock) -> tuple[Customer, Customer]:
    payer = onboard(client, app, clock, funds=3_000 * CNY)
    payee = onboard(client, app, clock)
    return payer, payee


def _alerts(client: Client, staff: StaffLogin, **filters: str) -> list[dict[str, Any]]:
    listed = client.get("/v1/aml/alerts", params=filters, headers=staff.headers)
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


# --------------------------------------------------------------------------- the pipeline


def test_a_posted_transfer_reaches_the_rules_and_its_alert_the_queue(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin,
) -> None:  # fmt: skip
    """K2: the transfer's outbox event runs the rules; the alert shows rule, params, evidence."""
    _lower_threshold(client, lead, 500 * CNY)
    payer, payee = _pair(client, app, clock)
    sent = payer.transfer(payee.account, 900 * CNY)
    assert sent.status_code == 201, sent.text
    assert deliver(runtime) > 0

    alerts = _alerts(client, officer, rule="large_value", customer_id=payer.id, status="open")
    # The top-up (an inflow) and the transfer (an outflow) are counted separately (L1).
    assert sorted(a["pattern"][:3] for a in alerts) == ["in:", "out"]
    [alert] = [a for a in alerts if a["pattern"].startswith("out:")]
    assert alert["rule_version"] == 2
    assert alert["params"]["individual_domestic"] == 500 * CNY
    assert alert["severity"] == "medium"
    due = datetime.fromisoformat(alert["due_at"])
    assert due == datetime.fromisoformat(alert["created_at"]) + timedelta(hours=72)

    detail = client.get(f"/v1/aml/alerts/{alert['id']}", headers=officer.headers)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["transaction_ids"] == [sent.json()["id"]]
    assert [t["id"] for t in body["transactions"]] == [sent.json()["id"]]
    assert body["customer"]["id"] == payer.id
    assert body["customer"]["name"] != payer.body["name"]  # masked
    assert body["customer"]["name"].startswith(payer.body["name"][0])
    assert body["customer"]["accounts"][0]["id"] == payer.account
    # Each part is shown as its own endpoint shows it to the role (transactions, customers).
    record = client.get(f"/v1/transactions/{sent.json()['id']}", headers=officer.headers)
    assert body["transactions"][0] == record.json()
    shown = client.get(f"/v1/customers/{payer.id}", headers=officer.headers).json()
    assert body["customer"]["name"] == shown["name"]
    assert [a["pattern"][:3] for a in _alerts(client, officer, customer_id=payee.id)] == ["in:"]
    assert AuditAction.AML_ALERT_RAISED in audit_actions(runtime, customer_id=payer.id)


def test_monitoring_lag_is_exposed_in_metrics(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """Issue 7 item 1: pending posted transactions and the oldest one's age, on /metrics."""
    payer, payee = _pair(client, app, clock)
    assert payer.transfer(payee.account, 100 * CNY).status_code == 201
    clock.advance(timedelta(seconds=7))
    before = client.get("/metrics").text
    assert "custodia_aml_monitoring_pending_transactions 2.0" in before  # top-up, transfer
    lag = next(
        line for line in before.splitlines() if line.startswith("custodia_aml_monitoring_lag_s")
    )
    assert float(lag.split()[1]) >= 7
    deliver(runtime)
    after = client.get("/metrics").text
    assert "custodia_aml_monitoring_pending_transactions 0.0" in after
    assert "custodia_aml_monitoring_lag_seconds 0.0" in after


def test_alerts_filter_and_paginate(
    client: Client, runtime: Runtime, clock: ManualClock, feed: Feed, officer: StaffLogin
) -> None:
    """``GET /v1/aml/alerts``: filters combine; the cursor walks every alert once."""
    customers = [feed.customer() for _ in range(5)]
    for customer in customers:
        feed.move(customer, 600_000 * CNY, rule="large_value")
    first = client.get("/v1/aml/alerts", params={"limit": 2}, headers=officer.headers).json()
    seen = [a["id"] for a in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(
            "/v1/aml/alerts", params={"limit": 2, "cursor": cursor}, headers=officer.headers
        ).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)
    assert len(_alerts(client, officer, customer_id=customers[0])) == 1
    assert _alerts(client, officer, rule="structuring") == []
    bad = client.get("/v1/aml/alerts", params={"status": "pending"}, headers=officer.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"


# ------------------------------------------------------------------------ the state machine


def _one_alert(feed: Feed) -> str:
    customer = feed.customer()
    feed.move(customer, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer)
    return alert.id


def _decide(client: Client, staff: StaffLogin, alert_id: str, decision: str) -> Any:
    return client.post(
        f"/v1/aml/alerts/{alert_id}/decision",
        json={"decision": decision, "reason": "checked the counterparties"},
        headers=staff.headers,
    )


def test_an_alert_is_worked_from_open_to_closed_and_is_then_read_only(
    *, client: Client, runtime: Runtime, clock: ManualClock, feed: Feed, officer: StaffLogin,
    lead: StaffLogin,
) -> None:  # fmt: skip
    """open → in_review → escalated → closed; illegal transitions and closed alerts refused."""
    alert_id = _one_alert(feed)
    refused = _decide(client, officer, alert_id, "false_positive")
    assert refused.status_code == 409
    assert refused.json()["code"] == "invalid_transition"
    assert refused.json()["alert_status"] == "open"

    assigned = client.post(
        f"/v1/aml/alerts/{alert_id}/assign",
        json={"assignee": officer.username},
        headers=officer.headers,
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["status"] == "in_review"
    assert assigned.json()["assignee"] == officer.username

    noted = client.post(
        f"/v1/aml/alerts/{alert_id}/notes",
        json={"text": "Payee 张伟 called back"},
        headers=officer.headers,
    )
    assert noted.status_code == 201, noted.text
    clock.advance(timedelta(minutes=1))

    escalated = _decide(client, officer, alert_id, "escalate")
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["status"] == "escalated"
    clock.advance(timedelta(minutes=1))
    again = _decide(client, officer, alert_id, "escalate")
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    officer_closes = _decide(client, officer, alert_id, "report")
    assert (officer_closes.status_code, officer_closes.json()["code"]) == (
        403,
        "lead_decision_required",
    )
    closed = _decide(client, lead, alert_id, "report")
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["decision"]) == ("closed", "reported")

    for response in (
        _decide(client, lead, alert_id, "false_positive"),
        client.post(
            f"/v1/aml/alerts/{alert_id}/notes", json={"text": "late"}, headers=officer.headers
        ),
        client.post(
            f"/v1/aml/alerts/{alert_id}/assign",
            json={"assignee": lead.username},
            headers=lead.headers,
        ),
    ):
        assert (response.status_code, response.json()["code"]) == (409, "alert_closed")

    detail = client.get(f"/v1/aml/alerts/{alert_id}", headers=officer.headers).json()
    assert [(n["kind"], n["text"]) for n in detail["notes"]] == [
        ("note", "Payee 张伟 called back"),
        ("decision", "checked the counterparties"),
        ("decision", "checked the counterparties"),
    ]
    actions = audit_actions(runtime, alert_id)
    assert actions.count(AuditAction.AML_ALERT_DECIDED) == 2
    assert AuditAction.AML_ALERT_NOTED in actions


def test_notes_and_reasons_are_stored_only_encrypted(
    client: Client, runtime: Runtime, feed: Feed, officer: StaffLogin
) -> None:
    """K5: a note naming someone is a vault blob in the database, never the text."""
    alert_id = _one_alert(feed)
    client.post(
        f"/v1/aml/alerts/{alert_id}/notes",
        json={"text": "Payee 张伟 called back"},
        headers=officer.headers,
    )
    blobs = runtime.db.run(
        lambda s: [
            bytes(b) for b in s.execute(text("SELECT text_enc FROM aml_alert_notes")).scalars()
        ]
    )
    assert blobs
    assert all("张伟".encode() not in b for b in blobs)


def test_assignment_only_to_active_officers_and_leads(
    client: Client, feed: Feed, officer: StaffLogin, auditor: StaffLogin
) -> None:
    """An alert goes to someone who may decide it: not an auditor, not a stranger."""
    alert_id = _one_alert(feed)
    for assignee in (auditor.username, "nobody-here"):
        refused = client.post(
            f"/v1/aml/alerts/{alert_id}/assign",
            json={"assignee": assignee},
            headers=officer.headers,
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "assignee_not_eligible")


def test_auditors_read_the_queue_but_do_not_work_it(
    client: Client, feed: Feed, auditor: StaffLogin
) -> None:
    """Least privilege: auditors list and read alerts; deciding is for officers."""
    alert_id = _one_alert(feed)
    assert client.get(f"/v1/aml/alerts/{alert_id}", headers=auditor.headers).status_code == 200
    refused = _decide(client, auditor, alert_id, "false_positive")
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


def test_a_closed_alert_is_refused_by_the_database_too(
    client: Client, runtime: Runtime, feed: Feed, officer: StaffLogin
) -> None:
    """The read-only rule holds against SQL that goes around the service."""
    alert_id = _one_alert(feed)
    client.post(
        f"/v1/aml/alerts/{alert_id}/assign",
        json={"assignee": officer.username},
        headers=officer.headers,
    )
    assert _decide(client, officer, alert_id, "false_positive").status_code == 200
    with pytest.raises(DBAPIError, match="append-only"):
        runtime.db.run(
            lambda s: s.execute(
                text("UPDATE aml_alerts SET status = 'open', decision = NULL, closed_at = NULL "
                     "WHERE id = :id"),
                {"id": alert_id},
            )
        )  # fmt: skip


def test_alerts_of_one_customer_share_a_case_that_closes_with_the_last(
    client: Client, runtime: Runtime, feed: Feed, officer: StaffLogin
) -> None:
    """Related alerts of a customer are one case; it closes when its last alert does."""
    customer = feed.customer(risk_level="high")
    feed.move(customer, 600_000 * CNY, rule="large_value")
    feed.move(customer, 600_000 * CNY, rule="high_risk_large")
    alerts = feed.alerts(customer)
    assert len(alerts) == 2
    assert alerts[0].case_id == alerts[1].case_id
    detail = client.get(f"/v1/aml/alerts/{alerts[0].id}", headers=officer.headers).json()
    assert detail["case"] == {"id": alerts[0].case_id, "other_alerts": [alerts[1].id]}

    def case_status() -> str:
        case = runtime.db.run(lambda s: s.get(AmlCase, alerts[0].case_id))
        assert case is not None
        return case.status

    for n, alert in enumerate(alerts):
        assert case_status() == "open"
        client.post(
            f"/v1/aml/alerts/{alert.id}/assign",
            json={"assignee": officer.username},
            headers=officer.headers,
        )
        decided = _decide(client, officer, alert.id, "no_action" if n else "false_positive")
        assert decided.status_code == 200, decided.text
    assert case_status() == "closed"
    feed.move(customer, 600_000 * CNY, rule="high_risk_large")
    [newest] = [a for a in feed.alerts(customer) if a.status == "open"]
    assert newest.case_id != alerts[0].case_id  # a new pattern opens a new case


# ---------------------------------------------------------------------------------- rules


def test_rules_are_listed_with_the_l1_thresholds_as_defaults(
    client: Client, auditor: StaffLogin
) -> None:
    """Every rule is listed at version 1 with its defaults; L1's four thresholds are there."""
    listed = client.get("/v1/aml/rules", headers=auditor.headers)
    assert listed.status_code == 200, listed.text
    items = {r["key"]: r for r in listed.json()["items"]}
    assert set(items) == set(RULES)
    large = items["large_value"]
    assert (large["version"], large["enabled"], large["regulation"]) == (1, True, "L1")
    assert large["params"] == {
        "individual_domestic": 500_000 * CNY,
        "individual_cross_border": 200_000 * CNY,
        "corporate": 2_000_000 * CNY,
        "cash": 50_000 * CNY,
    }


def test_a_lead_changes_a_rule_as_a_new_audited_version(
    client: Client, runtime: Runtime, lead: StaffLogin, officer: StaffLogin
) -> None:
    """K2: a change is validated, versioned and audited; officers may not change rules."""
    body = {"enabled": True, "params": {"min_count": 4}}
    refused = client.put("/v1/aml/rules/structuring", json=body, headers=officer.headers)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    changed = client.put("/v1/aml/rules/structuring", json=body, headers=lead.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    assert changed.json()["params"]["min_count"] == 4
    assert changed.json()["params"]["threshold"] == 50_000 * CNY  # the rest kept
    unchanged = client.put("/v1/aml/rules/structuring", json=body, headers=lead.headers)
    assert unchanged.json()["version"] == 2  # nothing changed, no new version
    versions = client.get("/v1/aml/rules/structuring/versions", headers=officer.headers).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert audit_actions(runtime, "aml_rule:structuring") == [AuditAction.AML_RULE_CHANGED]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_count": "4"}, "params.min_count"),
        ({"min_count": 1}, "params.min_count"),
        ({"threshold": 1.5}, "params.threshold"),
        ({"surprise": 1}, "params"),
    ],
)
def test_rule_parameters_are_typed_and_validated(
    client: Client, lead: StaffLogin, params: dict[str, Any], field: str
) -> None:
    """Strings, out-of-range values, floats for money and unknown keys are refused (422)."""
    refused = client.put("/v1/aml/rules/structuring", json={"params": params}, headers=lead.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "invalid_rule_params"
    assert refused.json()["errors"][0]["field"] == field


def test_an_unknown_rule_is_not_found(client: Client, lead: StaffLogin) -> None:
    """PUT on a key no rule has answers 404."""
    missing = client.put("/v1/aml/rules/nope", json={"enabled": False}, headers=lead.headers)
    assert missing.status_code == 404


def test_a_disabled_rule_raises_nothing(client: Client, feed: Feed, lead: StaffLogin) -> None:
    """A lead switches a rule off; it stops firing at once."""
    off = client.put("/v1/aml/rules/large_value", json={"enabled": False}, headers=lead.headers)
    assert off.json()["enabled"] is False
    customer = feed.customer()
    assert feed.move(customer, 600_000 * CNY, rule="large_value") == []


def test_an_alert_keeps_the_parameters_it_was_raised_under(
    client: Client, feed: Feed, lead: StaffLogin, officer: StaffLogin
) -> None:
    """A later change of the rule does not rewrite what an alert was raised under."""
    alert_id = _one_alert(feed)
    _lower_threshold(client, lead, 1_000 * CNY)
    shown = client.get(f"/v1/aml/alerts/{alert_id}", headers=officer.headers).json()
    assert shown["rule_version"] == 1
    assert shown["params"]["individual_domestic"] == 500_000 * CNY


def test_a_note_sent_twice_under_one_key_is_written_once(
    client: Client, feed: Feed, officer: StaffLogin
) -> None:
    """A retried note with the same Idempotency-Key replays the first answer."""
    alert_id = _one_alert(feed)
    headers = {**officer.headers, "Idempotency-Key": "note-1"}
    first = client.post(f"/v1/aml/alerts/{alert_id}/notes", json={"text": "x"}, headers=headers)
    again = client.post(f"/v1/aml/alerts/{alert_id}/notes", json={"text": "x"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    detail = client.get(f"/v1/aml/alerts/{alert_id}", headers=officer.headers).json()
    assert len(detail["notes"]) == 1
