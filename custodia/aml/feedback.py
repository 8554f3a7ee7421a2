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
transaction; the customer is re-rated and a change of level or score is audited
(``kyc:customer:risk_rated``) as every other re-rating is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custodia.aml.models import AmlAlert
from custodia.core.actors import Context
from custodia.core.vault import Vault
from custodia.kyc.customers import rerate
from custodia.kyc.models import Customer
from custodia.kyc.rating import REPORTED_BEHAVIOUR, RatingPolicy, RiskModel

#: The lowest and highest score an unresolved alert gives (3 is the baseline, 10 reported).
_OPEN_FLOOR, _OPEN_CEILING = 4, 9


def behaviour_score(session: Session, customer_id: str) -> int | None:
    """Return the transaction-behaviour factor monitoring gives the customer (see above)."""
    row = session.execute(
        select(
            func.count().filter(AmlAlert.decision == "reported"),
            func.max(AmlAlert.score).filter(AmlAlert.status != "closed"),
        ).where(AmlAlert.customer_id == customer_id)
    ).one()
    reported, strongest = int(row[0]), cast("int | None", row[1])
    if reported:
        return REPORTED_BEHAVIOUR
    if strongest is None:
        return None
    return max(_OPEN_FLOOR, min(_OPEN_CEILING, math.ceil(int(strongest) / 10)))


@dataclass(frozen=True, slots=True)
class RatingFeedback:
    """What re-rating a customer needs (the same collaborators KYC re-rates with)."""

    vault: Vault
    model: RiskModel
    policy: RatingPolicy
    tz: ZoneInfo

    def refresh(self, session: Session, customer_id: str, *, ctx: Context, reason: str) -> None:
        """Update the customer's behaviour factor from their alerts and re-rate them (K1)."""
        customer = session.get(Customer, customer_id, with_for_update=True)
        if customer is None:  # only synthetic test movements have no customer row
            return
        score = behaviour_score(session, customer_id)
        if customer.transaction_behaviour_score == score:
            return
        customer.transaction_behaviour_score = score
        rerate(
            session,
            customer,
            vault=self.vault,
            model=self.model,
            ctx=ctx,
            today=ctx.now.astimezone(self.tz).date(),
            policy=self.policy,
            reason=reason,
        )
