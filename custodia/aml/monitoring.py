"""The monitoring pipeline: every posted transaction through the rules, once (K2, L1, L2).

``accounts.transaction_posted`` is published in the transaction that posts the money (by
``custodia.accounts.movements`` and by the PostgreSQL transfer function of migration
0008). Its consumer here runs inside the outbox transaction that marks the event done
(``custodia.core.outbox``): it writes monitoring's movement rows, evaluates every enabled
rule and raises or updates alerts, all committed together with the event's ``done``. So:

- each event is evaluated once: workers claim events with ``FOR UPDATE SKIP LOCKED``,
  and the UNIQUE (transaction, customer, direction) of ``aml_movements`` refuses a second
  evaluation even if something went wrong there;
- a worker killed mid-batch commits nothing of the batch, which the next worker takes
  again: nothing is lost and nothing doubled;
- ``kyc.screening_hit`` (a watchlist match at onboarding or re-screening, L3) lands in the
  same queue under the ``watchlist`` rule.

Which side is which: the payer's payment account gives an ``out`` movement, the payee's an
``in`` movement; money to or from the customer's own bank card (withdrawal, top-up) has
``own_card`` on the other side, a merchant payment or refund the merchant. Cross-border:
the record has no country of the other side, so a movement counts as cross-border when its
channel says ``cross_border`` or the counterparty customer's nationality is not the
institution's country (setting ``aml_home_country``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from custodia.accounts.models import PaymentTransaction
from custodia.aml import config
from custodia.aml.alerts import DuePolicy, Raised, raise_alert, raise_alerts, unclosed_alerts
from custodia.aml.feedback import DeferredRating, RatingFeedback
from custodia.aml.rules import Finding, Scope
from custodia.aml.windows import OWN_CARD, Figures, Measure, Movement, Subject, Window
from custodia.core.actors import SYSTEM, Context
from custodia.core.clock import Clock
from custodia.core.db import one_of
from custodia.core.ids import IdGenerator
from custodia.core.metrics import MonitoringBacklog
from custodia.core.models import OutboxEvent
from custodia.core.outbox import BatchConsumer, OutboxMessage
from custodia.kyc.models import Customer

TRANSACTION_POSTED = "accounts.transaction_posted"
SCREENING_HIT = "kyc.screening_hit"
_ACCOUNT = "acc_"


@dataclass(frozen=True, slots=True)
class MonitoringPolicy:
    """What monitoring needs from the settings."""

    tz: ZoneInfo
    home_country: str
    due: DuePolicy
    #: Re-rates a customer when their alerts change (K1); None leaves the rating alone.
    rating: RatingFeedback | None = None


def subjects(session: Session, *customer_ids: str) -> dict[str, Subject]:
    """Return what monitoring knows of these customers (one query, no personal data)."""
    wanted = sorted(set(customer_ids))
    if not wanted:
        return {}
    # Core, not the ORM session: plain rows, no entities (per batch, on the worker's path).
    rows = (
        session.connection()
        .execute(
            select(
                Customer.id,
                Customer.type,
                Customer.risk_level,
                Customer.screening_status,
                Customer.nationality,
            ).where(one_of(session, Customer.id, wanted))
        )
        .all()
    )
    return {row.id: Subject(*row) for row in rows}


class Record(NamedTuple):
    """What monitoring reads of a transaction record (``payment_transactions``)."""

    id: str
    type: str
    amount: int
    currency: str
    debit_account: str
    credit_account: str
    payer_customer_id: str | None
    payee_customer_id: str | None
    merchant_id: str | None
    channel: str
    created_at: datetime


#: The columns :class:`Record` holds, in order (the large-value report reads them too).
RECORD_COLUMNS = (
    PaymentTransaction.id,
    PaymentTransaction.type,
    PaymentTransaction.amount,
    PaymentTransaction.currency,
    PaymentTransaction.debit_account,
    PaymentTransaction.credit_account,
    PaymentTransaction.payer_customer_id,
    PaymentTransaction.payee_customer_id,
    PaymentTransaction.merchant_id,
    PaymentTransaction.channel,
    PaymentTransaction.created_at,
)


def movements_of(row: Record, people: dict[str, Subject], home_country: str) -> list[Movement]:
    """Return the customer sides of a transaction record (none for merchant-only ones)."""
    found: list[Movement] = []

    def side(customer_id: str, direction: str, other: str) -> None:
        counterparty = people.get(other)
        cross_border = row.channel == "cross_border" or (
            counterparty is not None and counterparty.nationality != home_country
        )
        found.append(
            Movement(
                transaction_id=row.id,
                customer_id=customer_id,
                direction=direction,
                type=row.type,
                amount=row.amount,
                currency=row.currency,
                counterparty=other,
                cross_border=cross_border,
                channel=row.channel,
                at=row.created_at,
            )
        )

    if row.payer_customer_id and row.debit_account.startswith(_ACCOUNT):
        if row.credit_account.startswith(_ACCOUNT) and row.payee_customer_id:
            other = row.payee_customer_id
        elif row.merchant_id:
            other = row.merchant_id
        else:
            other = OWN_CARD
        side(row.payer_customer_id, "out", other)
    if row.payee_customer_id and row.credit_account.startswith(_ACCOUNT):
        if row.debit_account.startswith(_ACCOUNT) and row.payer_customer_id:
            other = row.payer_customer_id
        elif row.merchant_id:
            other = row.merchant_id
        else:
            other = OWN_CARD
        side(row.payee_customer_id, "in", other)
    return found


@dataclass(frozen=True, slots=True)
class _Side:
    """One customer side on its way through the rules: what they asked of its window."""

    movement: Movement
    ctx: Context
    scope: Scope
    enabled: list[config.RuleState]
    asked: dict[tuple[int, str], Measure]


def _ask(
    session: Session,
    movement: Movement,
    ctx: Context,
    *,
    people: dict[str, Subject],
    states: list[config.RuleState],
    policy: MonitoringPolicy,
) -> _Side:
    """Return the side with the measures every enabled rule needs for it."""
    subject = people.get(movement.customer_id)
    if subject is None:  # a customer row always exists; be explicit if it does not
        raise LookupError(f"no customer {movement.customer_id} for {movement.transaction_id}")
    scope = Scope(
        window=Window(session),
        tz=policy.tz,
        subject=subject,
        counterparty=people.get(movement.counterparty),
    )
    enabled = [state for state in states if state.enabled]
    asked = {
        (n, name): measure
        for n, state in enumerate(enabled)
        for name, measure in state.rule.measures(movement, scope, state.params).items()
    }
    return _Side(movement, ctx, scope, enabled, asked)


def _findings(
    side: _Side, answers: dict[tuple[int, str], Any]
) -> list[tuple[config.RuleState, Finding]]:
    """Run every enabled rule on the side's figures; return what they found."""
    by_rule: dict[int, dict[str, Any]] = {}
    for (n, name), value in answers.items():
        by_rule.setdefault(n, {})[name] = value
    found: list[tuple[config.RuleState, Finding]] = []
    for n, state in enumerate(side.enabled):
        figures = Figures(by_rule.get(n, {}))
        finding = state.rule.evaluate(side.movement, side.scope, state.params, figures)
        if finding is not None:
            found.append((state, finding))
    return found


