"""Refusals of the access package, each carrying what the caller needs to act on it."""

from __future__ import annotations

import math
from datetime import datetime

from custodia.core.errors import DomainError, ErrorKind, Unauthenticated


class AccessError(DomainError):
    """Base of the access package's refusals."""


class LoginFailed(Unauthenticated):
    """Username, password or TOTP code wrong, or the code was used before.

    One answer for every cause, so that a failed login never tells which part was right.
    """

    def __init__(self) -> None:
        super().__init__("The username, password or one-time code is wrong.")


class LoginLocked(AccessError):
    """Too many failed logins: the account is locked until ``locked_until``."""

    code = "login_locked"
    kind = ErrorKind.TOO_MANY_REQUESTS
    title = "Too many failed logins"

    def __init__(self, locked_until: datetime, now: datetime) -> None:
        self.retry_after_s = max(1, math.ceil((locked_until - now).total_seconds()))
        super().__init__(
            "This account is locked after repeated failed logins; try again later.",
            locked_until=locked_until.isoformat(),
            retry_after_s=self.retry_after_s,
        )

    def headers(self) -> dict[str, str]:
        """Tell HTTP clients when to come back."""
        return {"Retry-After": str(self.retry_after_s)}


class PasswordChangeRequired(AccessError):
    """The session may only change its password until it has done so (API.md)."""

    code = "password_change_required"
    kind = ErrorKind.FORBIDDEN
    title = "Password change required"

    def __init__(self) -> None:
        super().__init__(
            "Change the one-time password first: POST /v1/auth/password.",
        )


class CurrentPasswordIncorrect(AccessError):
    """A password change named the wrong current password."""

    code = "current_password_incorrect"
    kind = ErrorKind.INVALID
    title = "Current password incorrect"

    def __init__(self) -> None:
        super().__init__("The current password is wrong.")


class PasswordTooWeak(AccessError):
    """The new password breaks the password policy."""

    code = "password_too_weak"
    kind = ErrorKind.INVALID
    title = "Password too weak"

    def __init__(self, reason: str, *, min_length: int) -> None:
        super().__init__(reason, min_length=min_length)


class StaffExists(AccessError):
    """A member of staff with this username exists already."""

    code = "staff_exists"
    kind = ErrorKind.CONFLICT
    title = "Username taken"

    def __init__(self, username: str) -> None:
        super().__init__(f"There is already a member of staff called {username!r}.")


class InvalidUsername(AccessError):
    """The username is not 3 to 64 lower-case letters, digits, dots, hyphens or underscores."""

    code = "invalid_username"
    kind = ErrorKind.INVALID
    title = "Invalid username"

    def __init__(self) -> None:
        super().__init__(
            "A username is 3 to 64 characters: lower-case letters, digits, '.', '-' or '_', "
            "starting with a letter or digit."
        )


class InvalidClient(AccessError):
    """An API client cannot be made as asked (e.g. a merchant key without a merchant)."""

    code = "invalid_client"
    kind = ErrorKind.INVALID
    title = "Invalid API client"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
