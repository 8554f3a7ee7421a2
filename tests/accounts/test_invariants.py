"""The money invariants under concurrency and under random sequences of operations.

- 200 concurrent transfers of 1 CNY from an account holding 100 CNY: exactly 100 succeed.
- A Hypothesis state machine opens accounts, tops up, transfers, pays, refunds, withdraws and
  replays idempotency keys; after every step the balances match a model, none is negative,
  the journal replays to the stored balances and the reserve account backs every balance.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from custodia import ledger
from custodia.accounts import fastpath, movements
from custodia.api.runtime import Runtime
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.clock import ManualClock
from custodia.core.factors import Factor
from custodia.core.idempotency import IdempotentRequest
from tests.accounts.conftest import Client, Customer, make_merchant, onboard


@pytest.mark.parametrize("path", ["general", "one_call"])
def test_two_hundred_concurrent_transfers_of_one_yuan_from_a_hundred(
    committing_runtime: Runtime, path: str
) -> None:
    """Exactly 100 succeed, the rest are ``insufficient_funds``, the balance ends at 0.

    Through the general path (password and signature) and the one-call path (a signature
    alone: PostgreSQL's function, or its steps on the SQLite driver).
    """
    runtime = committing_runtime
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    from litestar.testing import TestClient  # noqa: PLC0415

    from custodia.api.app import create_app  # noqa: PLC0415
    from tests.factories import bearer, make_client  # noqa: PLC0415

    made = make_client(runtime, Role.ONBOARDING_APP)
    app = bearer(made.key)
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        payer = onboard(client, app, clock, account_class="III", funds=100 * 100)
        payee = onboard(client, app, clock)
    ctx_actor = Actor(ActorKind.CLIENT, made.id, Role.ONBOARDING_APP)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200, timeout=60)

    def transfer(n: int) -> None:
        key = f"concurrent-{n}"
        signature = Factor(**payer.signature("transfer", key, payee.account, 100))
        password = () if path == "one_call" else (Factor("password", value=payer.pin),)
        auth = movements.Authorisation(factors=(*password, signature), idempotency_key=key)
        cmd = movements.Transfer(payer.account, payee.account, 100)
        ctx = Context(ctx_actor, clock.now(), key)
        barrier.wait()
        try:
            if path == "one_call":
                fastpath.transfer(
                    runtime.db, cmd, auth, IdempotentRequest("concurrent", key, key), ctx=ctx,
                    c=runtime.money, keys=runtime.device_keys, parties=runtime.parties,
                    store=runtime.idempotency, render=lambda view: view.id.encode(),
                )  # fmt: skip
            else:
                runtime.db.run(lambda s: movements.transfer(s, cmd, auth, ctx=ctx, c=runtime.money))
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - counted for the assertion
            outcome = getattr(exc, "code", repr(exc))
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=transfer, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(outcomes)) == ["insufficient_funds", "ok"], set(outcomes)
    assert outcomes.count("ok") == 100
    balances = runtime.db.run(
        lambda s: [ledger.balance_of(s, a) for a in (payer.account, payee.account)]
    )
    assert balances == [(0, 0), (10_000, 10_000)]
    assert runtime.db.run(ledger.replay, read_only=True) == []
    (cny,) = runtime.db.run(ledger.reconcile, read_only=True)
    assert cny.ok


# ------------------------------------------------------------------------ state machine

DAILY_ONE_KIND = 100_000


class Money(RuleBasedStateMachine):
    """Random operations through the API against a model of every balance."""

    customers = Bundle("customers")
    payments = Bundle("payments")

    def __init__(
        self, client: Client, runtime: Runtime, app: dict[str, str], admin: dict[str, str]
    ) -> None:
        super().__init__()
        self.client, self.runtime, self.app, self.admin = client, runtime, app, admin
        clock = runtime.clock
        assert isinstance(clock, ManualClock)
        self.clock = clock
        self.balances: dict[str, int] = {}
        self.daily: dict[str, int] = {}
        self.refundable: dict[str, int] = {}
        self.last: tuple[str, dict[str, Any], dict[str, str], Any] | None = None
        self.keys = itertools.count(1)

    @initialize()
    def a_merchant(self) -> None:
        self.merchant, self.merchant_key = make_merchant(
            self.client, self.runtime, self.app, self.admin, self.clock
        )
        self.balances[self.merchant] = 0

    @rule(target=customers)
    def open_account(self) -> Customer:
        customer = onboard(self.client, self.app, self.clock, account_class="III")
        self.balances[customer.account] = 0
        self.daily[customer.id] = 0
        return customer

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        response = self.client.post(path, json=body, headers=headers)
        assert response.status_code < 500, response.text
        self.last = (path, body, headers, response)
        return response

    @rule(customer=customers, amount=st.integers(1, 60_000))
    def top_up(self, customer: Customer, amount: int) -> None:
        body = {"account_id": customer.account, "bank_card_id": customer.card, "amount": amount}
        response = self._post("/v1/top-ups", body, customer.headers(customer.key()))
        assert response.status_code == 201, response.text
        self.balances[customer.account] += amount

    def _debit_expected(self, customer: Customer, amount: int, *, limited: bool) -> str | None:
        if limited and self.daily[customer.id] + amount > DAILY_ONE_KIND:
            return "limit_exceeded"
        if self.balances[customer.account] < amount:
            return "insufficient_funds"
        return None

    @rule(payer=customers, payee=customers, amount=st.integers(1, 40_000))
    def transfer(self, payer: Customer, payee: Customer, amount: int) -> None:
        if payer.account == payee.account:
            return
        expected = self._debit_expected(payer, amount, limited=True)
        key = payer.key()
        body = {
            "from_account_id": payer.account,
            "to_account_id": payee.account,
            "amount": amount,
            "authentication": {
                "factors": [payer.signature("transfer", key, payee.account, amount)]
            },
        }
        response = self._post("/v1/transfers", body, payer.headers(key))
        if expected is None:
            assert response.status_code == 201, response.text
            self.balances[payer.account] -= amount
            self.balances[payee.account] += amount
            self.daily[payer.id] += amount
        else:
            assert response.json()["code"] == expected, response.text

    @rule(target=payments, payer=customers, amount=st.integers(1, 40_000))
    def pay(self, payer: Customer, amount: int) -> str:
        expected = self._debit_expected(payer, amount, limited=True)
        key = payer.key()
        body = {
            "account_id": payer.account,
            "amount": amount,
            "order_id": key,
            "authentication": {"factors": [payer.signature("payment", key, self.merchant, amount)]},
        }
        response = self._post("/v1/payments", body, {**self.merchant_key, "Idempotency-Key": key})
        if expected is not None:
            assert response.json()["code"] == expected, response.text
            return ""
        assert response.status_code == 201, response.text
        self.balances[payer.account] -= amount
        self.balances[self.merchant] += amount
        self.daily[payer.id] += amount
        payment = response.json()
        self.refundable[payment["id"]] = amount
        return f"{payment['id']}|{payer.account}"

    @rule(payment=payments, amount=st.integers(1, 40_000))
    def refund(self, payment: str, amount: int) -> None:
        if not payment:
            return
        payment_id, payer_account = payment.split("|")
        response = self._post(
            f"/v1/payments/{payment_id}/refunds",
            {"amount": amount},
            {**self.merchant_key, "Idempotency-Key": f"refund-{next(self.keys)}"},
        )
        if amount > self.refundable[payment_id]:
            assert response.json()["code"] == "refund_exceeds_payment", response.text
            return
        if amount > self.balances[self.merchant]:
            assert response.json()["code"] == "insufficient_funds", response.text
            return
        assert response.status_code == 201, response.text
        self.refundable[payment_id] -= amount
        self.balances[self.merchant] -= amount
        self.balances[payer_account] += amount

    @rule(customer=customers, amount=st.integers(1, 40_000))
    def withdraw(self, customer: Customer, amount: int) -> None:
        expected = self._debit_expected(customer, amount, limited=False)
        key = customer.key()
        body = {
            "account_id": customer.account,
            "bank_card_id": customer.card,
            "amount": amount,
            "authentication": {
                "factors": [customer.signature("withdrawal", key, customer.card, amount)]
            },
        }
        response = self._post("/v1/withdrawals", body, customer.headers(key))
        if expected is None:
            assert response.status_code == 201, response.text
            self.balances[customer.account] -= amount
        else:
            assert response.json()["code"] == expected, response.text

    @rule()
    def replay_the_last_key(self) -> None:
        """The same key and body again: the same answer, nothing posted twice."""
        if self.last is None:
            return
        path, body, headers, first = self.last
        again = self.client.post(path, json=body, headers=headers)
        assert (again.status_code, again.content) == (first.status_code, first.content)

    @rule()
    def the_worker_pays_out(self) -> None:
        worker = self.runtime.worker(threading.Event())
        while worker.run_once():
            pass

    @invariant()
    def balances_match_the_model_and_the_books(self) -> None:
        stored = self.runtime.db.run(
            lambda s: {a: ledger.balance_of(s, a)[0] for a in self.balances}, read_only=True
        )
        assert stored == self.balances
        assert all(v >= 0 for v in stored.values())
        assert self.runtime.db.run(ledger.replay, read_only=True) == []
        assert all(r.ok for r in self.runtime.db.run(ledger.reconcile, read_only=True))


def test_random_sequences_of_money_movement_keep_every_invariant(
    client: Client, runtime: Runtime, app: dict[str, str], admin: dict[str, str]
) -> None:
    run_state_machine_as_test(
        lambda: Money(client, runtime, app, admin),
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
