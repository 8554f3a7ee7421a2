"""``/v1/aml/alerts``, ``/actions``, ``/rules``, ``/reports``: queue, measures, rules, reports.

Controllers only translate: decode the request, call one service of ``custodia.aml`` in
one unit of work, encode the answer. Customer names are masked for every role here (an
officer who needs a name in clear uses ``POST /v1/customers/{id}/reveal``, which is
audited); a company's own name is public and stays in clear, as in the customers API.
Transaction records are shown as ``GET /v1/transactions/{id}`` shows them to staff.

Reports (L1, L2) answer JSON, or CSV when the caller prefers ``text/csv`` (``Accept``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.orm import Session

from custodia import aml
from custodia.accounts import movements
from custodia.aml import reports
from custodia.aml.alerts import CustomerContext
from custodia.aml.errors import AmlError
from custodia.aml.models import ALERT_STATUSES, REPORT_KINDS, AmlAlert, FiledReport
from custodia.api.accounts import TransactionOut, transaction_out
from custodia.api.idempotency import respond_idempotently
from custodia.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from custodia.api.runtime import Runtime
from custodia.api.security import context_of
from custodia.core.errors import FieldProblem, InvalidFields
from custodia.core.masking import mask_name

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


class InvalidAmlRequest(InvalidFields, AmlError):
    """A query or body field the schema cannot check: an unknown status or rule, a target."""


# ------------------------------------------------------------------------------- structs


class AlertOut(msgspec.Struct, kw_only=True):
    """An alert in the queue."""

    id: str
    rule: str
    rule_version: int
    params: dict[str, Any]
    pattern: str
    score: int
    severity: str
    status: str
    decision: str | None
    customer_id: str
    case_id: str
    assignee: str | None
    details: dict[str, Any]
    due_at: datetime
    overdue: bool
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    closed_by: str | None


class AlertPage(msgspec.Struct, kw_only=True):
    """One page of alerts, newest first."""

    items: list[AlertOut]
    next_cursor: str | None = None


class NoteOut(msgspec.Struct, kw_only=True):
    """A note or a decision's reason."""

    id: str
    kind: str
    author: str
    text: str
    created_at: datetime


class AccountSummaryOut(msgspec.Struct, kw_only=True):
    """One of the customer's accounts."""

    id: str
    account_class: str
    status: str


class CustomerContextOut(msgspec.Struct, kw_only=True):
    """Who the alert is about (name masked)."""

    id: str
    type: str
    name: str
    status: str
    risk_level: str
    risk_score: int
    screening_status: str
    nationality: str
    accounts: list[AccountSummaryOut]


class CaseOut(msgspec.Struct, kw_only=True):
    """The case the alert belongs to: the customer's other alerts."""

    id: str
    other_alerts: list[str]


class AlertDetailOut(AlertOut, kw_only=True):
    """An alert with the transactions and customer context that raised it."""

    transaction_ids: list[str]
    transactions: list[TransactionOut]
    customer: CustomerContextOut | None
    notes: list[NoteOut]
    case: CaseOut


class AssignIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/aml/alerts/{id}/assign``."""

    assignee: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class NoteIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/aml/alerts/{id}/notes``."""

    text: Text


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/aml/alerts/{id}/decision``; ``no_action`` is an addition to API.md."""

    decision: Literal["false_positive", "escalate", "report", "no_action"]
    reason: Text


class RuleIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/aml/rules/{key}``: omitted fields (and omitted params) stay as they are."""

    enabled: bool | None = None
    params: dict[str, Any] | None = None


class RuleOut(msgspec.Struct, kw_only=True):
    """A monitoring rule as configured now."""

    key: str
    title: str
    regulation: str
    enabled: bool
    version: int
    params: dict[str, Any]
    defaults: dict[str, Any]
    updated_by: str
    updated_at: datetime


class RulePage(msgspec.Struct, kw_only=True):
    """Every monitoring rule."""

    items: list[RuleOut]
    next_cursor: str | None = None


class RuleVersionOut(msgspec.Struct, kw_only=True):
    """One version of a rule's parameters."""

    version: int
    enabled: bool
    params: dict[str, Any]
    changed_by: str
    changed_at: datetime


