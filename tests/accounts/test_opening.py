"""Opening, freezing and closing payment accounts (R3, R4, R5, A1, K2)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Client, consent, onboard, verify
from tests.factories import audit_actions, corporate_body, person_body


def _open(client: Client, app: dict[str, str], customer_id: str, account_class: str) -> Any:
    return client.post(
        "/v1/accounts",
        json={"customer_id": customer_id, "account_class": account_class},
        headers=app,
    )


def _registered(client: Client, app: dict[str, str], body: dict[str, Any] | None = None) -> str:
    created = client.post("/v1/customers", json=body or person_body(), headers=app)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_an_account_opens_for_a_verified_customer_who_accepted_the_agreement(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock, account_class="II")
    account = client.get(f"/v1/accounts/{customer.account}", headers=app).json()
    assert (account["account_class"], account["status"], account["balance"]) == ("II", "active", 0)
    assert account["id"].startswith("acc_")
    rules = {limit["rule"] for limit in account["limits"]}
    assert {"class_ii_yearly", "daily_one_kind", "daily_two_kinds"} <= rules
    assert "accounts:account:opened" in audit_actions(runtime, customer_id=customer.id)
    listed = client.get(f"/v1/customers/{customer.id}/accounts", headers=app).json()
    assert [a["id"] for a in listed["items"]] == [customer.account]


def test_no_account_without_consent_to_the_agreement_in_force(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    customer_id = _registered(client, app)
    verify(client, app, customer_id, 1)
    refused = _open(client, app, customer_id, "I")
    assert (refused.status_code, refused.json()["code"]) == (409, "consent_required")
    consent(client, app, customer_id, clock)
    assert _open(client, app, customer_id, "I").status_code == 201


@pytest.mark.parametrize(("channels", "wanted"), [(0, "I"), (1, "II"), (3, "III")])
def test_the_class_needs_enough_verified_channels(
    client: Client, clock: ManualClock, app: dict[str, str], channels: int, wanted: str
) -> None:
    """R5: Class I one external channel, II three, III five (or face to face)."""
    customer_id = _registered(client, app)
    verify(client, app, customer_id, channels)
    consent(client, app, customer_id, clock)
    refused = _open(client, app, customer_id, wanted)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert (problem["code"], problem["regulation"], problem["article"]) == (
        "verification_insufficient",
        "R5",
        "Art. 11",
    )


def test_class_i_only_as_the_first_account_and_one_class_iii(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock, account_class="III")
    again_i = _open(client, app, customer.id, "I")
    assert (again_i.status_code, again_i.json()["code"]) == (422, "account_class_not_permitted")
    again_iii = _open(client, app, customer.id, "III")
    assert (again_iii.status_code, again_iii.json()["code"]) == (422, "account_class_not_permitted")
    assert _open(client, app, customer.id, "II").status_code == 201


def test_the_database_holds_one_class_iii_account_per_customer(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """Raw SQL, around Python: a second open Class III account is refused."""
    customer = onboard(client, app, clock, account_class="III")

    def second_class_iii(session: Any) -> None:
        session.execute(
            text(
                "INSERT INTO ledger_accounts (id, kind, currency, allow_overdraft, balance, held, "
                "created_at) VALUES ('acc_x', 'customer_wallet', 'CNY', false, 0, 0, '2026-01-01')"
            )
        )
        session.execute(
            text(
                "INSERT INTO payment_accounts (id, customer_id, account_class, currency, status, "
                "consent_id, opened_at, updated_at, created_by) SELECT 'acc_x', customer_id, "
                "'III', 'CNY', 'active', consent_id, opened_at, updated_at, created_by "
                "FROM payment_accounts WHERE id = :id"
            ),
            {"id": customer.account},
        )

    with pytest.raises(IntegrityError):
        runtime.db.run(second_class_iii)


def test_financial_institutions_and_restricted_customers_hold_no_accounts(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    bank = _registered(client, app, corporate_body(industry="banking"))
    verify(client, app, bank, 3)
    consent(client, app, bank, clock)
    refused = _open(client, app, bank, "corporate")
    assert refused.status_code == 422
    assert (refused.json()["code"], refused.json()["regulation"]) == ("customer_not_eligible", "R4")
    person = _registered(client, app)
    verify(client, app, person, 1)
    consent(client, app, person, clock)
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE customers SET status = 'restricted' WHERE id = :id"), {"id": person}
        )
    )
    restricted = _open(client, app, person, "I")
    assert (restricted.status_code, restricted.json()["code"]) == (422, "customer_not_eligible")


def test_a_corporate_opens_a_corporate_account_only(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    company = _registered(client, app, corporate_body())
    verify(client, app, company, 3)
    consent(client, app, company, clock)
    assert _open(client, app, company, "II").json()["code"] == "account_class_not_permitted"
    assert _open(client, app, company, "corporate").status_code == 201


def test_a_freeze_blocks_the_next_debit_at_once(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    app: dict[str, str],
    officer: dict[str, str],
) -> None:
    payer = onboard(client, app, clock, funds=10_000)
    payee = onboard(client, app, clock)
    frozen = client.post(
        f"/v1/accounts/{payer.account}/freeze", json={"reason": "case alr_1: suspected fraud"},
        headers=officer,
    )  # fmt: skip
    assert frozen.status_code == 200, frozen.text
    refused = payer.transfer(payee.account, 100)
    assert (refused.status_code, refused.json()["code"]) == (403, "account_frozen")
    assert payee.transfer(payer.account, 1).status_code in {201, 422}  # credits still arrive
    client.post(
        f"/v1/accounts/{payer.account}/unfreeze", json={"reason": "cleared"}, headers=officer
    )
    assert payer.transfer(payee.account, 100).status_code == 201
    actions = audit_actions(runtime, payer.account)
    assert [a for a in actions if a.endswith("frozen")] == [
        "accounts:account:frozen",
        "accounts:account:unfrozen",
    ]


def test_an_account_closes_only_at_zero(
    client: Client, clock: ManualClock, app: dict[str, str]
) -> None:
    customer = onboard(client, app, clock, funds=500)
    refused = client.post(f"/v1/accounts/{customer.account}/close", headers=app)
    assert (refused.status_code, refused.json()["code"]) == (409, "balance_not_zero")
    other = onboard(client, app, clock)
    assert customer.transfer(other.account, 500).status_code == 201
    closed = client.post(f"/v1/accounts/{customer.account}/close", headers=app)
    assert (closed.status_code, closed.json()["status"]) == (200, "closed")
