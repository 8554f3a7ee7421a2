"""Customers' verification factors (K3): payment password, TOTP, device keys, lockout."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import TestClient
from sqlalchemy import select, text

from custodia import kyc
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.factors import Factor
from custodia.core.passwords import ScryptParams, SecretHasher
from custodia.kyc.models import CustomerCredential
from tests.factories import audit_actions, bearer, make_client, person_body

Client = TestClient[Any]


@pytest.fixture
def app_key(runtime: Runtime) -> dict[str, str]:
    """An onboarding app's credential."""
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


@pytest.fixture
def customer_id(client: Client, app_key: dict[str, str]) -> str:
    """A registered customer of the app."""
    return str(client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"])


def _url(customer_id: str, path: str = "") -> str:
    return f"/v1/customers/{customer_id}/credentials{path}"


def _verify(runtime: Runtime, customer_id: str, *factors: Factor, message: bytes = b"m") -> Any:
    return runtime.db.run(
        lambda s: kyc.verify_factors(
            s,
            customer_id,
            factors,
            message=message,
            now=runtime.clock.now(),
            hasher=runtime.hasher,
            vault=runtime.vault,
        )
    )


@pytest.mark.parametrize("weak", ["123456", "654321", "111111", "121212", "12345", "abc"])
def test_weak_payment_passwords_are_refused(
    client: Client, app_key: dict[str, str], customer_id: str, weak: str
) -> None:
    response = client.post(_url(customer_id, "/password"), json={"password": weak}, headers=app_key)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"


def test_the_payment_password_is_stored_only_as_a_peppered_scrypt_hash(
    client: Client, runtime: Runtime, app_key: dict[str, str], customer_id: str
) -> None:
    response = client.post(
        _url(customer_id, "/password"), json={"password": "274951"}, headers=app_key
    )
    assert response.status_code == 204, response.text
    stored = runtime.db.run(lambda s: s.scalar(select(CustomerCredential.password_hash)))
    assert stored is not None
    assert stored.startswith("$scrypt$ln=") and ",k=" in stored
    assert "274951" not in stored
    assert _verify(runtime, customer_id, Factor("password", value="274951")).kinds == ("password",)
    with pytest.raises(kyc.AuthenticationFailed):
        _verify(runtime, customer_id, Factor("password", value="274952"))
    summary = client.get(_url(customer_id), headers=app_key).json()
    assert summary == {"password": True, "totp": False, "signing_keys": [], "locked_until": None}


def _stored_hash(runtime: Runtime, customer_id: str) -> str:
    return str(
        runtime.db.run(
            lambda s: s.scalar(
                text("SELECT password_hash FROM customer_credentials WHERE customer_id = :c"),
                {"c": customer_id},
            )
        )
    )


def test_a_password_hashed_under_older_parameters_is_hashed_anew_when_used(
    client: Client, runtime: Runtime, app_key: dict[str, str], customer_id: str
) -> None:
    client.post(_url(customer_id, "/password"), json={"password": "274951"}, headers=app_key)
    older = SecretHasher(runtime.keys, ScryptParams(log2_n=3, p=1)).hash("274951")
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE customer_credentials SET password_hash = :h WHERE customer_id = :c"),
            {"h": older, "c": customer_id},
        )
    )
    with pytest.raises(kyc.AuthenticationFailed):
        _verify(runtime, customer_id, Factor("password", value="274952"))
    assert _stored_hash(runtime, customer_id) == older  # a wrong password changes nothing
    assert _verify(runtime, customer_id, Factor("password", value="274951")).kinds == ("password",)
    current = _stored_hash(runtime, customer_id)
    assert current != older
    assert not runtime.hasher.needs_rehash(current)
    assert _verify(runtime, customer_id, Factor("password", value="274951")).kinds == ("password",)
    assert _stored_hash(runtime, customer_id) == current  # current hashes are left alone