class RuleVersionPage(msgspec.Struct, kw_only=True):
    """Every version of a rule, newest first."""

    items: list[RuleVersionOut]
    next_cursor: str | None = None


class ActionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/aml/actions``: exactly one of ``account_id`` and ``customer_id``."""

    account_id: str | None = None
    customer_id: str | None = None
    action: Literal["freeze", "delay_settlement", "terminate_service", "lift"]
    reason: Text
    alert_id: str | None = None


class ActionOut(msgspec.Struct, kw_only=True):
    """A measure taken, and what it changed."""

    id: str
    action: str
    customer_id: str
    account_id: str | None
    accounts_changed: list[str]
    customer_status: str
    alert_id: str | None
    reason: str
    actor: str
    created_at: datetime


class FileReportIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/aml/reports``: which report to file and for which days.

    ``{"kind": "large_value", "date"}`` or ``{"kind": "suspicious", "from", "to"}``
    (institution calendar days, both included).
    """

    kind: Literal["large_value", "suspicious"]
    # Plain text: the domain parses the dates (``invalid_date``, a stable code).
    date: str | None = None
    period_from: str | None = msgspec.field(default=None, name="from")
    to: str | None = None


class ReportPeriodOut(msgspec.Struct, kw_only=True):
    """The institution calendar days a report covers, both included."""

    period_from: str = msgspec.field(name="from")
    to: str
    timezone: str


class FiledReportOut(msgspec.Struct, kw_only=True):
    """A filed report: what it covers, what it counts, its digest, who filed it and when."""

    id: str
    kind: str
    period: ReportPeriodOut
    counts: dict[str, int]
    #: SHA-256 (hex) of the canonical content (JSON, keys sorted, compact, UTF-8).
    sha256: str
    filed_by: str
    filed_at: datetime


class FiledReportPage(msgspec.Struct, kw_only=True):
    """Filed reports, newest first."""

    items: list[FiledReportOut]
    next_cursor: str | None = None


class FiledReportDetailOut(FiledReportOut, kw_only=True):
    """A filed report with its content, byte for byte what was digested."""

    content: msgspec.Raw


class FiledReportDoc(FiledReportOut, kw_only=True):
    """What :class:`FiledReportDetailOut` holds, for the OpenAPI schema.

    ``content`` is the report as ``GET /v1/aml/reports/large-value`` or ``…/suspicious``
    answer it (by ``kind``).
    """

    content: dict[str, Any]


class _IdPosition(msgspec.Struct, forbid_unknown_fields=True):
    id: str


# ------------------------------------------------------------------------------- helpers


def _fields(alert: AmlAlert, now: datetime) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule": alert.rule,
        "rule_version": alert.rule_version,
        "params": alert.params,
        "pattern": alert.pattern,
        "score": alert.score,
        "severity": alert.severity,
        "status": alert.status,
        "decision": alert.decision,
        "customer_id": alert.customer_id,
        "case_id": alert.case_id,
        "assignee": alert.assignee,
        "details": alert.details,
        "due_at": alert.due_at,
        "overdue": alert.status != "closed" and alert.due_at < now,
        "created_at": alert.created_at,
        "updated_at": alert.updated_at,
        "closed_at": alert.closed_at,
        "closed_by": alert.closed_by,
    }


def alert_out(alert: AmlAlert, now: datetime) -> AlertOut:
    """Return the API form of an alert (``overdue`` as of ``now``)."""
    return AlertOut(**_fields(alert, now))


def _customer_out(context: CustomerContext | None) -> CustomerContextOut | None:
    if context is None:
        return None
    return CustomerContextOut(
        id=context.id,
        type=context.type,
        name=context.name if context.type == "corporate" else mask_name(context.name),
        status=context.status,
        risk_level=context.risk_level,
        risk_score=context.risk_score,
        screening_status=context.screening_status,
        nationality=context.nationality,
        accounts=[
            AccountSummaryOut(id=a.id, account_class=a.account_class, status=a.status)
            for a in context.accounts
        ],
    )


