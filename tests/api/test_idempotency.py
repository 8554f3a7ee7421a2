"""Idempotency-Key over HTTP, exactly as API.md "Conventions" states it."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import func, select

from custodia.api.runtime import Runtime
from custodia.core.models import OutboxEvent
from custodia.core.settings import Settings
from tests.api.conftest import app_with_test_routes


def _post(client: TestClient[Litestar], body: dict[str, Any], key: str | None = "k-1") -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/test/echo", json=body, headers=headers)


def _executions(runtime: Runtime) -> int:
    return runtime.db.run(
        lambda s: s.execute(select(func.count()).select_from(OutboxEvent)).scalar_one()
    )


def test_same_key_same_body_replays_the_original(
    test_client: TestClient[Litestar], runtime: Runtime
) -> None:
    first = _post(test_client, {"amount": 100})
    again = _post(test_client, {"currency": "CNY", "amount": 100})  # same content, other order
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert _executions(runtime) == 1


def test_same_key_different_body_is_422(
    test_client: TestClient[Litestar], runtime: Runtime
) -> None:
    _post(test_client, {"amount": 100})
    response = _post(test_client, {"amount": 101})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert _executions(runtime) == 1


def test_missing_key_is_400_where_required(
    test_client: TestClient[Litestar], runtime: Runtime
) -> None:
    response = _post(test_client, {"amount": 100}, key=None)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"
    assert _executions(runtime) == 0


def test_malformed_key_is_400(test_client: TestClient[Litestar]) -> None:
    response = _post(test_client, {"amount": 100}, key="x" * 300)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"


def test_a_refusal_is_replayed_with_its_problem(test_client: TestClient[Litestar]) -> None:
    first = _post(test_client, {"amount": 13})
    assert first.status_code == 422
    body = first.json()
    assert (body["code"], body["requested"], body["limit"]) == ("test_refused", 13, 12)
    assert first.headers["content-type"].startswith("application/problem+json")
    again = _post(test_client, {"amount": 13})
    assert again.status_code == 422
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"


def test_invalid_body_is_not_stored_under_the_key(test_client: TestClient[Litestar]) -> None:
    """Validation happens before the key is claimed: fixing the body under the key works."""
    assert _post(test_client, {"amount": "100"}).status_code == 422
    assert _post(test_client, {"amount": 100}).status_code == 201


def test_two_concurrent_requests_with_one_key_execute_once(
    settings: Settings, committing_runtime: Runtime
) -> None:
    """Two identical requests at the same moment: one executes, the other replays it."""
    app = app_with_test_routes(settings, committing_runtime)
    body = {"amount": 100, "note": "slow"}

    async def race() -> list[Any]:
        async with AsyncTestClient(app) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/test/echo", json=body, headers={"Idempotency-Key": "race"})
                        for _ in range(2)
                    )
                )
            )

    responses = asyncio.run(race())
    assert _executions(committing_runtime) == 1
    statuses = sorted(r.status_code for r in responses)
    # SQLite serializes writers, so the twin always replays; on PostgreSQL the twin waits up
    # to idempotency_lock_wait_ms and then either replays or is told the key is in flight.
    assert statuses in ([201, 201], [201, 409])
    winners = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in winners}) == 1
    for loser in (r for r in responses if r.status_code == 409):
        assert loser.json()["code"] == "idempotency_key_in_flight"
