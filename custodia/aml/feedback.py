"""Monitoring results feed the customer risk rating (K1: transaction behaviour; L2).

The rating's ``transaction_behaviour`` factor (1–10, :mod:`custodia.kyc.rating`) is kept on
the customer (``transaction_behaviour_score``) and derived from the customer's alerts:

- a customer with an alert closed as ``reported`` (a suspicious-transaction report was
  made) scores :data:`~custodia.kyc.rating.REPORTED_BEHAVIOUR`, 10, and the rating makes such
  a customer high risk whatever the other factors say (issue 7: "a reported customer
  becomes high risk");
- otherwise the strongest alert still open, in review or escalated gives the score: its
  alert score (0–100) in tenths, at least 4 and at most 9;
- otherwise (no alert, or every alert cleared as ``false_positive`` / ``no_action``) the
  factor has no view (None), which the rating scores as 3, the baseline.

The score is refreshed when an alert is raised and when one is decided, in the same
transaction (the monitoring worker once per batch, after its last finding:
:class:`DeferredRating`); the customer is re-rated and a change of level or score is
audited (``kyc:customer:risk_rated``) as every other re-rating is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custodia.aml.models import AmlAlert
from custodia.core.actors import Context
from custodia.core.db import one_of
from custodia.core.vault import Vault
from custodia.kyc.customers import passed_channels_of, rerate
from custodia.kyc.models import Customer
from custodia.kyc.rating import REPORTED_BEHAVIOUR, RatingPolicy, RiskModel

#: The lowest and highest score an unresolved alert gives (3 is the baseline, 10 reported).
_OPEN_FLOOR, _OPEN_CEILING = 4, 9


def behaviour_scores(session: Session, customer_ids: Iterable[str]) -> dict[str, int | None]:
    """Return the transaction-behaviour factor of each customer (see above), one query."""
    wanted = sorted(set(customer_ids))
    found: dict[str, int | None] = dict.fromkeys(wanted)
    if not wanted:
        return found
    rows = session.execute(
        select(
            AmlAlert.customer_id,
            func.count().filter(AmlAlert.decision == "reported"),
            func.max(AmlAlert.score).filter(AmlAlert.status != "closed"),
        )
        .where(one_of(session, AmlAlert.customer_id, wanted))
        .group_by(AmlAlert.customer_id)
    ).all()
    for customer_id, reported, strongest in rows:
        if reported:
            found[customer_id] = REPORTED_BEHAVIOUR
        elif strongest is not None:
            tenths = math.ceil(int(strongest) / 10)
            found[customer_id] = max(_OPEN_FLOOR, min(_OPEN_CEILING, tenths))
    return found


def behaviour_score(session: Session, customer_id: str) -> int | None:
    """Return the transaction-behaviour factor monitoring gives the customer (see above)."""
    return behaviour_scores(session, [customer_id])[customer_id]


class Rerating(Protocol):
    """Whatever re-rates a customer whose alerts changed: now, or at the end of a batch."""

    def refresh(self, session: Session, customer_id: str, *, ctx: Context, reason: str) -> None:
        """Have the customer re-rated from their alerts (K1)."""


@dataclass(frozen=True, slots=True)
class RatingFeedback:
    """What re-rating a customer needs (the same collaborators KYC re-rates with)."""

    vault: Vault
    model: RiskModel
    policy: RatingPolicy
    tz: ZoneInfo

    def refresh(self, session: Session, customer_id: str, *, ctx: Context, reason: str) -> None:
        """Update the customer's behaviour factor from their alerts and re-rate them (K1)."""
        self.refresh_all(session, {customer_id: (ctx, reason)})

    def refresh_all(self, session: Session, wanted: Mapping[str, tuple[Context, str]]) -> None:
        """Refresh the factor and re-rate each customer, audited under its context and reason.

        The customers are locked in id order (one query), their factors read in one more;
        those whose factor changed are loaded (a third) with their verification channels (a
        fourth), and the ratings that changed are written by one flush.
        """
        if not wanted:
            return
        # Locked and compared as plain rows: in a busy batch most factors do not change,
        # and only the customers whose factor does are loaded as entities to be re-rated.
        locked = session.execute(
            select(Customer.id, Customer.transaction_behaviour_score)
            .where(one_of(session, Customer.id, sorted(wanted)))
            .order_by(Customer.id)
            .with_for_update()
        ).all()  # only synthetic test movements have no customer row
        scores = behaviour_scores(session, wanted)
        moved = [customer_id for customer_id, score in locked if score != scores[customer_id]]
        if not moved:
            return
        changed = session.scalars(
            select(Customer).where(one_of(session, Customer.id, moved)).order_by(Customer.id)
        ).all()
        with session.no_autoflush:  # the ratings' reads do not depend on each other's writes
            channels = passed_channels_of(session, changed)
            for customer in changed:
                customer.transaction_behaviour_score = scores[customer.id]
                ctx, reason = wanted[customer.id]
                rerate(
                    session,
                    customer,
                    vault=self.vault,
                    model=self.model,
                    ctx=ctx,
                    today=ctx.now.astimezone(self.tz).date(),
                    policy=self.policy,
                    reason=reason,
                    channels=channels[customer.id],
                )
        session.flush()


class DeferredRating:
    """Collects the customers whose alerts one batch changed; re-rates each once, at its end.

    The monitoring worker passes this where :func:`custodia.aml.alerts.raise_alert` takes a
    rating: the rules of the batch read the customers once, before any alert, so a
    re-rating within the batch could change nothing they see, and a customer with several
    findings in one batch is re-rated once instead of after each (same transaction, same
    outcome: the factor follows every alert the batch raised). :meth:`settle` does it.
    """

    def __init__(self, feedback: RatingFeedback) -> None:
        self._feedback = feedback
        self._wanted: dict[str, tuple[Context, str]] = {}

    def refresh(self, session: Session, customer_id: str, *, ctx: Context, reason: str) -> None:  # noqa: ARG002 - RatingFeedback's interface
        """Remember the customer (the first finding's context and reason are audited)."""
        self._wanted.setdefault(customer_id, (ctx, reason))

    def settle(self, session: Session) -> None:
        """Re-rate every customer remembered, once each (see :meth:`RatingFeedback.refresh_all`)."""
        self._feedback.refresh_all(session, self._wanted)
        self._wanted.clear()
