"""Clocks: the manual clock moves only forward, only when told, and only in aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from custodia.core.clock import ManualClock, SystemClock

START = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


def test_manual_clock_refuses_a_naive_start() -> None:
    """A datetime without a time zone is ambiguous, so the clock refuses it."""
    with pytest.raises(ValueError, match="aware datetime"):
        ManualClock(datetime(2026, 11, 22, 4, 0))  # noqa: DTZ001 - naive on purpose


def test_manual_clock_refuses_to_be_set_to_a_naive_instant() -> None:
    """Jumping to a naive datetime is refused and the clock keeps its time."""
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="aware datetime"):
        clock.set(datetime(2026, 12, 1))  # noqa: DTZ001 - naive on purpose

    assert clock.now() == START


def test_manual_clock_refuses_to_go_backwards() -> None:
    """A negative advance raises and leaves the clock where it was."""
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(microseconds=-1))

    assert clock.now() == START


def test_manual_clock_stands_still_until_advanced() -> None:
    """Reading the clock twice gives the same instant."""
    clock = ManualClock(START)

    assert clock.now() == clock.now() == START


def test_manual_clock_advances_by_the_given_delta() -> None:
    """advance returns the new instant, which now() then reports."""
    clock = ManualClock(START)

    moved = clock.advance(timedelta(hours=1, milliseconds=5))

    assert moved == START + timedelta(hours=1, milliseconds=5)
    assert clock.now() == moved
    assert clock.advance(timedelta(0)) == moved


def test_manual_clock_reports_utc_whatever_zone_it_was_given() -> None:
    """A Shanghai start is converted to the same instant in UTC."""
    clock = ManualClock(datetime(2026, 11, 22, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")))

    assert clock.now() == START
    assert clock.now().tzinfo is UTC


def test_manual_clock_set_jumps_to_the_instant_in_utc() -> None:
    """set moves the clock to an aware instant, stored in UTC."""
    clock = ManualClock(START)

    clock.set(datetime(2027, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")))

    assert clock.now() == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_system_clock_tells_the_current_time_in_utc() -> None:
    """The wall clock is aware, in UTC, and current."""
    before = datetime.now(UTC)
    now = SystemClock().now()
    after = datetime.now(UTC)

    assert now.tzinfo is UTC
    assert before <= now <= after
