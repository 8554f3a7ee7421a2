"""Regulatory reports: large-value (L1) and suspicious-transaction (L2) reports, and filing.

Large-value report (L1)
    Per customer per institution calendar day (setting ``timezone``), inflows and outflows
    counted separately, single or cumulative: every customer side whose day total of one
    category (individual domestic, individual cross-border, corporate transfers, cash)
    reaches that category's threshold, with every transaction counted. It is computed from
    the posted transaction records of the day (B2: the source of truth), not from
    monitoring's copy, so the report is right even while monitoring lags; the customer
    sides, the cross-border flag and the category come from the same functions monitoring
    uses (:func:`custodia.aml.monitoring.movements_of`,
    :func:`custodia.aml.rules.large_value_category`), and the thresholds from the
    ``large_value`` rule's current parameters, so the report and the alerts agree.

Suspicious-transaction report (L2)
    One report per case with alerts a compliance officer closed as ``reported`` (API
    decision ``report``) within the period: the customer, the case, those alerts (rule,
    version and parameters at the time, score, what the rule measured), the officer's
    decision and reason, and every triggering transaction. Alerts of the same case closed
    otherwise (``false_positive``, ``no_action``) are not part of it.

What a report shows
    Every field of the transaction record (B2) as ``GET /v1/transactions/{id}`` shows it to
    staff (the only readers of reports): payer's and payee's names in clear. The customer a
    report is about is shown as the alert detail shows it: a person's name masked (the
    audited ``POST /v1/customers/{id}/reveal`` gives it in clear), a company's in clear.

Filing
    :func:`file_report` freezes a report: its canonical content (JSON, keys sorted,
    compact, UTF-8) is stored as a vault blob (it names people) with its SHA-256 in clear,
    in the append-only ``regulatory_reports``, and audited as ``aml:report:filed``. Every
    read checks the content against the digest. An empty report is filed like any other:
    "nothing to report" is a fact too. A report is filed only once its period is over.

Money is integer minor units (fen); the thresholds are CNY amounts, so only CNY records
count (no other currency moves today).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.accounts import movements
from custodia.accounts.models import PaymentTransaction
from custodia.aml import monitoring
from custodia.aml.errors import (
    FiledReportCorrupt,
    InvalidReportDate,
    InvalidReportPeriod,
    ReportPeriodNotOver,
    ReportPeriodTooLong,
)
from custodia.aml.models import (
    AmlAlert,
    AmlAlertNote,
    AmlAlertTransaction,
    AmlCase,
    AmlRule,
    FiledReport,
)
from custodia.aml.rules import RULES, LargeValueParams, large_value_category
from custodia.aml.windows import Subject
from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.errors import NotFound
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.masking import mask_name
from custodia.core.vault import Vault
from custodia.kyc.customers import decrypt_field
from custodia.kyc.models import Customer

#: The longest period one report may cover (a year, leap day included).
MAX_PERIOD_DAYS = 366
CURRENCY = "CNY"
_CHUNK = 500  # ids per IN (...) list: well under both backends' bound-parameter limits
_STREAM = 2_000  # records of the day read per round trip (a server-side cursor on PostgreSQL)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TABLE, _COLUMN = "regulatory_reports", "content_enc"

ReportKind = Literal["large_value", "suspicious"]


# ------------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    """Institution calendar days ``first`` to ``last``, both included, in ``tz``."""

    first: date
    last: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        """Return the instant the period starts (midnight of ``first``, in UTC)."""
        return datetime.combine(self.first, time(), self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """Return the instant the period ends, excluded (midnight after ``last``, in UTC)."""
        return datetime.combine(self.last + timedelta(days=1), time(), self.tz).astimezone(UTC)


def parse_day(field_name: str, value: str) -> date:
    """Return ``value`` as a calendar date; InvalidReportDate unless it is ``YYYY-MM-DD``."""
    if not _DATE.fullmatch(value):
        raise InvalidReportDate(field_name, value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidReportDate(field_name, value) from None


def period_of(first: date, last: date, tz: ZoneInfo) -> Period:
    """Return the period ``first`` to ``last``; refuse one reversed or over the maximum."""
    if last < first:
        raise InvalidReportPeriod(first.isoformat(), last.isoformat())
    days = (last - first).days + 1
    if days > MAX_PERIOD_DAYS:
        raise ReportPeriodTooLong(days, MAX_PERIOD_DAYS)
    return Period(first, last, tz)


# ------------------------------------------------------------------------------- content


class Content(msgspec.Struct, kw_only=True):
    """Base of the parts of a report's content (what is digested and filed)."""


