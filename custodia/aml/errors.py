"""Refusals of the AML module; each carries the data the caller needs (API.md codes)."""

from __future__ import annotations

from custodia.core.errors import DomainError, ErrorKind, FieldProblem, InvalidFields


class AmlError(DomainError):
    """Base of the AML module's refusals."""


class InvalidRuleParams(InvalidFields, AmlError):
    """A rule's new parameters fail its typed validation (names the offending field)."""

    code = "invalid_rule_params"
    title = "Invalid rule parameters"
    detail_text = "The parameters do not fit the rule; see errors."

    @classmethod
    def from_message(cls, message: str) -> InvalidRuleParams:
        """Turn a msgspec validation message (``… - at `$.field```) into a field problem."""
        text, _, where = message.partition(" - at `$")
        field = "params" + where.rstrip("`") if where else "params"
        return cls([FieldProblem(field, text)])


class UnknownRule(AmlError):
    """No monitoring rule has this key."""

    code = "not_found"
    kind = ErrorKind.NOT_FOUND
    title = "Not found"

    def __init__(self, key: str) -> None:
        super().__init__(f"No monitoring rule with key {key}.", rule=key)


class AlertClosed(AmlError):
    """A closed alert is read-only (issue 7 item 3)."""

    code = "alert_closed"
    kind = ErrorKind.CONFLICT
    title = "The alert is closed"

    def __init__(self, alert_id: str, decision: str | None) -> None:
        super().__init__(
            f"Alert {alert_id} is closed ({decision}); closed alerts are read-only.",
            alert_id=alert_id,
            decision=decision,
        )


class InvalidTransition(AmlError):
    """The decision is not allowed from the alert's current state."""

    code = "invalid_transition"
    kind = ErrorKind.CONFLICT
    title = "Not allowed in the alert's current state"

    def __init__(self, alert_id: str, status: str, decision: str, allowed: list[str]) -> None:
        super().__init__(
            f"Alert {alert_id} is {status}: {decision!r} is not possible now.",
            alert_id=alert_id,
            alert_status=status,
            decision=decision,
            allowed=allowed,
        )


class LeadDecisionRequired(AmlError):
    """An escalated alert is decided by a compliance lead (second line)."""

    code = "lead_decision_required"
    kind = ErrorKind.FORBIDDEN
    title = "A compliance lead decides escalated alerts"

    def __init__(self, alert_id: str) -> None:
        super().__init__(
            f"Alert {alert_id} was escalated; a compliance lead decides it.", alert_id=alert_id
        )


class AssigneeNotEligible(AmlError):
    """Alerts are assigned only to active compliance officers and leads."""

    code = "assignee_not_eligible"
    kind = ErrorKind.INVALID
    title = "Assignee not eligible"

    def __init__(self, assignee: str) -> None:
        super().__init__(
            "Alerts are assigned to an active compliance officer or lead (by username).",
            assignee=assignee,
        )


class ActionNotApplicable(AmlError):
    """The measure would change nothing (already frozen, nothing to lift, already ended)."""

    code = "action_not_applicable"
    kind = ErrorKind.CONFLICT
    title = "The measure changes nothing"

    def __init__(self, action: str, customer_id: str, account_id: str | None) -> None:
        super().__init__(
            f"{action!r} changes nothing for customer {customer_id} now.",
            action=action,
            customer_id=customer_id,
            account_id=account_id,
        )
