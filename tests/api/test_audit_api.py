"""``/v1/audit``: events with filters and cursor pagination, and chain verification."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar.testing import TestClient

from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from tests.factories import make_client, make_staff

Client = TestClient[Any]


def test_events_page_through_with_a_cursor_and_filter(client: Client, runtime: Runtime) -> None:
    auditor = make_staff(runtime, Role.AUDITOR)
    for _ in range(3):
        make_client(runtime)
    runtime.seal_audit()
    first = client.get("/v1/audit/events", params={"limit": 2}, headers=auditor.headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["seq"] for e in page["items"]] == sorted(
        (e["seq"] for e in page["items"]), reverse=True
    )
    assert page["next_cursor"]
    rest = client.get(
        "/v1/audit/events",
        params={"limit": 200, "cursor": page["next_cursor"]},
        headers=auditor.headers,
    ).json()
    seen = [e["id"] for e in page["items"] + rest["items"]]
    assert len(seen) == len(set(seen))
    assert rest["next_cursor"] is None
    created = client.get(
        "/v1/audit/events", params={"action": "access:client:created"}, headers=auditor.headers
    ).json()["items"]
    assert len(created) == 3
    event = created[0]
    assert set(event) == {
        "seq",
        "id",
        "at",
        "actor",
        "action",
        "target",
        "customer_id",
        "request_id",
        "details",
    }
    assert event["actor"] == {"kind": "cli", "id": "tester"}


def test_unsealed_events_show_with_a_null_seq(client: Client, runtime: Runtime) -> None:
    auditor = make_staff(runtime, Role.AUDITOR)
    items = client.get("/v1/audit/events", headers=auditor.headers).json()["items"]
    assert items and all(e["seq"] is None for e in items)


def test_time_filters_need_an_offset_and_cut_the_range(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    auditor = make_staff(runtime, Role.AUDITOR)
    since = clock.advance(timedelta(seconds=1))
    make_client(runtime)
    naive = client.get(
        "/v1/audit/events", params={"from": "2026-11-22T04:00:00"}, headers=auditor.headers
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["field"] == "from"
    recent = client.get(
        "/v1/audit/events",
        params={"from": since.isoformat(), "to": (clock.now() + timedelta(seconds=1)).isoformat()},
        headers=auditor.headers,
    ).json()["items"]
    assert [e["action"] for e in recent] == ["access:client:created"]


def test_a_made_up_cursor_is_422(client: Client, runtime: Runtime) -> None:
    auditor = make_staff(runtime, Role.AUDITOR)
    response = client.get(
        "/v1/audit/events", params={"cursor": "not-a-cursor"}, headers=auditor.headers
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_cursor"


def test_verify_reports_the_sealed_chain(client: Client, runtime: Runtime) -> None:
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    runtime.seal_audit()
    make_client(runtime)
    report = client.get("/v1/audit/verify", headers=officer.headers).json()
    assert report["ok"] is True
    assert report["first_bad_seq"] is None
    assert report["pending"] >= 1
    assert report["events_checked"] == report["sealed"] >= 2
    assert len(report["head"]) == 64


def test_metrics_show_the_audit_backlog(client: Client, runtime: Runtime) -> None:
    make_client(runtime)
    text = client.get("/metrics").text
    assert "custodia_audit_pending_events 1.0" in text
    runtime.seal_audit()
    assert "custodia_audit_pending_events 0.0" in client.get("/metrics").text


def test_the_worker_seals_the_trail(runtime: Runtime) -> None:
    import threading  # noqa: PLC0415

    make_client(runtime)
    worker = runtime.worker(threading.Event())
    worker.run_once()
    assert runtime.audit_pending().pending == 0
