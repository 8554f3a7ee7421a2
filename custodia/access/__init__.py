"""Who may call the service: staff (password + TOTP, sessions) and API clients (keys).

DESIGN.md's layout has no home for this: it is a domain package of its own beside the
others, depending only on ``custodia.core`` (see docs/architecture.md).
"""

from custodia.access.clients import (
    ClientView,
    KnownKeys,
    NewClient,
    authenticate_key,
    create_client,
    list_clients,
    looks_like_api_key,
    revoke_client,
)
from custodia.access.staff import (
    AccessPolicy,
    LoginOutcome,
    NewStaff,
    StaffPrincipal,
    authenticate_session,
    change_password,
    create_staff,
    login,
    logout,
    touch_session,
)

__all__ = [
    "AccessPolicy",
    "ClientView",
    "KnownKeys",
    "LoginOutcome",
    "NewClient",
    "NewStaff",
    "StaffPrincipal",
    "authenticate_key",
    "authenticate_session",
    "change_password",
    "create_client",
    "create_staff",
    "list_clients",
    "login",
    "logout",
    "looks_like_api_key",
    "revoke_client",
    "touch_session",
]
