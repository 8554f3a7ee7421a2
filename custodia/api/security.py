"""Authentication and authorization of every HTTP request (API.md "Authentication and roles").

:data:`ROUTE_ACCESS` is the one table of who may call what: every route's ``operation_id``
with the roles allowed to call it. The app-wide guard :func:`authorize` looks the route up
before its body is read, so an unknown caller gets 401 ``unauthenticated`` and a known
caller of the wrong role 403 ``forbidden`` without the request being parsed. A route that
is missing from the table is refused to everyone (and the test suite, which walks the
OpenAPI schema and tries every route with every role, fails).

Credentials are ``Authorization: Bearer <credential>``: API keys (``ck_…``) for onboarding
apps and merchants, session tokens (``cs_…``) for staff. Both are looked up on every
request, so a revoked key or ended session stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from custodia.access import (
    StaffPrincipal,
    authenticate_key,
    authenticate_session,
    looks_like_api_key,
    touch_session,
)
from custodia.access.errors import PasswordChangeRequired
from custodia.api.runtime import Runtime
from custodia.core.actors import CLIENT_ROLES, STAFF_ROLES, Actor, Context, Role
from custodia.core.errors import Forbidden, Unauthenticated
from custodia.core.logging import get_logger

OPENAPI_PATH = "/schema"
_security_log = get_logger("custodia.security")


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call one route."""

    roles: frozenset[Role] = frozenset()
    public: bool = False
    #: Whether a staff session that must still change its one-time password may call it.
    during_password_change: bool = False
    #: Whether the route's own transaction checks that the caller's API key is not revoked
    #: (the transfer function): the guard may then take a key it authenticated before from
    #: the process's :class:`~custodia.access.KnownKeys`; the handler authenticates again
    #: when its work does not run in that transaction (``Principal.cached``).
    key_rechecked: bool = False


PUBLIC = Access(public=True)
ALL_ROLES = frozenset(Role)
#: Roles that review the audit trail: auditors and compliance officers and above.
AUDIT_READERS = frozenset({Role.AUDITOR, Role.COMPLIANCE_OFFICER, Role.COMPLIANCE_LEAD, Role.ADMIN})

ONBOARDING = frozenset({Role.ONBOARDING_APP})
#: Compliance officers and their lead handle customers' cases.
OFFICERS = frozenset({Role.COMPLIANCE_OFFICER, Role.COMPLIANCE_LEAD})
LEADS = frozenset({Role.COMPLIANCE_LEAD})
#: Staff who may read customer records (masked): officers, leads and auditors.
CUSTOMER_READERS = OFFICERS | {Role.AUDITOR}
MERCHANTS = frozenset({Role.MERCHANT})
ADMINS = frozenset({Role.ADMIN})
#: Who drafts and publishes agreement texts (API.md: compliance_lead, admin).
AGREEMENT_EDITORS = frozenset({Role.COMPLIANCE_LEAD, Role.ADMIN})