def _conclude(
    session: Session,
    side: _Side,
    answers: dict[tuple[int, str], Any],
    *,
    policy: MonitoringPolicy,
    ids: IdGenerator,
) -> list[Raised]:
    """Run every enabled rule on the side's figures; raise or update their alerts."""
    return [
        raise_alert(
            session, side.movement.customer_id, state, finding,
            ctx=side.ctx, ids=ids, due=policy.due, rating=policy.rating,
        )
        for state, finding in _findings(side, answers)
    ]  # fmt: skip


def observe(
    session: Session,
    movement: Movement,
    people: dict[str, Subject],
    states: list[config.RuleState],
    *,
    policy: MonitoringPolicy,
    ctx: Context,
    ids: IdGenerator,
) -> list[Raised]:
    """Record one movement and run every enabled rule on it; return the alerts it touched.

    The movement is written and the rules' window aggregates (every window includes the
    movement) read in one round trip on PostgreSQL (:meth:`Window.record_and_measure`).
    """
    side = _ask(session, movement, ctx, people=people, states=states, policy=policy)
    answers = side.scope.window.record_and_measure(movement, side.asked)
    return _conclude(session, side, answers, policy=policy, ids=ids)


def _runs(sides: list[_Side]) -> Iterator[list[_Side]]:
    """Split ``sides`` (in order) into runs in which no customer comes twice."""
    run: list[_Side] = []
    seen: set[str] = set()
    for side in sides:
        if side.movement.customer_id in seen:
            yield run
            run, seen = [], set()
        run.append(side)
        seen.add(side.movement.customer_id)
    if run:
        yield run


