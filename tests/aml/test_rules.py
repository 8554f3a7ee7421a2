"""One scenario per rule that fires it, and a near miss that does not (issue 7 item 2)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from custodia.aml.rules import RULES
from custodia.core.clock import ManualClock
from tests.aml.conftest import CNY, Feed

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


# ----------------------------------------------------------------------------- large value


def test_large_value_fires_when_a_days_outflows_reach_the_individual_threshold(
    feed: Feed,
) -> None:
    """L1: 300,000 + 200,000 CNY out in one day reach the 500,000 CNY threshold."""
    customer = feed.customer()
    assert feed.move(customer, 300_000 * CNY, rule="large_value") == []
    raised = feed.move(customer, 200_000 * CNY, rule="large_value")
    assert len(raised) == 1
    [alert] = feed.alerts(customer)
    assert alert.rule == "large_value"
    assert alert.details["total"] == 500_000 * CNY
    assert alert.details["category"] == "domestic"
    assert alert.params["individual_domestic"] == 500_000 * CNY
    assert len(feed.transactions(alert.id)) == 2


def test_large_value_near_miss_one_fen_under_the_threshold(feed: Feed) -> None:
    """L1: 499,999.99 CNY in a day raises nothing."""
    customer = feed.customer()
    feed.move(customer, 300_000 * CNY, rule="large_value")
    assert feed.move(customer, 200_000 * CNY - 1, rule="large_value") == []


def test_large_value_counts_inflows_and_outflows_separately(feed: Feed) -> None:
    """L1: 300,000 out and 200,000 in the same day are two totals under the threshold."""
    customer = feed.customer()
    feed.move(customer, 300_000 * CNY, rule="large_value", direction="out")
    assert feed.move(customer, 200_000 * CNY, rule="large_value", direction="in") == []


def test_large_value_days_are_the_institutions_calendar_days(
    feed: Feed, clock: ManualClock
) -> None:
    """L1: a movement before local midnight does not count towards the next day."""
    customer = feed.customer()
    start = clock.now()  # 12:00 Asia/Shanghai
    feed.move(customer, 300_000 * CNY, rule="large_value", at=start + timedelta(hours=11))
    after_midnight = start + timedelta(hours=12, minutes=1)
    assert feed.move(customer, 300_000 * CNY, rule="large_value", at=after_midnight) == []


@pytest.mark.parametrize(
    ("kind", "cross_border", "threshold"),
    [
        ("individual", True, 200_000 * CNY),
        ("corporate", False, 2_000_000 * CNY),
    ],
)
def test_large_value_thresholds_by_customer_kind_and_border(
    feed: Feed, kind: str, cross_border: bool, threshold: int
) -> None:
    """L1: cross-border individuals at 200,000 CNY, non-natural persons at 2,000,000 CNY."""
    customer = feed.customer(kind=kind)
    assert feed.move(customer, threshold - 1, rule="large_value", cross_border=cross_border) == []
    assert len(feed.move(customer, 1, rule="large_value", cross_border=cross_border)) == 1


def test_large_value_cash_threshold(feed: Feed) -> None:
    """L1: cash movements reach their own 50,000 CNY threshold."""
    customer = feed.customer()
    assert feed.move(customer, 49_999 * CNY, rule="large_value", channel="cash") == []
    assert len(feed.move(customer, 1 * CNY, rule="large_value", channel="cash")) == 1


def test_repeated_large_value_findings_fold_into_one_alert(feed: Feed) -> None:
    """A third large movement the same day adds its transaction to the unclosed alert."""
    customer = feed.customer()
    for _ in range(3):
        feed.move(customer, 300_000 * CNY, rule="large_value")
    [alert] = feed.alerts(customer)
    assert len(feed.transactions(alert.id)) == 3
    assert alert.details["total"] == 900_000 * CNY


# ----------------------------------------------------------------------------- structuring


def test_structuring_fires_on_three_amounts_just_under_the_threshold(feed: Feed) -> None:
    """L2: three amounts within 10 % under 50,000 CNY inside 24 hours."""
    customer = feed.customer()
    for amount in (49_000, 48_500):
        assert feed.move(customer, amount * CNY, rule="structuring") == []
    assert len(feed.move(customer, 46_000 * CNY, rule="structuring")) == 1
    [alert] = feed.alerts(customer)
    assert alert.details["count"] == 3


def test_structuring_near_miss_outside_the_window_or_band(feed: Feed, clock: ManualClock) -> None:
    """L2: one of three 25 hours earlier, or just below the band, raises nothing."""
    customer = feed.customer()
    feed.move(customer, 49_000 * CNY, rule="structuring", at=clock.now() - 25 * HOUR)
    feed.move(customer, 48_000 * CNY, rule="structuring")
    feed.move(customer, 44_999 * CNY, rule="structuring")  # under the 45,000 band floor
    assert feed.move(customer, 49_999 * CNY, rule="structuring") == []
    assert feed.move(customer, 50_000 * CNY, rule="structuring") == []  # at the threshold


# ------------------------------------------------------------------------- fan-in, fan-out


def test_fan_in_fires_on_ten_distinct_payers_in_a_day(feed: Feed) -> None:
    """L2: money collected from ten sources within 24 hours."""
    customer = feed.customer()
    for n in range(9):
        assert (
            feed.move(
                customer,
                1_200 * CNY,
                rule="fan_in_fan_out",
                direction="in",
                counterparty=f"cus_payer{n}",
            )
            == []
        )
    raised = feed.move(
        customer, 1_200 * CNY, rule="fan_in_fan_out", direction="in", counterparty="cus_payer9"
    )
    assert len(raised) == 1
    [alert] = feed.alerts(customer)
    assert alert.pattern == "fan_in"
    assert alert.details["counterparties"] == 10


def test_fan_out_near_miss_repeated_payees_are_not_distinct(feed: Feed) -> None:
    """L2: twelve payments to nine payees are nine counterparties, not ten."""
    customer = feed.customer()
    for n in range(12):
        assert (
            feed.move(customer, 1_200 * CNY, rule="fan_in_fan_out", counterparty=f"cus_p{n % 9}")
            == []
        )


# ----------------------------------------------------------------------- rapid pass-through


def test_rapid_pass_through_fires_when_most_of_an_inflow_leaves(
    feed: Feed, clock: ManualClock
) -> None:
    """L2: 20,000 CNY in, 16,000 CNY (80 %) out within hours."""
    customer = feed.customer()
    feed.move(customer, 20_000 * CNY, rule="rapid_pass_through", direction="in")
    clock.advance(3 * HOUR)
    raised = feed.move(customer, 16_000 * CNY, rule="rapid_pass_through", counterparty="cus_x")
    assert len(raised) == 1
    [alert] = feed.alerts(customer)
    assert alert.details["out_pct"] == 80
    assert len(feed.transactions(alert.id)) == 2


def test_rapid_pass_through_near_miss_less_out_or_later(feed: Feed, clock: ManualClock) -> None:
    """L2: 79 % out within the window, or the rest only after 24 hours, raises nothing."""
    customer = feed.customer()
    feed.move(customer, 20_000 * CNY, rule="rapid_pass_through", direction="in")
    assert feed.move(customer, 15_800 * CNY, rule="rapid_pass_through") == []
    clock.advance(25 * HOUR)
    assert feed.move(customer, 4_000 * CNY, rule="rapid_pass_through") == []


# --------------------------------------------------------------------------------- velocity


def _baseline(feed: Feed, customer: str, clock: ManualClock, *, per_day: int) -> None:
    for day in range(2, 30):
        for n in range(per_day):
            at = clock.now() - day * DAY + n * HOUR
            feed.move(customer, 100 * CNY, rule="velocity", at=at)


def test_velocity_fires_far_above_the_customers_baseline(feed: Feed, clock: ManualClock) -> None:
    """K2: ten payments in a day from a customer who makes one a day."""
    customer = feed.customer()
    _baseline(feed, customer, clock, per_day=1)
    for n in range(9):
        assert feed.move(customer, 100 * CNY, rule="velocity", at=clock.now() + n * HOUR) == []
    assert len(feed.move(customer, 100 * CNY, rule="velocity", at=clock.now() + 9 * HOUR)) == 1
    [alert] = feed.alerts(customer)
    assert alert.details["by"] == ["count"]


def test_velocity_near_miss_for_a_customer_whose_baseline_is_high(
    feed: Feed, clock: ManualClock
) -> None:
    """K2: twelve payments in a day are usual for a customer who makes three a day."""
    customer = feed.customer()
    _baseline(feed, customer, clock, per_day=3)
    for n in range(12):
        assert feed.move(customer, 100 * CNY, rule="velocity", at=clock.now() + n * HOUR) == []


# ---------------------------------------------------------------------------------- dormant


def test_dormant_account_suddenly_active_fires(feed: Feed, clock: ManualClock) -> None:
    """L2: 5,000 CNY after 181 silent days."""
    customer = feed.customer()
    feed.move(customer, 100 * CNY, rule="dormant_reactivated", at=clock.now() - 181 * DAY)
    assert len(feed.move(customer, 5_000 * CNY, rule="dormant_reactivated")) == 1


def test_dormant_near_miss_shorter_silence_smaller_amount_or_first_movement(
    feed: Feed, clock: ManualClock
) -> None:
    """L2: 179 silent days, 4,999.99 CNY, or a customer's first movement raise nothing."""
    customer = feed.customer()
    assert feed.move(customer, 9_000 * CNY, rule="dormant_reactivated") == []  # the first
    clock.advance(200 * DAY)
    assert feed.move(customer, 5_000 * CNY - 1, rule="dormant_reactivated") == []
    clock.advance(179 * DAY)
    assert feed.move(customer, 9_000 * CNY, rule="dormant_reactivated") == []


