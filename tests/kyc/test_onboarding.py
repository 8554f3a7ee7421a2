"""Onboarding over HTTP: register, mask, refuse, one document one customer (R1, R2, R4)."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from custodia.api.app import create_app
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.logging import configure_logging
from custodia.core.settings import Settings, load_settings
from custodia.kyc.models import Customer, CustomerParty
from tests.factories import (
    audit_actions,
    bearer,
    birth_date_of,
    corporate_body,
    make_client,
    make_staff,
    person_body,
    prc_id,
)

Client = TestClient[Any]


@pytest.fixture
def app_key(runtime: Runtime) -> dict[str, str]:
    """An onboarding app's credential."""
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


def _register(client: Client, headers: dict[str, str], body: dict[str, object]) -> Any:
    return client.post("/v1/customers", json=body, headers=headers)


# ------------------------------------------------------------------------------ individuals


def test_an_individual_is_registered_masked_and_audited(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    body = person_body(phone="13812345678")
    response = _register(client, app_key, body)
    assert response.status_code == 201, response.text
    customer = response.json()
    assert customer["id"].startswith("cus_")
    assert customer["status"] == "pending_verification"
    assert customer["name"] == "张*"
    number = str(body["id_number"])
    assert customer["id_number"] == number[:6] + "********" + number[-4:]
    assert customer["phone"] == "138****5678"
    assert customer["date_of_birth"] == f"{number[6:10]}-**-**"
    assert customer["address"].startswith("北京市朝阳区") and "建国路" not in customer["address"]
    assert customer["screening_status"] == "clear"
    assert customer["risk_level"] in {"low", "medium", "high"}
    assert customer["verified_channels"] == []
    assert customer["max_account_class"] is None
    assert "access:client:created" not in audit_actions(runtime, customer["id"])
    assert audit_actions(runtime, customer["id"]) == ["kyc:customer:registered"]


def test_identity_fields_are_stored_encrypted(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    body = person_body()
    customer_id = _register(client, app_key, body).json()["id"]
    row = runtime.db.run(lambda s: s.get(Customer, customer_id))
    assert row is not None
    for value in (body["name"], body["id_number"], body["phone"], body["address"]):
        encoded = str(value).encode()
        for blob in (row.name_enc, row.id_number_enc, row.phone_enc, row.address_enc):
            assert encoded not in (blob or b"")
    assert len(row.document_index) == 64


def test_every_invalid_field_is_named_at_once(client: Client, app_key: dict[str, str]) -> None:
    body = person_body(
        name="test",
        id_number="110105194912310021",
        phone="12345",
        nationality="XX",
        gender="other",
    )
    response = _register(client, app_key, body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    fields = {e["field"] for e in problem["errors"]}
    assert {"name", "id_number", "phone", "nationality", "gender"} <= fields


@pytest.mark.parametrize(
    "missing", ["date_of_birth", "gender", "phone", "address", "occupation", "id_valid_from"]
)
def test_r2_identity_fields_are_required_for_individuals(
    client: Client, app_key: dict[str, str], missing: str
) -> None:
    body = person_body()
    body.pop(missing)
    response = _register(client, app_key, body)
    assert response.status_code == 422
    assert missing in {e["field"] for e in response.json()["errors"]}


def test_birth_date_and_gender_must_match_the_id_number(
    client: Client, app_key: dict[str, str]
) -> None:
    response = _register(client, app_key, person_body(date_of_birth="1991-01-01", gender="female"))
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"date_of_birth", "gender"}


def test_an_expired_document_is_refused(client: Client, app_key: dict[str, str]) -> None:
    response = _register(client, app_key, person_body(id_valid_until="2025-01-01"))
    assert response.status_code == 422
    assert response.json()["code"] == "id_document_expired"
    assert response.json()["field"] == "id_valid_until"


def test_a_long_term_resident_id_is_accepted(client: Client, app_key: dict[str, str]) -> None:
    response = _register(client, app_key, person_body(id_valid_until=None))
    assert response.status_code == 201
    assert response.json()["id_valid_until"] is None


def test_a_refused_registration_leaves_nothing(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    _register(client, app_key, person_body(id_valid_until="2020-01-01"))
    count = runtime.db.run(
        lambda s: s.execute(select(func.count()).select_from(Customer)).scalar_one()
    )
    assert count == 0


def test_one_document_is_one_customer(client: Client, app_key: dict[str, str]) -> None:
    body = person_body()
    assert _register(client, app_key, body).status_code == 201
    again = _register(client, app_key, {**body, "id_number": str(body["id_number"]).lower()})
    assert again.status_code == 409
    assert again.json()["code"] == "customer_exists"
    other_app = body | {"phone": "13900000000"}
    assert _register(client, app_key, other_app).status_code == 409


def test_two_concurrent_registrations_of_one_document_create_one_customer(
    settings: Settings, committing_runtime: Runtime
) -> None:
    """Both requests pass the pre-check; the UNIQUE blind index lets exactly one commit."""
    runtime = committing_runtime
    key = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    body = person_body()
    barrier = threading.Barrier(2, timeout=20)
    statuses: list[int] = []
    failures: list[BaseException] = []
    # Apps are built here: Litestar's app construction imports lazily and is not thread-safe.
    clients = [TestClient(create_app(settings, runtime=runtime)) for _ in range(2)]

    def register(client: Client) -> None:
        try:
            barrier.wait()
            statuses.append(_register(client, key, body).status_code)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
            barrier.abort()

    with clients[0], clients[1]:
        threads = [threading.Thread(target=register, args=(c,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert failures == []
    assert sorted(statuses) == [201, 409]
    count = runtime.db.run(
        lambda s: s.execute(select(func.count()).select_from(Customer)).scalar_one()
    )
    assert count == 1


def test_a_retried_registration_with_its_key_replays(
    client: Client, app_key: dict[str, str]
) -> None:
    body = person_body()
    headers = {**app_key, "Idempotency-Key": "onboard-1"}
    first = _register(client, headers, body)
    second = _register(client, headers, body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"


# ------------------------------------------------------------------------------ corporates


def test_a_corporate_is_registered_with_representative_and_owners(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    body = corporate_body()
    response = _register(client, app_key, body)
    assert response.status_code == 201, response.text
    customer = response.json()
    assert customer["type"] == "corporate"
    assert customer["name"] == body["name"]  # a company's name is public
    assert customer["industry"] == "information_technology"
    assert customer["financial_institution"] is False
    assert customer["legal_representative"]["name"] == "李*"
    assert customer["beneficial_owners"][0]["ownership_pct"] == 60.0
    parties = runtime.db.run(
        lambda s: s.execute(
            select(func.count())
            .select_from(CustomerParty)
            .where(CustomerParty.customer_id == customer["id"])
        ).scalar_one()
    )
    assert parties == 2


def test_a_financial_institution_is_flagged(client: Client, app_key: dict[str, str]) -> None:
    customer = _register(client, app_key, corporate_body(industry="lending")).json()
    assert customer["financial_institution"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"industry": "alchemy"}, "industry"),
        ({"legal_representative": None}, "legal_representative"),
        (
            {
                "beneficial_owners": [
                    {
                        "name": "王芳",
                        "id_type": "prc_resident_id",
                        "id_number": "x",
                        "ownership_pct": 10,
                    }
                ]
            },
            "beneficial_owners[0].ownership_pct",
        ),
        ({"id_number": "91110000600037341M"}, "id_number"),
        ({"id_type": "prc_resident_id"}, "id_type"),
    ],
)
def test_corporate_mistakes_are_named(
    client: Client, app_key: dict[str, str], change: dict[str, object], field: str
) -> None:
    response = _register(client, app_key, corporate_body(**change))
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}, response.text


def test_owners_above_100_per_cent_are_refused(client: Client, app_key: dict[str, str]) -> None:
    owners = [
        {"name": n, "id_type": "prc_resident_id", "id_number": prc_id(), "ownership_pct": 60}
        for n in ("王芳", "刘洋")
    ]
    response = _register(client, app_key, corporate_body(beneficial_owners=owners))
    assert response.status_code == 422
    assert "beneficial_owners" in {e["field"] for e in response.json()["errors"]}


def test_an_expired_legal_representative_document_is_refused(
    client: Client, app_key: dict[str, str]
) -> None:
    rep = corporate_body()["legal_representative"]
    assert isinstance(rep, dict)
    response = _register(
        client,
        app_key,
        corporate_body(legal_representative={**rep, "id_valid_until": "2024-01-01"}),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "id_document_expired"
    assert response.json()["field"] == "legal_representative.id_valid_until"


# ------------------------------------------------------------------------------ reading


def test_an_app_sees_its_own_customers_only(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    customer_id = _register(client, app_key, person_body()).json()["id"]
    other = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    assert client.get(f"/v1/customers/{customer_id}", headers=app_key).status_code == 200
    hidden = client.get(f"/v1/customers/{customer_id}", headers=other)
    assert hidden.status_code == 404
    assert client.get(f"/v1/customers/{customer_id}/risk", headers=other).status_code == 404
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    assert client.get(f"/v1/customers/{customer_id}", headers=officer.headers).status_code == 200


def test_customers_are_found_by_phone_and_by_document(
    client: Client, app_key: dict[str, str]
) -> None:
    body = person_body(phone="13912345678")
    customer_id = _register(client, app_key, body).json()["id"]
    by_phone = client.get(
        "/v1/customers", params={"phone": "+86 139-1234-5678"}, headers=app_key
    ).json()
    assert [c["id"] for c in by_phone["items"]] == [customer_id]
    by_document = client.get(
        "/v1/customers",
        params={"id_type": "prc_resident_id", "id_number": str(body["id_number"]).lower()},
        headers=app_key,
    ).json()
    assert [c["id"] for c in by_document["items"]] == [customer_id]
    assert client.get("/v1/customers", headers=app_key).status_code == 422


def test_risk_shows_each_factor(client: Client, runtime: Runtime, app_key: dict[str, str]) -> None:
    """Staff see every factor; the app all but monitoring's (no tipping-off)."""
    customer_id = _register(client, app_key, person_body()).json()["id"]
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    risk = client.get(f"/v1/customers/{customer_id}/risk", headers=officer.headers).json()
    names = [f["name"] for f in risk["factors"]]
    assert names == [
        "customer_type", "verification_strength", "occupation", "geography",
        "screening_result", "document_state", "transaction_behaviour", "relationship_age",
    ]  # fmt: skip
    total = sum(f["weight"] * f["score"] for f in risk["factors"])
    maximum = sum(f["weight"] * 10 for f in risk["factors"])
    assert risk["score"] == int(total * 1000 / maximum) / 1000
    by_app = client.get(f"/v1/customers/{customer_id}/risk", headers=app_key).json()
    assert [f["name"] for f in by_app["factors"]] == [
        n for n in names if n != "transaction_behaviour"
    ]
    assert (by_app["level"], by_app["score"]) == (risk["level"], risk["score"])


def test_an_officer_reveals_a_field_with_a_reason_and_it_is_audited(
    client: Client, runtime: Runtime, app_key: dict[str, str], logging_restored: None
) -> None:
    """A reveal is audited and logged as a security event; the clear value is not logged."""
    body = person_body()
    customer_id = _register(client, app_key, body).json()["id"]
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json"), stream=log)
    no_reason = client.post(
        f"/v1/customers/{customer_id}/reveal",
        json={"fields": ["id_number"], "reason": "x"},
        headers=officer.headers,
    )
    assert no_reason.status_code == 422
    shown = client.post(
        f"/v1/customers/{customer_id}/reveal",
        json={"fields": ["id_number", "name"], "reason": "case alr_1: confirm identity with bank"},
        headers=officer.headers,
    )
    assert shown.status_code == 200
    assert shown.json()["fields"] == {"id_number": body["id_number"], "name": "张伟"}
    assert "kyc:customer:pii_revealed" in audit_actions(runtime, customer_id)
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    revealed = [line for line in lines if line.get("security_event") == "pii_revealed"]
    assert [(r["customer_id"], r["fields"]) for r in revealed] == [
        (customer_id, ["id_number", "name"])
    ]
    assert body["id_number"] not in log.getvalue()
    auditor = make_staff(runtime, Role.AUDITOR)
    assert (
        client.post(
            f"/v1/customers/{customer_id}/reveal",
            json={"fields": ["name"], "reason": "just curious here"},
            headers=auditor.headers,
        ).status_code
        == 403
    )


# ------------------------------------------------------------------------------ updating


def test_contact_changes_are_audited_masked(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    customer_id = _register(client, app_key, person_body(phone="13812345678")).json()["id"]
    response = client.patch(
        f"/v1/customers/{customer_id}", json={"phone": "13987654321"}, headers=app_key
    )
    assert response.status_code == 200
    assert response.json()["phone"] == "139****4321"
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    timeline = client.get(f"/v1/customers/{customer_id}/timeline", headers=officer.headers).json()[
        "items"
    ]
    update = next(e for e in timeline if e["action"] == "kyc:customer:updated")
    assert update["details"]["before"] == {"phone": "138****5678"}
    assert update["details"]["after"] == {"phone": "139****4321"}


def test_a_renewed_document_needs_verifying_again(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    customer_id = _register(client, app_key, person_body()).json()["id"]
    verified = client.post(
        f"/v1/customers/{customer_id}/verifications",
        json={"channel": "public_security_id"},
        headers=app_key,
    ).json()
    assert verified["verified_channels"] == ["public_security_id"]
    renewed = client.patch(
        f"/v1/customers/{customer_id}",
        json={"document": {"id_valid_from": "2026-01-01", "id_valid_until": "2046-01-01"}},
        headers=app_key,
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["verified_channels"] == []
    assert renewed.json()["id_valid_until"] == "2046-01-01"
    expired = client.patch(
        f"/v1/customers/{customer_id}",
        json={"document": {"id_valid_from": "2000-01-01", "id_valid_until": "2021-01-01"}},
        headers=app_key,
    )
    assert expired.json()["code"] == "id_document_expired"
    changed_number = client.patch(
        f"/v1/customers/{customer_id}",
        json={"document": {"id_valid_until": None, "id_number": prc_id()}},
        headers=app_key,
    )
    assert changed_number.status_code == 422


def test_registration_fails_cleanly_on_a_closed_clock_edge(
    client: Client, clock: ManualClock, app_key: dict[str, str]
) -> None:
    """A document valid until today is still valid today (dates in the institution's zone)."""
    today = clock.now().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date()
    response = _register(client, app_key, person_body(id_valid_until=today.isoformat()))
    assert response.status_code == 201
    clock.advance(timedelta(days=1))
    response = _register(client, app_key, person_body(id_valid_until=today.isoformat()))
    assert response.json()["code"] == "id_document_expired"


def test_birth_date_of_helper_agrees_with_ids() -> None:
    number = prc_id(born="1985-07-09")
    assert birth_date_of(number).startswith("1985-07")
