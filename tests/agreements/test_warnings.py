"""Risk warnings before high-risk operations (A4): recorded, audited, and a gate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from custodia import agreements
from custodia.agreements import RiskWarningPolicy, WarningKind
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from custodia.core.errors import ConfigError
from tests.agreements.conftest import Client
from tests.factories import audit_actions


def _warn(
    client: Client, headers: dict[str, str], customer_id: str, **body: object
) -> dict[str, object]:
    response = client.post(f"/v1/customers/{customer_id}/risk-warnings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _gate(
    runtime: Runtime, customer_id: str, operation: str, subject: str | None = None
) -> str | None:
    return runtime.db.run(
        lambda s: agreements.require_warning(
            s,
            customer_id,
            operation,
            subject=subject,
            now=runtime.clock.now(),
            policy=runtime.warning_policy,
        ),
        read_only=True,
    )


def test_a_high_risk_operation_needs_a_fresh_acknowledged_warning(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    with pytest.raises(agreements.RiskWarningRequired) as refused:
        _gate(runtime, customer_id, "large_transfer")
    assert (refused.value.code, refused.value.data["regulation"]) == ("risk_warning_required", "A4")
    _warn(
        client, app_key, customer_id, kind="high_risk_operation", shown_at=clock.now().isoformat(),
        acknowledged=False,
    )  # fmt: skip
    with pytest.raises(agreements.RiskWarningRequired):
        _gate(runtime, customer_id, "large_transfer")  # shown but not acknowledged
    warning = _warn(
        client, app_key, customer_id, kind="high_risk_operation", shown_at=clock.now().isoformat(),
        acknowledged=True, channel="app",
    )  # fmt: skip
    assert _gate(runtime, customer_id, "large_transfer") == warning["id"]
    clock.advance(timedelta(minutes=16))
    with pytest.raises(agreements.RiskWarningRequired):
        _gate(runtime, customer_id, "large_transfer")  # it counted for 15 minutes
    assert _gate(runtime, customer_id, "ordinary_payment") is None  # needs no warning
    assert (
        audit_actions(runtime, customer_id=customer_id).count("agreements:risk_warning:shown") == 2
    )


def test_a_partner_product_warning_counts_for_its_product_for_good(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    """A4: before the first purchase of a partner's product, show that product's risks."""
    missing_subject = client.post(
        f"/v1/customers/{customer_id}/risk-warnings",
        json={"kind": "partner_product", "shown_at": clock.now().isoformat(), "acknowledged": True},
        headers=app_key,
    )
    assert missing_subject.status_code == 422
    assert [e["field"] for e in missing_subject.json()["errors"]] == ["subject"]
    _warn(
        client, app_key, customer_id, kind="partner_product", subject="fund:000001",
        shown_at=clock.now().isoformat(), acknowledged=True,
    )  # fmt: skip
    clock.advance(timedelta(days=400))
    assert _gate(runtime, customer_id, "investment_purchase", "fund:000001")
    with pytest.raises(agreements.RiskWarningRequired):
        _gate(runtime, customer_id, "investment_purchase", "fund:000002")
    listed = client.get(f"/v1/customers/{customer_id}/risk-warnings", headers=app_key).json()
    assert [w["subject"] for w in listed["items"]] == ["fund:000001"]


def test_bad_warnings_are_422_naming_each_field(
    client: Client, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    response = client.post(
        f"/v1/customers/{customer_id}/risk-warnings",
        json={
            "kind": "scary",
            "shown_at": (clock.now() + timedelta(hours=1)).isoformat(),
            "acknowledged": True,
            "channel": "Web Site",
        },
        headers=app_key,
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"kind", "shown_at", "channel"}


def test_warning_kinds_and_operations_are_configuration() -> None:
    policy = RiskWarningPolicy.from_config(
        '{"kinds": {"crypto_like": {"valid_minutes": 5}}, "operations": {"big_buy": "crypto_like"}}'
    )
    assert policy.kinds == {"crypto_like": WarningKind(valid_for=timedelta(minutes=5))}
    assert policy.operations == {"big_buy": "crypto_like"}
    assert RiskWarningPolicy.from_config("") == RiskWarningPolicy()
    for bad in (
        "[]",
        '{"kinds": {"x": {"valid_minutes": 0}}}',
        '{"kinds": {"Bad": {}}}',
        '{"operations": {"op": "no_such_kind"}}',
        '{"other": 1}',
    ):
        with pytest.raises(ConfigError):
            RiskWarningPolicy.from_config(bad)


def test_the_database_refuses_to_change_a_recorded_warning(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    warning = _warn(
        client, app_key, customer_id, kind="high_risk_operation", shown_at=clock.now().isoformat(),
        acknowledged=False,
    )  # fmt: skip
    for statement in (
        "UPDATE risk_warnings SET acknowledged = true WHERE id = :id",
        "DELETE FROM risk_warnings WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            runtime.db.run(lambda s, st=statement: s.execute(text(st), {"id": warning["id"]}))
