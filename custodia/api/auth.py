"""``/v1/auth``: staff login, logout and password change; ``/v1/auth/me`` for every caller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from custodia import access
from custodia.api.runtime import Runtime
from custodia.api.security import context_of, current_principal, security_event
from custodia.core.actors import Actor, ActorKind

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LoginIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Username, password and the current TOTP code."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Password
    totp: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]


class LoginOut(msgspec.Struct, kw_only=True):
    """A session token (shown once) and when it expires at the latest."""

    token: str
    expires_at: datetime
    password_change_required: bool


class PasswordChangeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The current password and the new one."""

    current_password: Password
    new_password: Password


class MeOut(msgspec.Struct, kw_only=True):
    """Who the credential belongs to."""

    kind: str
    id: str
    role: str | None
    username: str | None = None
    merchant_id: str | None = None
    password_change_required: bool = False
    session_expires_at: datetime | None = None


class AuthController(Controller):
    """Staff sessions (API.md "Authentication and roles")."""

    path = "/v1/auth"
    tags = ["auth"]

    @post(
        "/login",
        operation_id="auth_login",
        status_code=200,
        sync_to_thread=True,
        summary="Log in with username, password and TOTP code",
    )
    def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginIn],
        runtime: NamedDependency[Runtime],
    ) -> LoginOut:
        """Open a staff session; 401 on any wrong part, 429 while locked."""
        ctx = context_of(request, runtime, Actor(ActorKind.ANONYMOUS, "login"))
        client_ip = request.client.host if request.client else None
        outcome = runtime.db.run(
            lambda s: access.login(
                s,
                username=data.username,
                password=data.password,
                totp_code=data.totp,
                client_ip=client_ip,
                ctx=ctx,
                vault=runtime.vault,
                hasher=runtime.hasher,
                policy=runtime.access_policy,
            )
        )
        event = "login_succeeded" if outcome.error is None else f"login_{outcome.reason}"
        security_event(
            runtime,
            event,
            warning=outcome.error is not None,
            staff_id=outcome.staff_id,
            client_ip=client_ip,
        )
        ok = outcome.unwrap()
        assert ok.expires_at is not None  # noqa: S101 - set on success
        return LoginOut(
            token=ok.token,
            expires_at=ok.expires_at,
            password_change_required=ok.password_change_required,
        )

    @post(
        "/logout",
        operation_id="auth_logout",
        status_code=204,
        sync_to_thread=True,
        summary="End this session",
    )
    def logout(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> None:
        """Revoke the session token the request was made with."""
        principal = current_principal(request)
        assert principal.staff is not None  # noqa: S101 - staff roles only (ROUTE_ACCESS)
        token_hash = principal.staff.session_token_hash
        ctx = context_of(request, runtime)
        runtime.db.run(lambda s: access.logout(s, token_hash, ctx=ctx))

    @post(
        "/password",
        operation_id="auth_change_password",
        status_code=204,
        sync_to_thread=True,
        summary="Change your password (other sessions end)",
    )
    def change_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PasswordChangeIn],
        runtime: NamedDependency[Runtime],
    ) -> None:
        """Replace the password; 422 if the current one is wrong or the new one too weak."""
        principal = current_principal(request)
        assert principal.staff is not None  # noqa: S101 - staff roles only (ROUTE_ACCESS)
        token_hash = principal.staff.session_token_hash
        ctx = context_of(request, runtime)
        outcome = runtime.db.run(
            lambda s: access.change_password(
                s,
                token_hash=token_hash,
                current_password=data.current_password,
                new_password=data.new_password,
                ctx=ctx,
                hasher=runtime.hasher,
                policy=runtime.access_policy,
            )
        )
        if outcome.error is not None:
            security_event(runtime, "password_change_failed", warning=True, staff_id=ctx.actor.id)
        outcome.unwrap()

    @get("/me", operation_id="auth_me", sync_to_thread=False, summary="Who am I")
    def me(self, request: Request[Any, Any, Any]) -> MeOut:
        """Describe the caller behind the credential."""
        principal = current_principal(request)
        staff = principal.staff
        return MeOut(
            kind=principal.actor.kind.value,
            id=principal.actor.id,
            role=principal.actor.role.value if principal.actor.role else None,
            username=staff.username if staff else None,
            merchant_id=principal.actor.merchant_id,
            password_change_required=staff.password_change_required if staff else False,
            session_expires_at=staff.expires_at if staff else None,
        )
