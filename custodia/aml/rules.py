"""The monitoring rules: each a small class with typed, validated parameters (K2, L1, L2, L3).

A rule looks at one movement (one customer side of one posted transaction) in the light of
the customer's recent movements and returns a :class:`Finding` or nothing. It works in two
steps: :meth:`Rule.measures` names the window aggregates it needs for this movement (none
when it cannot fire), then :meth:`Rule.evaluate` decides from their figures. The monitoring
pipeline gathers every enabled rule's measures and answers them in one query per customer
side (:meth:`custodia.aml.windows.Window.measure`), so adding a rule adds aggregates to that
query, not round trips. Parameters are
a ``msgspec`` struct with constraints; their current values live in the database
(``aml_rules``, versioned in ``aml_rule_versions``) and are changed by a compliance lead
through :func:`custodia.aml.config.update_rule`. The defaults below are what a rule starts
with; L1's four thresholds are its defaults.

Windows are measured back from the movement's own time, not from when the worker ran, so
a backlog never changes what a rule sees. A finding's ``pattern`` says what makes two
findings "the same": while an alert for the customer, rule and pattern is unclosed, new
findings add their transactions to it instead of raising another (issue 7 item 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from custodia.aml.windows import OWN_CARD, Figures, Measure, Movement, Subject, Window

CNY = 100  # minor units per yuan
Amount = Annotated[int, msgspec.Meta(ge=1, le=10**13)]
Hours = Annotated[int, msgspec.Meta(ge=1, le=24 * 90)]
Count = Annotated[int, msgspec.Meta(ge=2, le=10_000)]
Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every rule's parameters."""


P = TypeVar("P", bound=Params)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule found: a score (0–100), what makes it the same pattern, the evidence."""

    score: int
    pattern: str
    transactions: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)
    #: A window whose movements' transactions are evidence too (linked in the database).
    evidence: Measure | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """What a rule may look at besides the movement: the windows, the calendar, the other side."""

    window: Window
    tz: ZoneInfo
    subject: Subject
    counterparty: Subject | None = None


class Rule(ABC, Generic[P]):
    """One monitoring rule: a key, the rule of REGULATION.md it serves, typed parameters."""

    key: ClassVar[str]
    title: ClassVar[str]
    regulation: ClassVar[str]
    params_type: type[P]
    defaults: P

    def parse(self, raw: Any) -> P:
        """Return ``raw`` as this rule's parameters (msgspec.ValidationError if invalid)."""
        return msgspec.convert(raw, self.params_type, strict=True)

    def measures(self, movement: Movement, scope: Scope, params: P) -> dict[str, Measure]:  # noqa: ARG002 - the rule interface
        """Return the window aggregates the rule needs for ``movement``, by name (none)."""
        return {}

    @abstractmethod
    def evaluate(
        self, movement: Movement, scope: Scope, params: P, figures: Figures
    ) -> Finding | None:
        """Return what the rule finds in ``movement`` given its measures' figures (None)."""


def _since(movement: Movement, hours: int) -> datetime:
    return movement.at - timedelta(hours=hours)


def _evidence(rule: Rule[P], movement: Movement, scope: Scope, params: P, name: str) -> Measure:
    """Return the rule's measure ``name``: its movements are the alert's evidence."""
    return rule.measures(movement, scope, params)[name]


def _scaled(value: int, threshold: int, *, base: int, top: int = 95) -> int:
    """Return a score from ``base`` rising with how far ``value`` exceeds ``threshold``."""
    if threshold <= 0:
        return base
    excess = max(value - threshold, 0) * 20 // threshold
    return min(top, base + excess)


# ----------------------------------------------------------------------------- L1 large value


class LargeValueParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """L1 thresholds per customer per day, in minor units (PBOC Order [2016] No. 3)."""

    individual_domestic: Amount = 500_000 * CNY
    individual_cross_border: Amount = 200_000 * CNY
    corporate: Amount = 2_000_000 * CNY
    cash: Amount = 50_000 * CNY


