"""Prefixed ULID ids: format, validation, time order, and unguessable same-millisecond ids."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from custodia.core.clock import ManualClock
from custodia.core.ids import IdGenerator, IdPrefix, is_valid_id

START = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Written out independently of the module: prefix, "_", 26 lower-case Crockford characters.
CUSTOMER_ID = re.compile(r"cus_[0-9abcdefghjkmnpqrstvwxyz]{26}")


def _decode(chars: str) -> int:
    value = 0
    for char in chars:
        value = value * 32 + CROCKFORD.index(char)
    return value


def _ulid(identifier: str) -> str:
    return identifier.partition("_")[2]


def _milliseconds(identifier: str) -> int:
    """The 48-bit timestamp: the first 10 characters of the ULID."""
    return _decode(_ulid(identifier)[:10])


def _random_part(identifier: str) -> int:
    """The 80 random bits: the last 16 characters of the ULID."""
    return _decode(_ulid(identifier)[10:])


def _ms_since_epoch(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(milliseconds=1)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock(START)


# ----------------------------------------------------------------------------- format


def test_id_is_prefix_and_26_lower_case_crockford_characters(clock: ManualClock) -> None:
    """A customer id is ``cus_`` followed by a 26-character lower-case Crockford ULID."""
    identifier = IdGenerator(clock).new(IdPrefix.CUSTOMER)

    assert CUSTOMER_ID.fullmatch(identifier), identifier
    assert len(identifier) == 30
    assert identifier == identifier.lower()


@pytest.mark.parametrize("prefix", list(IdPrefix))
def test_every_prefix_makes_ids_valid_for_that_prefix(clock: ManualClock, prefix: IdPrefix) -> None:
    """Ids of each type start with their prefix and validate against it."""
    identifier = IdGenerator(clock).new(prefix)

    assert identifier.startswith(f"{prefix.value}_")
    assert is_valid_id(identifier, prefix)


@pytest.mark.parametrize(
    "instant",
    [
        START,
        START + timedelta(milliseconds=1234, microseconds=999),
        # Instants whose float POSIX timestamp times 1000 falls just below the integer
        # (...987.9998), so float arithmetic would stamp them with the previous millisecond.
        datetime(2004, 11, 2, 22, 26, 35, 988000, tzinfo=UTC),
        datetime(2038, 2, 21, 21, 12, 48, 319000, tzinfo=UTC),
    ],
    ids=str,
)
def test_id_carries_the_clock_time_in_milliseconds(instant: datetime) -> None:
    """The time part is exactly the injected clock's instant, truncated to the millisecond."""
    identifier = IdGenerator(ManualClock(instant)).new(IdPrefix.ACCOUNT)

    assert _milliseconds(identifier) == _ms_since_epoch(instant)


def test_generator_defaults_to_the_system_clock() -> None:
    """Without a clock the id carries the current wall-clock time."""
    before = _ms_since_epoch(datetime.now(UTC))
    identifier = IdGenerator().new(IdPrefix.EVENT)
    after = _ms_since_epoch(datetime.now(UTC))

    assert before <= _milliseconds(identifier) <= after


# ----------------------------------------------------------------------------- validation


