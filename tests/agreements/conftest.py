"""Fixtures of the agreements tests: a compliance lead, an onboarding app, a customer."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from custodia.agreements import MANDATORY_CLAUSES, PAYMENT_SERVICE
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from tests.factories import bearer, make_client, make_staff, person_body

Client = TestClient[Any]


def clause_bodies(*, without: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """Every mandatory clause of a payment-service agreement, but those named."""
    return [
        {"key": key, "title": key.replace("_", " ").title(), "body": f"What {key} says."}
        for key in MANDATORY_CLAUSES[PAYMENT_SERVICE]
        if key not in without
    ]


def agreement_body(version: str, effective_at: datetime, **overrides: object) -> dict[str, object]:
    """A complete payment-service agreement draft (API.md ``POST /v1/agreements``)."""
    body: dict[str, object] = {
        "kind": PAYMENT_SERVICE,
        "version": version,
        "locale": "zh-CN",
        "title": f"支付服务协议 {version}",
        "effective_at": effective_at.isoformat(),
        "clauses": clause_bodies(),
    }
    body.update(overrides)
    return body


@pytest.fixture
def lead(runtime: Runtime) -> dict[str, str]:
    """A compliance lead's session."""
    return make_staff(runtime, Role.COMPLIANCE_LEAD).headers


@pytest.fixture
def app_key(runtime: Runtime) -> dict[str, str]:
    """An onboarding app's credential."""
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


@pytest.fixture
def customer_id(client: Client, app_key: dict[str, str]) -> str:
    """A registered customer of the app."""
    response = client.post("/v1/customers", json=person_body(), headers=app_key)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def publish_new_version(
    client: Client, lead: dict[str, str], version: str, effective_in: timedelta, now: datetime
) -> dict[str, Any]:
    """Draft and publish a new zh-CN payment-service version taking effect ``effective_in`` on."""
    draft = client.post(
        "/v1/agreements", json=agreement_body(version, now + effective_in), headers=lead
    )
    assert draft.status_code == 201, draft.text
    published = client.post(f"/v1/agreements/{draft.json()['id']}/publish", headers=lead)
    assert published.status_code == 200, published.text
    return dict(published.json())


def consent_body(agreement_id: str, shown_at: datetime, **overrides: object) -> dict[str, object]:
    """A consent as an onboarding app records it."""
    body: dict[str, object] = {
        "agreement_id": agreement_id,
        "accepted": True,
        "channel": "app",
        "ip": "203.0.113.7",
        "user_agent": "CustodiaWallet/3.2 (Android 14)",
        "shown_at": shown_at.isoformat(),
    }
    body.update(overrides)
    return body