class RecordParty(Content, kw_only=True):
    """A payer or payee of a transaction record."""

    name: str | None
    account: str
    customer_id: str | None


class RecordMerchant(Content, kw_only=True):
    """The merchant of a payment or refund."""

    id: str
    name: str | None
    code: str | None
    mcc: str | None


class Record(Content, kw_only=True):
    """A transaction with every field of its record (B2), as the transactions endpoint shows it."""

    id: str
    type: str
    status: str
    amount: int
    currency: str
    debit_account: str
    credit_account: str
    created_at: datetime
    completed_at: datetime | None
    channel: str
    terminal_type: str
    payer: RecordParty
    payee: RecordParty
    merchant: RecordMerchant | None
    bank_card: dict[str, str | None] | None
    authentication: dict[str, Any]
    purpose: str | None
    order_id: str | None
    description: str | None
    original_transaction_id: str | None
    trace_id: str | None
    bank_reference: str | None


class ReportCustomer(Content, kw_only=True):
    """The customer a report entry is about (a person's name masked, as in the alert detail)."""

    id: str
    type: str
    name: str
    nationality: str


class LargeValueEntry(Content, kw_only=True):
    """One customer's inflows or outflows of one category that reached the threshold (L1)."""

    customer: ReportCustomer
    direction: str
    category: str
    threshold: int
    total: int
    count: int
    transactions: list[Record]


class LargeValueReport(Content, kw_only=True):
    """The large-value report of one institution day (L1)."""

    kind: Literal["large_value"] = "large_value"
    date: date
    timezone: str
    period_start: datetime
    period_end: datetime
    currency: str
    rule_version: int
    thresholds: dict[str, int]
    entries: list[LargeValueEntry]


class ReportedDecision(Content, kw_only=True):
    """The officer's decision that reported an alert, with its reason."""

    decision: Literal["report"] = "report"
    reason: str
    decided_by: str
    decided_at: datetime


class ReportedAlert(Content, kw_only=True):
    """An alert closed as reported: the rule as it was when it fired, and the decision."""

    id: str
    rule: str
    rule_version: int
    params: dict[str, Any]
    pattern: str
    score: int
    severity: str
    details: dict[str, Any]
    raised_at: datetime
    decision: ReportedDecision
    transaction_ids: list[str]


class CaseReport(Content, kw_only=True):
    """One suspicious-transaction report: a case, its reported alerts, their transactions."""

    case_id: str
    case_opened_at: datetime
    customer: ReportCustomer
    alerts: list[ReportedAlert]
    transactions: list[Record]


class SuspiciousReport(Content, kw_only=True):
    """The suspicious-transaction reports of the cases reported in a period (L2)."""

    kind: Literal["suspicious"] = "suspicious"
    period_from: date = msgspec.field(name="from")
    period_to: date = msgspec.field(name="to")
    timezone: str
    period_start: datetime
    period_end: datetime
    reports: list[CaseReport]


Report = LargeValueReport | SuspiciousReport


def canonical(report: Report) -> bytes:
    """Return the canonical bytes of a report: JSON, keys sorted, compact, UTF-8."""
    return msgspec.json.encode(report, order="sorted")


def digest_of(content: bytes) -> str:
    """Return the SHA-256 (hex) of a report's canonical content."""
    return hashlib.sha256(content).hexdigest()


def decode(kind: str, content: bytes) -> Report:
    """Return a report of ``kind`` from its canonical content."""
    target: type[Report] = LargeValueReport if kind == "large_value" else SuspiciousReport
    return msgspec.json.decode(content, type=target)


def counts_of(report: Report) -> dict[str, int]:
    """Return what a report counts: its entries or cases, alerts and transactions."""
    if isinstance(report, LargeValueReport):
        return {
            "customers": len({e.customer.id for e in report.entries}),
            "entries": len(report.entries),
            "transactions": len({t.id for e in report.entries for t in e.transactions}),
        }
    return {
        "cases": len(report.reports),
        "alerts": sum(len(r.alerts) for r in report.reports),
        "transactions": len({t.id for r in report.reports for t in r.transactions}),
    }


