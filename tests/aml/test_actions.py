"""``POST /v1/aml/actions``: measures on accounts and customers, enforced at once (K2)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from custodia.aml.windows import Subject
from custodia.api.runtime import Runtime
from custodia.core.audit import AuditAction
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Customer, onboard
from tests.aml.conftest import CNY, Feed
from tests.factories import StaffLogin

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
        {"action": "delay_settlement", "customer_id": "cus_x"},  # not enforceable yet
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