def large_value_category(
    *, channel: str, customer_kind: str, cross_border: bool, params: LargeValueParams
) -> tuple[str, int]:
    """Return the L1 category a customer side counts towards, and that category's threshold.

    Cash (channel ``cash``) has its own threshold; a non-natural person's transfers share
    one; a natural person's transfers are domestic or cross-border. The monitoring rule and
    the large-value report (:mod:`custodia.aml.reports`) both decide with this function, so
    the alerts and the report agree.
    """
    if channel == "cash":
        return "cash", params.cash
    if customer_kind == "corporate":
        return "transfers", params.corporate
    if cross_border:
        return "cross_border", params.individual_cross_border
    return "domestic", params.individual_domestic


class LargeValue(Rule[LargeValueParams]):
    """L1: a customer's inflows (or outflows) of one day reach a large-value threshold.

    Inflows and outflows count separately; single or cumulative. Individuals have one
    threshold for domestic and one for cross-border transfers, non-natural persons one for
    all transfers, and cash (a movement whose channel is ``cash``) its own.
    """

    key = "large_value"
    title = "Large-value transactions (per customer per day)"
    regulation = "L1"
    params_type = LargeValueParams
    defaults = LargeValueParams()

    @staticmethod
    def _day(movement: Movement, scope: Scope) -> tuple[datetime, datetime]:
        """Return the start of the movement's institution day and the window's ``since``."""
        local = movement.at.astimezone(scope.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start - timedelta(microseconds=1)  # windows are (since, until]

    @staticmethod
    def _category(
        movement: Movement, scope: Scope, params: LargeValueParams
    ) -> tuple[str, int, bool | None]:
        """Return the movement's L1 category, its threshold, and cross-border (None: any)."""
        category, threshold = large_value_category(
            channel=movement.channel,
            customer_kind=scope.subject.kind,
            cross_border=movement.cross_border,
            params=params,
        )
        return category, threshold, {"cross_border": True, "domestic": False}.get(category)

    def measures(
        self, movement: Movement, scope: Scope, params: LargeValueParams
    ) -> dict[str, Measure]:
        """Ask for the day's movements of the same direction and category."""
        _, since = self._day(movement, scope)
        category, _, cross_border = self._category(movement, scope, params)
        day = Measure(
            "totals", since, movement.at, movement.direction,
            cash=category == "cash", cross_border=cross_border,
        )  # fmt: skip
        return {"day": day}

    def evaluate(
        self, movement: Movement, scope: Scope, params: LargeValueParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when the day's total of this kind reaches its threshold."""
        start, _ = self._day(movement, scope)
        category, threshold, _ = self._category(movement, scope, params)
        totals = figures.totals("day")
        if totals.amount < threshold:
            return None
        day = start.date().isoformat()
        return Finding(
            score=60,
            pattern=f"{movement.direction}:{day}:{category}",
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "day"),
            details={
                "day": day,
                "direction": movement.direction,
                "category": category,
                "threshold": threshold,
                "total": totals.amount,
                "count": totals.count,
            },
        )


# ---------------------------------------------------------------------------- L2 structuring


class StructuringParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Several amounts just under a threshold within a window."""

    threshold: Amount = 50_000 * CNY
    margin_pct: Percent = 10
    window_hours: Hours = 24
    min_count: Count = 3


class Structuring(Rule[StructuringParams]):
    """L2: amounts split to stay under a threshold (several just below it in a window)."""

    key = "structuring"
    title = "Structuring (amounts just under a threshold)"
    regulation = "L2"
    params_type = StructuringParams
    defaults = StructuringParams()

    @staticmethod
    def _low(params: StructuringParams) -> int:
        return params.threshold - params.threshold * params.margin_pct // 100

    def measures(
        self,
        movement: Movement,
        scope: Scope,  # noqa: ARG002 - the rule interface
        params: StructuringParams,
    ) -> dict[str, Measure]:
        """Ask for the window's amounts in the band, when this movement falls in it."""
        low = self._low(params)
        if not low <= movement.amount < params.threshold:
            return {}
        since = _since(movement, params.window_hours)
        near = Measure(
            "totals", since, movement.at, movement.direction,
            min_amount=low, below_amount=params.threshold,
        )  # fmt: skip
        return {"near": near}

    def evaluate(
        self, movement: Movement, scope: Scope, params: StructuringParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when this and enough others fall within the margin under it."""
        if "near" not in figures:
            return None
        low = self._low(params)
        totals = figures.totals("near")
        if totals.count < params.min_count:
            return None
        return Finding(
            score=_scaled(totals.count, params.min_count, base=65),
            pattern=movement.direction,
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "near"),
            details={
                "direction": movement.direction,
                "count": totals.count,
                "total": totals.amount,
                "band": [low, params.threshold - 1],
                "window_hours": params.window_hours,
            },
        )


# ------------------------------------------------------------------------- L2 fan-in, fan-out


class FanParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Many distinct counterparties in one direction within a window."""

    window_hours: Hours = 24
    min_counterparties: Count = 10
    min_total: Amount = 10_000 * CNY


class FanInFanOut(Rule[FanParams]):
    """L2: funds collected from many sources (fan-in) or spread to many payees (fan-out)."""

    key = "fan_in_fan_out"
    title = "Fan-in / fan-out (many counterparties in a window)"
    regulation = "L2"
    params_type = FanParams
    defaults = FanParams()

    def measures(self, movement: Movement, scope: Scope, params: FanParams) -> dict[str, Measure]:  # noqa: ARG002 - the rule interface
        """Ask for the window's distinct counterparties and their money (own cards aside)."""
        if movement.counterparty == OWN_CARD:
            return {}
        since, d = _since(movement, params.window_hours), movement.direction
        return {
            "parties": Measure("counterparties", since, movement.at, d),
            "totals": Measure("totals", since, movement.at, d, own_cards=False),
        }

    def evaluate(
        self, movement: Movement, scope: Scope, params: FanParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when the window holds enough distinct counterparties and money."""
        if "parties" not in figures:
            return None
        parties = figures.count("parties")
        if parties < params.min_counterparties:
            return None
        totals = figures.totals("totals")
        if totals.amount < params.min_total:
            return None
        return Finding(
            score=_scaled(parties, params.min_counterparties, base=60),
            pattern="fan_in" if movement.direction == "in" else "fan_out",
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "totals"),
            details={
                "direction": movement.direction,
                "counterparties": parties,
                "total": totals.amount,
                "count": totals.count,
                "window_hours": params.window_hours,
            },
        )


# ---------------------------------------------------------------------- L2 rapid pass-through


class PassThroughParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Most of an inflow leaves again within hours."""

    window_hours: Hours = 24
    min_inflow: Amount = 10_000 * CNY
    out_pct: Percent = 80


class RapidPassThrough(Rule[PassThroughParams]):
    """L2: rapid in-and-out: within the window, outflows reach most of the inflows."""

    key = "rapid_pass_through"
    title = "Rapid pass-through (money in and straight out)"
    regulation = "L2"
    params_type = PassThroughParams
    defaults = PassThroughParams()

    def measures(
        self,
        movement: Movement,
        scope: Scope,  # noqa: ARG002 - the rule interface
        params: PassThroughParams,
    ) -> dict[str, Measure]:
        """Ask for the window's inflows and outflows, on an outflow."""
        if movement.direction != "out":
            return {}
        since = _since(movement, params.window_hours)
        return {
            "in": Measure("totals", since, movement.at, "in"),
            "out": Measure("totals", since, movement.at, "out"),
        }

    def evaluate(
        self,
        movement: Movement,
        scope: Scope,  # noqa: ARG002 - the rule interface
        params: PassThroughParams,
        figures: Figures,
    ) -> Finding | None:
        """Return a finding when an outflow brings the window's outflows to ``out_pct`` of in."""
        if "in" not in figures:
            return None
        since = _since(movement, params.window_hours)
        inflow = figures.totals("in")
        if inflow.amount < params.min_inflow:
            return None
        outflow = figures.totals("out")
        if outflow.amount * 100 < inflow.amount * params.out_pct:
            return None
        return Finding(
            score=_scaled(outflow.amount, inflow.amount * params.out_pct // 100, base=70),
            pattern="pass_through",
            transactions=(),
            evidence=Measure("totals", since, movement.at),
            details={
                "inflow": inflow.amount,
                "outflow": outflow.amount,
                "out_pct": outflow.amount * 100 // inflow.amount,
                "window_hours": params.window_hours,
            },
        )


# ----------------------------------------------------------------------------- K2 velocity


class VelocityParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Count or amount in a window far above the customer's own baseline."""

    window_hours: Hours = 24
    baseline_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 30
    multiplier: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 5
    #: Floors under the baseline: a new customer's first payments are not "far above".
    min_count: Count = 10
    min_amount: Amount = 50_000 * CNY


class Velocity(Rule[VelocityParams]):
    """K2, L2: activity that does not fit the customer's own profile (count or amount).

    The baseline is the customer's average per window over the ``baseline_days`` before the
    window; the window must exceed ``multiplier`` times it, and the floor as well.
    """

    key = "velocity"
    title = "Velocity (far above the customer's own baseline)"
    regulation = "L2"
    params_type = VelocityParams
    defaults = VelocityParams()

    def measures(
        self,
        movement: Movement,
        scope: Scope,  # noqa: ARG002 - the rule interface
        params: VelocityParams,
    ) -> dict[str, Measure]:
        """Ask for the window's movements and those of the baseline days before it."""
        since = _since(movement, params.window_hours)
        base_since = since - timedelta(days=params.baseline_days)
        return {
            "now": Measure("totals", since, movement.at),
            "history": Measure("totals", base_since, since),
        }

    def evaluate(
        self, movement: Movement, scope: Scope, params: VelocityParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when the window's count or amount is far above the baseline."""
        now = figures.totals("now")
        history = figures.totals("history")
        # Integer arithmetic (money never floats): the window against the baseline's
        # average per window, ``history × window_hours / baseline hours``.
        hours = params.baseline_days * 24
        by_count = now.count >= params.min_count and (
            now.count * hours >= params.multiplier * history.count * params.window_hours
        )
        by_amount = now.amount >= params.min_amount and (
            now.amount * hours >= params.multiplier * history.amount * params.window_hours
        )
        base_count = history.count * params.window_hours / hours
        base_amount = history.amount * params.window_hours // hours
        if not (by_count or by_amount):
            return None
        return Finding(
            score=70 if by_count and by_amount else 55,
            pattern="velocity",
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "now"),
            details={
                "count": now.count,
                "amount": now.amount,
                "baseline_count": round(base_count, 2),
                "baseline_amount": base_amount,
                "by": [name for name, hit in (("count", by_count), ("amount", by_amount)) if hit],
                "window_hours": params.window_hours,
            },
        )


# ------------------------------------------------------------------------------ L2 dormant


class DormantParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An account silent for long that suddenly moves a notable amount."""

    dormant_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 180
    min_amount: Amount = 5_000 * CNY


class Dormant(Rule[DormantParams]):
    """L2: a dormant customer suddenly active (no movement for ``dormant_days``)."""

    key = "dormant_reactivated"
    title = "Dormant account suddenly active"
    regulation = "L2"
    params_type = DormantParams
    defaults = DormantParams()

    def measures(
        self,
        movement: Movement,
        scope: Scope,  # noqa: ARG002 - the rule interface
        params: DormantParams,
    ) -> dict[str, Measure]:
        """Ask for the latest other movement within the dormancy period, if notable."""
        if movement.amount < params.min_amount:
            return {}
        since = movement.at - timedelta(days=params.dormant_days)
        other = movement.transaction_id
        return {"recent": Measure("latest", since, movement.at, other_than=other)}

    def evaluate(
        self, movement: Movement, scope: Scope, params: DormantParams, figures: Figures
    ) -> Finding | None:
        """Return a finding for a notable movement after a long silence (never the first)."""
        if "recent" not in figures or figures.latest("recent") is not None:
            return None  # small, or the customer moved money within the period
        # Nothing found in the range read: find the movement before (none: the first).
        last = scope.window.previous(movement.customer_id, movement.at, movement.transaction_id)
        if last is None or movement.at - last < timedelta(days=params.dormant_days):
            return None
        return Finding(
            score=55,
            pattern=f"after:{last.date().isoformat()}",
            transactions=(movement.transaction_id,),
            details={"silent_days": (movement.at - last).days, "amount": movement.amount},
        )


# --------------------------------------------------------------------------- L2 round amounts


class RoundParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Repeated round amounts within a window."""

    unit: Amount = 1_000 * CNY
    min_amount: Amount = 10_000 * CNY
    window_hours: Hours = 72
    min_count: Count = 3


class RoundAmounts(Rule[RoundParams]):
    """L2: a run of round amounts (multiples of ``unit``), typical of made-up transactions."""

    key = "round_amounts"
    title = "Round-amount pattern"
    regulation = "L2"
    params_type = RoundParams
    defaults = RoundParams()

    def measures(self, movement: Movement, scope: Scope, params: RoundParams) -> dict[str, Measure]:  # noqa: ARG002 - the rule interface
        """Ask for the window's round amounts, when this movement is one."""
        if movement.amount < params.min_amount or movement.amount % params.unit:
            return {}
        since = _since(movement, params.window_hours)
        rounds = Measure(
            "totals", since, movement.at, movement.direction,
            min_amount=params.min_amount, multiple_of=params.unit,
        )  # fmt: skip
        return {"rounds": rounds}

    def evaluate(
        self, movement: Movement, scope: Scope, params: RoundParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when this and enough others in the window are round amounts."""
        if "rounds" not in figures:
            return None
        totals = figures.totals("rounds")
        if totals.count < params.min_count:
            return None
        return Finding(
            score=_scaled(totals.count, params.min_count, base=45),
            pattern=movement.direction,
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "rounds"),
            details={
                "direction": movement.direction,
                "count": totals.count,
                "total": totals.amount,
                "unit": params.unit,
            },
        )


# ------------------------------------------------------------------------- L2 unusual hours


class HoursParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A movement at an hour the customer almost never uses."""

    lookback_days: Annotated[int, msgspec.Meta(ge=7, le=365)] = 90
    min_history: Count = 20
    max_share_pct: Percent = 5
    min_amount: Amount = 5_000 * CNY


class UnusualHours(Rule[HoursParams]):
    """L2: activity at an hour unusual for this customer (institution time, ±1 hour).

    Needs ``min_history`` earlier movements to know what is usual for the customer.
    """

    key = "unusual_hours"
    title = "Activity at unusual hours for the customer"
    regulation = "L2"
    params_type = HoursParams
    defaults = HoursParams()

    def measures(self, movement: Movement, scope: Scope, params: HoursParams) -> dict[str, Measure]:
        """Ask how many other movements the look-back holds, for a notable amount."""
        if movement.amount < params.min_amount:
            return {}
        since = movement.at - timedelta(days=params.lookback_days)
        other = movement.transaction_id
        hour = movement.at.astimezone(scope.tz).hour
        return {
            "history": Measure("totals", since, movement.at, other_than=other),
            "alike": Measure(
                "totals", since, movement.at, other_than=other,
                near_hour=hour, zone=scope.tz.key,
            ),
        }  # fmt: skip

    def evaluate(
        self, movement: Movement, scope: Scope, params: HoursParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when few of the customer's earlier movements fell near this hour."""
        if "history" not in figures or figures.totals("history").count < params.min_history:
            return None  # small, or too short a history to know what is usual
        hour = movement.at.astimezone(scope.tz).hour
        if "alike" in figures:  # the database knows the institution's hours (PostgreSQL)
            history, alike = figures.totals("history").count, figures.totals("alike").count
        else:  # read the instants themselves (all of them: the share must be exact)
            since = movement.at - timedelta(days=params.lookback_days)
            instants = scope.window.instants(
                movement.customer_id, since, movement.at, movement.transaction_id
            )
            near = {(hour - 1) % 24, hour, (hour + 1) % 24}
            history = len(instants)
            alike = sum(1 for at in instants if at.astimezone(scope.tz).hour in near)
        if alike * 100 > history * params.max_share_pct:
            return None
        return Finding(
            score=40,
            pattern=f"hour:{hour:02d}",
            transactions=(movement.transaction_id,),
            details={"hour": hour, "history": history, "at_this_hour": alike},
        )


# ---------------------------------------------------------------------------- L3 watchlists


class WatchlistParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which screening outcomes count (L3: from KYC screening)."""

    include_potential: bool = True


LISTED = {"confirmed_match": 90, "potential_match": 70}


class Watchlist(Rule[WatchlistParams]):
    """L3: the customer or the counterparty is on a watchlist (KYC screening's verdict).

    Screening hits themselves also land in the queue under this rule (see
    :func:`custodia.aml.monitoring.consumers`).
    """

    key = "watchlist"
    title = "Customer or counterparty on a watchlist"
    regulation = "L3"
    params_type = WatchlistParams
    defaults = WatchlistParams()

    def listed(self, status: str, params: WatchlistParams) -> int:
        """Return the score a screening status deserves (0: not listed for this rule)."""
        if status == "potential_match" and not params.include_potential:
            return 0
        return LISTED.get(status, 0)

    def evaluate(
        self,
        movement: Movement,
        scope: Scope,
        params: WatchlistParams,
        figures: Figures,  # noqa: ARG002 - the rule interface
    ) -> Finding | None:
        """Return a finding when either side of the movement is a (potential) match."""
        own = self.listed(scope.subject.screening_status, params)
        other = scope.counterparty
        theirs = self.listed(other.screening_status, params) if other else 0
        if not own and not theirs:
            return None
        who = "customer" if own >= theirs else "counterparty"
        listed = scope.subject if who == "customer" else other
        assert listed is not None  # noqa: S101 - theirs > 0 only with a counterparty
        return Finding(
            score=max(own, theirs),
            pattern=f"{who}:{listed.customer_id}",
            transactions=(movement.transaction_id,),
            details={
                "listed": who,
                "listed_customer_id": listed.customer_id,
                "screening_status": listed.screening_status,
            },
        )


# ----------------------------------------------------------------------- K1/K2 high risk


class HighRiskParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A high-risk customer moving large amounts (cumulative in a window)."""

    min_amount: Amount = 50_000 * CNY
    window_hours: Hours = 24


class HighRiskLarge(Rule[HighRiskParams]):
    """K1, K2: a customer rated high risk moves at least ``min_amount`` in the window."""

    key = "high_risk_large"
    title = "High-risk customer moving large amounts"
    regulation = "K2"
    params_type = HighRiskParams
    defaults = HighRiskParams()

    def measures(
        self, movement: Movement, scope: Scope, params: HighRiskParams
    ) -> dict[str, Measure]:
        """Ask for the window's movements of the direction, for a customer rated high."""
        if scope.subject.risk_level != "high":
            return {}
        since = _since(movement, params.window_hours)
        return {"window": Measure("totals", since, movement.at, movement.direction)}

    def evaluate(
        self, movement: Movement, scope: Scope, params: HighRiskParams, figures: Figures
    ) -> Finding | None:
        """Return a finding when a high-risk customer's window total reaches the amount."""
        if "window" not in figures:
            return None
        totals = figures.totals("window")
        if totals.amount < params.min_amount:
            return None
        return Finding(
            score=_scaled(totals.amount, params.min_amount, base=65),
            pattern=movement.direction,
            transactions=(),
            evidence=_evidence(self, movement, scope, params, "window"),
            details={
                "direction": movement.direction,
                "total": totals.amount,
                "count": totals.count,
                "risk_level": "high",
            },
        )


#: Every rule, by key, in the order they are evaluated and listed.
RULES: dict[str, Rule[Any]] = {
    rule.key: rule
    for rule in (
        LargeValue(),
        Structuring(),
        FanInFanOut(),
        RapidPassThrough(),
        Velocity(),
        Dormant(),
        RoundAmounts(),
        UnusualHours(),
        Watchlist(),
        HighRiskLarge(),
    )
}
