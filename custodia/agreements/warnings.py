"""Risk warnings shown before high-risk operations (REGULATION.md A4, Art. ≈24).

Which operations are high-risk, and which warning each needs, is configuration
(``CUSTODIA_RISK_WARNINGS``): a warning *kind* says how long an acknowledgement counts
(``valid_minutes``; none: for good) and whether it is tied to a *subject* (the partner
product of A4's "before the first purchase of a partner's financial product"); an
*operation* names the kind it needs. The accounts module calls :func:`require_warning`
before such an operation; the onboarding app records what it showed with
``POST /v1/customers/{id}/risk-warnings``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.agreements.errors import InvalidAgreement, RiskWarningRequired
from custodia.agreements.models import RiskWarning
from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.errors import ConfigError, FieldProblem
from custodia.core.ids import IdGenerator, IdPrefix

_NAME = re.compile(r"[a-z][a-z0-9_]{1,39}")
MAX_SUBJECT = 100


@dataclass(frozen=True, slots=True)
class WarningKind:
    """How an acknowledged warning of one kind counts."""

    valid_for: timedelta | None  # None: it counts for good
    per_subject: bool = False  # it counts only for the subject it was shown about


def _default_kinds() -> dict[str, WarningKind]:
    return {
        # A4: before the first purchase of a partner's financial product, once per product.
        "partner_product": WarningKind(valid_for=None, per_subject=True),
        # Shown right before one operation: an acknowledgement counts for a few minutes.
        "high_risk_operation": WarningKind(valid_for=timedelta(minutes=15)),
    }


def _default_operations() -> dict[str, str]:
    return {"investment_purchase": "partner_product", "large_transfer": "high_risk_operation"}


@dataclass(frozen=True, slots=True)
class RiskWarningPolicy:
    """The warning kinds and which operation needs which (A4)."""

    kinds: Mapping[str, WarningKind] = field(default_factory=_default_kinds)
    operations: Mapping[str, str] = field(default_factory=_default_operations)

    @classmethod
    def from_config(cls, raw: str) -> RiskWarningPolicy:
        """Build the policy from ``CUSTODIA_RISK_WARNINGS`` JSON (empty: the defaults).

        ``{"kinds": {"k": {"valid_minutes": 15 | null, "per_subject": false}},
        "operations": {"large_transfer": "k"}}``; given parts replace the defaults.
        """
        if not raw.strip():
            return cls()
        problem = (
            'CUSTODIA_RISK_WARNINGS: give {"kinds": {name: {"valid_minutes": int|null, '
            '"per_subject": bool}}, "operations": {operation: kind}}'
        )
        try:
            data = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{problem} (not JSON)") from None
        if not isinstance(data, dict) or set(data) - {"kinds", "operations"}:
            raise ConfigError(problem)
        kinds = dict(_default_kinds())
        if "kinds" in data:
            kinds = {}
            for name, spec in _mapping(data["kinds"], problem).items():
                minutes = spec.get("valid_minutes") if isinstance(spec, dict) else "bad"
                per_subject = spec.get("per_subject", False) if isinstance(spec, dict) else None
                if (
                    not _NAME.fullmatch(name)
                    or not (minutes is None or (isinstance(minutes, int) and minutes > 0))
                    or not isinstance(per_subject, bool)
                ):
                    raise ConfigError(f"{problem}; kind {name!r} is not valid")
                valid_for = None if minutes is None else timedelta(minutes=minutes)
                kinds[name] = WarningKind(valid_for=valid_for, per_subject=per_subject)
        operations = dict(_default_operations())
        if "operations" in data:
            operations = {str(k): str(v) for k, v in _mapping(data["operations"], problem).items()}
        unknown = sorted(f"{op} → {kind}" for op, kind in operations.items() if kind not in kinds)
        if unknown:
            raise ConfigError(f"CUSTODIA_RISK_WARNINGS: operations name unknown kinds: {unknown}")
        return cls(kinds=kinds, operations=operations)


def _mapping(value: object, problem: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ConfigError(problem)
    return value


@dataclass(frozen=True, slots=True)
class WarningRequest:
    """``POST /v1/customers/{id}/risk-warnings``."""

    kind: str
    shown_at: datetime
    acknowledged: bool
    subject: str | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class WarningView:
    """A recorded warning."""

    id: str
    customer_id: str
    kind: str
    subject: str | None
    shown_at: datetime
    acknowledged: bool
    channel: str | None
    created_at: datetime


def _view(row: RiskWarning) -> WarningView:
    return WarningView(
        id=row.id,
        customer_id=row.customer_id,
        kind=row.kind,
        subject=row.subject,
        shown_at=row.shown_at,
        acknowledged=row.acknowledged,
        channel=row.channel,
        created_at=row.created_at,
    )


def record_warning(
    session: Session,
    customer_id: str,
    request: WarningRequest,
    *,
    ctx: Context,
    ids: IdGenerator,
    policy: RiskWarningPolicy,
) -> WarningView:
    """Record that the warning was shown (and whether acknowledged); audited (A4)."""
    problems: list[FieldProblem] = []
    kind = policy.kinds.get(request.kind)
    if kind is None:
        problems.append(FieldProblem("kind", f"one of {', '.join(sorted(policy.kinds))}"))
    subject = request.subject.strip() if request.subject is not None else None
    if kind is not None and kind.per_subject and not subject:
        problems.append(FieldProblem("subject", f"a {request.kind} warning names its subject"))
    if subject is not None and len(subject) > MAX_SUBJECT:
        problems.append(FieldProblem("subject", f"at most {MAX_SUBJECT} characters"))
    if request.channel is not None and not _NAME.fullmatch(request.channel):
        problems.append(FieldProblem("channel", "a lower-case word such as app or web"))
    if request.shown_at.tzinfo is None:
        problems.append(FieldProblem("shown_at", "give an instant with a UTC offset"))
    elif request.shown_at > ctx.now:
        problems.append(FieldProblem("shown_at", "is in the future"))
    if problems:
        raise InvalidAgreement(problems)
    row = RiskWarning(
        id=ids.new(IdPrefix.RISK_WARNING),
        customer_id=customer_id,
        kind=request.kind,
        subject=subject or None,
        shown_at=request.shown_at,
        acknowledged=request.acknowledged,
        channel=request.channel,
        actor_kind=ctx.actor.kind.value,
        actor_id=ctx.actor.id,
        request_id=ctx.request_id,
        created_at=ctx.now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.RISK_WARNING_SHOWN,
        target=row.id,
        customer_id=customer_id,
        details={"kind": row.kind, "subject": row.subject, "acknowledged": row.acknowledged},
    )
    return _view(row)


def list_warnings(
    session: Session, customer_id: str, *, before_id: str | None, limit: int
) -> list[WarningView]:
    """Return the customer's recorded warnings, newest first."""
    query = (
        select(RiskWarning)
        .where(RiskWarning.customer_id == customer_id)
        .order_by(RiskWarning.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(RiskWarning.id < before_id)
    return [_view(row) for row in session.execute(query).scalars()]


def require_warning(
    session: Session,
    customer_id: str,
    operation: str,
    *,
    subject: str | None = None,
    now: datetime,
    policy: RiskWarningPolicy,
) -> str | None:
    """Refuse a high-risk operation without an acknowledged warning (409, A4).

    Returns the id of the warning that allows it, or None when ``operation`` needs none.
    """
    kind_name = policy.operations.get(operation)
    if kind_name is None:
        return None
    kind = policy.kinds[kind_name]
    query = (
        select(RiskWarning.id)
        .where(
            RiskWarning.customer_id == customer_id,
            RiskWarning.kind == kind_name,
            RiskWarning.acknowledged.is_(True),
            RiskWarning.shown_at <= now,
        )
        .order_by(RiskWarning.shown_at.desc())
        .limit(1)
    )
    if kind.valid_for is not None:
        query = query.where(RiskWarning.shown_at >= now - kind.valid_for)
    if kind.per_subject:
        query = query.where(RiskWarning.subject == (subject or ""))
    found = session.scalar(query)
    if found is None:
        raise RiskWarningRequired(customer_id, operation, kind_name)
    return found