# ------------------------------------------------------------------------------- reading


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _record(view: movements.TransactionView) -> Record:
    """Return the record as the transactions endpoint shows it to staff (names in clear)."""
    return Record(
        id=view.id,
        type=view.type,
        status=view.status,
        amount=view.amount,
        currency=view.currency,
        debit_account=view.debit_account,
        credit_account=view.credit_account,
        created_at=view.created_at,
        completed_at=view.completed_at,
        channel=view.channel,
        terminal_type=view.terminal_type,
        payer=RecordParty(
            name=view.payer.name, account=view.payer.account_id, customer_id=view.payer.customer_id
        ),
        payee=RecordParty(
            name=view.payee.name, account=view.payee.account_id, customer_id=view.payee.customer_id
        ),
        merchant=RecordMerchant(
            id=view.merchant_id, name=view.merchant_name, code=view.merchant_code, mcc=view.mcc
        )
        if view.merchant_id
        else None,
        bank_card={
            "id": view.bank_card_id,
            "masked_number": view.bank_card_masked,
            "bank_name": view.bank_name,
        }
        if view.bank_card_id
        else None,
        authentication=view.authentication,
        purpose=view.purpose,
        order_id=view.order_id,
        description=view.description,
        original_transaction_id=view.original_transaction_id,
        trace_id=view.trace_id,
        bank_reference=view.bank_reference,
    )


def _records(session: Session, transaction_ids: Iterable[str], vault: Vault) -> dict[str, Record]:
    """Return the records of these transactions by id (read in chunks)."""
    wanted = sorted(set(transaction_ids))
    found: dict[str, Record] = {}
    for chunk in _chunks(wanted):
        for row in session.execute(
            select(PaymentTransaction).where(PaymentTransaction.id.in_(chunk))
        ).scalars():
            found[row.id] = _record(movements.transaction_view(row, vault))
    return found


def _customers(
    session: Session, customer_ids: Iterable[str], vault: Vault
) -> dict[str, ReportCustomer]:
    """Return the customers a report is about, a person's name masked (K5)."""
    wanted = sorted(set(customer_ids))
    found: dict[str, ReportCustomer] = {}
    for chunk in _chunks(wanted):
        for c in session.execute(select(Customer).where(Customer.id.in_(chunk))).scalars():
            name = decrypt_field(vault, "customers", c.id, c.name_enc, "name_enc") or ""
            found[c.id] = ReportCustomer(
                id=c.id,
                type=c.type,
                name=name if c.type == "corporate" else mask_name(name),
                nationality=c.nationality,
            )
    return found


def _ordered(records: dict[str, Record], ids: Iterable[str]) -> list[Record]:
    return sorted(
        (records[i] for i in set(ids) if i in records), key=lambda r: (r.created_at, r.id)
    )


def large_value_params(session: Session) -> tuple[int, LargeValueParams]:
    """Return the ``large_value`` rule's current version and thresholds (defaults: version 1).

    Read without installing the defaults, so a report stays a read. The thresholds apply
    whether or not the rule is switched on: reporting is an obligation, alerting a tool.
    """
    rule = RULES["large_value"]
    row = session.execute(
        select(AmlRule.version, AmlRule.params).where(AmlRule.key == rule.key)
    ).one_or_none()
    if row is None:
        return 1, LargeValueParams()
    params = rule.parse(row.params)
    assert isinstance(params, LargeValueParams)  # noqa: S101 - the rule's own type
    return row.version, params


@dataclass(slots=True)
class _Tally:
    threshold: int
    total: int = 0
    transactions: list[str] = field(default_factory=list)


