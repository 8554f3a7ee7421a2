"""Continuous identification with an injected clock: notices, restriction, re-verification (K7)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.models import OutboxEvent
from tests.factories import audit_actions, bearer, make_client, person_body

Client = TestClient[Any]
SHANGHAI = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")


@pytest.fixture
def app_key(runtime: Runtime) -> dict[str, str]:
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


def _today(clock: ManualClock) -> Any:
    return clock.now().astimezone(SHANGHAI).date()


def _events(runtime: Runtime, event_type: str) -> int:
    return runtime.db.run(
        lambda s: s.execute(
            select(func.count()).where(OutboxEvent.event_type == event_type)
        ).scalar_one()
    )


def _active(client: Client, app_key: dict[str, str], **body: object) -> str:
    customer_id = client.post("/v1/customers", json=person_body(**body), headers=app_key).json()[
        "id"
    ]
    client.post(
        f"/v1/customers/{customer_id}/verifications",
        json={"channel": "public_security_id"},
        headers=app_key,
    )
    return customer_id


def test_a_document_expiring_soon_gets_one_notice(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str]
) -> None:
    until = _today(clock) + timedelta(days=20)
    customer_id = _active(client, app_key, id_valid_until=until.isoformat())
    far = _active(client, app_key, id_valid_until=(_today(clock) + timedelta(days=90)).isoformat())
    assert runtime.kyc_review() == 1
    assert runtime.kyc_review() == 0  # sent once
    assert _events(runtime, "kyc.document_expiring") == 1
    assert "kyc:customer:document_expiring" in audit_actions(runtime, customer_id)
    assert "kyc:customer:document_expiring" not in audit_actions(runtime, far)


def test_an_expired_document_restricts_after_the_grace_period_until_renewed_and_verified(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str]
) -> None:
    until = _today(clock) + timedelta(days=5)
    customer_id = _active(client, app_key, id_valid_until=until.isoformat())
    clock.advance(timedelta(days=5 + 30))  # expired, still within the grace period
    runtime.kyc_review()
    assert client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["status"] == "active"
    clock.advance(timedelta(days=2))  # past the grace period
    runtime.kyc_review()
    customer = client.get(f"/v1/customers/{customer_id}", headers=app_key).json()
    assert (customer["status"], customer["restriction_reason"]) == (
        "restricted",
        "document_expired",
    )
    assert _events(runtime, "kyc.customer_restricted") == 1
    renewed = client.patch(
        f"/v1/customers/{customer_id}",
        json={
            "document": {"id_valid_from": _today(clock).isoformat(), "id_valid_until": "2050-01-01"}
        },
        headers=app_key,
    ).json()
    assert renewed["status"] == "restricted"  # renewed, not yet verified
    client.post(
        f"/v1/customers/{customer_id}/verifications",
        json={"channel": "public_security_id"},
        headers=app_key,
    )
    assert client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["status"] == "active"


def test_reverification_falls_due_by_risk_level(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str]
) -> None:
    customer_id = _active(client, app_key)
    level = client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["risk_level"]
    years = {"high": 1, "medium": 2, "low": 3}[level]
    clock.advance(timedelta(days=365 * years - 1))
    runtime.kyc_review()
    assert (
        client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["reverification_due_on"]
        is None
    )
    clock.advance(timedelta(days=2))
    runtime.kyc_review()
    due = client.get(f"/v1/customers/{customer_id}", headers=app_key).json()[
        "reverification_due_on"
    ]
    assert due is not None
    assert _events(runtime, "kyc.reverification_due") == 1
    client.post(
        f"/v1/customers/{customer_id}/verifications",
        json={"channel": "mobile_carrier"},
        headers=app_key,
    )
    assert (
        client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["reverification_due_on"]
        is None
    )


def test_the_review_runs_in_the_worker(runtime: Runtime) -> None:
    assert "kyc_review" in [
        job.name for job in runtime.worker(__import__("threading").Event()).periodic
    ]


def test_a_long_term_document_never_expires(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str]
) -> None:
    customer_id = _active(client, app_key, id_valid_until=None)
    clock.set(datetime(2070, 1, 1, tzinfo=SHANGHAI))
    runtime.kyc_review()
    assert client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["status"] == "active"
