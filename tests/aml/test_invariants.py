"""The AML invariants hold in the database too, against SQL that goes around the service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from custodia.api.runtime import Runtime
from tests.aml.conftest import CNY, Feed

_MOVEMENT = (
    "INSERT INTO aml_movements (transaction_id, customer_id, direction, type, amount, currency, "
    "counterparty, cross_border, channel, at) VALUES (:t, :c, 'out', 'transfer', 100, 'CNY', "
    "'x', false, 'api', :at)"
)


def _sql(runtime: Runtime, statement: str, **params: Any) -> None:
    runtime.db.run(lambda s: s.execute(text(statement), params))


def test_one_movement_per_transaction_side(runtime: Runtime, feed: Feed) -> None:
    """Each event is evaluated once: a second row for the same side is refused."""
    at = datetime(2026, 11, 22, tzinfo=runtime.settings.tz)
    _sql(runtime, _MOVEMENT, t="txn_dup", c="cus_dup", at=at)
    with pytest.raises(IntegrityError):
        _sql(runtime, _MOVEMENT, t="txn_dup", c="cus_dup", at=at)


def test_one_unclosed_alert_per_customer_rule_and_pattern(runtime: Runtime, feed: Feed) -> None:
    """Duplicates are folded: a second unclosed alert of the same pattern is refused."""
    customer = feed.customer()
    feed.move(customer, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer)
    copy = (
        "INSERT INTO aml_alerts (id, case_id, customer_id, rule, rule_version, params, pattern, "
        "score, severity, details, status, due_at, created_at, updated_at) "
        "SELECT 'alr_copy', case_id, customer_id, rule, rule_version, params, pattern, score, "
        "severity, details, 'in_review', due_at, created_at, updated_at FROM aml_alerts "
        "WHERE id = :id"
    )
    with pytest.raises(IntegrityError):
        _sql(runtime, copy, id=alert.id)


def test_a_closed_alert_needs_its_decision(runtime: Runtime, feed: Feed) -> None:
    """An alert cannot be closed without a decision and a closing time."""
    customer = feed.customer()
    feed.move(customer, 600_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer)
    with pytest.raises(IntegrityError):
        _sql(runtime, "UPDATE aml_alerts SET status = 'closed' WHERE id = :id", id=alert.id)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE aml_rule_versions SET params = '{}' WHERE key = 'structuring'",
        "DELETE FROM aml_rule_versions WHERE key = 'structuring'",
    ],
)
def test_rule_versions_are_append_only(runtime: Runtime, feed: Feed, statement: str) -> None:
    """The history of a rule's parameters cannot be rewritten."""
    feed.set_params("structuring", min_count=5)
    with pytest.raises(DBAPIError, match="append-only"):
        _sql(runtime, statement)
