"""``POST /v1/aml/actions``: measures on accounts and customers, enforced at once (K2)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from custodia.aml.windows import Subject
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.audit import AuditAction
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Customer, make_merchant, onboard
from tests.aml.conftest import CNY, Feed
from tests.factories import StaffLogin, make_staff

Client = TestClient[Any]


def _act(client: Client, staff: StaffLogin, **body: Any) -> Any:
    return client.post(
        "/v1/aml/actions", json={"reason": "pass-through via 张伟", **body}, headers=staff.headers
    )


def _withdraw(client: Client, customer: Customer, amount: int) -> Any:
    key = customer.key()
    return client.post(
        "/v1/withdrawals",
        json={
            "account_id": customer.account, "bank_card_id": customer.card, "amount": amount,
            "authentication": {
                "factors": [customer.signature("withdrawal", key, customer.card, amount)]
            },
        },
        headers=customer.headers(key),
    )  # fmt: skip


def test_a_freeze_blocks_the_next_debit_at_once_and_a_lift_restores_it(
    client: Client, clock: ManualClock, app: dict[str, str], officer: StaffLogin
) -> None:
    """K2: once the freeze is committed the very next transfer is refused; lifted, it passes."""
    payer = onboard(client, app, clock, funds=500 * CNY)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 10 * CNY).status_code == 201
    frozen = _act(client, officer, account_id=payer.account, action="freeze")
    assert frozen.status_code == 201, frozen.text
    assert frozen.json()["accounts_changed"] == [payer.account]
    assert frozen.json()["customer_id"] == payer.id

    refused = payer.transfer(payee.account, 10 * CNY)
    assert (refused.status_code, refused.json()["code"]) == (403, "account_frozen")
    again = _act(client, officer, account_id=payer.account, action="freeze")
    assert (again.status_code, again.json()["code"]) == (409, "action_not_applicable")

    lifted = _act(client, officer, account_id=payer.account, action="lift")
    assert lifted.status_code == 201, lifted.text
    assert payer.transfer(payee.account, 10 * CNY).status_code == 201


def test_a_customer_freeze_covers_every_account_and_shows_in_the_timeline(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin,
) -> None:  # fmt: skip
    """K2: freezing a customer freezes each open account; the timeline shows the measure."""
    customer = onboard(client, app, clock, funds=100 * CNY)
    frozen = _act(client, officer, customer_id=customer.id, action="freeze")
    assert frozen.status_code == 201, frozen.text
    assert frozen.json()["accounts_changed"] == [customer.account]
    account = client.get(f"/v1/accounts/{customer.account}", headers=officer.headers).json()
    assert account["status"] == "frozen"
    timeline = client.get(f"/v1/customers/{customer.id}/timeline", headers=officer.headers)
    actions = [e["action"] for e in timeline.json()["items"]]
    assert AuditAction.AML_ACTION_TAKEN in actions
    assert AuditAction.ACCOUNT_FROZEN in actions
    reasons = runtime.db.run(
        lambda s: [
            bytes(r) for r in s.execute(text("SELECT reason_enc FROM aml_actions")).scalars()
        ]
    )
    assert reasons
    assert all("张伟".encode() not in r for r in reasons)  # stored only encrypted (K5)
    statuses = runtime.db.run(
        lambda s: list(s.execute(text("SELECT status_reason FROM payment_accounts")).scalars())
    )
    assert all(r is None or "张伟" not in r for r in statuses)


def test_terminating_service_stops_payments_but_lets_the_customer_withdraw(
    client: Client, clock: ManualClock, app: dict[str, str], officer: StaffLogin
) -> None:
    """K2 stop service: no more transfers; the customer's own money may go to their own card."""
    payer = onboard(client, app, clock, funds=100 * CNY)
    payee = onboard(client, app, clock)
    ended = _act(client, officer, customer_id=payer.id, action="terminate_service")
    assert ended.status_code == 201, ended.text
    assert ended.json()["customer_status"] == "restricted"
    refused = payer.transfer(payee.account, 10 * CNY)
    assert (refused.status_code, refused.json()["code"]) == (422, "customer_not_eligible")
    withdrawn = _withdraw(client, payer, 50 * CNY)
    assert withdrawn.status_code == 201, withdrawn.text

    lifted = _act(client, officer, customer_id=payer.id, action="lift")
    assert (lifted.status_code, lifted.json()["customer_status"]) == (201, "active")
    assert payer.transfer(payee.account, 10 * CNY).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"action": "freeze"},  # neither target
        {"action": "freeze", "account_id": "acc_x", "customer_id": "cus_x"},  # both
        {"action": "hold_funds", "customer_id": "cus_x"},  # not a measure API.md defines
        {"action": "freeze", "customer_id": "cus_x", "reason": ""},  # no reason
    ],
)
def test_a_measure_needs_one_target_a_known_action_and_a_reason(
    client: Client, officer: StaffLogin, body: dict[str, Any]
) -> None:
    """422 for a request that does not say exactly what to do to whom and why."""
    refused = client.post(
        "/v1/aml/actions", json={"reason": "why", **body}, headers=officer.headers
    )
    assert refused.status_code == 422, refused.text