def records(session: Session, transaction_ids: Sequence[str]) -> dict[str, Record]:
    """Return what monitoring reads of these transaction records (one query), by id."""
    rows = (
        session.connection()
        .execute(
            select(*RECORD_COLUMNS).where(
                one_of(session, PaymentTransaction.id, sorted(set(transaction_ids)))
            )
        )
        .all()
    )
    found = {row.id: Record(*row) for row in rows}
    missing = [t for t in transaction_ids if t not in found]
    if missing:
        raise LookupError(f"no transaction record for {', '.join(missing[:5])}")
    return found


#: The advisory-lock class of monitoring's per-customer locks (the other key: the id's hash).
_CUSTOMER_LOCKS = 7_2_2  # "K2"
_LOCK_CUSTOMERS = text(
    "SELECT pg_advisory_xact_lock(:class, h) FROM "
    "(SELECT DISTINCT hashtext(c) AS h FROM unnest(CAST(:ids AS text[])) AS c ORDER BY 1) AS s"
)


def serialize_customers(session: Session, customer_ids: Iterable[str]) -> None:
    """Wait until no other worker's open batch concerns these customers (PostgreSQL).

    Workers claim different events, but two events may concern one customer. Each takes a
    transaction-scoped advisory lock per customer of its batch, in one order (so two
    workers never deadlock on them), before it reads any window: a batch touching a
    customer another worker is evaluating waits for that commit, then — read committed,
    a fresh snapshot per statement — its windows count the other batch's movements, as
    if one worker had evaluated both in turn. Released at commit or rollback. SQLite has
    one writer at a time and needs none.
    """
    ids = sorted(set(customer_ids))
    if ids and session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK_CUSTOMERS, {"class": _CUSTOMER_LOCKS, "ids": ids})


def evaluate_transactions(
    session: Session,
    posted: Sequence[tuple[str, Context]],
    *,
    policy: MonitoringPolicy,
    ids: IdGenerator,
) -> list[Raised]:
    """Run the rules on every customer side of posted transactions, in order (K2).

    ``posted`` pairs each transaction id with the context its evaluation is audited under.
    The records, the customers and the rules' parameters are read once for all of them;
    each side is then written and evaluated in turn, so a later side sees the earlier ones.
    """
    if not posted:
        return []
    found = records(session, [transaction_id for transaction_id, _ in posted])
    parties = {
        party
        for row in found.values()
        for party in (row.payer_customer_id, row.payee_customer_id)
        if party
    }
    serialize_customers(session, parties)
    people = subjects(session, *parties)
    states = config.rule_states(session, posted[0][1].now)
    sides = [
        _ask(session, movement, ctx, people=people, states=states, policy=policy)
        for transaction_id, ctx in posted
        for movement in movements_of(found[transaction_id], people, policy.home_country)
    ]
    window = Window(session)
    raised: list[Raised] = []
    # Each customer whose alerts changed is re-rated once, after the batch's last finding.
    rating = DeferredRating(policy.rating) if policy.rating is not None else None
    # Within a run no customer comes twice, and every read is one customer's: writing and
    # measuring a whole run before concluding on any of its sides (one round trip on
    # PostgreSQL) gives each side exactly what one-by-one evaluation would.
    for run in _runs(sides):
        answers = window.record_and_measure_all([(side.movement, side.asked) for side in run])
        concluded = [_findings(side, answer) for side, answer in zip(run, answers, strict=True)]
        # The run's unclosed alerts in one query: its customers are distinct, so no finding
        # of the run changes what another one's key finds.
        known = unclosed_alerts(
            session,
            [
                (side.movement.customer_id, state.rule.key, finding.pattern)
                for side, findings in zip(run, concluded, strict=True)
                for state, finding in findings
            ],
        )
        raised += raise_alerts(
            session,
            [
                (side.movement.customer_id, state, finding, side.ctx)
                for side, findings in zip(run, concluded, strict=True)
                for state, finding in findings
            ],
            ids=ids,
            due=policy.due,
            rating=rating,
            known=known,
        )
    if rating is not None:
        rating.settle(session)
    return raised


