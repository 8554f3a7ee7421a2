"""Merchant payments and refunds (B2, B3, R5, A4), withdrawals and payouts (R7)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from custodia import ledger
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Client, Customer, card_ending, make_merchant, onboard


def _pay(
    client: Client, merchant_key: dict[str, str], payer: Customer, merchant_id: str, amount: int,
    *, order: str, investment: bool = False,
) -> Any:  # fmt: skip
    key = payer.key()
    return client.post(
        "/v1/payments",
        json={
            "account_id": payer.account,
            "amount": amount,
            "order_id": order,
            "description": "groceries",
            "investment": investment,
            "authentication": {"factors": [payer.signature("payment", key, merchant_id, amount)]},
        },
        headers={**merchant_key, "Idempotency-Key": key},
    )


def _refund(
    client: Client, merchant_key: dict[str, str], payment_id: str, amount: int, key: str
) -> Any:
    return client.post(
        f"/v1/payments/{payment_id}/refunds",
        json={"amount": amount, "reason": "returned goods"},
        headers={**merchant_key, "Idempotency-Key": key},
    )


def _run_worker(runtime: Runtime) -> None:
    worker = runtime.worker(threading.Event())
    while worker.run_once():
        pass


@pytest.fixture
def shop(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str], admin: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """A grocery merchant and its key."""
    return make_merchant(client, runtime, app, admin, clock)


def test_a_payment_records_the_merchant_and_refunds_go_back_to_the_payer(
    client: Client, *, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    shop: tuple[str, dict[str, str]],
) -> None:  # fmt: skip
    merchant_id, merchant_key = shop
    payer = onboard(client, app, clock, funds=10_000)
    paid = _pay(client, merchant_key, payer, merchant_id, 6_000, order="o-1")
    assert paid.status_code == 201, paid.text
    txn = paid.json()
    assert txn["merchant"]["id"] == merchant_id
    assert txn["merchant"]["mcc"] == "5411" and txn["merchant"]["code"].startswith("CM")
    assert (txn["payee"]["name"], txn["payer"]["name"]) == ("示例超市", "张*")
    assert txn["order_id"] == "o-1"
    again = _pay(client, merchant_key, payer, merchant_id, 6_000, order="o-1")
    assert (again.status_code, again.json()["code"]) == (409, "order_already_paid")
    first = _refund(client, merchant_key, txn["id"], 4_000, "r-1")
    assert first.status_code == 201, first.text
    refund = first.json()
    assert (refund["type"], refund["credit_account"], refund["original_transaction_id"]) == (
        "refund", payer.account, txn["id"],
    )  # fmt: skip
    over = _refund(client, merchant_key, txn["id"], 2_001, "r-2")
    assert over.status_code == 422
    assert (over.json()["code"], over.json()["remaining"]) == ("refund_exceeds_payment", 2_000)
    assert _refund(client, merchant_key, txn["id"], 2_000, "r-3").status_code == 201
    balance = client.get(f"/v1/accounts/{payer.account}", headers=app).json()["balance"]
    assert balance == 10_000
    assert runtime.db.run(ledger.replay, read_only=True) == []


def test_a_merchant_reaches_only_its_own_payments(
    client: Client, *, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    admin: dict[str, str], shop: tuple[str, dict[str, str]],
) -> None:  # fmt: skip
    merchant_id, merchant_key = shop
    _, other_key = make_merchant(client, runtime, app, admin, clock)
    payer = onboard(client, app, clock, funds=1_000)
    txn = _pay(client, merchant_key, payer, merchant_id, 500, order="o-9").json()
    assert client.get(f"/v1/transactions/{txn['id']}", headers=merchant_key).status_code == 200
    assert client.get(f"/v1/transactions/{txn['id']}", headers=other_key).status_code == 404
    assert _refund(client, other_key, txn["id"], 100, "r-x").status_code == 404
    assert client.get(f"/v1/merchants/{merchant_id}", headers=other_key).status_code == 404


def test_investment_products_are_for_class_iii_after_the_risk_warning(
    client: Client, *, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    admin: dict[str, str],
) -> None:  # fmt: skip
    """R5: only Class III balances buy investment products; A4: the partner product's warning."""
    fund, fund_key = make_merchant(client, runtime, app, admin, clock, mcc="6211")
    class_ii = onboard(client, app, clock, account_class="II", funds=5_000)
    refused = _pay(client, fund_key, class_ii, fund, 1_000, order="f-1")
    assert (refused.status_code, refused.json()["code"]) == (422, "account_class_not_permitted")
    class_iii = onboard(client, app, clock, account_class="III", funds=5_000)
    warned = _pay(client, fund_key, class_iii, fund, 1_000, order="f-2")
    assert (warned.status_code, warned.json()["code"]) == (409, "risk_warning_required")
    client.post(
        f"/v1/customers/{class_iii.id}/risk-warnings",
        json={"kind": "partner_product", "subject": fund, "shown_at": clock.now().isoformat(),
              "acknowledged": True},
        headers=app,
    )  # fmt: skip
    assert _pay(client, fund_key, class_iii, fund, 1_000, order="f-3").status_code == 201