#: Every route of the API by operation id → who may call it. The one place to look.
ROUTE_ACCESS: dict[str, Access] = {
    # operations
    "health": PUBLIC,
    "ready": PUBLIC,
    "metrics": PUBLIC,
    # staff authentication
    "auth_login": PUBLIC,
    "auth_logout": Access(STAFF_ROLES, during_password_change=True),
    "auth_change_password": Access(STAFF_ROLES, during_password_change=True),
    "auth_me": Access(ALL_ROLES, during_password_change=True),
    # audit trail
    "audit_events_list": Access(AUDIT_READERS),
    "audit_verify": Access(AUDIT_READERS),
    # customers (KYC): onboarding apps register and read their own; compliance reads all
    "customers_create": Access(ONBOARDING),
    "customers_find": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_get": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_update": Access(ONBOARDING),
    "customers_verify": Access(ONBOARDING),
    "customers_verifications": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_risk": Access(ONBOARDING | CUSTOMER_READERS),
    # The history includes alerts and staff actions: not for the customer-facing app
    # (no tipping-off, AML Law).
    "customers_timeline": Access(CUSTOMER_READERS),
    "customers_reveal": Access(OFFICERS),
    # customers' payment verification factors (set up by the onboarding app)
    "customers_credentials": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_credentials_password": Access(ONBOARDING),
    "customers_credentials_totp": Access(ONBOARDING),
    "customers_credentials_totp_confirm": Access(ONBOARDING),
    "customers_credentials_signing_key": Access(ONBOARDING),
    # a lost device's key: the app, or an officer (suspected fraud), revokes it
    "customers_credentials_signing_key_revoke": Access(ONBOARDING | OFFICERS),
    # agreements: compliance leads (and admins) draft and publish; apps show the text in force
    "agreements_create": Access(AGREEMENT_EDITORS),
    "agreements_update": Access(AGREEMENT_EDITORS),
    "agreements_publish": Access(AGREEMENT_EDITORS),
    "agreements_list": Access(CUSTOMER_READERS | AGREEMENT_EDITORS),
    "agreements_get": Access(ONBOARDING | CUSTOMER_READERS | AGREEMENT_EDITORS),
    "agreements_current": Access(ONBOARDING | CUSTOMER_READERS | AGREEMENT_EDITORS),
    # Public keys: anyone may verify a receipt offline.
    "agreements_signing_key": PUBLIC,
    # consents and risk warnings: recorded by the app, read by compliance too
    "customers_consent": Access(ONBOARDING),
    "customers_consents": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_risk_warning": Access(ONBOARDING),
    "customers_risk_warnings": Access(ONBOARDING | CUSTOMER_READERS),
    # payment accounts: opened and closed for its customers by the app; frozen by officers
    "accounts_open": Access(ONBOARDING),
    "accounts_get": Access(ONBOARDING | CUSTOMER_READERS),
    "accounts_close": Access(ONBOARDING),
    "accounts_freeze": Access(OFFICERS),
    "accounts_unfreeze": Access(OFFICERS),
    "accounts_transactions": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_accounts": Access(ONBOARDING | CUSTOMER_READERS),
    "customers_bank_card_bind": Access(ONBOARDING),
    "customers_payment_limits": Access(ONBOARDING),
    "customers_bank_cards": Access(ONBOARDING | CUSTOMER_READERS),
    # money movement: the customer's app moves its customers' money; merchants take payments
    "top_ups_create": Access(ONBOARDING),
    "withdrawals_create": Access(ONBOARDING),
    "transfers_create": Access(ONBOARDING, key_rechecked=True),
    "payments_create": Access(MERCHANTS),
    "refunds_create": Access(MERCHANTS),
    "transactions_get": Access(ONBOARDING | MERCHANTS | CUSTOMER_READERS),
    # merchants: registered by an admin; a merchant reads its own record
    "merchants_create": Access(ADMINS),
    "merchants_get": Access(ADMINS | OFFICERS | MERCHANTS),
    # the ledger's reconciliation against the reserve account
    "ledger_reconciliation": Access(AUDIT_READERS),
    # watchlists and screening
    "aml_watchlists_upload": Access(LEADS),
    "aml_watchlists_list": Access(CUSTOMER_READERS),
    "aml_screen": Access(OFFICERS),
    # AML alerts: officers and their lead work them; auditors read the queue and decisions
    "aml_alerts_list": Access(CUSTOMER_READERS),
    "aml_alerts_get": Access(CUSTOMER_READERS),
    "aml_alerts_assign": Access(OFFICERS),
    "aml_alerts_note": Access(OFFICERS),
    "aml_alerts_decide": Access(OFFICERS),
    # measures on accounts and customers (K2): compliance officers and their lead
    "aml_actions_take": Access(OFFICERS),
    # monitoring rules: read by compliance and auditors; changed by a compliance lead only
    "aml_rules_list": Access(CUSTOMER_READERS),
    "aml_rules_versions": Access(CUSTOMER_READERS),
    "aml_rules_update": Access(LEADS),
    # regulatory reports (L1, L2): read by compliance and auditors; filed by officers and
    # their lead (filing is work on the case load, which auditors review but never do)
    "aml_reports_large_value": Access(CUSTOMER_READERS),
    "aml_reports_suspicious": Access(CUSTOMER_READERS),
    "aml_reports_file": Access(OFFICERS),
    "aml_reports_filed_list": Access(CUSTOMER_READERS),
    "aml_reports_filed_get": Access(CUSTOMER_READERS),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    actor: Actor
    staff: StaffPrincipal | None = None
    #: Taken from the process's known keys without a lookup (``Access.key_rechecked``).
    cached: bool = False


def _is_framework_route(connection: ASGIConnection[Any, Any, Any, Any], handler: Any) -> bool:
    """Litestar's own routes (CORS preflight, the OpenAPI pages) carry no operation id."""
    if getattr(handler, "http_methods", None) == {"OPTIONS"}:
        return True
    template = str(connection.scope.get("path_template", ""))
    return template == OPENAPI_PATH or template.startswith(OPENAPI_PATH + "/")


def authenticate(runtime: Runtime, authorization: str | None) -> Principal:
    """Return the caller behind an ``Authorization`` header; Unauthenticated otherwise."""
    if not authorization:
        raise Unauthenticated
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated("Use Authorization: Bearer <API key or session token>.")
    now = runtime.clock.now()
    if looks_like_api_key(credential):
        actor = authenticate_key(runtime.db.fetch_one, credential, environment=runtime.settings.env)
        return Principal(actor)
    staff = runtime.db.read(
        lambda c: authenticate_session(c, credential, now=now, policy=runtime.access_policy)
    )
    if staff.needs_touch:
        runtime.db.run(lambda s: touch_session(s, staff.session_token_hash, now))
    return Principal(staff.actor, staff)


def _known_key(runtime: Runtime, authorization: str | None) -> Principal | None:
    """Return the principal of an API key this process authenticated before, if any."""
    if not authorization:
        return None
    actor = runtime.known_keys.get(authorization)
    return None if actor is None else Principal(actor, cached=True)


def admitted_from_cache(
    runtime: Runtime, operation: str, authorization: str | None
) -> Principal | None:
    """Return whom the guard would admit to ``operation`` from the known keys alone, or None.

    For a route served before Litestar's guard (:mod:`custodia.api.transfer_route`): only
    a ``key_rechecked`` route, an API key this process authenticated before, and a role the
    route's entry admits. None sends the request through the guard, which decides (and
    logs a refusal) as for any other.
    """
    access = ROUTE_ACCESS[operation]
    principal = _known_key(runtime, authorization) if access.key_rechecked else None
    if principal is None or principal.actor.role not in access.roles:
        return None
    return principal


def confirmed(runtime: Runtime, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Return the caller, looked up again if the guard took it from the known keys.

    For a ``key_rechecked`` route whose work does not run in the transaction that checks
    the key (e.g. a transfer on the general path). Runs in the handler's thread.
    """
    principal = current_principal(connection)
    if not principal.cached:
        return principal
    try:
        return authenticate(runtime, connection.headers.get("authorization"))
    except Unauthenticated:
        _deny(runtime, "unauthenticated", operation=connection.scope.get("path_template"))
        raise


def security_event(runtime: Runtime, event: str, *, warning: bool = False, **fields: Any) -> None:
    """Count ``event`` in the metrics and write it to the security log (issue 3 item 8)."""
    runtime.metrics.security_events.labels(event).inc()
    log = _security_log.warning if warning else _security_log.info
    log("security_event", security_event=event, **fields)


def _deny(runtime: Runtime, event: str, **fields: Any) -> None:
    security_event(runtime, event, warning=True, **fields)


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-wide guard: authenticate the caller and check the route's table entry."""
    operation = getattr(handler, "operation_id", None)
    runtime: Runtime = connection.app.state.runtime
    if not isinstance(operation, str):
        if _is_framework_route(connection, handler):
            return
        _deny(runtime, "route_without_access_entry", route=connection.scope.get("path_template"))
        raise Forbidden("This route is not open to any role.")
    access = ROUTE_ACCESS.get(operation)
    if access is None:
        _deny(runtime, "route_without_access_entry", operation=operation)
        raise Forbidden("This route is not open to any role.")
    if access.public:
        return
    authorization = connection.headers.get("authorization")
    principal = _known_key(runtime, authorization) if access.key_rechecked else None
    if principal is None:
        try:
            principal = await anyio.to_thread.run_sync(authenticate, runtime, authorization)
        except Unauthenticated:
            _deny(runtime, "unauthenticated", operation=operation)
            raise
        if access.key_rechecked and principal.staff is None and authorization:
            runtime.known_keys.put(authorization, principal.actor)
    state = connection.scope["state"]
    state["principal"] = principal
    state["actor"] = principal.actor
    if (
        principal.staff is not None
        and principal.staff.password_change_required
        and not access.during_password_change
    ):
        _deny(runtime, "password_change_required", operation=operation, actor=str(principal.actor))
        raise PasswordChangeRequired
    if principal.actor.role not in access.roles:
        _deny(
            runtime,
            "permission_denied",
            operation=operation,
            actor=str(principal.actor),
            role=principal.actor.role,
        )
        raise Forbidden


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Return the caller the guard authenticated (Unauthenticated on a public route)."""
    principal = connection.scope["state"].get("principal")
    if principal is None:
        raise Unauthenticated
    assert isinstance(principal, Principal)  # noqa: S101 - set only by the guard
    return principal


def context_of(
    connection: ASGIConnection[Any, Any, Any, Any], runtime: Runtime, actor: Actor | None = None
) -> Context:
    """Return the command context of this request: actor, the time now, the request id."""
    return Context(
        actor=actor or current_principal(connection).actor,
        now=runtime.clock.now(),
        request_id=connection.scope["state"].get("request_id"),
    )


__all__ = [
    "ALL_ROLES",
    "AUDIT_READERS",
    "CLIENT_ROLES",
    "PUBLIC",
    "ROUTE_ACCESS",
    "STAFF_ROLES",
    "Access",
    "Principal",
    "admitted_from_cache",
    "authenticate",
    "authorize",
    "confirmed",
    "context_of",
    "current_principal",
]