# --------------------------------------------------------------------------- round amounts


def test_round_amounts_fire_on_three_in_three_days(feed: Feed, clock: ManualClock) -> None:
    """L2: 10,000, 20,000 and 30,000 CNY within 72 hours."""
    customer = feed.customer()
    feed.move(customer, 10_000 * CNY, rule="round_amounts", at=clock.now() - 48 * HOUR)
    feed.move(customer, 20_000 * CNY, rule="round_amounts", at=clock.now() - 24 * HOUR)
    assert len(feed.move(customer, 30_000 * CNY, rule="round_amounts")) == 1


def test_round_amounts_near_miss_one_not_round(feed: Feed) -> None:
    """L2: 10,000.01 CNY is not round: two round amounts raise nothing."""
    customer = feed.customer()
    feed.move(customer, 10_000 * CNY, rule="round_amounts")
    feed.move(customer, 10_000 * CNY + 1, rule="round_amounts")
    assert feed.move(customer, 20_000 * CNY, rule="round_amounts") == []


# --------------------------------------------------------------------------- unusual hours


def _daytime_history(feed: Feed, customer: str, clock: ManualClock) -> None:
    for day in range(1, 21):  # START is 12:00 in Asia/Shanghai
        feed.move(customer, 100 * CNY, rule="unusual_hours", at=clock.now() - day * DAY)