def test_replacing_the_password_needs_the_current_one(
    client: Client, runtime: Runtime, app_key: dict[str, str], customer_id: str
) -> None:
    client.post(_url(customer_id, "/password"), json={"password": "274951"}, headers=app_key)
    without = client.post(
        _url(customer_id, "/password"), json={"password": "839205"}, headers=app_key
    )
    assert (without.status_code, without.json()["code"]) == (401, "authentication_failed")
    right = client.post(
        _url(customer_id, "/password"),
        json={"password": "839205", "current_password": "274951"},
        headers=app_key,
    )
    assert right.status_code == 204
    assert _verify(runtime, customer_id, Factor("password", value="839205")).kinds == ("password",)
    assert "kyc:credential:verification_failed" in audit_actions(runtime, customer_id=customer_id)


def test_an_authenticator_is_bound_by_a_first_code_and_each_code_works_once(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    started = client.post(_url(customer_id, "/totp"), headers=app_key)
    assert started.status_code == 201
    secret = pyotp.parse_uri(started.json()["provisioning_uri"]).secret
    stored = runtime.db.run(lambda s: s.scalar(select(CustomerCredential.totp_secret_enc)))
    assert stored is not None and secret.encode() not in stored
    wrong = client.post(
        _url(customer_id, "/totp/confirm"), json={"code": "000000"}, headers=app_key
    )
    assert wrong.status_code == 401
    code = pyotp.TOTP(secret).at(clock.now())
    bound = client.post(_url(customer_id, "/totp/confirm"), json={"code": code}, headers=app_key)
    assert bound.json() == {"confirmed": True}
    again = client.post(_url(customer_id, "/totp"), headers=app_key)
    assert (again.status_code, again.json()["reason"]) == (409, "totp_already_bound")
    with pytest.raises(kyc.AuthenticationFailed):  # the confirming code is spent
        _verify(runtime, customer_id, Factor("totp", code=code))
    clock.advance(timedelta(seconds=30))
    fresh = pyotp.TOTP(secret).at(clock.now())
    assert _verify(runtime, customer_id, Factor("totp", code=fresh)).kinds == ("totp",)
    with pytest.raises(kyc.AuthenticationFailed):
        _verify(runtime, customer_id, Factor("totp", code=fresh))


def test_a_device_key_signs_the_operation(
    client: Client, runtime: Runtime, app_key: dict[str, str], customer_id: str
) -> None:
    device = Ed25519PrivateKey.generate()
    public = base64.b64encode(device.public_key().public_bytes_raw()).decode()
    bad = client.post(
        _url(customer_id, "/signing-keys"), json={"public_key": "AAAA"}, headers=app_key
    )
    assert bad.status_code == 422
    key_id = client.post(
        _url(customer_id, "/signing-keys"), json={"public_key": public}, headers=app_key
    ).json()["key_id"]
    assert key_id.startswith("key_")
    signed = base64.b64encode(device.sign(b"operation")).decode()
    factor = Factor("signature", key_id=key_id, signature=signed)
    assert _verify(runtime, customer_id, factor, message=b"operation").kinds == ("signature",)
    with pytest.raises(kyc.AuthenticationFailed):
        _verify(runtime, customer_id, factor, message=b"another operation")


def test_a_revoked_device_key_verifies_nothing_more(
    client: Client, runtime: Runtime, app_key: dict[str, str], customer_id: str
) -> None:
    """A lost device's key is revoked by the app: gone from the list, refused, audited once."""
    device = Ed25519PrivateKey.generate()
    public = base64.b64encode(device.public_key().public_bytes_raw()).decode()
    key_id = client.post(
        _url(customer_id, "/signing-keys"), json={"public_key": public}, headers=app_key
    ).json()["key_id"]
    factor = Factor(
        "signature", key_id=key_id, signature=base64.b64encode(device.sign(b"m")).decode()
    )
    assert _verify(runtime, customer_id, factor).kinds == ("signature",)

    revoked = client.delete(_url(customer_id, f"/signing-keys/{key_id}"), headers=app_key)
    assert revoked.status_code == 204, revoked.text
    assert client.get(_url(customer_id), headers=app_key).json()["signing_keys"] == []
    with pytest.raises(kyc.AuthenticationFailed):
        _verify(runtime, customer_id, factor)
    again = client.delete(_url(customer_id, f"/signing-keys/{key_id}"), headers=app_key)
    assert again.status_code == 204  # already revoked: nothing changes
    assert audit_actions(runtime, key_id) == ["kyc:credential:set", "kyc:credential:revoked"]

    unknown = client.delete(_url(customer_id, "/signing-keys/key_nonesuch"), headers=app_key)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    other = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    hidden = client.delete(_url(customer_id, f"/signing-keys/{key_id}"), headers=other)
    assert hidden.status_code == 404
    merchant = bearer(make_client(runtime, Role.MERCHANT).key)
    assert (
        client.delete(_url(customer_id, f"/signing-keys/{key_id}"), headers=merchant).status_code
        == 403
    )


def test_a_key_of_another_customer_is_not_revoked_through_this_one(
    client: Client, app_key: dict[str, str], customer_id: str
) -> None:
    device = Ed25519PrivateKey.generate()
    public = base64.b64encode(device.public_key().public_bytes_raw()).decode()
    second = str(client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"])
    key_id = client.post(
        _url(second, "/signing-keys"), json={"public_key": public}, headers=app_key
    ).json()["key_id"]
    wrong = client.delete(_url(customer_id, f"/signing-keys/{key_id}"), headers=app_key)
    assert wrong.status_code == 404
    assert client.get(_url(second), headers=app_key).json()["signing_keys"] == [key_id]


def test_five_wrong_factors_lock_verification_for_fifteen_minutes(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    client.post(_url(customer_id, "/password"), json={"password": "274951"}, headers=app_key)
    for _ in range(5):
        wrong = client.post(
            _url(customer_id, "/password"),
            json={"password": "839205", "current_password": "000000"},
            headers=app_key,
        )
        assert wrong.status_code == 401
    locked = client.post(
        _url(customer_id, "/password"),
        json={"password": "839205", "current_password": "274951"},
        headers=app_key,
    )
    assert (locked.status_code, locked.json()["code"]) == (429, "authentication_locked")
    assert int(locked.headers["retry-after"]) == 15 * 60
    with pytest.raises(kyc.AuthenticationLocked):
        _verify(runtime, customer_id, Factor("password", value="274951"))
    clock.advance(timedelta(minutes=15))
    assert _verify(runtime, customer_id, Factor("password", value="274951")).kinds == ("password",)


def test_another_apps_customer_is_not_found(
    client: Client, runtime: Runtime, customer_id: str
) -> None:
    other = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    response = client.post(
        _url(customer_id, "/password"), json={"password": "274951"}, headers=other
    )
    assert response.status_code == 404


def test_first_uses_at_once_share_one_credential_row(
    committing_runtime: Runtime, settings: Any, clock: ManualClock
) -> None:
    """Concurrent first failures (no row yet) are all counted; none fails on the key."""
    import threading  # noqa: PLC0415

    from custodia.api.app import create_app  # noqa: PLC0415
    from custodia.core.actors import Actor, ActorKind, Context  # noqa: PLC0415

    runtime = committing_runtime
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        customer_id = client.post("/v1/customers", json=person_body(), headers=app).json()["id"]
    ctx = Context(Actor(ActorKind.SYSTEM, "test"), clock.now(), None)
    barrier = threading.Barrier(6, timeout=30)
    errors: list[BaseException] = []

    def fail() -> None:
        barrier.wait()
        try:
            runtime.db.run(
                lambda s: kyc.count_failure(
                    s,
                    customer_id,
                    "signature",
                    ctx=ctx,
                    policy=kyc.CredentialPolicy(max_failures=50),
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=fail) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counted = runtime.db.run(lambda s: s.get(CustomerCredential, customer_id).failed_attempts)
    assert counted == 6