def test_is_valid_id_checks_the_prefix(clock: ManualClock) -> None:
    """An account id is not a valid customer id, even though it is well formed."""
    identifier = IdGenerator(clock).new(IdPrefix.ACCOUNT)

    assert is_valid_id(identifier, IdPrefix.ACCOUNT)
    assert not is_valid_id(identifier, IdPrefix.CUSTOMER)


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda v: v.upper(), id="upper-case"),
        pytest.param(lambda v: v.replace("_", ""), id="no-underscore"),
        pytest.param(lambda v: v.replace("_", "-"), id="hyphen"),
        pytest.param(lambda v: v[:-1], id="25-chars"),
        pytest.param(lambda v: v + "0", id="27-chars"),
        pytest.param(lambda v: v[:-1] + "i", id="letter-i"),
        pytest.param(lambda v: v[:-1] + "l", id="letter-l"),
        pytest.param(lambda v: v[:-1] + "o", id="letter-o"),
        pytest.param(lambda v: v[:-1] + "u", id="letter-u"),
        pytest.param(lambda v: " " + v, id="leading-space"),
        pytest.param(lambda v: v + " ", id="trailing-space"),
        pytest.param(lambda v: v + "\n", id="trailing-newline"),
        pytest.param(lambda v: "cus_cus_" + _ulid(v), id="double-prefix"),
        pytest.param(lambda _: "", id="empty"),
        pytest.param(lambda _: "cus_", id="prefix-only"),
    ],
)
def test_is_valid_id_refuses_malformed_ids(
    clock: ManualClock, transform: Callable[[str], str]
) -> None:
    """Case, length, alphabet, separators and surrounding whitespace are all checked."""
    identifier = IdGenerator(clock).new(IdPrefix.CUSTOMER)

    malformed = transform(identifier)

    assert malformed != identifier
    assert not is_valid_id(malformed, IdPrefix.CUSTOMER)


@pytest.mark.parametrize("first", ["8", "9", "z"])
def test_is_valid_id_refuses_a_ulid_beyond_128_bits(first: str) -> None:
    """The largest ULID is 7zzzzzzzzzzzzzzzzzzzzzzzzz; a higher first character overflows."""
    assert is_valid_id("cus_7" + "z" * 25, IdPrefix.CUSTOMER)
    assert not is_valid_id(f"cus_{first}" + "z" * 25, IdPrefix.CUSTOMER)


# ----------------------------------------------------------------------------- order and chance


def test_ids_sort_by_creation_time_across_milliseconds(clock: ManualClock) -> None:
    """Ids made in later milliseconds sort after earlier ones, as strings."""
    generator = IdGenerator(clock)
    made = []
    for step in range(300):
        made.append(generator.new(IdPrefix.TRANSACTION))
        # Mostly 1 ms apart, now and then minutes or hours apart.
        clock.advance(timedelta(milliseconds=1) if step % 3 else timedelta(minutes=step + 1))

    assert sorted(made) == made
    assert len({_milliseconds(i) for i in made}) == len(made)


def test_ids_one_millisecond_apart_sort_in_order_after_2038() -> None:
    """Order holds for every millisecond, including those float timestamps get wrong."""
    start = datetime(2038, 2, 21, 21, 12, 48, 318000, tzinfo=UTC)
    clock = ManualClock(start)
    generator = IdGenerator(clock)
    made = []
    for _ in range(5):
        made.append(generator.new(IdPrefix.TRANSACTION))
        clock.advance(timedelta(milliseconds=1))

    first = _ms_since_epoch(start)
    assert [_milliseconds(i) for i in made] == list(range(first, first + 5))
    assert sorted(made) == made


def test_ids_of_the_same_millisecond_are_not_sequential(clock: ManualClock) -> None:
    """Within one millisecond the random parts are independent, never previous + 1.

    Monotonic ULIDs would make the next id guessable from the last one, so the generator
    uses fresh randomness for every id.
    """
    generator = IdGenerator(clock)

    made = [generator.new(IdPrefix.CUSTOMER) for _ in range(200)]

    assert {_milliseconds(i) for i in made} == {_ms_since_epoch(START)}
    randoms = [_random_part(i) for i in made]
    gaps = [later - earlier for earlier, later in itertools.pairwise(randoms)]
    assert all(abs(gap) > 1 for gap in gaps), gaps
    # Pure randomness goes down as often as up; a monotonic generator never goes down.
    assert any(gap < 0 for gap in gaps)
    assert made != sorted(made)


def test_ten_thousand_ids_are_unique(clock: ManualClock) -> None:
    """Even all within one millisecond, 10,000 ids never collide."""
    generator = IdGenerator(clock)

    made = {generator.new(IdPrefix.CUSTOMER) for _ in range(10_000)}

    assert len(made) == 10_000
    assert all(CUSTOMER_ID.fullmatch(i) for i in made)