def test_a_measure_may_cite_its_alert_but_not_an_unknown_one(
    client: Client, clock: ManualClock, app: dict[str, str], officer: StaffLogin, feed: Feed
) -> None:
    """The measure links to the alert it follows from; a wrong alert id is 404."""
    customer = onboard(client, app, clock)
    feed.people[customer.id] = Subject(customer.id, "individual", "low", "clear", "CN")
    feed.move(customer.id, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer.id)
    linked = _act(client, officer, customer_id=customer.id, action="freeze", alert_id=alert.id)
    assert (linked.status_code, linked.json()["alert_id"]) == (201, alert.id)
    unknown = _act(client, officer, customer_id=customer.id, action="lift", alert_id="alr_nope")
    assert unknown.status_code == 404


def _account(client: Client, staff: StaffLogin, account_id: str) -> tuple[int, int]:
    body = client.get(f"/v1/accounts/{account_id}", headers=staff.headers).json()
    return body["balance"], body["available"]


def _holds(runtime: Runtime, account_id: str) -> list[tuple[int, str, str]]:
    return runtime.db.run(
        lambda s: [
            (int(r.amount), r.status, r.reference)
            for r in s.execute(
                text(
                    "SELECT amount, status, reference FROM ledger_holds "
                    "WHERE account_id = :a ORDER BY amount DESC, id"
                ),
                {"a": account_id},
            )
        ]
    )


def test_a_delayed_settlement_holds_each_credit_until_lifted(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin,
) -> None:  # fmt: skip
    """K2 delay settlement: what arrives is held (in the balance, not available) until lifted;
    what the account held before stays the customer's to use."""
    payer = onboard(client, app, clock, funds=1_000 * CNY)
    payee = onboard(client, app, clock, funds=100 * CNY)
    delayed = _act(client, officer, account_id=payee.account, action="delay_settlement")
    assert delayed.status_code == 201, delayed.text
    assert delayed.json()["accounts_changed"] == [payee.account]
    again = _act(client, officer, account_id=payee.account, action="delay_settlement")
    assert (again.status_code, again.json()["code"]) == (409, "action_not_applicable")

    assert payer.transfer(payee.account, 300 * CNY).status_code == 201
    assert payer.transfer(payee.account, 200 * CNY).status_code == 201
    assert _account(client, officer, payee.account) == (600 * CNY, 100 * CNY)
    measure = delayed.json()["id"]
    assert _holds(runtime, payee.account) == [
        (300 * CNY, "active", f"aml:{measure}"),
        (200 * CNY, "active", f"aml:{measure}"),
    ]
    refused = payee.transfer(payer.account, 100 * CNY + 1)
    assert (refused.status_code, refused.json()["code"]) == (422, "insufficient_funds")
    assert refused.json()["available"] == 100 * CNY
    withdrawn = _withdraw(client, payee, 100 * CNY + 1)
    assert (withdrawn.status_code, withdrawn.json()["code"]) == (422, "insufficient_funds")
    assert payee.transfer(payer.account, 100 * CNY).status_code == 201  # its own, from before

    lifted = _act(client, officer, account_id=payee.account, action="lift")
    assert lifted.status_code == 201, lifted.text
    assert lifted.json()["accounts_changed"] == [payee.account]
    assert _account(client, officer, payee.account) == (500 * CNY, 500 * CNY)
    assert [status for _, status, _ in _holds(runtime, payee.account)] == ["voided", "voided"]
    assert payer.transfer(payee.account, 10 * CNY).status_code == 201
    assert _account(client, officer, payee.account) == (510 * CNY, 510 * CNY)  # no longer held
    timeline = client.get(f"/v1/customers/{payee.id}/timeline", headers=officer.headers)
    actions = [e["action"] for e in timeline.json()["items"]]
    assert AuditAction.ACCOUNT_SETTLEMENT_DELAYED in actions
    assert AuditAction.ACCOUNT_SETTLEMENT_RELEASED in actions


