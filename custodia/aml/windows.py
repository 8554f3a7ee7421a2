"""What monitoring knows of a customer's activity: movements and their window aggregates.

Every query here is a range scan of one customer's rows on ``ix_aml_movements_window``
(customer, direction, at) or ``ix_aml_movements_customer_at`` (customer, at): the cost of
evaluating an event depends on the customer's activity in the window, never on the size of
the journal (issue 7 item 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from custodia.aml.models import AmlMovement

#: A customer's own bank card on the other side (top-up, withdrawal): not a counterparty.
OWN_CARD = "own_card"
#: The most rows a rule reads back for one evaluation (an alert lists at most this many).
MAX_ROWS = 500


@dataclass(frozen=True, slots=True)
class Movement:
    """One customer side of one posted transaction (``out``: the customer paid)."""

    transaction_id: str
    customer_id: str
    direction: str
    type: str
    amount: int
    currency: str
    counterparty: str
    cross_border: bool
    channel: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Subject:
    """What monitoring needs to know of a customer (K1, K2): no personal data."""

    customer_id: str
    kind: str  # individual | corporate
    risk_level: str
    screening_status: str
    nationality: str


@dataclass(frozen=True, slots=True)
class Totals:
    """How many movements, and for how much (minor units)."""

    count: int
    amount: int


def record(session: Session, movement: Movement) -> None:
    """Write ``movement``; a second evaluation of the same side fails on the UNIQUE index."""
    session.add(
        AmlMovement(
            transaction_id=movement.transaction_id,
            customer_id=movement.customer_id,
            direction=movement.direction,
            type=movement.type,
            amount=movement.amount,
            currency=movement.currency,
            counterparty=movement.counterparty,
            cross_border=movement.cross_border,
            channel=movement.channel,
            at=movement.at,
        )
    )
    session.flush()


class Window:
    """Indexed queries over one customer's movements, for the rules."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _where(
        customer_id: str, direction: str | None, since: datetime, until: datetime
    ) -> list[ColumnElement[bool]]:
        clauses = [
            AmlMovement.customer_id == customer_id,
            AmlMovement.at > since,
            AmlMovement.at <= until,
        ]
        if direction is not None:
            clauses.append(AmlMovement.direction == direction)
        return clauses

    def totals(
        self,
        customer_id: str,
        direction: str | None,
        since: datetime,
        until: datetime,
        *extra: ColumnElement[bool],
    ) -> Totals:
        """Return the count and sum of the movements in ``(since, until]`` matching ``extra``."""
        count, amount = self.session.execute(
            select(func.count(), func.coalesce(func.sum(AmlMovement.amount), 0)).where(
                *self._where(customer_id, direction, since, until), *extra
            )
        ).one()
        return Totals(int(count), int(amount))

    def transactions(
        self,
        customer_id: str,
        direction: str | None,
        since: datetime,
        until: datetime,
        *extra: ColumnElement[bool],
    ) -> tuple[str, ...]:
        """Return the transactions of the matching movements in the window, oldest first."""
        rows = self.session.execute(
            select(AmlMovement.transaction_id)
            .where(*self._where(customer_id, direction, since, until), *extra)
            .order_by(AmlMovement.at, AmlMovement.id)
            .limit(MAX_ROWS)
        ).scalars()
        return tuple(dict.fromkeys(rows))

    def counterparties(
        self, customer_id: str, direction: str, since: datetime, until: datetime
    ) -> int:
        """Return how many distinct counterparties (own cards aside) the window holds."""
        return int(
            self.session.execute(
                select(func.count(func.distinct(AmlMovement.counterparty))).where(
                    *self._where(customer_id, direction, since, until),
                    AmlMovement.counterparty != OWN_CARD,
                )
            ).scalar_one()
        )

    def previous(self, customer_id: str, before: datetime, transaction_id: str) -> datetime | None:
        """Return when the customer last moved money before ``before`` (another transaction)."""
        at: datetime | None = self.session.execute(
            select(func.max(AmlMovement.at)).where(
                AmlMovement.customer_id == customer_id,
                AmlMovement.at <= before,
                AmlMovement.transaction_id != transaction_id,
            )
        ).scalar_one()
        return at

    def instants(
        self, customer_id: str, since: datetime, until: datetime, transaction_id: str
    ) -> list[datetime]:
        """Return when the customer's other movements of the window happened (newest first)."""
        return list(
            self.session.execute(
                select(AmlMovement.at)
                .where(
                    *self._where(customer_id, None, since, until),
                    AmlMovement.transaction_id != transaction_id,
                )
                .order_by(AmlMovement.at.desc())
                .limit(MAX_ROWS)
            ).scalars()
        )
