"""Health, readiness and metrics endpoints."""

from __future__ import annotations

from litestar.testing import TestClient


def test_health_answers_ok(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_is_at_head(client: TestClient) -> None:  # type: ignore[type-arg]
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "migrations": "current"}
