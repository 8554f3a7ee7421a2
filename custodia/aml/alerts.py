"""Alerts and cases: raised by the rules, worked by compliance to a decision (K2, L2).

States (issue 7 item 3)::

    open ──assign──▶ in_review ──escalate──▶ escalated
                        │                        │
                        └──decide──▶ closed ◀──decide (compliance lead)

- An alert is *assigned* before anyone decides it, so every decision has an owner; a
  re-assignment keeps the state.
- ``escalate`` sends an in-review alert to the second line; an escalated alert is decided
  by a compliance lead.
- A decision closes the alert as ``false_positive``, ``reported`` (API ``report``) or
  ``no_action``, with a reason kept as a vault-encrypted note. A closed alert is read-only:
  the service refuses, and a database trigger refuses any UPDATE or DELETE.
- Duplicates: while an alert of the same customer, rule and pattern is unclosed, a new
  finding adds its transactions to it (and may raise its score) instead of raising another;
  a partial UNIQUE index makes this hold under concurrent workers too.
- Cases: every unclosed alert of a customer belongs to the customer's one open case; the
  case closes with its last alert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, func, select, text, true, tuple_, update
from sqlalchemy.orm import Session

from custodia.access.models import Staff
from custodia.accounts.models import PaymentAccount, PaymentTransaction
from custodia.aml import windows
from custodia.aml.actions import RELEASING_DECISIONS, release_on_decision
from custodia.aml.config import RuleState
from custodia.aml.errors import (
    AlertClosed,
    AssigneeNotEligible,
    InvalidTransition,
    LeadDecisionRequired,
)
from custodia.aml.feedback import RatingFeedback, Rerating
from custodia.aml.models import AmlAlert, AmlAlertNote, AmlAlertTransaction, AmlCase
from custodia.aml.rules import Finding
from custodia.aml.windows import Measure, evidence_query
from custodia.core import audit
from custodia.core.actors import Context, Role
from custodia.core.db import insert_of, upsert_insert
from custodia.core.errors import NotFound
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.models import table_of
from custodia.core.vault import Vault
from custodia.kyc.customers import decrypt_field
from custodia.kyc.models import Customer

#: API decision → (new status, stored decision).
DECISIONS = {
    "escalate": ("escalated", None),
    "false_positive": ("closed", "false_positive"),
    "report": ("closed", "reported"),
    "no_action": ("closed", "no_action"),
}
#: Which decisions each state allows.
ALLOWED = {
    "open": [],
    "in_review": ["escalate", "false_positive", "report", "no_action"],
    "escalated": ["false_positive", "report", "no_action"],
    "closed": [],
}
DECIDERS = frozenset({Role.COMPLIANCE_OFFICER, Role.COMPLIANCE_LEAD})
_ALERT_UNCLOSED = text("status <> 'closed'")
_CASE_OPEN = text("status = 'open'")


@cache
def _opening_case(dialect: str) -> Executable:
    """Return the INSERT opening a case unless one is open (SQLite; built once)."""
    cases = table_of(AmlCase)
    insert = insert_of(dialect)
    statement: Executable = (
        insert(cases)
        .values(
            id=bindparam("id"),
            customer_id=bindparam("customer_id"),
            status="open",
            opened_at=bindparam("opened_at"),
            closed_at=None,
        )
        .on_conflict_do_nothing(index_elements=["customer_id"], index_where=_CASE_OPEN)
        .returning(cases.c.id)
    )
    return statement


#: The UPDATE folding a repeated finding into its alert (built once, as :func:`_raising`).
_EXTENDING = (
    update(table_of(AmlAlert))
    .where(table_of(AmlAlert).c.id == bindparam("b_id"))
    .values(
        **{
            name: bindparam(f"b_{name}", type_=table_of(AmlAlert).c[name].type)
            for name in ("score", "severity", "details", "updated_at")
        }
    )
)

#: What a new alert's row takes from :func:`raise_alert` (the rest is fixed).
_NEW_ALERT = (
    "id", "case_id", "customer_id", "rule", "rule_version", "params", "pattern", "score",
    "severity", "details", "due_at", "created_at",
)  # fmt: skip


@cache
def _raising(dialect: str) -> Executable:
    """Return the INSERT of a new alert unless its pattern's is unclosed (SQLite; once).

    The monitoring worker raises alerts by the thousand: a statement built once is
    compiled once and its cache key computed once, not per alert.
    """
    alerts = table_of(AmlAlert)
    insert = insert_of(dialect)
    statement: Executable = (
        insert(alerts)
        .values(
            **{name: bindparam(name, type_=alerts.c[name].type) for name in _NEW_ALERT},
            status="open",
            decision=None,
            assignee=None,
            updated_at=bindparam("created_at", type_=alerts.c.created_at.type),
            closed_at=None,
            closed_by=None,
        )
        .on_conflict_do_nothing(
            index_elements=["customer_id", "rule", "pattern"], index_where=_ALERT_UNCLOSED
        )
        .returning(alerts.c.id)
    )
    return statement


@dataclass(frozen=True, slots=True)
class DuePolicy:
    """How long an alert may wait for its decision, by severity (settings)."""

    high: timedelta
    medium: timedelta
    low: timedelta

    def due(self, severity: str, now: datetime) -> datetime:
        """Return when an alert of ``severity`` raised at ``now`` is due."""
        return now + {"high": self.high, "medium": self.medium, "low": self.low}[severity]


def severity_of(score: int) -> str:
    """Return the severity of a score: high from 80, medium from 50, low below."""
    if score >= 80:
        return "high"
    return "medium" if score >= 50 else "low"


@dataclass(frozen=True, slots=True)
class Raised:
    """The alert a finding landed in, and whether it is new."""

    alert_id: str
    case_id: str
    created: bool


def _open_case(session: Session, customer_id: str, *, ctx: Context, ids: IdGenerator) -> str:
    """Return the customer's open case, locked, opening one if there is none (SQLite).

    The lock keeps a concurrent decision from closing the case under a new alert (see
    :func:`_close_case_if_done`); a concurrent opener's case wins the insert race. The
    insert comes first (a customer's first alert is the common case: one round trip); on
    the partial UNIQUE index of open cases it does nothing, and the open case is read.
    """
    cases = table_of(AmlCase)
    opening = _opening_case(session.get_bind().dialect.name)
    for _ in range(3):
        opened = (
            session.connection()
            .execute(
                opening,
                {"id": ids.new(IdPrefix.CASE), "customer_id": customer_id, "opened_at": ctx.now},
            )
            .scalar_one_or_none()
        )
        if opened is not None:
            return str(opened)
        found = (
            session.connection()
            .execute(
                select(cases.c.id)
                .where(cases.c.customer_id == customer_id, cases.c.status == "open")
                .with_for_update()
            )
            .scalar_one_or_none()
        )
        if found is not None:
            return str(found)
    raise RuntimeError(f"no open case could be found or opened for {customer_id}")


def _link(
    session: Session, alert_id: str, customer_id: str, finding: Finding, now: datetime
) -> int:
    """Link the finding's transactions the alert does not list yet; return how many (SQLite).

    INSERT … ON CONFLICT DO NOTHING RETURNING: the primary key (alert, transaction) skips
    the known ones and only the new ones come back. A finding's window of evidence
    (``Finding.evidence``) is linked straight from the customer's movements by
    INSERT … SELECT, so its transaction ids never travel to the worker and back.
    """
    table = table_of(AmlAlertTransaction)
    insert = upsert_insert(session)(table)
    added = 0
    wanted = list(dict.fromkeys(finding.transactions))
    if wanted:
        added += len(
            session.connection()
            .execute(
                insert.on_conflict_do_nothing(
                    index_elements=["alert_id", "transaction_id"]
                ).returning(table.c.transaction_id),
                [{"alert_id": alert_id, "transaction_id": t, "added_at": now} for t in wanted],
            )
            .all()
        )
    if finding.evidence is not None:
        found = evidence_query(customer_id, finding.evidence).subquery()
        rows = select(
            bindparam("alert_id", alert_id, type_=table.c.alert_id.type),
            found.c.transaction_id,
            bindparam("added_at", now, type_=table.c.added_at.type),
        ).where(true())  # SQLite: tells its ON CONFLICT from a join's ON
        added += len(
            session.connection()
            .execute(
                insert.from_select(["alert_id", "transaction_id", "added_at"], rows)
                .on_conflict_do_nothing(index_elements=["alert_id", "transaction_id"])
                .returning(table.c.transaction_id)
            )
            .all()
        )
    return added


#: One alert's links to make: (alert, customer, finding, when).
_Links = tuple[str, str, Finding, datetime]

#: Linking listed transactions to alerts, many at once (PostgreSQL; rows as JSON).
_LINK_LISTED = (
    "INSERT INTO aml_alert_transactions (alert_id, transaction_id, added_at) "
    "SELECT e.x->>0, e.x->>1, (e.x->>2)::timestamptz "
    "FROM jsonb_array_elements(%(rows)s::jsonb) AS e(x) "
    "ON CONFLICT (alert_id, transaction_id) DO NOTHING RETURNING alert_id"
)
#: The statements linking many alerts' evidence windows, by the shape of the window.
_LINK_WINDOWS: dict[tuple[Any, ...], str] = {}


def _link_windows(measure: Measure, sample: list[Any]) -> str:
    """Return the statement linking the evidence of many alerts whose windows look alike.

    Its rows (JSON, :func:`windows.json_param`) are (alert, when, customer, the window's
    values); each row's evidence is the window's query lateral-joined to it, so the
    transaction ids never travel. Built once per shape of window, so prepared once.
    """
    shape = windows.evidence_shape(measure)
    found = _LINK_WINDOWS.get(shape)
    if found is None:
        slots = (f"s.v{j}" for j in range(2, len(sample)))
        evidence = windows.evidence_sql(measure, lambda: next(slots))
        found = _LINK_WINDOWS[shape] = (
            f"WITH s AS (SELECT {windows.json_columns(sample)} "  # noqa: S608
            "FROM jsonb_array_elements(%(rows)s::jsonb) AS e(x)) "
            "INSERT INTO aml_alert_transactions (alert_id, transaction_id, added_at) "
            f"SELECT s.v0, m.transaction_id, s.v1 FROM s CROSS JOIN LATERAL ({evidence}) AS m "
            "ON CONFLICT (alert_id, transaction_id) DO NOTHING RETURNING alert_id"
        )
    return found


def _link_all(session: Session, links: Sequence[_Links]) -> list[int]:
    """Link each finding's transactions to its alert; return how many each alert gained.

    On PostgreSQL every link of a run goes out in one pipeline: one statement for the
    listed transactions and one per shape of evidence window, each taking its rows as one
    JSON parameter (the shapes of a run's windows are a handful; its alerts a hundred).
    The listed transactions go first, so a transaction both listed and in the window
    counts once, as one by one. Elsewhere, :func:`_link` per alert. The alerts must differ.
    """
    if session.get_bind().dialect.name != "postgresql":
        return [_link(session, *link) for link in links]
    listed = [
        (alert_id, transaction_id, now)
        for alert_id, _, finding, now in links
        for transaction_id in dict.fromkeys(finding.transactions)
    ]
    planned = [(_LINK_LISTED, {"rows": windows.json_param(listed)})] if listed else []
    by_shape: dict[tuple[Any, ...], list[list[Any]]] = {}
    sample: dict[tuple[Any, ...], Measure] = {}
    for alert_id, customer_id, finding, now in links:
        if finding.evidence is not None:
            shape = windows.evidence_shape(finding.evidence)
            sample.setdefault(shape, finding.evidence)
            by_shape.setdefault(shape, []).append(
                [alert_id, now, *windows.evidence_values(customer_id, finding.evidence)]
            )
    planned += [
        (_link_windows(sample[shape], rows[0]), {"rows": windows.json_param(rows)})
        for shape, rows in by_shape.items()
    ]
    added = Counter(
        row[0] for rows in windows.pipelined(session.connection(), planned) for row in rows
    )
    return [added[alert_id] for alert_id, *_ in links]


@dataclass(frozen=True, slots=True)
class _Unclosed:
    id: str
    case_id: str
    score: int


def _unclosed(session: Session, customer_id: str, rule: str, pattern: str) -> _Unclosed | None:
    row = (
        session.connection()
        .execute(
            select(AmlAlert.id, AmlAlert.case_id, AmlAlert.score)
            .where(
                AmlAlert.customer_id == customer_id,
                AmlAlert.rule == rule,
                AmlAlert.pattern == pattern[:100],
                AmlAlert.status != "closed",
            )
            .with_for_update()
        )
        .one_or_none()
    )
    return None if row is None else _Unclosed(*row)


#: An unclosed alert's key: (customer, rule, pattern as stored).
AlertKey = tuple[str, str, str]


_UNCLOSED_PG = text(
    "SELECT customer_id, rule, pattern, id, case_id, score FROM aml_alerts "
    "WHERE (customer_id, rule, pattern) IN (SELECT e->>0, e->>1, e->>2 "
    "FROM jsonb_array_elements(CAST(:keys AS jsonb)) AS e) AND status <> 'closed' "
    "ORDER BY id FOR UPDATE"
)


def unclosed_alerts(session: Session, keys: Iterable[AlertKey]) -> dict[AlertKey, _Unclosed]:
    """Lock and return the unclosed alerts of these keys, in one query (the monitoring path).

    The key of a finding is (customer, rule, pattern); the pattern is cut as stored. Pass
    the result to :func:`raise_alert` as ``known``: one round trip for a run's findings,
    not one per finding. The rows are locked in id order.
    """
    wanted = sorted({(customer, rule, pattern[:100]) for customer, rule, pattern in keys})
    if not wanted:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        # The keys as one JSON parameter: a statement psycopg prepares once, where an IN
        # of a hundred (customer, rule, pattern) tuples is new text for every run.
        found = session.connection().execute(_UNCLOSED_PG, {"keys": windows.json_param(wanted)})
    else:
        alerts = table_of(AmlAlert)
        found = session.connection().execute(
            select(alerts.c.customer_id, alerts.c.rule, alerts.c.pattern, alerts.c.id,
                   alerts.c.case_id, alerts.c.score)
            .where(
                tuple_(alerts.c.customer_id, alerts.c.rule, alerts.c.pattern).in_(wanted),
                alerts.c.status != "closed",
            )
            .order_by(alerts.c.id)
            .with_for_update()
        )  # fmt: skip
    rows = found.all()
    return {(row[0], row[1], row[2]): _Unclosed(row[3], row[4], row[5]) for row in rows}


@dataclass(frozen=True, slots=True)
class _Extension:
    """A repeated finding and the unclosed alert it folds into."""

    alert: _Unclosed
    customer_id: str
    state: RuleState
    finding: Finding
    ctx: Context


def _extend_all(
    session: Session, extensions: Sequence[_Extension], *, rating: Rerating | None
) -> list[Raised]:
    """Fold repeated findings into their unclosed alerts: new transactions, the higher score.

    Every alert's links in one round trip (:func:`_link_all`), then :func:`_fold`. The
    alerts must differ (a run's customers do).
    """
    added = _link_all(
        session, [(e.alert.id, e.customer_id, e.finding, e.ctx.now) for e in extensions]
    )
    return _fold(session, extensions, added, rating=rating)


def _fold(
    session: Session,
    extensions: Sequence[_Extension],
    added: Sequence[int],
    *,
    rating: Rerating | None,
) -> list[Raised]:
    """Update and audit the extended alerts that gained transactions (``added``) or score.

    Every changed alert's UPDATE as one executemany (pipelined by psycopg).
    """
    updates: list[dict[str, Any]] = []
    for extension, count in zip(extensions, added, strict=True):
        alert, finding, ctx = extension.alert, extension.finding, extension.ctx
        stronger = finding.score > alert.score
        if count or stronger:
            score = max(alert.score, finding.score)
            updates.append(
                {
                    "b_id": alert.id,
                    "b_score": score,
                    "b_severity": severity_of(score),
                    "b_details": finding.details,
                    "b_updated_at": ctx.now,
                }
            )
            audit.record(
                session,
                ctx,
                audit.AuditAction.AML_ALERT_UPDATED,
                target=alert.id,
                customer_id=extension.customer_id,
                details={
                    "rule": extension.state.rule.key,
                    "added_transactions": count,
                    "score": score,
                },
            )
        if stronger and rating is not None:
            rating.refresh(session, extension.customer_id, ctx=ctx, reason="aml_alert_updated")
    if updates:
        session.connection().execute(_EXTENDING, updates)
    return [Raised(e.alert.id, e.alert.case_id, created=False) for e in extensions]


#: Opening many customers' cases unless one is open (PostgreSQL; rows as JSON).
_OPEN_CASES = (
    "INSERT INTO aml_cases (id, customer_id, status, opened_at) "
    "SELECT e->>0, e->>1, 'open', (e->>2)::timestamptz "
    "FROM jsonb_array_elements(%(rows)s::jsonb) AS e "
    "ON CONFLICT (customer_id) WHERE status = 'open' DO NOTHING RETURNING customer_id, id"
)
#: Locking many customers' open cases (PostgreSQL; the customers as JSON).
_LOCK_OPEN_CASES = (
    "SELECT customer_id, id FROM aml_cases WHERE status = 'open' AND customer_id IN "
    "(SELECT jsonb_array_elements_text(%(ids)s::jsonb)) ORDER BY id FOR UPDATE"
)
#: Raising many alerts unless their pattern's is unclosed (PostgreSQL; rows as JSON, in
#: the order of ``_NEW_ALERT``).
_RAISE_ALERTS = (
    "INSERT INTO aml_alerts (id, case_id, customer_id, rule, rule_version, params, pattern, "
    "score, severity, details, due_at, created_at, status, updated_at) "
    "SELECT e->>0, e->>1, e->>2, e->>3, (e->>4)::integer, e->5, e->>6, (e->>7)::integer, "
    "e->>8, e->9, (e->>10)::timestamptz, (e->>11)::timestamptz, 'open', "
    "(e->>11)::timestamptz FROM jsonb_array_elements(%(rows)s::jsonb) AS e "
    "ON CONFLICT (customer_id, rule, pattern) WHERE status <> 'closed' DO NOTHING RETURNING id"
)


def _open_cases(
    session: Session, opening: Mapping[str, datetime], ids: IdGenerator
) -> dict[str, str]:
    """Return each customer's open case, locked, opening one where there is none.

    :func:`_open_case` for many customers (PostgreSQL): one INSERT of every missing case,
    one SELECT … FOR UPDATE of those a case was already open for; ``opening`` gives each
    customer's instant.
    """
    connection = session.connection()
    found: dict[str, str] = {}
    wanted = dict(sorted(opening.items()))
    for _ in range(3):
        rows = [(ids.new(IdPrefix.CASE), customer, at) for customer, at in wanted.items()]
        found.update(
            connection.exec_driver_sql(_OPEN_CASES, {"rows": windows.json_param(rows)}).all()
        )
        missing = [customer for customer in wanted if customer not in found]
        if missing:
            found.update(
                connection.exec_driver_sql(
                    _LOCK_OPEN_CASES, {"ids": windows.json_param(missing)}
                ).all()
            )
        wanted = {customer: at for customer, at in wanted.items() if customer not in found}
        if not wanted:
            return found
    raise RuntimeError(f"no open case could be found or opened for {', '.join(wanted)}")


def _audit_raised(
    session: Session, found: Found, alert_id: str, *, case_id: str, severity: str, linked: int
) -> None:
    """Audit a new alert: its rule and version, score, severity, case and transactions."""
    customer_id, state, finding, ctx = found
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_ALERT_RAISED,
        target=alert_id,
        customer_id=customer_id,
        details={
            "rule": state.rule.key,
            "rule_version": state.version,
            "score": finding.score,
            "severity": severity,
            "case_id": case_id,
            "transactions": linked,
        },
    )


#: A finding to put in the queue: (customer, its rule's state, the finding, its context).
Found = tuple[str, RuleState, Finding, Context]


def raise_alerts(
    session: Session,
    found: Sequence[Found],
    *,
    ids: IdGenerator,
    due: DuePolicy,
    rating: Rerating | None,
    known: dict[AlertKey, _Unclosed],
) -> list[Raised]:
    """Put a run's findings in the queue, in order of ``found`` (see :func:`raise_alert`).

    ``known``: the run's unclosed alerts, from :func:`unclosed_alerts`. The findings must
    be of distinct alerts (a run's customers are distinct, and a rule finds one pattern per
    side). On PostgreSQL the run goes together: the new alerts' cases opened by one
    statement (and those already open locked by another), the new alerts inserted by one,
    every alert's links — new and repeated — in one pipeline, the extended alerts updated
    by one executemany; a new alert that loses its insert to another worker's of the same
    pattern is folded into that one. Elsewhere a new alert is raised by :func:`raise_alert`.
    """
    raised: dict[int, Raised] = {}
    extending: list[tuple[int, _Extension]] = []
    fresh: list[int] = []
    together = session.get_bind().dialect.name == "postgresql"
    for n, (customer_id, state, finding, ctx) in enumerate(found):
        existing = known.get((customer_id, state.rule.key, finding.pattern[:100]))
        if existing is not None:
            extending.append((n, _Extension(existing, customer_id, state, finding, ctx)))
        elif together:
            fresh.append(n)
        else:
            raised[n] = raise_alert(
                session, customer_id, state, finding,
                ctx=ctx, ids=ids, due=due, rating=rating, known=known,
            )  # fmt: skip
    new: list[tuple[int, str, str, str]] = []  # (n, alert, case, severity)
    if fresh:
        cases = _open_cases(session, {found[n][0]: found[n][3].now for n in fresh}, ids)
        rows = []
        for n in fresh:
            customer_id, state, finding, ctx = found[n]
            severity = severity_of(finding.score)
            new.append((n, ids.new(IdPrefix.ALERT), cases[customer_id], severity))
            rows.append(
                (new[-1][1], cases[customer_id], customer_id, state.rule.key, state.version,
                 state.params_dict(), finding.pattern[:100], finding.score, severity,
                 finding.details, due.due(severity, ctx.now), ctx.now)
            )  # fmt: skip
        inserted = {
            row[0]
            for row in session.connection().exec_driver_sql(
                _RAISE_ALERTS, {"rows": windows.json_param(rows)}
            )
        }
        for n, alert_id, _, _ in new:
            if alert_id not in inserted:  # another worker's alert of this pattern won
                customer_id, state, finding, ctx = found[n]
                winner = _unclosed(session, customer_id, state.rule.key, finding.pattern)
                assert winner is not None  # noqa: S101 - the conflicting row is committed
                extending.append((n, _Extension(winner, customer_id, state, finding, ctx)))
        new = [item for item in new if item[1] in inserted]
    links = [(alert_id, found[n][0], found[n][2], found[n][3].now) for n, alert_id, _, _ in new]
    links += [(e.alert.id, e.customer_id, e.finding, e.ctx.now) for _, e in extending]
    added = _link_all(session, links)
    for (n, alert_id, case_id, severity), linked in zip(new, added[: len(new)], strict=True):
        _audit_raised(
            session, found[n], alert_id, case_id=case_id, severity=severity, linked=linked
        )
        if rating is not None:
            rating.refresh(session, found[n][0], ctx=found[n][3], reason="aml_alert_raised")
        raised[n] = Raised(alert_id, case_id, created=True)
    folded = _fold(session, [e for _, e in extending], added[len(new) :], rating=rating)
    raised.update((n, r) for (n, _), r in zip(extending, folded, strict=True))
    return [raised[n] for n in range(len(found))]


def raise_alert(
    session: Session,
    customer_id: str,
    state: RuleState,
    finding: Finding,
    *,
    ctx: Context,
    ids: IdGenerator,
    due: DuePolicy,
    rating: Rerating | None = None,
    known: dict[AlertKey, _Unclosed] | None = None,
) -> Raised:
    """Put a finding in the queue: a new alert, or the unclosed one of the same pattern.

    Two workers finding the same pattern at once both try to insert; the partial UNIQUE
    index lets one in and the other (ON CONFLICT DO NOTHING, after the first commits)
    adds its transactions to the winner's alert. This is the monitoring worker's path, run
    for every finding: Core statements on the session's connection, no ORM objects. With
    ``rating``, the customer's risk rating follows the alert (K1, :mod:`custodia.aml.feedback`).
    ``known``: the unclosed alerts already looked up and locked by :func:`unclosed_alerts`
    (its answer for this finding's key stands, found or not). On PostgreSQL a new alert
    is raised by :func:`raise_alerts`' statements (a run of one).
    """
    existing = (
        _unclosed(session, customer_id, state.rule.key, finding.pattern)
        if known is None
        else known.get((customer_id, state.rule.key, finding.pattern[:100]))
    )
    if existing is not None:
        extension = _Extension(existing, customer_id, state, finding, ctx)
        return _extend_all(session, [extension], rating=rating)[0]
    if session.get_bind().dialect.name == "postgresql":  # the run's statements, for one
        found: Found = (customer_id, state, finding, ctx)
        return raise_alerts(session, [found], ids=ids, due=due, rating=rating, known={})[0]
    case_id = _open_case(session, customer_id, ctx=ctx, ids=ids)
    alert_id = ids.new(IdPrefix.ALERT)
    severity = severity_of(finding.score)
    inserted = (
        session.connection()
        .execute(
            _raising(session.get_bind().dialect.name),
            {
                "id": alert_id,
                "case_id": case_id,
                "customer_id": customer_id,
                "rule": state.rule.key,
                "rule_version": state.version,
                "params": state.params_dict(),
                "pattern": finding.pattern[:100],
                "score": finding.score,
                "severity": severity,
                "details": finding.details,
                "due_at": due.due(severity, ctx.now),
                "created_at": ctx.now,
            },
        )
        .scalar_one_or_none()
    )
    if inserted is None:
        winner = _unclosed(session, customer_id, state.rule.key, finding.pattern)
        assert winner is not None  # noqa: S101 - the conflicting row is committed
        extension = _Extension(winner, customer_id, state, finding, ctx)
        return _extend_all(session, [extension], rating=rating)[0]
    (linked,) = _link_all(session, [(alert_id, customer_id, finding, ctx.now)])
    _audit_raised(
        session, (customer_id, state, finding, ctx), alert_id,
        case_id=case_id, severity=severity, linked=linked,
    )  # fmt: skip
    if rating is not None:
        rating.refresh(session, customer_id, ctx=ctx, reason="aml_alert_raised")
    return Raised(alert_id, case_id, created=True)


# --------------------------------------------------------------------------- working alerts


def _load(session: Session, alert_id: str, *, for_update: bool = False) -> AmlAlert:
    query = select(AmlAlert).where(AmlAlert.id == alert_id)
    if for_update:
        query = query.with_for_update()
    alert = session.execute(query).scalar_one_or_none()
    if alert is None:
        raise NotFound("alert", alert_id)
    return alert


def _writable(session: Session, alert_id: str) -> AmlAlert:
    alert = _load(session, alert_id, for_update=True)
    if alert.status == "closed":
        raise AlertClosed(alert.id, alert.decision)
    return alert


def _note(
    session: Session, alert: AmlAlert, kind: str, text: str, *, ctx: Context, ids: IdGenerator,
    vault: Vault,
) -> str:  # fmt: skip
    note_id = ids.new(IdPrefix.NOTE)
    session.add(
        AmlAlertNote(
            id=note_id,
            alert_id=alert.id,
            kind=kind,
            author=str(ctx.actor),
            text_enc=vault.encrypt(
                text, table="aml_alert_notes", column="text_enc", row_id=note_id
            ),
            created_at=ctx.now,
        )
    )
    return note_id


def assign(session: Session, alert_id: str, assignee: str, *, ctx: Context) -> AmlAlert:
    """Assign an unclosed alert to an active officer or lead; an open alert goes in review."""
    alert = _writable(session, alert_id)
    name = assignee.strip().lower()
    staff = session.execute(
        select(Staff.role, Staff.disabled_at).where(Staff.username == name)
    ).one_or_none()
    if staff is None or staff.disabled_at is not None or staff.role not in DECIDERS:
        raise AssigneeNotEligible(assignee)
    before = (alert.status, alert.assignee)
    alert.assignee = name
    if alert.status == "open":
        alert.status = "in_review"
    alert.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_ALERT_ASSIGNED,
        target=alert.id,
        customer_id=alert.customer_id,
        details={"from": before[1], "to": name, "status": alert.status},
    )
    return alert


def add_note(
    session: Session, alert_id: str, text: str, *, ctx: Context, ids: IdGenerator, vault: Vault
) -> str:
    """Add a note to an unclosed alert (the text only encrypted); return the note's id."""
    alert = _writable(session, alert_id)
    note_id = _note(session, alert, "note", text, ctx=ctx, ids=ids, vault=vault)
    alert.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_ALERT_NOTED,
        target=alert.id,
        customer_id=alert.customer_id,
        details={"note_id": note_id},
    )
    return note_id


def decide(
    session: Session,
    alert_id: str,
    decision: str,
    reason: str,
    *,
    ctx: Context,
    ids: IdGenerator,
    vault: Vault,
    rating: RatingFeedback | None = None,
) -> AmlAlert:
    """Escalate or close an alert with a reason; illegal transitions are refused (K2, L2).

    Closing it releases the settlements delayed for it when the suspicion is cleared, and
    with ``rating`` re-rates the customer (K1: a reported customer becomes high risk).
    """
    alert = _writable(session, alert_id)
    allowed = ALLOWED[alert.status]
    if decision not in allowed:
        raise InvalidTransition(alert.id, alert.status, decision, allowed)
    if alert.status == "escalated" and ctx.actor.role is not Role.COMPLIANCE_LEAD:
        raise LeadDecisionRequired(alert.id)
    status, stored = DECISIONS[decision]
    before = alert.status
    _note(session, alert, "decision", reason, ctx=ctx, ids=ids, vault=vault)
    alert.status = status
    alert.decision = stored
    alert.updated_at = ctx.now
    if status == "closed":
        alert.closed_at = ctx.now
        alert.closed_by = str(ctx.actor)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_ALERT_DECIDED,
        target=alert.id,
        customer_id=alert.customer_id,
        details={"decision": decision, "from": before, "to": status, "rule": alert.rule},
    )
    if status == "closed":
        _close_case_if_done(session, alert.case_id, ctx.now)
        if alert.decision in RELEASING_DECISIONS:
            release_on_decision(session, alert, ctx=ctx)
        if rating is not None:
            rating.refresh(session, alert.customer_id, ctx=ctx, reason=f"aml_{alert.decision}")
    return alert


def _close_case_if_done(session: Session, case_id: str, now: datetime) -> None:
    """Close the case when none of its alerts is unclosed any more.

    The case is locked *before* counting: a worker adding an alert holds the same lock, so
    the count sees its alert once it commits, and a case never closes under an open alert.
    """
    case = session.execute(
        select(AmlCase)
        .where(AmlCase.id == case_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    unclosed = session.execute(
        select(func.count()).where(AmlAlert.case_id == case_id, AmlAlert.status != "closed")
    ).scalar_one()
    if unclosed or case.status == "closed":
        return
    case.status = "closed"
    case.closed_at = now


# ----------------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """``GET /v1/aml/alerts`` filters (any combination)."""

    status: str | None = None
    rule: str | None = None
    customer_id: str | None = None
    assignee: str | None = None
    case_id: str | None = None


def list_alerts(
    session: Session, filters: AlertFilter, *, before: str | None, limit: int
) -> list[AmlAlert]:
    """Return up to ``limit`` alerts matching ``filters``, newest first, older than ``before``."""
    query = select(AmlAlert)
    for column, value in (
        (AmlAlert.status, filters.status),
        (AmlAlert.rule, filters.rule),
        (AmlAlert.customer_id, filters.customer_id),
        (AmlAlert.assignee, filters.assignee),
        (AmlAlert.case_id, filters.case_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(AmlAlert.id < before)
    return list(session.execute(query.order_by(AmlAlert.id.desc()).limit(limit)).scalars())


@dataclass(frozen=True, slots=True)
class NoteView:
    """A note or decision reason, in clear for compliance staff."""

    id: str
    kind: str
    author: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AlertDetail:
    """An alert with its transactions, notes and the other alerts of its case."""

    alert: AmlAlert
    transaction_ids: list[str]
    notes: list[NoteView]
    case_alerts: list[str]


def get_alert(session: Session, alert_id: str, *, vault: Vault) -> AlertDetail:
    """Return an alert and what explains it (transactions, notes, its case's other alerts)."""
    alert = _load(session, alert_id)
    transactions = list(
        session.execute(
            select(AmlAlertTransaction.transaction_id)
            .where(AmlAlertTransaction.alert_id == alert.id)
            .order_by(AmlAlertTransaction.added_at, AmlAlertTransaction.transaction_id)
        ).scalars()
    )
    notes = [
        NoteView(
            id=n.id,
            kind=n.kind,
            author=n.author,
            text=vault.decrypt(n.text_enc, table="aml_alert_notes", column="text_enc", row_id=n.id),
            created_at=n.created_at,
        )
        for n in session.execute(
            select(AmlAlertNote)
            .where(AmlAlertNote.alert_id == alert.id)
            .order_by(AmlAlertNote.created_at, AmlAlertNote.id)
        ).scalars()
    ]
    others = list(
        session.execute(
            select(AmlAlert.id)
            .where(AmlAlert.case_id == alert.case_id, AmlAlert.id != alert.id)
            .order_by(AmlAlert.id)
        ).scalars()
    )
    return AlertDetail(alert=alert, transaction_ids=transactions, notes=notes, case_alerts=others)


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """One of the customer's payment accounts, as an officer needs to see it."""

    id: str
    account_class: str
    status: str


@dataclass(frozen=True, slots=True)
class CustomerContext:
    """Who the alert is about (the name in clear: the API masks it for the caller)."""

    id: str
    type: str
    name: str
    status: str
    risk_level: str
    risk_score: int
    screening_status: str
    nationality: str
    accounts: list[AccountSummary]


def customer_context(session: Session, customer_id: str, *, vault: Vault) -> CustomerContext | None:
    """Return the customer an alert is about, with their accounts (None if unknown)."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    accounts = session.execute(
        select(PaymentAccount.id, PaymentAccount.account_class, PaymentAccount.status)
        .where(PaymentAccount.customer_id == customer_id)
        .order_by(PaymentAccount.id)
    ).all()
    return CustomerContext(
        id=customer.id,
        type=customer.type,
        name=decrypt_field(vault, "customers", customer.id, customer.name_enc, "name_enc") or "",
        status=customer.status,
        risk_level=customer.risk_level,
        risk_score=customer.risk_score,
        screening_status=customer.screening_status,
        nationality=customer.nationality,
        accounts=[AccountSummary(*row) for row in accounts],
    )


def transaction_records(session: Session, transaction_ids: list[str]) -> list[PaymentTransaction]:
    """Return the transaction records of an alert, oldest first."""
    if not transaction_ids:
        return []
    return list(
        session.execute(
            select(PaymentTransaction)
            .where(PaymentTransaction.id.in_(transaction_ids))
            .order_by(PaymentTransaction.created_at, PaymentTransaction.id)
        ).scalars()
    )