def large_value_report(
    session: Session,
    day: date,
    *,
    tz: ZoneInfo,
    home_country: str,
    vault: Vault,
    batch: int = _STREAM,
) -> LargeValueReport:
    """Return the L1 large-value report of one institution day from the posted records.

    Every customer side of the day's records (a failed withdrawal moved nothing and is not
    counted) is tallied per customer, direction and category; the tallies at or above their
    threshold are reported with every transaction in them. The first pass streams only the
    columns that decide the tally; the full records (and names) are read only for what is
    reported. ``batch`` is how many records each round trip of that pass reads.
    """
    period = period_of(day, day, tz)
    version, params = large_value_params(session)
    day_records = session.execute(
        select(*monitoring.RECORD_COLUMNS)
        .where(
            PaymentTransaction.created_at >= period.start,
            PaymentTransaction.created_at < period.end,
            PaymentTransaction.status != "failed",
            PaymentTransaction.currency == CURRENCY,
        )
        .order_by(PaymentTransaction.created_at, PaymentTransaction.id)
        .execution_options(yield_per=batch)
    )
    people: dict[str, Subject] = {}
    tallies: dict[tuple[str, str, str], _Tally] = {}
    # Streamed in partitions: memory holds the tallies, not the day's records.
    for partition in day_records.partitions():
        records = [monitoring.Record(*row) for row in partition]
        parties = {p for r in records for p in (r.payer_customer_id, r.payee_customer_id) if p}
        for chunk in _chunks(sorted(parties - people.keys())):
            people.update(monitoring.subjects(session, *chunk))
        for record in records:
            for side in monitoring.movements_of(record, people, home_country):
                subject = people.get(side.customer_id)
                category, threshold = large_value_category(
                    channel=side.channel,
                    customer_kind=subject.kind if subject else "individual",
                    cross_border=side.cross_border,
                    params=params,
                )
                tally = tallies.setdefault(
                    (side.customer_id, side.direction, category), _Tally(threshold)
                )
                tally.total += side.amount
                tally.transactions.append(side.transaction_id)
    reached = {key: t for key, t in sorted(tallies.items()) if t.total >= t.threshold}
    full = _records(session, (i for t in reached.values() for i in t.transactions), vault)
    customers = _customers(session, (key[0] for key in reached), vault)
    entries = [
        LargeValueEntry(
            customer=customers[customer_id],
            direction=direction,
            category=category,
            threshold=tally.threshold,
            total=tally.total,
            count=len(tally.transactions),
            transactions=_ordered(full, tally.transactions),
        )
        for (customer_id, direction, category), tally in reached.items()
    ]
    return LargeValueReport(
        date=day,
        timezone=tz.key,
        period_start=period.start,
        period_end=period.end,
        currency=CURRENCY,
        rule_version=version,
        thresholds=msgspec.to_builtins(params),
        entries=entries,
    )


def suspicious_report(session: Session, period: Period, *, vault: Vault) -> SuspiciousReport:
    """Return one L2 report per case with alerts closed as ``reported`` within ``period``.

    Each report holds the customer, the case, the reported alerts (rule version and
    parameters at the time, score, details), the officer's decision with its reason (the
    note that closed the alert) and every transaction those alerts were raised on.
    """
    alerts = list(
        session.execute(
            select(AmlAlert)
            .where(
                AmlAlert.decision == "reported",
                AmlAlert.closed_at >= period.start,
                AmlAlert.closed_at < period.end,
            )
            .order_by(AmlAlert.case_id, AmlAlert.closed_at, AmlAlert.id)
        ).scalars()
    )
    alert_ids = [a.id for a in alerts]
    linked: dict[str, list[str]] = {a: [] for a in alert_ids}
    reasons: dict[str, AmlAlertNote] = {}
    for chunk in _chunks(alert_ids):
        for alert_id, transaction_id in session.execute(
            select(AmlAlertTransaction.alert_id, AmlAlertTransaction.transaction_id)
            .where(AmlAlertTransaction.alert_id.in_(chunk))
            .order_by(AmlAlertTransaction.added_at, AmlAlertTransaction.transaction_id)
        ).all():
            linked[alert_id].append(transaction_id)
        # The closing reason is the alert's last decision note (an escalation's comes first).
        for note in session.execute(
            select(AmlAlertNote)
            .where(AmlAlertNote.alert_id.in_(chunk), AmlAlertNote.kind == "decision")
            .order_by(AmlAlertNote.created_at, AmlAlertNote.id)
        ).scalars():
            reasons[note.alert_id] = note
    full = _records(session, (t for ids in linked.values() for t in ids), vault)
    customers = _customers(session, (a.customer_id for a in alerts), vault)
    cases = {
        c.id: c
        for chunk in _chunks(sorted({a.case_id for a in alerts}))
        for c in session.execute(select(AmlCase).where(AmlCase.id.in_(chunk))).scalars()
    }

    def reported(alert: AmlAlert) -> ReportedAlert:
        note = reasons.get(alert.id)
        reason = (
            vault.decrypt(note.text_enc, table="aml_alert_notes", column="text_enc", row_id=note.id)
            if note is not None
            else ""
        )
        assert alert.closed_at is not None  # noqa: S101 - a reported alert is closed
        return ReportedAlert(
            id=alert.id,
            rule=alert.rule,
            rule_version=alert.rule_version,
            params=alert.params,
            pattern=alert.pattern,
            score=alert.score,
            severity=alert.severity,
            details=alert.details,
            raised_at=alert.created_at,
            decision=ReportedDecision(
                reason=reason, decided_by=alert.closed_by or "", decided_at=alert.closed_at
            ),
            transaction_ids=linked[alert.id],
        )

    by_case: dict[str, list[AmlAlert]] = {}
    for alert in alerts:
        by_case.setdefault(alert.case_id, []).append(alert)
    reports = [
        CaseReport(
            case_id=case_id,
            case_opened_at=cases[case_id].opened_at,
            customer=customers[members[0].customer_id],
            alerts=[reported(a) for a in members],
            transactions=_ordered(full, (t for a in members for t in linked[a.id])),
        )
        for case_id, members in by_case.items()
    ]
    return SuspiciousReport(
        period_from=period.first,
        period_to=period.last,
        timezone=period.tz.key,
        period_start=period.start,
        period_end=period.end,
        reports=reports,
    )