def test_unusual_hours_fires_at_night_for_a_daytime_customer(
    feed: Feed, clock: ManualClock
) -> None:
    """L2: 03:00 local for a customer whose twenty movements were all at noon."""
    customer = feed.customer()
    _daytime_history(feed, customer, clock)
    night = clock.now() + 15 * HOUR  # 03:00 the next day, Asia/Shanghai
    assert len(feed.move(customer, 5_000 * CNY, rule="unusual_hours", at=night)) == 1
    [alert] = feed.alerts(customer)
    assert alert.details["hour"] == 3


def test_unusual_hours_near_miss_usual_hour_or_short_history(
    feed: Feed, clock: ManualClock
) -> None:
    """L2: 13:00 is near the customer's usual noon; a short history proves nothing."""
    customer = feed.customer()
    _daytime_history(feed, customer, clock)
    assert feed.move(customer, 5_000 * CNY, rule="unusual_hours", at=clock.now() + HOUR) == []
    newcomer = feed.customer()
    feed.move(newcomer, 100 * CNY, rule="unusual_hours", at=clock.now() - DAY)
    night = clock.now() + 15 * HOUR
    assert feed.move(newcomer, 5_000 * CNY, rule="unusual_hours", at=night) == []


# ------------------------------------------------------------------------------- watchlist


def test_watchlist_fires_for_a_listed_counterparty(feed: Feed) -> None:
    """L3: paying a customer whose screening found a potential match."""
    customer = feed.customer()
    listed = feed.customer(screening_status="potential_match")
    assert len(feed.move(customer, 100 * CNY, rule="watchlist", counterparty=listed)) == 1
    [alert] = feed.alerts(customer)
    assert alert.pattern == f"counterparty:{listed}"
    assert alert.score == 70


def test_watchlist_near_miss_clear_parties_or_potential_matches_switched_off(
    feed: Feed,
) -> None:
    """L3: clear parties raise nothing; nor potential matches once a lead excludes them."""
    customer = feed.customer()
    clear = feed.customer()
    assert feed.move(customer, 100 * CNY, rule="watchlist", counterparty=clear) == []
    feed.set_params("watchlist", include_potential=False)
    listed = feed.customer(screening_status="potential_match")
    assert feed.move(customer, 100 * CNY, rule="watchlist", counterparty=listed) == []


# ------------------------------------------------------------------------------- high risk


def test_high_risk_customer_moving_large_amounts_fires(feed: Feed) -> None:
    """K1, K2: a high-risk customer moves 50,000 CNY in a day."""
    customer = feed.customer(risk_level="high")
    feed.move(customer, 30_000 * CNY, rule="high_risk_large")
    assert len(feed.move(customer, 20_000 * CNY, rule="high_risk_large")) == 1


def test_high_risk_near_miss_lower_risk_or_amount(feed: Feed) -> None:
    """K1, K2: a medium-risk customer, or 49,999.99 CNY, raises nothing."""
    medium = feed.customer(risk_level="medium")
    assert feed.move(medium, 60_000 * CNY, rule="high_risk_large") == []
    high = feed.customer(risk_level="high")
    assert feed.move(high, 50_000 * CNY - 1, rule="high_risk_large") == []


def test_every_rule_has_a_scenario_here() -> None:
    """The catalogue and this file move together: a new rule needs its scenarios."""
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [key for key in RULES if f'rule="{key}"' not in source]
    assert missing == []
