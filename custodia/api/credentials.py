"""``/v1/customers/{id}/credentials``: the customer's payment verification factors (API.md, K3).

No idempotency keys here: a stored response would keep a TOTP secret (the provisioning URI)
in the idempotency table. A wrong factor is counted in its own transaction before the 401
goes out (:func:`failures_counted`), since the request's transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from custodia import kyc
from custodia.api.runtime import Runtime
from custodia.api.security import context_of, security_event
from custodia.core.actors import Context

Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class PasswordIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new payment password; the current one when replacing it."""

    password: Secret
    #: Optional fields carry no length limit in the schema (Litestar cannot express one).
    current_password: str | None = None


class TotpOut(msgspec.Struct, kw_only=True):
    """The authenticator to add, shown once; bound by a first code."""

    provisioning_uri: str


class CodeIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A code from the customer's authenticator."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=10)]


class ConfirmedOut(msgspec.Struct, kw_only=True):
    """The authenticator is bound."""

    confirmed: bool


class SigningKeyIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An Ed25519 device public key, base64 of its 32 raw bytes."""

    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class SigningKeyOut(msgspec.Struct, kw_only=True):
    """The registered key's id, to name in signature factors."""

    key_id: str


class CredentialsOut(msgspec.Struct, kw_only=True):
    """Which factors the customer has (never the secrets)."""

    password: bool
    totp: bool
    signing_keys: list[str]
    locked_until: datetime | None


@contextmanager
def failures_counted(
    runtime: Runtime, ctx: Context, customer_id: str | None = None
) -> Iterator[None]:
    """Count a wrong factor against the customer (committed on its own), then re-raise.

    Without ``customer_id`` the customer is the one the failure names.
    """
    try:
        yield
    except kyc.AuthenticationFailed as exc:
        factor = exc.factor
        customer_id = customer_id or exc.customer_id
        if customer_id is None:
            raise
        locked_until = runtime.db.run(
            lambda s: kyc.count_failure(
                s, customer_id, factor, ctx=ctx, policy=runtime.credential_policy
            )
        )
        security_event(
            runtime,
            "customer_factor_failed",
            warning=True,
            customer_id=customer_id,
            factor=factor,
            locked=locked_until is not None,
        )
        raise


class CustomerCredentialsController(Controller):
    """Payment password, authenticator and device keys of a customer."""

    path = "/v1/customers/{customer_id:str}/credentials"
    tags = ["credentials"]

    @get("/", operation_id="customers_credentials", sync_to_thread=True, summary="Factors set up")
    def read(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> CredentialsOut:
        """Return which factors the customer has set up, and any lock."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> CredentialsOut:
            kyc.acting_for(session, customer_id, ctx.actor)
            found = kyc.credential_summary(session, customer_id)
            return CredentialsOut(
                password=found.password,
                totp=found.totp,
                signing_keys=list(found.signing_keys),
                locked_until=found.locked_until,
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/password",
        operation_id="customers_credentials_password",
        status_code=204,
        sync_to_thread=True,
        summary="Set the payment password",
    )
    def password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PasswordIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> None:
        """Set the payment password (replacing it needs the current one)."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> None:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            kyc.set_password(
                session,
                customer_id,
                data.password,
                current_password=data.current_password,
                ctx=ctx,
                hasher=runtime.hasher,
            )

        with failures_counted(runtime, ctx, customer_id):
            runtime.db.run(work)

    @post(
        "/totp",
        operation_id="customers_credentials_totp",
        status_code=201,
        sync_to_thread=True,
        summary="Start binding an authenticator",
    )
    def totp(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> TotpOut:
        """Return the provisioning URI of a new authenticator (confirm it with a code)."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> TotpOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            return TotpOut(
                provisioning_uri=kyc.begin_totp(session, customer_id, ctx=ctx, vault=runtime.vault)
            )

        return runtime.db.run(work)

    @post(
        "/totp/confirm",
        operation_id="customers_credentials_totp_confirm",
        status_code=200,
        sync_to_thread=True,
        summary="Bind the authenticator with a first code",
    )
    def totp_confirm(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CodeIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> ConfirmedOut:
        """Bind the pending authenticator; a wrong code is 401 and counted."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> ConfirmedOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            kyc.confirm_totp(session, customer_id, data.code, ctx=ctx, vault=runtime.vault)
            return ConfirmedOut(confirmed=True)

        with failures_counted(runtime, ctx, customer_id):
            return runtime.db.run(work)

    @post(
        "/signing-keys",
        operation_id="customers_credentials_signing_key",
        status_code=201,
        sync_to_thread=True,
        summary="Register a device key (electronic signature)",
    )
    def signing_key(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[SigningKeyIn],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
    ) -> SigningKeyOut:
        """Register an Ed25519 public key; signatures by it count as electronic signature."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> SigningKeyOut:
            kyc.acting_for(session, customer_id, ctx.actor, writing=True)
            return SigningKeyOut(
                key_id=kyc.add_signing_key(
                    session, customer_id, data.public_key, ctx=ctx, ids=runtime.ids
                )
            )

        return runtime.db.run(work)

    @delete(
        "/signing-keys/{key_id:str}",
        operation_id="customers_credentials_signing_key_revoke",
        status_code=204,
        sync_to_thread=True,
        summary="Revoke a device key (lost or replaced device)",
    )
    def revoke_signing_key(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        customer_id: FromPath[str],
        key_id: FromPath[str],
    ) -> None:
        """Revoke a device key: no signature by it verifies from now on (again: no change)."""
        ctx = context_of(request, runtime)

        def work(session: Any) -> None:
            # A closed customer's keys may still be revoked: revoking never adds a risk.
            kyc.acting_for(session, customer_id, ctx.actor)
            kyc.revoke_signing_key(session, customer_id, key_id, ctx=ctx)

        runtime.db.run(work)
