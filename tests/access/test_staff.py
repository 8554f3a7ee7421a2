"""Staff authentication over HTTP: login with password and TOTP, lockout, sessions, audit."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from litestar.testing import TestClient
from sqlalchemy import select, text

from custodia import access
from custodia.access.models import Staff, StaffSession
from custodia.api.runtime import Runtime
from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.clock import ManualClock
from custodia.core.passwords import ScryptParams, SecretHasher
from tests.factories import (
    STAFF_PASSWORD,
    StaffLogin,
    audit_actions,
    bearer,
    make_client,
    make_staff,
)

Client = TestClient[Any]


def _login(client: Client, staff: StaffLogin, clock: ManualClock, **override: str) -> Any:
    body = {"username": staff.username, "password": staff.password, "totp": staff.code(clock)}
    body.update(override)
    return client.post("/v1/auth/login", json=body)


def _actions(runtime: Runtime, target: str) -> list[str]:
    return audit_actions(runtime, target)


# ------------------------------------------------------------------------------ creation


def test_new_staff_get_a_one_time_password_and_an_encrypted_totp_secret(runtime: Runtime) -> None:
    staff = make_staff(runtime, Role.AUDITOR, password_changed=False, logged_in=False)
    row = runtime.db.run(lambda s: s.get(Staff, staff.id))
    assert row is not None
    assert row.password_change_required
    assert staff.password not in row.password_hash
    assert row.password_hash.startswith("$scrypt$")
    assert staff.totp_secret.encode() not in row.totp_secret
    assert _actions(runtime, staff.id) == ["access:staff:created"]


def test_a_username_is_unique(runtime: Runtime) -> None:
    make_staff(runtime, username="alice", logged_in=False)
    with pytest.raises(access.errors.StaffExists):
        make_staff(runtime, username="Alice", logged_in=False)


# ------------------------------------------------------------------------------ login


def test_login_returns_a_token_that_authenticates(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, Role.COMPLIANCE_LEAD, logged_in=False)
    response = _login(client, staff, clock)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "expires_at", "password_change_required"}
    assert body["password_change_required"] is False
    me = client.get("/v1/auth/me", headers=bearer(body["token"]))
    assert me.json()["role"] == "compliance_lead"
    assert me.json()["username"] == staff.username
    token_rows = runtime.db.run(
        lambda s: s.execute(select(StaffSession.token_hash)).scalars().all()
    )
    assert body["token"] not in token_rows  # stored as a digest only


@pytest.mark.parametrize("wrong", ["password", "totp", "username"])
def test_any_wrong_part_gives_the_same_401(
    client: Client, runtime: Runtime, clock: ManualClock, wrong: str
) -> None:
    staff = make_staff(runtime, logged_in=False)
    override = {
        "password": {"password": "not the password"},
        "totp": {"totp": pyotp.TOTP(staff.totp_secret).at(clock.now() + timedelta(minutes=5))},
        "username": {"username": "nobody-here"},
    }[wrong]
    response = _login(client, staff, clock, **override)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.json()["detail"] == "The username, password or one-time code is wrong."


def test_a_totp_code_is_accepted_once(client: Client, runtime: Runtime, clock: ManualClock) -> None:
    staff = make_staff(runtime, logged_in=False)
    code = staff.code(clock)
    assert _login(client, staff, clock, totp=code).status_code == 200
    replay = _login(client, staff, clock, totp=code)
    assert replay.status_code == 401
    clock.advance(timedelta(seconds=30))
    assert _login(client, staff, clock).status_code == 200  # the next step's code works


def test_a_code_from_the_neighbouring_step_is_accepted_but_not_two_steps_off(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    totp = pyotp.TOTP(staff.totp_secret)
    assert (
        _login(client, staff, clock, totp=totp.at(clock.now() - timedelta(seconds=60))).status_code
        == 401
    )
    assert (
        _login(client, staff, clock, totp=totp.at(clock.now() - timedelta(seconds=30))).status_code
        == 200
    )


def test_an_older_step_is_refused_after_a_newer_one_was_used(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    totp = pyotp.TOTP(staff.totp_secret)
    assert (
        _login(client, staff, clock, totp=totp.at(clock.now() + timedelta(seconds=30))).status_code
        == 200
    )
    assert _login(client, staff, clock, totp=totp.at(clock.now())).status_code == 401


@pytest.mark.postgres_only
def test_two_concurrent_logins_with_one_code_open_one_session(
    committing_runtime: Runtime, clock: ManualClock
) -> None:
    runtime = committing_runtime
    staff = make_staff(runtime, logged_in=False)
    code = staff.code(clock)
    barrier = threading.Barrier(4)
    outcomes: list[access.LoginOutcome] = []

    def attempt() -> None:
        ctx = Context(Actor(ActorKind.ANONYMOUS, "login"), clock.now(), None)
        barrier.wait()
        outcomes.append(
            runtime.db.run(
                lambda s: access.login(
                    s,
                    username=staff.username,
                    password=staff.password,
                    totp_code=code,
                    client_ip=None,
                    ctx=ctx,
                    vault=runtime.vault,
                    hasher=runtime.hasher,
                    policy=runtime.access_policy,
                )
            )
        )

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sum(o.error is None for o in outcomes) == 1
    assert len(outcomes) == 4


def test_five_failures_lock_the_account_for_fifteen_minutes(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    statuses = [_login(client, staff, clock, password="wrong").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    locked = _login(client, staff, clock)  # even the right password now waits
    assert locked.status_code == 429
    assert locked.json()["code"] == "login_locked"
    assert 0 < int(locked.headers["retry-after"]) <= 15 * 60
    clock.advance(timedelta(minutes=15, seconds=1))
    assert _login(client, staff, clock).status_code == 200
    actions = _actions(runtime, staff.id)
    assert actions.count("access:staff:login_failed") == 6
    assert actions.count("access:staff:locked") == 1
    assert actions[-1] == "access:staff:login"


def test_a_success_resets_the_failure_count(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    for _ in range(4):
        _login(client, staff, clock, password="wrong")
    assert _login(client, staff, clock).status_code == 200
    clock.advance(timedelta(seconds=30))
    assert [_login(client, staff, clock, password="wrong").status_code for _ in range(4)] == [
        401
    ] * 4


def test_login_rehashes_a_password_made_with_other_parameters(
    runtime: Runtime, client: Client, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    weaker = SecretHasher(runtime.keys, ScryptParams(log2_n=3)).hash(STAFF_PASSWORD)
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE staff SET password_hash = :h WHERE id = :i"), {"h": weaker, "i": staff.id}
        )
    )
    assert _login(client, staff, clock).status_code == 200
    stored = runtime.db.run(lambda s: s.get(Staff, staff.id, populate_existing=True))
    assert stored is not None
    assert stored.password_hash.startswith("$scrypt$ln=4,")


# ------------------------------------------------------------------------------ first login


def test_a_one_time_password_session_may_only_change_the_password(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, Role.AUDITOR, password_changed=False, logged_in=False)
    login = _login(client, staff, clock).json()
    assert login["password_change_required"] is True
    headers = bearer(login["token"])
    refused = client.get("/v1/audit/events", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == "password_change_required"
    changed = client.post(
        "/v1/auth/password",
        json={"current_password": staff.password, "new_password": "a much better passphrase"},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text
    assert client.get("/v1/audit/events", headers=headers).status_code == 200
    assert "access:staff:password_changed" in _actions(runtime, staff.id)


@pytest.mark.parametrize(
    ("new_password", "reason"),
    [
        ("short", "at least 12"),
        ("auditor-x-and-more-text", "username"),
        (STAFF_PASSWORD, "not just used"),
    ],
)
def test_weak_new_passwords_are_refused(
    client: Client, runtime: Runtime, new_password: str, reason: str
) -> None:
    staff = make_staff(runtime, Role.AUDITOR, username="auditor-x")
    response = client.post(
        "/v1/auth/password",
        json={"current_password": STAFF_PASSWORD, "new_password": new_password},
        headers=staff.headers,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "password_too_weak"
    assert reason in response.json()["detail"]


def test_a_wrong_current_password_is_refused_and_counted(client: Client, runtime: Runtime) -> None:
    staff = make_staff(runtime)
    response = client.post(
        "/v1/auth/password",
        json={"current_password": "not it", "new_password": "a much better passphrase"},
        headers=staff.headers,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "current_password_incorrect"
    row = runtime.db.run(lambda s: s.get(Staff, staff.id, populate_existing=True))
    assert row is not None
    assert row.failed_logins == 1


def test_changing_the_password_ends_the_other_sessions(client: Client, runtime: Runtime) -> None:
    from tests.factories import log_in  # noqa: PLC0415

    staff = make_staff(runtime)
    other = log_in(runtime, staff)
    response = client.post(
        "/v1/auth/password",
        json={"current_password": STAFF_PASSWORD, "new_password": "a much better passphrase"},
        headers=staff.headers,
    )
    assert response.status_code == 204
    assert client.get("/v1/auth/me", headers=staff.headers).status_code == 200
    assert client.get("/v1/auth/me", headers=bearer(other)).status_code == 401


# ------------------------------------------------------------------------------ sessions


def test_logout_ends_the_session(client: Client, runtime: Runtime) -> None:
    staff = make_staff(runtime)
    assert client.post("/v1/auth/logout", headers=staff.headers).status_code == 204
    after = client.get("/v1/auth/me", headers=staff.headers)
    assert after.status_code == 401
    assert after.json()["code"] == "unauthenticated"
    assert "access:staff:logout" in _actions(runtime, staff.id)


def test_an_idle_session_expires(client: Client, runtime: Runtime, clock: ManualClock) -> None:
    staff = make_staff(runtime)
    clock.advance(timedelta(minutes=29))
    assert client.get("/v1/auth/me", headers=staff.headers).status_code == 200  # and refreshes
    clock.advance(timedelta(minutes=29))
    assert client.get("/v1/auth/me", headers=staff.headers).status_code == 200
    clock.advance(timedelta(minutes=31))
    assert client.get("/v1/auth/me", headers=staff.headers).status_code == 401


def test_a_busy_session_still_ends_at_its_absolute_expiry(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime)
    logged_in_at = clock.now()
    while client.get("/v1/auth/me", headers=staff.headers).status_code == 200:
        clock.advance(timedelta(minutes=20))  # never idle for 30 minutes
        assert clock.now() - logged_in_at <= timedelta(hours=13)
    assert clock.now() - logged_in_at >= timedelta(hours=12)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer cs_unknown", "Bearer ck_dev_x_y", "bearer  "],
)
def test_missing_or_invalid_credentials_are_401(client: Client, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_login_events_carry_the_request_id_and_client_address(
    client: Client, runtime: Runtime, clock: ManualClock
) -> None:
    staff = make_staff(runtime, logged_in=False)
    _login(client, staff, clock, password="wrong")
    response = client.post(
        "/v1/auth/login",
        json={"username": staff.username, "password": staff.password, "totp": staff.code(clock)},
        headers={"X-Request-Id": "trace-42"},
    )
    assert response.status_code == 200
    events = runtime.db.run(
        lambda s: audit.list_events(
            s,
            audit.EventFilter(target=staff.id),
            before_id=None,
            after_id=None,
            limit=10,
            newest_first=True,
        )
    )
    login, failure = events[0], events[1]
    assert (login.action, login.request_id, login.actor_kind, login.actor_id) == (
        "access:staff:login",
        "trace-42",
        "staff",
        staff.id,
    )
    assert failure.details["reason"] == "wrong_password"
    assert failure.details["ip"] == "testclient"


# ------------------------------------------------------------------------------ security log


def test_security_events_are_logged_without_secrets(
    settings: Any, runtime: Runtime, clock: ManualClock, logging_restored: None
) -> None:
    """Logins, failures, denials and 401s leave JSON lines; passwords and tokens never do."""
    import io  # noqa: PLC0415
    import json  # noqa: PLC0415

    from custodia.api.app import create_app  # noqa: PLC0415
    from custodia.core.logging import configure_logging  # noqa: PLC0415
    from custodia.core.settings import load_settings  # noqa: PLC0415

    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json"), stream=log)
    staff = make_staff(runtime, Role.AUDITOR, logged_in=False)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        _login(client, staff, clock, password="hunter2-wrong")
        token = _login(client, staff, clock).json()["token"]
        client.post("/v1/auth/logout", headers={"Authorization": "Bearer cs_nope"})
        onboarding = make_client(runtime)
        client.get("/v1/audit/events", headers=bearer(onboarding.key))
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    events = [line.get("security_event") for line in lines if line.get("event") == "security_event"]
    assert events == [
        "login_wrong_password",
        "login_succeeded",
        "unauthenticated",
        "permission_denied",
    ]
    written = log.getvalue()
    for secret in ("hunter2-wrong", staff.password, token, onboarding.key, staff.totp_secret):
        assert secret not in written
