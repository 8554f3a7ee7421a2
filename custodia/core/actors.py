"""Who does something, in which role, when, and under which request.

Every command receives a :class:`Context`; the audit trail records its actor and request id,
and the services read the time from it instead of a clock (STYLE.md 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ActorKind(StrEnum):
    """What kind of party acts."""

    STAFF = "staff"  # a compliance officer, lead, auditor or admin (password + TOTP)
    CLIENT = "client"  # an onboarding app or a merchant (API key)
    CLI = "cli"  # an operator at the command line
    SYSTEM = "system"  # the service itself (workers, scheduled jobs)
    ANONYMOUS = "anonymous"  # not (yet) authenticated, e.g. a failed login


class Role(StrEnum):
    """The roles of API.md "Authentication and roles"."""

    ONBOARDING_APP = "onboarding_app"
    MERCHANT = "merchant"
    COMPLIANCE_OFFICER = "compliance_officer"
    COMPLIANCE_LEAD = "compliance_lead"
    AUDITOR = "auditor"
    ADMIN = "admin"


STAFF_ROLES = frozenset({Role.COMPLIANCE_OFFICER, Role.COMPLIANCE_LEAD, Role.AUDITOR, Role.ADMIN})
CLIENT_ROLES = frozenset({Role.ONBOARDING_APP, Role.MERCHANT})


@dataclass(frozen=True, slots=True)
class Actor:
    """A party that acts: its kind, its id, and for authenticated callers its role."""

    kind: ActorKind
    id: str
    role: Role | None = None
    merchant_id: str | None = None  # a merchant's API client acts for this merchant only

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"


SYSTEM = Actor(ActorKind.SYSTEM, "custodia")


@dataclass(frozen=True, slots=True)
class Context:
    """The circumstances of one command: who, when, and the request it serves."""

    actor: Actor
    now: datetime
    request_id: str | None = None
