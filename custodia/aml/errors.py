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


class InvalidReportDate(AmlError):
    """A report's date is not an ISO calendar date (``YYYY-MM-DD``)."""

    code = "invalid_date"
    kind = ErrorKind.INVALID
    title = "Invalid date"

    def __init__(self, field: str, value: str) -> None:
        super().__init__(
            f"{field} must be a calendar date written YYYY-MM-DD.", field=field, value=value[:40]
        )


class InvalidReportPeriod(AmlError):
    """A report period ends before it starts."""

    code = "invalid_period"
    kind = ErrorKind.INVALID
    title = "The period ends before it starts"

    def __init__(self, first: str, last: str) -> None:
        super().__init__(
            f"The period {first} to {last} ends before it starts.",
            period_from=first,
            period_to=last,
        )


class ReportPeriodTooLong(AmlError):
    """A report period covers more days than one report may."""

    code = "period_too_long"
    kind = ErrorKind.INVALID
    title = "The period is too long"

    def __init__(self, days: int, max_days: int) -> None:
        super().__init__(
            f"A report covers at most {max_days} days; this period has {days}.",
            days=days,
            max_days=max_days,
        )


class ReportPeriodNotOver(AmlError):
    """A report is filed only once its period has ended (a filed report is final)."""

    code = "period_not_over"
    kind = ErrorKind.CONFLICT
    title = "The period has not ended yet"
    #: Filing the same request again after the period ended should file it.
    transient = True

    def __init__(self, period_to: str, ends_at: str) -> None:
        super().__init__(
            f"The period ends at {ends_at}; a report is filed once its period is over.",
            period_to=period_to,
            ends_at=ends_at,
        )


class FiledReportCorrupt(Exception):
    """A filed report's content no longer matches its digest (never expected: a 500).

    Not a :class:`AmlError`: the caller can do nothing about it, and the service must not
    serve the content. The message names the report, never its content.
    """

    def __init__(self, report_id: str) -> None:
        super().__init__(f"filed report {report_id}: its content does not match its digest")
