"""Bank cards (R7, K5), the transaction record (B2), reconciliation, declined terms (A3)."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from custodia.accounts.models import BankCard
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.logging import configure_logging
from custodia.core.settings import load_settings
from tests.accounts.conftest import Client, onboard
from tests.factories import make_staff


def _bind(client: Client, app: dict[str, str], customer_id: str, **body: Any) -> Any:
    return client.post(f"/v1/customers/{customer_id}/bank-cards", json=body, headers=app)


def _card_body(customer: Any, **overrides: Any) -> dict[str, Any]:
    body = {
        "card_number": "6217001234567890122",
        "holder_name": customer.body["name"],
        "bank_name": "中国建设银行",
        "holder_id_number": customer.body["id_number"],
    }
    body.update(overrides)
    return body


def test_a_card_is_bound_only_to_its_holder(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock)
    bound = _bind(client, app, customer.id, **_card_body(customer))
    assert bound.status_code == 201, bound.text
    assert bound.json()["masked_number"] == "6217 **** **** 0122"
    again = _bind(client, app, customer.id, **_card_body(customer))
    assert again.json()["id"] == bound.json()["id"]  # the same card, bound once
    other = _bind(client, app, customer.id, **_card_body(customer, holder_name="李四"))
    assert (other.status_code, other.json()["code"]) == (422, "bank_card_not_same_name")
    assert other.json()["mismatch"] == ["holder_name"]
    bad = _bind(client, app, customer.id, **_card_body(customer, card_number="6217001234567890123"))
    assert [e["field"] for e in bad.json()["errors"]] == ["card_number"]
    stored = runtime.db.run(lambda s: s.scalars(select(BankCard.card_number_enc)).all())
    assert all(b"6217001234567890122" not in blob for blob in stored)
    listed = client.get(f"/v1/customers/{customer.id}/bank-cards", headers=app).json()
    assert {c["masked_number"] for c in listed["items"]} == {
        "6217 **** **** 0122",
        "6222 **** **** 0128",
    }


@pytest.mark.parametrize(
    "extra", ["cvv", "CVV2", "pin", "track_2", "expiry", "exp_month", "valid_thru"]
)
def test_card_security_data_is_refused_and_never_kept_or_logged(
    client: Client, *, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    logging_restored: None, extra: str,
) -> None:  # fmt: skip
    customer = onboard(client, app, clock)
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json", log_level="DEBUG"), stream=log)
    before = runtime.db.run(lambda s: len(s.scalars(select(BankCard.id)).all()))
    refused = _bind(client, app, customer.id, **_card_body(customer), **{extra: "SENSITIVE-731"})
    assert refused.status_code == 422
    assert (refused.json()["code"], refused.json()["fields"]) == (
        "sensitive_data_rejected",
        [extra],
    )
    assert "SENSITIVE-731" not in log.getvalue()
    assert "6217001234567890122" not in log.getvalue()
    assert runtime.db.run(lambda s: len(s.scalars(select(BankCard.id)).all())) == before


def test_the_transaction_record_cannot_be_edited(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """Raw SQL, around Python: only a pending withdrawal's outcome may be written, once."""
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    txn = payer.transfer(payee.account, 100).json()["id"]
    for statement in (
        "UPDATE payment_transactions SET amount = 1 WHERE id = :id",
        "UPDATE payment_transactions SET credit_account = 'acc_x' WHERE id = :id",
        "UPDATE payment_transactions SET status = 'failed' WHERE id = :id",
        "DELETE FROM payment_transactions WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            runtime.db.run(lambda s, st=statement: s.execute(text(st), {"id": txn}))


def test_reconciliation_reports_the_reserve_backing_every_balance(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    payer = onboard(client, app, clock, funds=7_000)
    payee = onboard(client, app, clock)
    payer.transfer(payee.account, 2_000)
    auditor = make_staff(runtime, Role.AUDITOR).headers
    report = client.get("/v1/ledger/reconciliation", headers=auditor).json()
    (cny,) = report["items"]
    assert report["ok"] and cny["ok"]
    assert (
        cny["customer_funds"] >= 7_000
        and cny["reserve"]
        == cny["customer_funds"] + cny["merchant_funds"] + cny["fees"] + cny["suspense"]
    )
    assert client.get("/v1/ledger/reconciliation", headers=app).status_code == 403


def test_declining_the_agreement_puts_the_accounts_to_closing(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """A3: the customer declines; accounts may then only be emptied to the own card."""
    customer = onboard(client, app, clock, funds=3_000)
    other = onboard(client, app, clock)
    agreement = client.get("/v1/agreements/current", headers=app).json()
    clock.advance(timedelta(days=2))
    declined = client.post(
        f"/v1/customers/{customer.id}/consents",
        json={"agreement_id": agreement["id"], "accepted": False, "channel": "app",
              "ip": "203.0.113.7", "user_agent": "test", "shown_at": clock.now().isoformat()},
        headers=app,
    )  # fmt: skip
    assert declined.status_code == 201
    worker = runtime.worker(threading.Event())
    while worker.run_once():
        pass
    account = client.get(f"/v1/accounts/{customer.account}", headers=app).json()
    assert (account["status"], account["status_reason"]) == ("closing", "agreement_declined")
    assert customer.transfer(other.account, 100).json()["code"] == "account_not_active"
    key = customer.key()
    out = client.post(
        "/v1/withdrawals",
        json={"account_id": customer.account, "bank_card_id": customer.card, "amount": 3_000,
              "authentication": {"factors": [customer.signature("withdrawal", key, customer.card, 3_000)]}},
        headers=customer.headers(key),
    )  # fmt: skip
    assert out.status_code == 201, out.text
    pending = client.post(f"/v1/accounts/{customer.account}/close", headers=app)
    assert (pending.status_code, pending.json()["account_status"]) == (409, "payout_pending")
    while worker.run_once():
        pass
    clock.advance(timedelta(seconds=1))
    closed = client.post(f"/v1/accounts/{customer.account}/close", headers=app)
    assert closed.json()["status"] == "closed"