# ----------------------------------------------------------------------------------- CSV


#: Every field of the transaction record (B2), flattened, in the order of the JSON record.
RECORD_COLUMNS = (
    "transaction_id", "type", "status", "amount", "currency", "debit_account",
    "credit_account", "created_at", "completed_at", "channel", "terminal_type", "payer_name",
    "payer_account", "payer_customer_id", "payee_name", "payee_account", "payee_customer_id",
    "merchant_id", "merchant_name", "merchant_code", "mcc", "bank_card_id",
    "bank_card_masked_number", "bank_card_bank_name", "authentication_factors",
    "authentication_kinds", "authentication_reference", "purpose", "order_id", "description",
    "original_transaction_id", "trace_id", "bank_reference",
)  # fmt: skip
#: The CSV header of each kind of report: one row per transaction (a stable contract).
CSV_HEADERS: dict[str, tuple[str, ...]] = {
    "large_value": (
        "report_kind", "date", "customer_id", "customer_type", "customer_name", "direction",
        "category", "threshold", "total", "count", *RECORD_COLUMNS,
    ),
    "suspicious": (
        "report_kind", "period_from", "period_to", "case_id", "customer_id", "customer_type",
        "customer_name", "alert_ids", "rules", "scores", "decided_by", "decided_at",
        "decision_reasons", *RECORD_COLUMNS,
    ),
}  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """Return a CSV cell; text that a spreadsheet would run as a formula is quoted with ``'``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bool | int | date):
        return str(value).lower() if isinstance(value, bool) else str(value)
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return "'" + text if text.startswith(_FORMULA_START) else text


def _record_cells(r: Record) -> list[object]:
    card = r.bank_card or {}
    merchant = r.merchant
    auth = r.authentication
    return [
        r.id, r.type, r.status, r.amount, r.currency, r.debit_account, r.credit_account,
        r.created_at, r.completed_at, r.channel, r.terminal_type, r.payer.name,
        r.payer.account, r.payer.customer_id, r.payee.name, r.payee.account,
        r.payee.customer_id, merchant.id if merchant else None,
        merchant.name if merchant else None, merchant.code if merchant else None,
        merchant.mcc if merchant else None, card.get("id"), card.get("masked_number"),
        card.get("bank_name"), ";".join(map(str, auth.get("factors") or [])),
        ";".join(map(str, auth.get("kinds") or [])), auth.get("reference"), r.purpose,
        r.order_id, r.description, r.original_transaction_id, r.trace_id, r.bank_reference,
    ]  # fmt: skip


def _rows(report: Report) -> Iterator[list[object]]:
    if isinstance(report, LargeValueReport):
        for e in report.entries:
            head: list[object] = [
                report.kind, report.date, e.customer.id, e.customer.type, e.customer.name,
                e.direction, e.category, e.threshold, e.total, e.count,
            ]  # fmt: skip
            for record in e.transactions:
                yield head + _record_cells(record)
        return
    blank: list[object] = [None] * len(RECORD_COLUMNS)
    for case in report.reports:
        # A case reported without transactions (a watchlist hit) still gets its row.
        records: list[Record | None] = [*case.transactions] or [None]
        for txn in records:
            alerts = [a for a in case.alerts if txn is None or txn.id in a.transaction_ids]
            head = [
                report.kind, report.period_from, report.period_to, case.case_id,
                case.customer.id, case.customer.type, case.customer.name,
                ";".join(a.id for a in alerts),
                ";".join(f"{a.rule}@{a.rule_version}" for a in alerts),
                ";".join(str(a.score) for a in alerts),
                ";".join(a.decision.decided_by for a in alerts),
                ";".join(_cell(a.decision.decided_at) for a in alerts),
                " | ".join(a.decision.reason for a in alerts),
            ]  # fmt: skip
            yield head + (_record_cells(txn) if txn is not None else blank)


def to_csv(report: Report) -> str:
    """Return a report as CSV (RFC 4180): the kind's header, then one row per transaction.

    A suspicious-transaction report without transactions (a reported watchlist hit) has one
    row with the transaction's columns empty, so no reported case is left out.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADERS[report.kind])
    for row in _rows(report):
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