def test_a_customer_wide_delay_covers_every_open_account_and_the_app_sees_no_reason(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin,
) -> None:  # fmt: skip
    """Delaying a customer's settlement covers each open account; the app sees only the
    available balance (no tipping-off: the measure and its reason are for compliance)."""
    payer = onboard(client, app, clock, funds=1_000 * CNY)
    payee = onboard(client, app, clock)
    delayed = _act(client, officer, customer_id=payee.id, action="delay_settlement")
    assert delayed.status_code == 201, delayed.text
    assert delayed.json()["accounts_changed"] == [payee.account]
    assert payer.transfer(payee.account, 50 * CNY).status_code == 201
    seen_by_app = client.get(f"/v1/accounts/{payee.account}", headers=app).json()
    assert (seen_by_app["balance"], seen_by_app["available"]) == (50 * CNY, 0)
    assert "pass-through" not in str(seen_by_app) and "act_" not in str(seen_by_app)


@pytest.mark.parametrize(
    ("decision", "released"), [("false_positive", True), ("no_action", True), ("report", False)]
)
def test_the_alert_decision_releases_a_delay_it_cleared_and_a_report_keeps_it(
    client: Client, *, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin, feed: Feed, decision: str, released: bool,
) -> None:  # fmt: skip
    """K2: funds held for an alert are released when the alert is cleared; a reported
    alert keeps them held until an officer lifts the measure."""
    payer = onboard(client, app, clock, funds=1_000 * CNY)
    payee = onboard(client, app, clock)
    feed.people[payee.id] = Subject(payee.id, "individual", "low", "clear", "CN")
    feed.move(payee.id, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(payee.id)
    delayed = _act(
        client, officer, account_id=payee.account, action="delay_settlement", alert_id=alert.id
    )
    assert delayed.status_code == 201, delayed.text
    assert payer.transfer(payee.account, 70 * CNY).status_code == 201
    assert _account(client, officer, payee.account) == (70 * CNY, 0)
    assigned = client.post(
        f"/v1/aml/alerts/{alert.id}/assign",
        json={"assignee": officer.username},
        headers=officer.headers,
    )
    assert assigned.status_code == 200, assigned.text
    decided = client.post(
        f"/v1/aml/alerts/{alert.id}/decision",
        json={"decision": decision, "reason": "counterparty explained"},
        headers=officer.headers,
    )
    assert decided.status_code == 200, decided.text
    assert _account(client, officer, payee.account) == (70 * CNY, 70 * CNY if released else 0)
    [(_, status, _)] = _holds(runtime, payee.account)
    assert status == ("voided" if released else "active")


def test_a_refund_to_a_delayed_account_is_held_too(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin,
) -> None:  # fmt: skip
    """Every credit from another party is held while settlement is delayed (K2)."""
    admin = make_staff(runtime, Role.ADMIN).headers
    merchant_id, merchant_key = make_merchant(client, runtime, app, admin, clock)
    payer = onboard(client, app, clock, funds=500 * CNY)
    key = payer.key()
    paid = client.post(
        "/v1/payments",
        json={
            "account_id": payer.account, "amount": 200 * CNY, "order_id": "o-1",
            "authentication": {
                "factors": [payer.signature("payment", key, merchant_id, 200 * CNY)]
            },
        },
        headers={**merchant_key, "Idempotency-Key": key},
    )  # fmt: skip
    assert paid.status_code == 201, paid.text
    delayed = _act(client, officer, account_id=payer.account, action="delay_settlement")
    assert delayed.status_code == 201, delayed.text
    refunded = client.post(
        f"/v1/payments/{paid.json()['id']}/refunds",
        json={"amount": 50 * CNY, "reason": "returned goods"},
        headers={**merchant_key, "Idempotency-Key": "r-1"},
    )
    assert refunded.status_code == 201, refunded.text
    assert _account(client, officer, payer.account) == (350 * CNY, 300 * CNY)
    assert [(a, s) for a, s, _ in _holds(runtime, payer.account)] == [(50 * CNY, "active")]