def rule_out(state: aml.RuleState) -> RuleOut:
    """Return the API form of a rule's current state."""
    return RuleOut(
        key=state.rule.key,
        title=state.rule.title,
        regulation=state.rule.regulation,
        enabled=state.enabled,
        version=state.version,
        params=state.params_dict(),
        defaults=msgspec.to_builtins(state.rule.defaults),
        updated_by=state.updated_by,
        updated_at=state.updated_at,
    )


def _check_filters(status: str | None, rule: str | None) -> None:
    problems = []
    if status is not None and status not in ALERT_STATUSES:
        problems.append(FieldProblem("status", f"one of {', '.join(ALERT_STATUSES)}"))
    if rule is not None and rule not in aml.RULES:
        problems.append(FieldProblem("rule", f"one of {', '.join(aml.RULES)}"))
    if problems:
        raise InvalidAmlRequest(problems)


CSV = "text/csv"
JSON = "application/json"


def _spec(container: type[msgspec.Struct]) -> ResponseSpec:
    """Return the OpenAPI description of a report answer (JSON schema; CSV on request)."""
    return ResponseSpec(
        container,
        description="JSON (canonical); with `Accept: text/csv`, CSV: one row per transaction.",
        generate_examples=False,
    )


def _wants_csv(request: Request[Any, Any, Any]) -> bool:
    """Return whether the caller prefers CSV to JSON (``Accept``; JSON by default)."""
    return request.accept.best_match([JSON, CSV], default=JSON) == CSV