# -------------------------------------------------------------------------------- filing


@dataclass(frozen=True, slots=True)
class FileReport:
    """``POST /v1/aml/reports``: which report to file, for which days (both included)."""

    kind: ReportKind
    first: date
    last: date


@dataclass(frozen=True, slots=True)
class FiledContent:
    """A filed report with its canonical content (checked against its digest)."""

    report: FiledReport
    content: bytes


def build_report(
    session: Session, kind: str, period: Period, *, home_country: str, vault: Vault
) -> Report:
    """Return the report of ``kind`` for ``period`` (a large-value report covers one day)."""
    if kind == "large_value":
        if period.first != period.last:
            raise InvalidReportPeriod(period.first.isoformat(), period.last.isoformat())
        return large_value_report(
            session, period.first, tz=period.tz, home_country=home_country, vault=vault
        )
    return suspicious_report(session, period, vault=vault)


def file_report(
    session: Session,
    cmd: FileReport,
    *,
    tz: ZoneInfo,
    home_country: str,
    ctx: Context,
    ids: IdGenerator,
    vault: Vault,
) -> FiledContent:
    """File a report (L1, L2): freeze its content, sealed, with its digest; audit the filing.

    Refused while the period is not over: a filed report is final, and a day still running
    would be reported in part.
    """
    period = period_of(cmd.first, cmd.last, tz)
    if period.end > ctx.now:
        raise ReportPeriodNotOver(period.last.isoformat(), _cell(period.end))
    report = build_report(session, cmd.kind, period, home_country=home_country, vault=vault)
    content = canonical(report)
    report_id = ids.new(IdPrefix.REPORT)
    row = FiledReport(
        id=report_id,
        kind=cmd.kind,
        period_from=period.first,
        period_to=period.last,
        timezone=tz.key,
        counts=counts_of(report),
        content_sha256=digest_of(content),
        content_enc=vault.encrypt(
            content.decode("utf-8"), table=_TABLE, column=_COLUMN, row_id=report_id
        ),
        filed_by=str(ctx.actor),
        filed_at=ctx.now,
        request_id=ctx.request_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_REPORT_FILED,
        target=report_id,
        details={
            "kind": cmd.kind,
            "period_from": period.first.isoformat(),
            "period_to": period.last.isoformat(),
            "counts": row.counts,
            "sha256": row.content_sha256,
        },
    )
    return FiledContent(row, content)


def filed_reports(
    session: Session, *, kind: str | None, before: str | None, limit: int
) -> list[FiledReport]:
    """Return up to ``limit`` filed reports (of ``kind``), newest first, older than ``before``."""
    query = select(FiledReport)
    if kind is not None:
        query = query.where(FiledReport.kind == kind)
    if before is not None:
        query = query.where(FiledReport.id < before)
    return list(session.execute(query.order_by(FiledReport.id.desc()).limit(limit)).scalars())


def filed_report(session: Session, report_id: str, *, vault: Vault) -> FiledContent:
    """Return a filed report and its content; FiledReportCorrupt if it fails its digest."""
    row = session.get(FiledReport, report_id)
    if row is None:
        raise NotFound("report", report_id)
    content = vault.decrypt(row.content_enc, table=_TABLE, column=_COLUMN, row_id=row.id).encode(
        "utf-8"
    )
    if digest_of(content) != row.content_sha256:
        del content  # a development log renders a traceback's locals: keep the names out
        raise FiledReportCorrupt(row.id)
    return FiledContent(row, content)
