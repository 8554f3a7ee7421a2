"""Every route × every role, read from the OpenAPI schema: nobody gets more than the table says.

A route added without an entry in ``ROUTE_ACCESS`` fails here; an entry that no route uses
fails here too. Each cell is tried with a fresh credential of the role, so routes that end
a session (logout) cannot spoil the next cell.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from custodia.api.runtime import Runtime
from custodia.api.security import ROUTE_ACCESS
from custodia.core.actors import STAFF_ROLES, Role
from tests.api.conftest import TEST_OPERATIONS
from tests.factories import bearer, make_client, make_staff

Client = TestClient[Any]


def _operations(client: Client) -> list[tuple[str, str, str]]:
    schema = client.get("/schema/openapi.json").json()
    found = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((operation["operationId"], method.upper(), path))
    return sorted(found)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _credential(runtime: Runtime, role: Role) -> dict[str, str]:
    if role in STAFF_ROLES:
        return make_staff(runtime, role).headers
    return bearer(make_client(runtime, role).key)


def _call(client: Client, method: str, path: str, headers: dict[str, str]) -> Any:
    return client.request(
        method, _concrete(path), headers=headers, json={} if method != "GET" else None
    )


def test_every_route_in_the_schema_has_an_entry_and_every_entry_a_route(client: Client) -> None:
    operations = {op for op, _, _ in _operations(client)}
    missing = operations - set(ROUTE_ACCESS)
    stale = set(ROUTE_ACCESS) - operations - set(TEST_OPERATIONS)
    assert not missing, f"routes without an access entry: {sorted(missing)}"
    assert not stale, f"access entries without a route: {sorted(stale)}"


def test_every_protected_route_answers_401_without_a_credential(client: Client) -> None:
    for operation, method, path in _operations(client):
        if ROUTE_ACCESS[operation].public:
            continue
        response = _call(client, method, path, {})
        assert response.status_code == 401, (operation, response.text)
        assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_its_routes(client: Client, runtime: Runtime, role: Role) -> None:
    decisions: dict[str, bool] = {}
    for operation, method, path in _operations(client):
        access = ROUTE_ACCESS[operation]
        allowed = access.public or role in access.roles
        response = _call(client, method, path, _credential(runtime, role))
        code = (
            response.json().get("code")
            if response.headers.get("content-type", "").startswith("application/problem+json")
            else None
        )
        if allowed:
            assert response.status_code != 401, (operation, role, response.text)
            assert not (
                response.status_code == 403 and code in {"forbidden", "password_change_required"}
            ), (
                operation,
                role,
                response.text,
            )
        else:
            assert (response.status_code, code) == (403, "forbidden"), (
                operation,
                role,
                response.text,
            )
        decisions[operation] = allowed
    assert decisions  # the schema had routes to try
