"""Every error is RFC 9457 problem+json with a stable code and the request id."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from custodia.api.runtime import Runtime
from custodia.core.logging import configure_logging
from custodia.core.settings import Settings, load_settings
from tests.api.conftest import app_with_test_routes

PROBLEM = "application/problem+json"
KEY = {"Idempotency-Key": "k-1"}


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:custodia:problem:{code}"
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_route_is_a_404_problem(test_client: TestClient[Litestar]) -> None:
    _problem(test_client.get("/v1/nowhere"), 404, "not_found")


def test_wrong_method_is_a_405_problem(test_client: TestClient[Litestar]) -> None:
    _problem(test_client.delete("/health"), 405, "method_not_allowed")


def test_domain_not_found_is_a_404_problem(test_client: TestClient[Litestar]) -> None:
    body = _problem(test_client.get("/test/missing/cus_x"), 404, "not_found")
    assert body["detail"] == "No thing with id cus_x."


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ('{"amount": "100"}', "amount", "Expected `int`, got `str`"),
        ('{"amount": 100.0}', "amount", "Expected `int`, got `float`"),
        ('{"amount": 1.5}', "amount", "Expected `int`, got `float`"),
        ('{"amount": 0}', "amount", ">= 1"),
        ('{"amount": -5}', "amount", ">= 1"),
        ('{"amount": true}', "amount", "Expected `int`, got `bool`"),
        ('{"amount": 100, "currency": "cny"}', "currency", "matching regex"),
        ('{"amount": 100, "extra": 1}', "extra", "unknown field"),
        ("{}", "amount", "missing required field"),
        ("[]", "$", "Expected `object`"),
    ],
)
def test_invalid_bodies_are_422_with_the_field(
    test_client: TestClient[Litestar], payload: str, field: str, fragment: str
) -> None:
    """Types are never coerced: strings, floats and booleans are not amounts."""
    response = test_client.post(
        "/test/echo", content=payload, headers={**KEY, "content-type": "application/json"}
    )
    body = _problem(response, 422, "validation_failed")
    assert len(body["errors"]) == 1
    assert body["errors"][0]["field"] == field
    assert fragment in body["errors"][0]["message"]


def test_malformed_json_is_a_400_problem(test_client: TestClient[Litestar]) -> None:
    response = test_client.post(
        "/test/echo", content=b'{"amount": ', headers={**KEY, "content-type": "application/json"}
    )
    _problem(response, 400, "malformed_json")


def test_invalid_query_parameter_is_a_422_problem(test_client: TestClient[Litestar]) -> None:
    body = _problem(test_client.get("/test/page?limit=500"), 422, "validation_failed")
    assert body["errors"][0]["field"] == "limit"
    assert test_client.get("/test/page?limit=7").json() == {"limit": 7}


def test_body_over_the_limit_is_a_413_problem(tmp_path: Any, runtime: Runtime) -> None:
    settings = load_settings({}, var_dir=str(tmp_path), max_body_bytes=64)
    small = app_with_test_routes(settings, runtime)
    with TestClient(small) as client:
        response = client.post(
            "/test/echo",
            content=b'{"amount": 1, "note": "' + b"x" * 200 + b'"}',
            headers={**KEY, "content-type": "application/json"},
        )
    _problem(response, 413, "payload_too_large")
    assert runtime.db.run(lambda s: s.execute(_count_events()).scalar_one()) == 0


def _count_events() -> Any:
    from sqlalchemy import func, select  # noqa: PLC0415

    from custodia.core.models import OutboxEvent  # noqa: PLC0415

    return select(func.count()).select_from(OutboxEvent)


def test_unexpected_errors_are_500_without_internals(
    settings: Settings, runtime: Runtime, logging_restored: None
) -> None:
    """A crash answers a bare 500 problem; the log has the traceback, redacted."""
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json"), stream=log)
    with TestClient(app_with_test_routes(settings, runtime)) as client:
        response = client.get("/test/boom", headers={"X-Request-Id": "trace-42"})
    body = _problem(response, 500, "internal_error")
    text = response.text
    assert body["request_id"] == "trace-42"
    for leak in ("RuntimeError", "secret", "11010519491231002X", "13812345678", "Traceback"):
        assert leak not in text
    written = log.getvalue()
    assert "RuntimeError" in written
    assert "trace-42" in written
    assert "11010519491231002X" not in written
    assert "13812345678" not in written


def test_request_id_is_echoed_or_generated(test_client: TestClient[Litestar]) -> None:
    assert (
        test_client.get("/health", headers={"X-Request-Id": "abc.123"}).headers["x-request-id"]
        == "abc.123"
    )
    generated = test_client.get("/health", headers={"X-Request-Id": "bad id!"}).headers[
        "x-request-id"
    ]
    assert generated.startswith("req_")
    assert test_client.get("/health").headers["x-request-id"].startswith("req_")


def test_requests_are_counted_by_route_template(test_client: TestClient[Litestar]) -> None:
    test_client.get("/test/missing/a")
    test_client.get("/test/missing/b")
    metrics = test_client.get("/metrics").text
    assert (
        'custodia_http_requests_total{method="GET",route="/test/missing/{thing_id}",'
        'status="404"} 2.0'
    ) in metrics
    assert "custodia_outbox_pending_events" in metrics


def test_a_client_gone_before_its_body_is_logged_as_499_and_nothing_is_done(
    settings: Settings, runtime: Runtime, logging_restored: None
) -> None:
    """wrk closing its connections, a phone losing signal: not a server error, and no effect."""
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json"), stream=log)
    app = app_with_test_routes(settings, runtime)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/test/echo", "raw_path": b"/test/echo", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"idempotency-key", b"gone-1"),
                    (b"content-length", b"14")],
        "state": {},
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with TestClient(app) as client:
        asgi: Any = app
        client.blocking_portal.call(asgi, scope, receive, send)
        metrics = client.get("/metrics").text
    requests = [json.loads(line) for line in log.getvalue().splitlines()]
    line = next(r for r in requests if r.get("event") == "request")
    assert (line["status"], line["code"]) == (499, "client_disconnected")
    assert not any(r.get("event") == "unhandled_exception" for r in requests)
    assert runtime.db.run(lambda s: s.execute(_count_events()).scalar_one()) == 0  # never ran
    assert 'route="/test/echo",status="499"' in metrics


def test_an_error_cannot_overwrite_a_problem_member() -> None:
    """A refusal's data never shadows ``status``, ``code`` … of the problem document."""
    from custodia.core.errors import DomainError  # noqa: PLC0415

    with pytest.raises(TypeError, match="problem members"):
        DomainError("refused", status="frozen")