def _report_response(
    request: Request[Any, Any, Any], report: reports.Report, content: bytes, filename: str
) -> Response[bytes]:
    if _wants_csv(request):
        return Response(
            reports.to_csv(report).encode("utf-8"),
            media_type=f"{CSV}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
    return Response(content, media_type=JSON)


def filed_out(row: FiledReport) -> FiledReportOut:
    """Return the API form of a filed report (without its content)."""
    return FiledReportOut(
        id=row.id,
        kind=row.kind,
        period=ReportPeriodOut(
            period_from=row.period_from.isoformat(),
            to=row.period_to.isoformat(),
            timezone=row.timezone,
        ),
        counts=row.counts,
        sha256=row.content_sha256,
        filed_by=row.filed_by,
        filed_at=row.filed_at,
    )


def _filing(data: FileReportIn) -> reports.FileReport:
    """Return the filing command of a request body (which dates go with which kind)."""
    if data.kind == "large_value":
        wrong = [n for n, v in (("from", data.period_from), ("to", data.to)) if v is not None]
        if data.date is None or wrong:
            raise InvalidAmlRequest(
                [FieldProblem(w, "not used by a large-value report") for w in wrong]
                or [FieldProblem("date", "a large-value report needs its date")]
            )
        day = reports.parse_day("date", data.date)
        return reports.FileReport(kind="large_value", first=day, last=day)
    first, last = data.period_from, data.to
    if first is None or last is None or data.date is not None:
        problems = [
            FieldProblem(name, "a suspicious-transaction report needs from and to")
            for name, v in (("from", first), ("to", last))
            if v is None
        ]
        raise InvalidAmlRequest(
            problems or [FieldProblem("date", "not used by a suspicious-transaction report")]
        )
    return reports.FileReport(
        kind="suspicious",
        first=reports.parse_day("from", first),
        last=reports.parse_day("to", last),
    )


# --------------------------------------------------------------------------- controllers


class AlertsController(Controller):
    """The compliance queue: alerts worked to a documented decision (K2, L2)."""

    path = "/v1/aml/alerts"
    tags = ["aml"]

    @get(
        "/",
        operation_id="aml_alerts_list",
        sync_to_thread=True,
        summary="List alerts (filters, newest first)",
    )
    def list_alerts(
        self,
        *,
        runtime: NamedDependency[Runtime],
        status: Annotated[str | None, QueryParameter(max_length=16)] = None,
        rule: Annotated[str | None, QueryParameter(max_length=40)] = None,
        customer_id: Annotated[str | None, QueryParameter(max_length=40)] = None,
        assignee: Annotated[str | None, QueryParameter(max_length=64)] = None,
        case_id: Annotated[str | None, QueryParameter(max_length=40)] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> AlertPage:
        """Return alerts matching every filter given, newest first."""
        _check_filters(status, rule)
        before = decode_cursor(cursor, _IdPosition).id if cursor else None
        filters = aml.AlertFilter(
            status=status,
            rule=rule,
            customer_id=customer_id,
            assignee=assignee.strip().lower() if assignee else None,
            case_id=case_id,
        )
        now = runtime.clock.now()
        rows = runtime.db.run(
            lambda s: aml.list_alerts(s, filters, before=before, limit=limit + 1), read_only=True
        )
        return AlertPage(
            items=[alert_out(a, now) for a in rows[:limit]],
            next_cursor=encode_cursor({"id": rows[limit - 1].id}) if len(rows) > limit else None,
        )

    @get(
        "/{alert_id:str}",
        operation_id="aml_alerts_get",
        sync_to_thread=True,
        summary="An alert with its transactions and customer context",
    )
    def get_alert(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        alert_id: FromPath[str],
    ) -> AlertDetailOut:
        """Return the alert, the transactions that raised it, the customer, notes and case."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> AlertDetailOut:
            found = aml.get_alert(session, alert_id, vault=runtime.vault)
            records = aml.transaction_records(session, found.transaction_ids)
            context = aml.customer_context(session, found.alert.customer_id, vault=runtime.vault)
            return AlertDetailOut(
                **_fields(found.alert, ctx.now),
                transaction_ids=found.transaction_ids,
                transactions=[
                    transaction_out(movements.transaction_view(r, runtime.vault), ctx.actor)
                    for r in records
                ],
                customer=_customer_out(context),
                notes=[
                    NoteOut(
                        id=n.id, kind=n.kind, author=n.author, text=n.text, created_at=n.created_at
                    )
                    for n in found.notes
                ],
                case=CaseOut(id=found.alert.case_id, other_alerts=found.case_alerts),
            )

        return runtime.db.run(work, read_only=True)

    @post(
        "/{alert_id:str}/assign",
        operation_id="aml_alerts_assign",
        status_code=200,
        sync_to_thread=True,
        summary="Assign an alert to an officer",
    )
    def assign(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        alert_id: FromPath[str],
        data: JSONBody[AssignIn],
    ) -> AlertOut:
        """Assign the alert (an open alert goes in review); closed alerts are refused."""
        ctx = context_of(request, runtime)
        return runtime.db.run(
            lambda s: alert_out(aml.assign(s, alert_id, data.assignee, ctx=ctx), ctx.now)
        )

    @post(
        "/{alert_id:str}/notes",
        operation_id="aml_alerts_note",
        status_code=201,
        sync_to_thread=True,
        summary="Add a note to an alert",
    )
    def note(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        alert_id: FromPath[str],
        data: JSONBody[NoteIn],
    ) -> Response[bytes]:
        """Add a note (stored encrypted); accepts ``Idempotency-Key``."""
        ctx = context_of(request, runtime)

        def work(session: Session) -> NoteOut:
            note_id = aml.add_note(
                session, alert_id, data.text, ctx=ctx, ids=runtime.ids, vault=runtime.vault
            )
            return NoteOut(
                id=note_id, kind="note", author=str(ctx.actor), text=data.text, created_at=ctx.now
            )

        return respond_idempotently(
            request,
            runtime,
            data,
            scope=f"{ctx.actor}:aml_note",
            required=False,
            status_code=201,
            work=work,
        )

    @post(
        "/{alert_id:str}/decision",
        operation_id="aml_alerts_decide",
        status_code=200,
        sync_to_thread=True,
        summary="Escalate or close an alert with a reason",
    )
    def decide(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        alert_id: FromPath[str],
        data: JSONBody[DecisionIn],
    ) -> AlertOut:
        """Escalate, or close as ``false_positive``, ``report`` or ``no_action``."""
        ctx = context_of(request, runtime)
        return runtime.db.run(
            lambda s: alert_out(
                aml.decide(
                    s, alert_id, data.decision, data.reason, ctx=ctx, ids=runtime.ids,
                    vault=runtime.vault, rating=runtime.rating_feedback,
                ),
                ctx.now,
            )
        )  # fmt: skip


class ActionsController(Controller):
    """Measures on accounts and customers (K2: freeze, delay settlement, stop service, lift)."""

    path = "/v1/aml/actions"
    tags = ["aml"]

    @post(
        "/",
        operation_id="aml_actions_take",
        status_code=201,
        sync_to_thread=True,
        summary="Freeze, delay settlement, terminate service or lift, with a reason",
    )
    def take(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        data: JSONBody[ActionIn],
    ) -> Response[bytes]:
        """Apply the measure at once (the accounts module enforces it from the commit on)."""
        if (data.account_id is None) == (data.customer_id is None):
            raise InvalidAmlRequest(
                [FieldProblem("account_id", "give exactly one of account_id and customer_id")]
            )
        ctx = context_of(request, runtime)
        cmd = aml.TakeAction(
            action=data.action,
            reason=data.reason,
            account_id=data.account_id,
            customer_id=data.customer_id,
            alert_id=data.alert_id,
        )

        def work(session: Session) -> ActionOut:
            done = aml.take_action(session, cmd, ctx=ctx, ids=runtime.ids, vault=runtime.vault)
            return ActionOut(
                id=done.id,
                action=done.action,
                customer_id=done.customer_id,
                account_id=done.account_id,
                accounts_changed=done.accounts_changed,
                customer_status=done.customer_status,
                alert_id=done.alert_id,
                reason=data.reason,
                actor=done.actor,
                created_at=done.created_at,
            )

        return respond_idempotently(
            request,
            runtime,
            data,
            scope=f"{ctx.actor}:aml_action",
            required=False,
            status_code=201,
            work=work,
        )


class RulesController(Controller):
    """The monitoring rules and their parameters (K2)."""

    path = "/v1/aml/rules"
    tags = ["aml"]

    @get("/", operation_id="aml_rules_list", sync_to_thread=True, summary="Monitoring rules")
    def list_rules(self, runtime: NamedDependency[Runtime]) -> RulePage:
        """Return every rule with its current version, switch and parameters."""
        now = runtime.clock.now()
        # Not read-only: the first read installs the defaults of rules not yet stored.
        states = runtime.db.run(lambda s: aml.rule_states(s, now))
        return RulePage(items=[rule_out(state) for state in states])

    @put(
        "/{key:str}",
        operation_id="aml_rules_update",
        status_code=200,
        sync_to_thread=True,
        summary="Change a rule's switch and parameters",
    )
    def update(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        key: FromPath[str],
        data: JSONBody[RuleIn],
    ) -> RuleOut:
        """Set the rule's ``enabled`` and ``params`` as a new version (validated, audited)."""
        ctx = context_of(request, runtime)
        change = aml.RuleChange(enabled=data.enabled, params=data.params)
        return runtime.db.run(lambda s: rule_out(aml.update_rule(s, key, change, ctx=ctx)))

    @get(
        "/{key:str}/versions",
        operation_id="aml_rules_versions",
        sync_to_thread=True,
        summary="Every version of a rule",
    )
    def versions(self, runtime: NamedDependency[Runtime], key: FromPath[str]) -> RuleVersionPage:
        """Return the rule's versions, newest first."""
        rows = runtime.db.run(lambda s: aml.rule_versions(s, key), read_only=True)
        return RuleVersionPage(
            items=[
                RuleVersionOut(
                    version=r.version,
                    enabled=r.enabled,
                    params=r.params,
                    changed_by=r.changed_by,
                    changed_at=r.changed_at,
                )
                for r in rows
            ]
        )


class ReportsController(Controller):
    """Regulatory reports: large-value (L1) and suspicious-transaction (L2); filing them."""

    path = "/v1/aml/reports"
    tags = ["aml"]

    @get(
        "/large-value",
        operation_id="aml_reports_large_value",
        sync_to_thread=True,
        summary="Large-value report of one institution day (JSON or CSV)",
        responses={200: _spec(reports.LargeValueReport)},
    )
    def large_value(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        day: Annotated[str, QueryParameter(name="date", max_length=40)],
    ) -> Response[bytes]:
        """Return the day's large-value report (L1), from the posted transaction records."""
        parsed = reports.parse_day("date", day)
        policy = runtime.monitoring_policy
        report = runtime.db.run(
            lambda s: reports.large_value_report(
                s, parsed, tz=policy.tz, home_country=policy.home_country, vault=runtime.vault
            ),
            read_only=True,
        )
        name = f"large-value-{parsed.isoformat()}"
        return _report_response(request, report, reports.canonical(report), name)

    @get(
        "/suspicious",
        operation_id="aml_reports_suspicious",
        sync_to_thread=True,
        summary="Suspicious-transaction reports of the cases reported in a period (JSON or CSV)",
        responses={200: _spec(reports.SuspiciousReport)},
    )
    def suspicious(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        period_from: Annotated[str, QueryParameter(name="from", max_length=40)],
        to: Annotated[str, QueryParameter(max_length=40)],
    ) -> Response[bytes]:
        """Return one report per case with alerts closed as reported in the period (L2)."""
        period = reports.period_of(
            reports.parse_day("from", period_from),
            reports.parse_day("to", to),
            runtime.monitoring_policy.tz,
        )
        report = runtime.db.run(
            lambda s: reports.suspicious_report(s, period, vault=runtime.vault), read_only=True
        )
        name = f"suspicious-{period.first.isoformat()}-{period.last.isoformat()}"
        return _report_response(request, report, reports.canonical(report), name)

    @post(
        "/",
        operation_id="aml_reports_file",
        status_code=201,
        sync_to_thread=True,
        summary="File a report: an audited, immutable record with its digest",
    )
    def file(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        data: JSONBody[FileReportIn],
    ) -> Response[bytes]:
        """File the report of a period that is over; accepts ``Idempotency-Key``."""
        cmd = _filing(data)
        ctx = context_of(request, runtime)
        policy = runtime.monitoring_policy

        def work(session: Session) -> FiledReportOut:
            filed = reports.file_report(
                session, cmd, tz=policy.tz, home_country=policy.home_country, ctx=ctx,
                ids=runtime.ids, vault=runtime.vault,
            )  # fmt: skip
            return filed_out(filed.report)

        return respond_idempotently(
            request,
            runtime,
            data,
            scope=f"{ctx.actor}:aml_report",
            required=False,
            status_code=201,
            work=work,
        )

    @get(
        "/filed",
        operation_id="aml_reports_filed_list",
        sync_to_thread=True,
        summary="Filed reports, newest first",
    )
    def filed_list(
        self,
        runtime: NamedDependency[Runtime],
        kind: Annotated[str | None, QueryParameter(max_length=16)] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> FiledReportPage:
        """Return the filed reports (of ``kind``), newest first, without their content."""
        if kind is not None and kind not in REPORT_KINDS:
            raise InvalidAmlRequest([FieldProblem("kind", f"one of {', '.join(REPORT_KINDS)}")])
        before = decode_cursor(cursor, _IdPosition).id if cursor else None
        rows = runtime.db.run(
            lambda s: reports.filed_reports(s, kind=kind, before=before, limit=limit + 1),
            read_only=True,
        )
        return FiledReportPage(
            items=[filed_out(r) for r in rows[:limit]],
            next_cursor=encode_cursor({"id": rows[limit - 1].id}) if len(rows) > limit else None,
        )

    @get(
        "/filed/{report_id:str}",
        operation_id="aml_reports_filed_get",
        sync_to_thread=True,
        summary="A filed report with its content (JSON or CSV)",
        responses={200: _spec(FiledReportDoc)},
    )
    def filed_get(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        report_id: FromPath[str],
    ) -> Response[bytes]:
        """Return the filed report; its ``content`` is byte for byte what was digested."""
        filed = runtime.db.run(
            lambda s: reports.filed_report(s, report_id, vault=runtime.vault), read_only=True
        )
        if _wants_csv(request):
            report = reports.decode(filed.report.kind, filed.content)
            return _report_response(request, report, filed.content, filed.report.id)
        detail = FiledReportDetailOut(
            **msgspec.structs.asdict(filed_out(filed.report)), content=msgspec.Raw(filed.content)
        )
        return Response(msgspec.json.encode(detail), media_type=JSON)
