"""Payment limits: by account class (R5, R6) and daily by verification strength (K4).

What counts ("balance payments", Art. 11, ≈24): transfers out, merchant payments and
withdrawals, per customer across all their accounts.

- ``class_i_lifetime``: a Class I account's payments, 1,000 CNY since opening in all;
  withdrawals to the customer's own bank card **count** (R5).
- ``class_ii_yearly`` / ``class_iii_yearly``: 100,000 / 200,000 CNY a year; withdrawals to
  the customer's own card do **not** count (R5, R7). The year is the calendar year in the
  institution's time zone, or the last twelve months (``CUSTODIA_LIMIT_YEAR``, R6: the text
  leaves it open).
- ``daily``: individuals' payments per day, withdrawals to their own card excluded (K4).
  The cap depends on the factor *kinds* that authorised the payment (K3: something known —
  the payment password; something held — a one-time code or an electronic signature): fewer
  than two kinds 1,000 CNY; two or more kinds without an electronic signature 5,000 CNY (7,500
  or 10,000 with the institution's rating uplift, a setting); two or more with one, the
  limit agreed with the customer. Each payment is checked against the cap of its own tier.

Consumption is one conditional upsert per limit in the payment's own transaction (a row
per customer, rule and period, ``used + amount <= limit``), so concurrent payments can
never together exceed a limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from custodia.accounts.errors import LimitExceeded
from custodia.accounts.models import CustomerPaymentSettings, LimitUsage
from custodia.core.db import upsert_insert
from custodia.core.errors import FieldProblem, InvalidFields
from custodia.core.models import table_of

YearWindow = Literal["calendar_year", "rolling_12_months"]

#: Factor type → K3 kind.
FACTOR_KINDS = {"password": "knowledge", "totp": "possession", "signature": "possession"}

CNY = 100  # minor units per yuan


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The limits' amounts (minor units, CNY) and windows; the regulation's by default."""

    timezone: str = "Asia/Shanghai"
    year_window: YearWindow = "calendar_year"
    class_i_lifetime: int = 1_000 * CNY
    class_ii_yearly: int = 100_000 * CNY
    class_iii_yearly: int = 200_000 * CNY
    daily_one_kind: int = 1_000 * CNY
    daily_two_kinds: int = 5_000 * CNY
    signature_daily_default: int = 50_000 * CNY

    @property
    def tz(self) -> ZoneInfo:
        """Return the zone in which days and years are cut."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Charge:
    """One limit a payment consumes: the counter, its cap and the periods it sums."""

    rule: str
    regulation: str
    period: str  # the counter row written
    label: str  # the period as shown (e.g. "2026", "last 12 months", "2026-11-30")
    limit: int
    others: tuple[str, ...] = ()  # earlier periods that count too (rolling 12 months)


def factor_kinds(factor_types: Iterable[str]) -> frozenset[str]:
    """Return the K3 kinds of the factor types used."""
    return frozenset(FACTOR_KINDS[t] for t in factor_types if t in FACTOR_KINDS)


def daily_tier(factor_types: Sequence[str]) -> str:
    """Return ``one_kind``, ``two_kinds`` or ``two_kinds_signature`` (K4)."""
    if len(factor_kinds(factor_types)) < 2:
        return "one_kind"
    return "two_kinds_signature" if "signature" in factor_types else "two_kinds"


def _months_back(year: int, month: int, count: int) -> list[str]:
    out = []
    for _ in range(count):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        out.append(f"{year:04d}-{month:02d}")
    return out


def charges(
    *,
    account_class: str,
    customer_type: str,
    own_card_withdrawal: bool,
    factor_types: Sequence[str],
    signature_limit: int,
    now: datetime,
    policy: LimitPolicy,
) -> list[Charge]:
    """Return the limits one payment consumes (see the module docstring)."""
    local = now.astimezone(policy.tz)
    found: list[Charge] = []
    if account_class == "I":
        found.append(
            Charge("class_i_lifetime", "R5", "lifetime", "since opening", policy.class_i_lifetime)
        )
    elif account_class in {"II", "III"} and not own_card_withdrawal:
        cap = policy.class_ii_yearly if account_class == "II" else policy.class_iii_yearly
        rule = f"class_{account_class.lower()}_yearly"
        if policy.year_window == "calendar_year":
            found.append(Charge(rule, "R5", f"{local.year:04d}", f"{local.year:04d}", cap))
        else:
            found.append(
                Charge(
                    rule,
                    "R5",
                    f"{local.year:04d}-{local.month:02d}",
                    "last 12 months",
                    cap,
                    tuple(_months_back(local.year, local.month, 11)),
                )
            )
    if customer_type == "individual" and not own_card_withdrawal:
        tier = daily_tier(factor_types)
        cap = {
            "one_kind": policy.daily_one_kind,
            "two_kinds": policy.daily_two_kinds,
            "two_kinds_signature": signature_limit,
        }[tier]
        day = local.date().isoformat()
        found.append(Charge("daily", "K4", day, day, cap))
    return found


_TABLE = LimitUsage.__table__


def _used(session: Session, customer_id: str, charge: Charge) -> int:
    periods = [charge.period, *charge.others]
    total = session.scalar(
        select(text("coalesce(sum(used), 0)"))
        .select_from(_TABLE)
        .where(
            _TABLE.c.customer_id == customer_id,
            _TABLE.c.rule == charge.rule,
            _TABLE.c.period.in_(periods),
        )
    )
    return int(total or 0)


def _consume_sql(others: int) -> str:
    # Built from constants and a count of numbered parameters only: values are bound. The
    # casts give PostgreSQL one type for parameters used in several places.
    customer, rule, amount = (
        "CAST(:customer_id AS VARCHAR(40))",
        "CAST(:rule AS VARCHAR(24))",
        "CAST(:amount AS BIGINT)",
    )
    periods = ", ".join(f"CAST(:o{i} AS VARCHAR(16))" for i in range(others))
    prior = (
        f"(SELECT coalesce(sum(used), 0) FROM limit_usage WHERE customer_id = {customer} "  # noqa: S608
        f"AND rule = {rule} AND period IN ({periods}))"
        if others
        else "0"
    )
    return (
        "INSERT INTO limit_usage (customer_id, rule, period, used) "
        f"SELECT {customer}, {rule}, CAST(:period AS VARCHAR(16)), {amount} "
        f"WHERE {amount} + {prior} <= CAST(:limit AS BIGINT) "
        "ON CONFLICT (customer_id, rule, period) DO UPDATE SET used = limit_usage.used + "
        f"excluded.used WHERE limit_usage.used + excluded.used + {prior} <= CAST(:limit AS BIGINT) "
        "RETURNING used"
    )


def _consume_all_sql(count: int) -> str:
    # One upsert for several limits of single periods; built from constants and a count of
    # numbered parameters only: values are bound.
    rows = " UNION ALL ".join(
        f"SELECT CAST(:r{i} AS VARCHAR(24)) AS rule, CAST(:p{i} AS VARCHAR(16)) AS period, "
        f"CAST(:l{i} AS BIGINT) AS cap"
        for i in range(count)
    )
    caps = " ".join(f"WHEN :r{i} THEN CAST(:l{i} AS BIGINT)" for i in range(count))
    return (
        "INSERT INTO limit_usage (customer_id, rule, period, used) "  # noqa: S608
        "SELECT CAST(:customer_id AS VARCHAR(40)), v.rule, v.period, CAST(:amount AS BIGINT) "
        f"FROM ({rows}) AS v WHERE CAST(:amount AS BIGINT) <= v.cap "
        "ON CONFLICT (customer_id, rule, period) DO UPDATE SET used = limit_usage.used + "
        f"excluded.used WHERE limit_usage.used + excluded.used <= CASE excluded.rule {caps} END "
        "RETURNING rule"
    )


def _refuse(session: Session, customer_id: str, amount: int, charge: Charge) -> LimitExceeded:
    return LimitExceeded(
        rule=charge.rule,
        regulation=charge.regulation,
        period=charge.label,
        limit=charge.limit,
        used=_used(session, customer_id, charge),
        requested=amount,
    )


def consume(session: Session, customer_id: str, amount: int, charges_: Sequence[Charge]) -> None:
    """Consume ``amount`` of every limit, or refuse with the first one it would exceed.

    Limits of single periods (the calendar year, a day, the lifetime) go in one statement;
    a rolling year sums earlier periods in its own.
    """
    single = [c for c in charges_ if not c.others]
    if single:
        params: dict[str, object] = {"customer_id": customer_id, "amount": amount}
        for i, charge in enumerate(single):
            params |= {f"r{i}": charge.rule, f"p{i}": charge.period, f"l{i}": charge.limit}
        done = set(session.execute(text(_consume_all_sql(len(single))), params).scalars())
        for charge in single:
            if charge.rule not in done:
                raise _refuse(session, customer_id, amount, charge)
    for charge in (c for c in charges_ if c.others):
        params = {
            "customer_id": customer_id,
            "rule": charge.rule,
            "period": charge.period,
            "amount": amount,
            "limit": charge.limit,
        }
        params.update({f"o{i}": p for i, p in enumerate(charge.others)})
        if session.execute(text(_consume_sql(len(charge.others))), params).first() is None:
            raise _refuse(session, customer_id, amount, charge)


@dataclass(frozen=True, slots=True)
class Headroom:
    """One limit as ``GET /v1/accounts/{id}`` shows it."""

    rule: str
    regulation: str
    period: str
    limit: int
    used: int

    @property
    def remaining(self) -> int:
        """Return what may still be paid under this limit."""
        return max(self.limit - self.used, 0)


def headroom(
    session: Session,
    customer_id: str,
    *,
    account_class: str,
    customer_type: str,
    now: datetime,
    policy: LimitPolicy,
) -> list[Headroom]:
    """Return each limit that applies to the account's payments, with what is used of it.

    The daily limit is shown for each verification tier, since the factors decide which
    one a payment meets.
    """
    signature_limit = signature_daily_limit(session, customer_id, policy)
    tiers: list[Sequence[str]] = [["signature"], ["password", "totp"], ["password", "signature"]]
    shown: list[Headroom] = []
    seen: set[tuple[str, int]] = set()
    for factors in tiers if customer_type == "individual" else [["signature"]]:
        for charge in charges(
            account_class=account_class,
            customer_type=customer_type,
            own_card_withdrawal=False,
            factor_types=factors,
            signature_limit=signature_limit,
            now=now,
            policy=policy,
        ):
            if (charge.rule, charge.limit) in seen:
                continue
            seen.add((charge.rule, charge.limit))
            shown.append(
                Headroom(
                    rule=charge.rule if charge.rule != "daily" else f"daily_{daily_tier(factors)}",
                    regulation=charge.regulation,
                    period=charge.label,
                    limit=charge.limit,
                    used=_used(session, customer_id, charge),
                )
            )
    return shown


def signature_daily_limit(session: Session, customer_id: str, policy: LimitPolicy) -> int:
    """Return the daily limit agreed with the customer for e-signed payments (K4)."""
    agreed = session.scalar(
        select(CustomerPaymentSettings.signature_daily_limit).where(
            CustomerPaymentSettings.customer_id == customer_id
        )
    )
    return int(agreed) if agreed is not None else policy.signature_daily_default


__all__ = [
    "FACTOR_KINDS",
    "Charge",
    "Headroom",
    "LimitPolicy",
    "agree_signature_limit",
    "charges",
    "consume",
    "daily_tier",
    "factor_kinds",
    "headroom",
    "signature_daily_limit",
]


def agree_signature_limit(
    session: Session, customer_id: str, amount: int, *, now: datetime, policy: LimitPolicy
) -> int:
    """Store the daily limit the customer agreed for e-signed payments (K4); return it.

    At most the Class III yearly limit: no day can allow more than a year does.
    """
    if type(amount) is not int or not 0 < amount <= policy.class_iii_yearly:
        raise InvalidFields(
            [FieldProblem("signature_daily_limit", f"1 to {policy.class_iii_yearly} minor units")]
        )
    table = table_of(CustomerPaymentSettings)
    dialect_insert = upsert_insert(session)
    statement = dialect_insert(table).values(
        customer_id=customer_id, signature_daily_limit=amount, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={"signature_daily_limit": amount, "updated_at": now},
        )
    )
    return amount
