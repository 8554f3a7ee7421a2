"""Limit arithmetic: which limits a payment consumes, their windows, tiers and counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from custodia.accounts.errors import LimitExceeded
from custodia.accounts.limits import (
    Charge,
    LimitPolicy,
    charges,
    consume,
    daily_tier,
    factor_kinds,
)
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Client, onboard

POLICY = LimitPolicy()
#: 15:30 UTC is 23:30 on 31 December in Shanghai.
NEW_YEARS_EVE = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)


def _charges(account_class: str = "II", **kw: object) -> list[tuple[str, str, int]]:
    args: dict[str, object] = {
        "account_class": account_class,
        "customer_type": "individual",
        "own_card_withdrawal": False,
        "factor_types": ["signature"],
        "signature_limit": 3_000_000,
        "now": NEW_YEARS_EVE,
        "policy": POLICY,
    }
    args.update(kw)
    return [(c.rule, c.period, c.limit) for c in charges(**args)]  # type: ignore[arg-type]


def test_factor_kinds_follow_k3() -> None:
    """A password is known; a one-time code and a signature are both held: one kind."""
    assert factor_kinds(["totp", "signature"]) == {"possession"}
    assert daily_tier(["totp", "signature"]) == "one_kind"
    assert daily_tier(["password", "totp"]) == "two_kinds"
    assert daily_tier(["password", "signature"]) == "two_kinds_signature"
    assert daily_tier(["password"]) == "one_kind"


def test_each_class_consumes_its_limit_and_the_daily_one() -> None:
    assert _charges("I") == [
        ("class_i_lifetime", "lifetime", 100_000),
        ("daily", "2026-12-31", 100_000),
    ]
    assert _charges("II") == [
        ("class_ii_yearly", "2026", 10_000_000),
        ("daily", "2026-12-31", 100_000),
    ]
    assert _charges("III", factor_types=["password", "signature"]) == [
        ("class_iii_yearly", "2026", 20_000_000),
        ("daily", "2026-12-31", 3_000_000),
    ]
    assert _charges("corporate", customer_type="corporate") == []


def test_own_card_withdrawals_count_only_for_class_i() -> None:
    """R5/R7: Class I counts them; Class II/III and the daily limit do not."""
    assert _charges("I", own_card_withdrawal=True) == [("class_i_lifetime", "lifetime", 100_000)]
    assert _charges("II", own_card_withdrawal=True) == []


def test_days_and_years_are_cut_in_the_institutions_time_zone() -> None:
    """23:30 on 31 December in Shanghai: the day is the 31st and the year 2026."""
    late = NEW_YEARS_EVE + timedelta(minutes=29)  # 23:59 in Shanghai
    assert _charges(now=late)[1][1] == "2026-12-31"
    next_year = NEW_YEARS_EVE + timedelta(minutes=31)  # 00:01 on 1 January in Shanghai
    assert _charges(now=next_year) == [
        ("class_ii_yearly", "2027", 10_000_000),
        ("daily", "2027-01-01", 100_000),
    ]


def test_the_rating_uplift_and_the_rolling_year_are_settings() -> None:
    rolling = LimitPolicy(year_window="rolling_12_months", daily_two_kinds=1_000_000)
    found = charges(
        account_class="II", customer_type="individual", own_card_withdrawal=False,
        factor_types=["password", "totp"], signature_limit=0, now=NEW_YEARS_EVE, policy=rolling,
    )  # fmt: skip
    assert (found[0].period, found[0].label, found[0].others[:2], len(found[0].others)) == (
        "2026-12", "last 12 months", ("2026-11", "2026-10"), 11,
    )  # fmt: skip
    assert found[1].limit == 1_000_000


def test_a_rolling_year_sums_the_last_twelve_months(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """R6: in rolling mode, what was paid eleven months ago still counts; thirteen, not."""
    customer = onboard(client, app, clock)
    rolling = LimitPolicy(year_window="rolling_12_months", class_ii_yearly=1_000)

    def yearly(at: datetime) -> list[Charge]:
        found = charges(
            account_class="II", customer_type="individual", own_card_withdrawal=False,
            factor_types=["signature"], signature_limit=0, now=at, policy=rolling,
        )  # fmt: skip
        return [c for c in found if c.rule == "class_ii_yearly"]

    start = datetime(2026, 1, 15, 4, tzinfo=UTC)
    runtime.db.run(lambda s: consume(s, customer.id, 600, yearly(start)))
    eleven_months_on = yearly(start + timedelta(days=330))
    with pytest.raises(LimitExceeded) as refused:
        runtime.db.run(lambda s: consume(s, customer.id, 401, eleven_months_on))
    assert (refused.value.data["used"], refused.value.data["period"]) == (600, "last 12 months")
    runtime.db.run(lambda s: consume(s, customer.id, 400, eleven_months_on))
    # Thirteen months on, January 2026 has left the window; December's 400 still counts.
    thirteen_months_on = yearly(start + timedelta(days=400))
    with pytest.raises(LimitExceeded):
        runtime.db.run(lambda s: consume(s, customer.id, 601, thirteen_months_on))
    runtime.db.run(lambda s: consume(s, customer.id, 600, thirteen_months_on))
