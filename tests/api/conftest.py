"""Test-only routes mounted on the real app, to drive the shared HTTP machinery.

The foundation has no business endpoints yet; these routes exercise exactly what later
controllers use: strict bodies, idempotency, domain-error mapping and the 500 path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from custodia.api.app import create_app
from custodia.api.idempotency import respond_idempotently
from custodia.api.runtime import Runtime
from custodia.api.security import PUBLIC, ROUTE_ACCESS
from custodia.core.errors import DomainError, ErrorKind, NotFound
from custodia.core.outbox import publish
from custodia.core.settings import Settings

CNY = "CNY"


class EchoIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A money-shaped request body."""

    amount: Annotated[int, msgspec.Meta(gt=0)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = CNY
    note: str | None = None


class EchoOut(msgspec.Struct, kw_only=True):
    """What the echo route answers."""

    event_id: str
    amount: int
    currency: str


class TestRefusal(DomainError):
    """A domain refusal carrying data, as later domain errors will."""

    code = "test_refused"
    kind = ErrorKind.INVALID
    title = "Refused for the test"

    def __init__(self, amount: int) -> None:
        super().__init__("Amounts of 13 are refused.", requested=amount, limit=12)


@post("/test/echo", operation_id="test_echo", sync_to_thread=True, status_code=201)
def echo(
    request: Request[Any, Any, Any], data: JSONBody[EchoIn], runtime: NamedDependency[Runtime]
) -> Response[bytes]:
    """Record an outbox event per executed request (so executions can be counted)."""

    def work(session: Session) -> EchoOut:
        if data.amount == 13:
            raise TestRefusal(data.amount)
        event_id = publish(
            session, "test.echo", {"amount": data.amount}, ids=runtime.ids, now=runtime.clock.now()
        )
        if data.note == "slow":
            session.flush()
            time.sleep(0.4)
        return EchoOut(event_id=event_id, amount=data.amount, currency=data.currency)

    return respond_idempotently(
        request, runtime, data, scope="test-client", required=True, status_code=201, work=work
    )


@get("/test/boom", operation_id="test_boom", sync_to_thread=False)
def boom() -> None:
    """Fail unexpectedly with personal data in the message."""
    raise RuntimeError("secret 11010519491231002X at 13812345678")


@get("/test/missing/{thing_id:str}", operation_id="test_missing", sync_to_thread=False)
def missing(thing_id: FromPath[str]) -> None:
    """Raise a domain not-found error."""
    raise NotFound("thing", thing_id)


@get("/test/page", operation_id="test_page", sync_to_thread=False)
def page(limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50) -> dict[str, int]:
    """Echo a validated query parameter."""
    return {"limit": limit}


TEST_OPERATIONS = ("test_echo", "test_boom", "test_missing", "test_page")


def app_with_test_routes(settings: Settings, runtime: Runtime) -> Litestar:
    """The production app plus the test routes (open to anyone: see ``test_routes_open``)."""
    app = create_app(settings, runtime=runtime)
    for handler in (echo, boom, missing, page):
        app.register(handler)
    return app


@pytest.fixture(autouse=True)
def test_routes_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """List the test routes in the access table as public, for the duration of a test."""
    for operation in TEST_OPERATIONS:
        monkeypatch.setitem(ROUTE_ACCESS, operation, PUBLIC)


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> Litestar:
    """The app on the rolled-back database, with the test routes."""
    return app_with_test_routes(settings, runtime)


@pytest.fixture
def test_client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    """A client for :func:`app`."""
    with TestClient(app) as client:
        yield client
