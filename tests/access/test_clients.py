"""API clients: keys shown once, stored as digests, bound to a merchant, revoked at once."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from custodia import access
from custodia.access.errors import InvalidClient
from custodia.access.models import ApiClient
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.errors import Unauthenticated
from custodia.core.settings import Environment
from tests.factories import audit_actions, bearer, cli_context, make_client

Client = TestClient[Any]


def test_a_key_has_the_documented_shape_and_only_its_digest_is_stored(runtime: Runtime) -> None:
    created = make_client(runtime)
    prefix, env, key_id, secret = created.key.split("_", 3)
    assert (prefix, env) == ("ck", "dev")
    assert created.id == f"cli_{key_id}"
    assert len(secret) >= 22  # ≥ 128 bits of base64url
    stored = runtime.db.run(lambda s: s.get(ApiClient, created.id))
    assert stored is not None
    assert secret not in stored.secret_hash
    assert created.key not in stored.secret_hash


def test_a_key_authenticates_as_its_client_and_role(client: Client, runtime: Runtime) -> None:
    created = make_client(runtime, Role.MERCHANT, merchant_id="mer_01jd3t3pqx7e5m6y8z9a0b1c2d")
    me = client.get("/v1/auth/me", headers=bearer(created.key)).json()
    assert me == {
        "kind": "client",
        "id": created.id,
        "role": "merchant",
        "username": None,
        "merchant_id": "mer_01jd3t3pqx7e5m6y8z9a0b1c2d",
        "password_change_required": False,
        "session_expires_at": None,
    }


def test_revocation_takes_effect_at_once(client: Client, runtime: Runtime) -> None:
    created = make_client(runtime)
    assert client.get("/v1/auth/me", headers=bearer(created.key)).status_code == 200
    runtime.db.run(lambda s: access.revoke_client(s, created.id, ctx=cli_context(runtime)))
    response = client.get("/v1/auth/me", headers=bearer(created.key))
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    actions = audit_actions(runtime, created.id)
    assert actions == ["access:client:created", "access:client:revoked"]


def test_a_tampered_secret_or_a_key_of_another_environment_is_refused(runtime: Runtime) -> None:
    created = make_client(runtime)
    tampered = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    live = created.key.replace("ck_dev_", "ck_live_", 1)
    for key in (tampered, live):
        with pytest.raises(Unauthenticated):
            access.authenticate_key(runtime.db.fetch_one, key, environment=Environment.DEVELOPMENT)


@pytest.mark.parametrize(
    ("kind", "merchant_id", "fragment"),
    [
        (Role.MERCHANT, None, "needs --merchant"),
        (Role.MERCHANT, "cus_01jd3t3pqx7e5m6y8z9a0b1c2d", "needs --merchant"),
        (Role.ONBOARDING_APP, "mer_01jd3t3pqx7e5m6y8z9a0b1c2d", "Only merchant keys"),
        (Role.ADMIN, None, "onboarding_app or a merchant"),
    ],
)
def test_inconsistent_clients_are_refused(
    runtime: Runtime, kind: Role, merchant_id: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidClient, match=fragment):
        runtime.db.run(
            lambda s: access.create_client(
                s,
                kind=kind,
                name="x",
                merchant_id=merchant_id,
                environment=Environment.DEVELOPMENT,
                ctx=cli_context(runtime),
                ids=runtime.ids,
            )
        )


def test_the_database_refuses_a_merchant_key_without_a_merchant(runtime: Runtime) -> None:
    from sqlalchemy import text  # noqa: PLC0415
    from sqlalchemy.exc import IntegrityError  # noqa: PLC0415

    with pytest.raises(IntegrityError):
        runtime.db.run(
            lambda s: s.execute(
                text(
                    "INSERT INTO api_clients (id, kind, name, merchant_id, secret_hash, created_at) "
                    "VALUES ('cli_x', 'merchant', 'm', NULL, 'h', CURRENT_TIMESTAMP)"
                )
            )
        )
