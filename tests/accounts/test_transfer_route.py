"""``POST /v1/transfers`` served before Litestar's router (``custodia.api.transfer_route``).

The layer answers exactly as the routed request would — a transfer, its replay, a refusal
raised by the transfer itself — and hands every request it does not serve to the router
untouched: a key the guard has not admitted yet, another role's key, a query string, a body
that is not JSON or too large or malformed, a transfer that needs the general path.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from custodia.api import transfer_route
from custodia.api.transfer_route import TransferRoute
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Client, Customer, onboard
from tests.factories import bearer, make_client

#: What differs between two transfers of the same shape.
_OWN = {"id", "created_at", "completed_at", "trace_id"}


def _layer(client: Client) -> TransferRoute:
    route: TransferRoute = client.app.state.transfer_route
    return route


@pytest.fixture
def parties(client: Client, app: dict[str, str], clock: ManualClock) -> tuple[Customer, Customer]:
    """A funded payer whose app's key the guard has admitted once (a first transfer)."""
    payer = onboard(client, app, clock, funds=10_000)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 1).status_code == 201  # routed: the guard admits
    return payer, payee


def _routed_only(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_route, "_is_transfer", lambda _scope: False)


def _shape(response: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {k: v for k, v in response.headers.items() if k not in {"date", "x-request-id"}}
    body = {k: v for k, v in response.json().items() if k not in _OWN}
    return response.status_code, headers, body


def test_a_transfer_and_its_replay_are_served_as_the_router_serves_them(
    client: Client, parties: tuple[Customer, Customer], monkeypatch: pytest.MonkeyPatch
) -> None:
    payer, payee = parties
    layer = _layer(client)
    served = layer.served

    fast = payer.transfer(payee.account, 25, key="served")
    assert layer.served == served + 1
    assert fast.headers["x-request-id"].startswith("req_")
    replay = payer.transfer(payee.account, 25, key="served")
    assert layer.served == served + 2
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == fast.content

    with monkeypatch.context() as routed:
        _routed_only(client, routed)
        slow = payer.transfer(payee.account, 25, key="routed")
        slow_replay = payer.transfer(payee.account, 25, key="routed")
    assert layer.served == served + 2
    assert _shape(fast) == _shape(slow)
    assert _shape(replay) == _shape(slow_replay)


@pytest.mark.parametrize(
    ("amount", "signed_for", "status", "code"),
    [
        pytest.param(50_000, "", 422, "insufficient_funds", id="stored with the key"),
        pytest.param(25, "another-key", 401, "authentication_failed", id="raised"),
    ],
)
def test_a_refusal_of_the_transfer_itself_is_rendered_as_the_router_renders_it(
    client: Client,
    parties: tuple[Customer, Customer],
    monkeypatch: pytest.MonkeyPatch,
    *,
    amount: int,
    signed_for: str,
    status: int,
    code: str,
) -> None:
    payer, payee = parties
    layer = _layer(client)
    served = layer.served

    def send(key: str) -> Any:
        factor = payer.signature("transfer", signed_for or key, payee.account, amount)
        return payer.transfer(payee.account, amount, key=key, factors=[factor])

    fast = send("refused")
    assert layer.served == served + 1
    with monkeypatch.context() as routed:
        _routed_only(client, routed)
        slow = send("refused-routed")

    assert fast.status_code == slow.status_code == status
    assert _shape(fast)[1] == _shape(slow)[1]  # the headers
    assert fast.json()["code"] == code
    drop = {"request_id", "instance"}
    assert {k: v for k, v in fast.json().items() if k not in drop} == {
        k: v for k, v in slow.json().items() if k not in drop
    }


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param({"path": "/v1/transfers?dry=1"}, id="query string"),
        pytest.param({"content_type": "text/plain"}, id="not JSON"),
        pytest.param({"raw": b'{"from_account_id": '}, id="malformed body"),
        pytest.param({"extra": {"amount": "25"}}, id="amount as a string"),
        pytest.param({"pad": True}, id="body over the size limit"),
        pytest.param({"password": True}, id="the general path's factor"),
    ],
)
def test_what_the_layer_does_not_serve_reaches_the_router_as_it_came(
    client: Client,
    parties: tuple[Customer, Customer],
    monkeypatch: pytest.MonkeyPatch,
    request_: dict[str, Any],
) -> None:
    payer, payee = parties
    layer = _layer(client)
    served = layer.served

    def send(key: str) -> Any:
        factor = payer.password() if request_.get("password") else None
        body: dict[str, Any] = {
            "from_account_id": payer.account,
            "to_account_id": payee.account,
            "amount": 25,
            "authentication": {
                "factors": [factor or payer.signature("transfer", key, payee.account, 25)]
            },
            **request_.get("extra", {}),
        }
        if request_.get("pad"):
            body["purpose"] = "x" * client.app.request_max_body_size  # type: ignore[operator]
        content = request_.get("raw") or json.dumps(body).encode()
        headers = {
            **payer.headers(key),
            "Content-Type": request_.get("content_type", "application/json"),
        }
        return client.post(request_.get("path", "/v1/transfers"), content=content, headers=headers)

    passed = send("passed-on")
    assert layer.served == served
    with monkeypatch.context() as routed:
        _routed_only(client, routed)
        expected = send("routed")
    assert passed.status_code == expected.status_code
    if passed.status_code >= 400:
        assert passed.json()["code"] == expected.json()["code"]


def test_a_key_the_guard_has_not_admitted_or_another_role_s_key_reaches_the_guard(
    client: Client, runtime: Any, app: dict[str, str], clock: ManualClock
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    layer = _layer(client)
    served = layer.served
    assert payer.transfer(payee.account, 1).status_code == 201  # a first use: the guard
    assert layer.served == served

    merchant = bearer(make_client(runtime, Role.MERCHANT).key)
    for attempt in range(2):  # the guard caches the key it authenticates, then refuses it
        key = f"merchant-tries-{attempt}"
        refused = client.post(
            "/v1/transfers",
            json={"from_account_id": payer.account, "to_account_id": payee.account,
                  "amount": 1, "authentication": {
                      "factors": [payer.signature("transfer", key, payee.account, 1)]}},
            headers={**merchant, "Idempotency-Key": key},
        )  # fmt: skip
        assert refused.status_code == 403
    assert layer.served == served


def _asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """POST through the ASGI app itself, headers as a server passes them (repeats kept)."""
    sent: list[Any] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Any:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_a_repeated_authorization_header_is_read_as_the_guard_reads_it(
    client: Client, runtime: Any, parties: tuple[Customer, Customer]
) -> None:
    """The first one counts, as in Litestar's headers: a merchant's key, then the app's."""
    payer, payee = parties
    layer = _layer(client)
    served = layer.served
    merchant = bearer(make_client(runtime, Role.MERCHANT).key)
    key = "two-credentials"
    body = {"from_account_id": payer.account, "to_account_id": payee.account, "amount": 1,
            "authentication": {"factors": [payer.signature("transfer", key, payee.account, 1)]}}  # fmt: skip
    status = _asgi_post(
        client.app,
        "/v1/transfers",
        [
            (b"authorization", merchant["Authorization"].encode()),
            (b"authorization", payer.app["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"idempotency-key", key.encode()),
        ],
        json.dumps(body).encode(),
    )
    assert status == 403  # the merchant's key, refused by the guard
    assert layer.served == served