def test_a_withdrawal_pays_out_through_the_worker(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock, funds=10_000)
    key = customer.key()
    pending = client.post(
        "/v1/withdrawals",
        json={
            "account_id": customer.account, "bank_card_id": customer.card, "amount": 4_000,
            "authentication": {"factors": [customer.signature("withdrawal", key, customer.card, 4_000)]},
        },
        headers=customer.headers(key),
    )  # fmt: skip
    assert pending.status_code == 201, pending.text
    txn = pending.json()
    assert (txn["status"], txn["completed_at"]) == ("pending", None)
    assert client.get(f"/v1/accounts/{customer.account}", headers=app).json()["balance"] == 6_000
    (cny,) = runtime.db.run(ledger.reconcile, read_only=True)
    assert (cny.suspense, cny.ok) == (4_000, True)  # in flight, still backed
    _run_worker(runtime)
    done = client.get(f"/v1/transactions/{txn['id']}", headers=app).json()
    assert (done["status"], done["bank_reference"]) == ("succeeded", f"sbx-{txn['id']}")
    (cny,) = runtime.db.run(ledger.reconcile, read_only=True)
    assert (cny.suspense, cny.reserve, cny.ok) == (0, 6_000, True)


def test_a_declined_payout_returns_the_money(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock, account_class="I", card=card_ending("2"))
    runtime.db.run(
        lambda s: ledger.post(
            s,
            transaction_id="txn_seed",
            kind="top_up",
            currency="CNY",
            legs=[ledger.Leg(ledger.system_account_id("reserve", "CNY"), customer.account, 5_000)],
            now=clock.now(),
        )
    )
    key = customer.key()
    pending = client.post(
        "/v1/withdrawals",
        json={
            "account_id": customer.account, "bank_card_id": customer.card, "amount": 5_000,
            "authentication": {"factors": [customer.signature("withdrawal", key, customer.card, 5_000)]},
        },
        headers=customer.headers(key),
    )  # fmt: skip
    assert pending.status_code == 201, pending.text
    _run_worker(runtime)
    done = client.get(f"/v1/transactions/{pending.json()['id']}", headers=app).json()
    assert done["status"] == "failed"
    account = client.get(f"/v1/accounts/{customer.account}", headers=app).json()
    assert account["balance"] == 5_000
    lifetime = next(limit for limit in account["limits"] if limit["rule"] == "class_i_lifetime")
    assert lifetime["used"] == 0  # the returned withdrawal gave its limit back
    assert runtime.db.run(ledger.replay, read_only=True) == []


def test_an_accounts_transactions_over_a_period(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    """K6: the account's history, newest first, filtered by period, paged."""
    payer = onboard(client, app, clock, funds=10_000)
    payee = onboard(client, app, clock)
    start = clock.now()
    for _ in range(3):
        clock.advance(timedelta(days=1))
        assert payer.transfer(payee.account, 100).status_code == 201
    page = client.get(
        f"/v1/accounts/{payer.account}/transactions", params={"limit": 2}, headers=app
    ).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(
        f"/v1/accounts/{payer.account}/transactions",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=app,
    ).json()
    assert [t["type"] for t in page["items"] + rest["items"]] == ["transfer"] * 3 + ["top_up"]
    window = client.get(
        f"/v1/accounts/{payer.account}/transactions",
        params={
            "from": (start + timedelta(days=1)).isoformat(),
            "to": (start + timedelta(days=2, hours=1)).isoformat(),
        },
        headers=app,
    ).json()
    assert len(window["items"]) == 2
