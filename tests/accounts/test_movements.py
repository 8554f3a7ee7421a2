"""Money movement through the API: top-ups, transfers, payments, refunds, withdrawals."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from custodia import ledger
from custodia.accounts.models import PaymentTransaction
from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.settings import Settings
from tests.accounts.conftest import Client, card_ending, onboard
from tests.factories import audit_actions, bearer, make_client

CNY = 100


def _balance(client: Client, app: dict[str, str], account: str) -> tuple[int, int]:
    body = client.get(f"/v1/accounts/{account}", headers=app).json()
    return body["balance"], body["available"]


def _run_worker(runtime: Runtime) -> None:
    worker = runtime.worker(threading.Event())
    while worker.run_once():
        pass


def _books_balance(runtime: Runtime) -> None:
    assert runtime.db.run(ledger.replay, read_only=True) == []
    assert all(r.ok for r in runtime.db.run(ledger.reconcile, read_only=True))


# --------------------------------------------------------------------------------- top-up


def test_a_top_up_credits_the_account_once_the_bank_confirmed(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock)
    key = customer.key()
    body = {"account_id": customer.account, "bank_card_id": customer.card, "amount": 50_000}
    first = client.post("/v1/top-ups", json=body, headers=customer.headers(key))
    assert first.status_code == 201, first.text
    txn = first.json()
    assert (txn["type"], txn["status"], txn["amount"], txn["currency"]) == (
        "top_up", "succeeded", 50_000, "CNY",
    )  # fmt: skip
    assert txn["bank_card"]["masked_number"] == "6222 **** **** 0128"
    assert txn["bank_reference"].startswith("sbx-")
    again = client.post("/v1/top-ups", json=body, headers=customer.headers(key))
    assert again.json() == txn and again.headers["idempotent-replayed"] == "true"
    assert _balance(client, app, customer.account) == (50_000, 50_000)
    _books_balance(runtime)


@pytest.mark.parametrize(
    ("ending", "status", "code"),
    [("000000002", 422, "bank_declined"), ("000000003", 503, "bank_unavailable")],
)
def test_a_declined_or_unanswered_card_debit_credits_nothing(
    client: Client, clock: ManualClock, app: dict[str, str], *, ending: str, status: int, code: str
) -> None:
    customer = onboard(client, app, clock, card=card_ending(ending[-1]))
    refused = customer.top_up(10_000)
    assert (refused.status_code, refused.json()["code"]) == (status, code)
    assert _balance(client, app, customer.account) == (0, 0)


def test_a_card_of_someone_else_is_refused(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    owner = onboard(client, app, clock)
    other = onboard(client, app, clock)
    refused = client.post(
        "/v1/top-ups",
        json={"account_id": other.account, "bank_card_id": owner.card, "amount": 100},
        headers=other.headers(other.key()),
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "not_same_customer")


def test_money_movement_requires_an_idempotency_key(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock)
    missing = client.post(
        "/v1/top-ups",
        json={"account_id": customer.account, "bank_card_id": customer.card, "amount": 100},
        headers=app,
    )
    assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_missing")


@pytest.mark.parametrize("amount", [0, -5, 1.5, "100", True])
def test_bad_amounts_are_422(
    client: Client, clock: ManualClock, app: dict[str, str], amount: object
) -> None:
    customer = onboard(client, app, clock)
    refused = client.post(
        "/v1/top-ups",
        json={"account_id": customer.account, "bank_card_id": customer.card, "amount": amount},
        headers=customer.headers(customer.key()),
    )
    assert refused.status_code == 422


# ------------------------------------------------------------------------------- transfer


def test_a_transfer_carries_every_field_of_the_record(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    app: dict[str, str],
    officer: dict[str, str],
) -> None:
    payer = onboard(client, app, clock, funds=10_000)
    payee = onboard(client, app, clock, name="李娜")
    done = payer.transfer(payee.account, 2_500, channel="app", terminal_type="android")
    assert done.status_code == 201, done.text
    txn = done.json()
    assert txn["id"].startswith("txn_")
    assert (txn["debit_account"], txn["credit_account"]) == (payer.account, payee.account)
    assert (txn["payer"]["name"], txn["payee"]["name"]) == ("张*", "李*")  # masked for the app
    assert (txn["channel"], txn["terminal_type"]) == ("app", "android")
    assert txn["authentication"]["factors"] == ["signature"]
    assert txn["authentication"]["kinds"] == ["possession"]
    assert txn["trace_id"]
    seen_by_officer = client.get(f"/v1/transactions/{txn['id']}", headers=officer).json()
    assert seen_by_officer["payer"]["name"] == "张伟"
    assert _balance(client, app, payer.account) == (7_500, 7_500)
    assert _balance(client, app, payee.account) == (2_500, 2_500)
    assert "accounts:transaction:transfer" in audit_actions(runtime, customer_id=payee.id)
    stored = runtime.db.run(lambda s: s.get(PaymentTransaction, txn["id"]))
    assert (
        stored is not None
        and stored.payer_name_enc
        and b"\xe5\xbc\xa0" not in stored.payer_name_enc
    )
    _books_balance(runtime)


def test_an_overdraft_is_refused_with_the_figures(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    refused = payer.transfer(payee.account, 1_001)
    assert refused.status_code == 422
    problem = refused.json()
    assert (problem["code"], problem["available"], problem["requested"]) == (
        "insufficient_funds", 1_000, 1_001,
    )  # fmt: skip


def test_a_debit_needs_the_customers_factor_and_a_wrong_one_is_counted(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    none = payer.transfer(payee.account, 100, factors=[])
    assert (none.status_code, none.json()["code"]) == (401, "authentication_required")
    forged = payer.transfer(
        payee.account, 100, factors=[payer.signature("transfer", "other", payee.account, 100)]
    )
    assert (forged.status_code, forged.json()["code"]) == (401, "authentication_failed")
    assert "kyc:credential:verification_failed" in audit_actions(runtime, customer_id=payer.id)
    wrong_pin = payer.transfer(
        payee.account, 100, factors=[{"type": "password", "value": "000000"}]
    )
    assert wrong_pin.status_code == 401
    assert _balance(client, app, payer.account) == (1_000, 1_000)


def test_a_restricted_customer_may_only_withdraw_to_their_own_card(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE customers SET status = 'restricted' WHERE id = :id"), {"id": payer.id}
        )
    )
    refused = payer.transfer(payee.account, 100)
    assert (refused.status_code, refused.json()["code"]) == (422, "customer_not_eligible")
    key = payer.key()
    withdrawn = client.post(
        "/v1/withdrawals",
        json={
            "account_id": payer.account, "bank_card_id": payer.card, "amount": 1_000,
            "authentication": {"factors": [payer.signature("withdrawal", key, payer.card, 1_000)]},
        },
        headers=payer.headers(key),
    )  # fmt: skip
    assert withdrawn.status_code == 201, withdrawn.text


def test_a_corporate_transfer_over_fifty_thousand_states_its_purpose(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    company = onboard(client, app, clock, account_class="corporate", corporate=True)
    company.top_up(6_000_000)
    payee = onboard(client, app, clock)
    refused = company.transfer(payee.account, 5_000_001)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["purpose"]
    assert company.transfer(payee.account, 5_000_001, purpose="货款").status_code == 201


# --------------------------------------------------------------------------------- limits


def test_class_i_pays_at_most_a_thousand_yuan_since_opening(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    """R5: withdrawals to the own card count too."""
    payer = onboard(client, app, clock, account_class="I", funds=200_000)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 60_000).status_code == 201
    clock.advance(timedelta(days=3))  # lifetime: a new day changes nothing
    refused = payer.transfer(payee.account, 40_001)
    assert refused.status_code == 422
    problem = refused.json()
    assert (problem["code"], problem["rule"], problem["article"]) == (
        "limit_exceeded", "class_i_lifetime", "Art. 11",
    )  # fmt: skip
    assert (problem["limit"], problem["used"], problem["requested"]) == (100_000, 60_000, 40_001)
    key = payer.key()
    over = client.post(
        "/v1/withdrawals",
        json={
            "account_id": payer.account, "bank_card_id": payer.card, "amount": 40_001,
            "authentication": {"factors": [payer.signature("withdrawal", key, payer.card, 40_001)]},
        },
        headers=payer.headers(key),
    )  # fmt: skip
    assert over.json()["rule"] == "class_i_lifetime"


def test_the_daily_limit_depends_on_the_kinds_of_factors(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    """K4: one kind 1,000 CNY a day; two kinds 5,000; two with a signature the agreed limit."""
    payer = onboard(client, app, clock, account_class="III", funds=2_000_000)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 90_000).status_code == 201  # a signature: one kind
    one_kind = payer.transfer(payee.account, 10_001)
    assert (one_kind.json()["rule"], one_kind.json()["limit"]) == ("daily", 100_000)
    key = payer.key()
    two = payer.transfer(
        payee.account, 400_000, key=key,
        factors=[payer.password(), payer.signature("transfer", key, payee.account, 400_000)],
    )  # fmt: skip
    assert two.status_code == 201, two.text  # password + signature: the agreed 50,000 CNY
    key = payer.key()
    password_only = payer.transfer(payee.account, 1, key=key, factors=[payer.password()])
    assert password_only.json()["limit"] == 100_000  # used 490,000 > one kind's 1,000 CNY
    clock.advance(timedelta(days=1))
    assert payer.transfer(payee.account, 100_000).status_code == 201  # a new day


def test_concurrent_payments_never_exceed_a_daily_limit(
    committing_runtime: Runtime, settings: Settings, clock: ManualClock
) -> None:
    """Eight transfers of 300 CNY at once against 1,000 CNY a day: exactly three succeed."""
    runtime = committing_runtime
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    # One client per thread: Litestar's app construction is not thread-safe.
    clients = [TestClient(create_app(settings, runtime=runtime)) for _ in range(8)]
    with contextlib.ExitStack() as stack:
        for c in clients:
            stack.enter_context(c)
        payer = onboard(clients[0], app, clock, account_class="III", funds=500_000)
        payee = onboard(clients[0], app, clock)
        statuses: list[int] = []
        barrier = threading.Barrier(len(clients), timeout=30)

        def pay(c: Client) -> None:
            barrier.wait()
            statuses.append(replace(payer, client=c).transfer(payee.account, 30_000).status_code)

        threads = [threading.Thread(target=pay, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201, 201, 201] + [422] * 5  # 3 × 300 ≤ 1,000 < 4 × 300
        assert _balance(clients[0], app, payee.account)[0] == 90_000
    _books_balance(runtime)


def test_the_agreed_signature_limit_is_recorded_and_applies(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """K4: with two kinds incl. an e-signature, the limit the customer agreed applies."""
    payer = onboard(client, app, clock, account_class="III", funds=2_000_000)
    payee = onboard(client, app, clock)
    agreed = client.post(
        f"/v1/customers/{payer.id}/payment-limits",
        json={"signature_daily_limit": 800_000},
        headers=app,
    )
    assert agreed.json() == {"customer_id": payer.id, "signature_daily_limit": 800_000}
    too_much = client.post(
        f"/v1/customers/{payer.id}/payment-limits",
        json={"signature_daily_limit": 20_000_001},
        headers=app,
    )
    assert too_much.status_code == 422
    key = payer.key()
    over = payer.transfer(
        payee.account, 800_001, key=key,
        factors=[payer.password(), payer.signature("transfer", key, payee.account, 800_001)],
    )  # fmt: skip
    assert (over.json()["rule"], over.json()["limit"]) == ("daily", 800_000)
    key = payer.key()
    fits = payer.transfer(
        payee.account, 800_000, key=key,
        factors=[payer.password(), payer.signature("transfer", key, payee.account, 800_000)],
    )  # fmt: skip
    assert fits.status_code == 201, fits.text
    assert "accounts:payment_limit:agreed" in audit_actions(runtime, customer_id=payer.id)