def evaluate_transaction(
    session: Session,
    transaction_id: str,
    *,
    policy: MonitoringPolicy,
    ctx: Context,
    ids: IdGenerator,
) -> list[Raised]:
    """Run the rules on every customer side of a posted transaction (K2)."""
    return evaluate_transactions(session, [(transaction_id, ctx)], policy=policy, ids=ids)


def screening_hit(
    session: Session,
    customer_id: str,
    hit_id: str,
    score: int,
    *,
    policy: MonitoringPolicy,
    ctx: Context,
    ids: IdGenerator,
) -> Raised | None:
    """Put a KYC screening hit in the alert queue under the ``watchlist`` rule (L3)."""
    state = next(s for s in config.rule_states(session, ctx.now) if s.rule.key == "watchlist")
    if not state.enabled:
        return None
    finding = Finding(
        score=max(0, min(100, score)),
        pattern=f"hit:{hit_id}",
        transactions=(),
        details={"source": "screening", "hit_id": hit_id, "match_score": score},
    )
    return raise_alert(
        session, customer_id, state, finding, ctx=ctx, ids=ids, due=policy.due, rating=policy.rating
    )


def batch_consumers(
    policy: MonitoringPolicy, *, clock: Clock, ids: IdGenerator
) -> dict[str, BatchConsumer]:
    """Return monitoring's batch consumers: a claimed batch of posted transactions at once.

    The outbox runs one in a savepoint over consecutive events of its type and marks them
    all done with it; if it fails, the outbox delivers those events one by one through
    :func:`consumers` instead, so one bad event holds up only itself.
    """

    def on_posted_batch(session: Session, messages: Sequence[OutboxMessage]) -> None:
        posted = [
            (str(m.payload["transaction_id"]), Context(SYSTEM, clock.now(), f"aml:{m.id}"))
            for m in messages
        ]
        evaluate_transactions(session, posted, policy=policy, ids=ids)

    return {TRANSACTION_POSTED: on_posted_batch}


def consumers(
    policy: MonitoringPolicy, *, clock: Clock, ids: IdGenerator
) -> dict[str, Callable[[Session, OutboxMessage], None]]:
    """Return the outbox consumers of monitoring, keyed by event type."""

    def on_posted(session: Session, message: OutboxMessage) -> None:
        ctx = Context(SYSTEM, clock.now(), f"aml:{message.id}")
        transaction_id = str(message.payload["transaction_id"])
        evaluate_transaction(session, transaction_id, policy=policy, ctx=ctx, ids=ids)

    def on_hit(session: Session, message: OutboxMessage) -> None:
        ctx = Context(SYSTEM, clock.now(), f"aml:{message.id}")
        payload = message.payload
        screening_hit(
            session,
            str(payload["customer_id"]),
            str(payload["hit_id"]),
            int(payload["score"]),
            policy=policy,
            ctx=ctx,
            ids=ids,
        )

    return {TRANSACTION_POSTED: on_posted, SCREENING_HIT: on_hit}


def monitoring_backlog(session: Session, now: datetime) -> MonitoringBacklog:
    """Return how many posted transactions wait for the rules, and the oldest one's age."""
    pending, oldest = session.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(
            OutboxEvent.status == "pending", OutboxEvent.event_type == TRANSACTION_POSTED
        )
    ).one()
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return MonitoringBacklog(pending=int(pending), oldest_pending_age_s=max(age, 0.0))
