"""Money: integer minor units, ISO 4217 currencies, exact formatting and exact splits."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from custodia.core.money import CurrencyMismatch, Money, UnknownCurrency, minor_unit_exponent

# ----------------------------------------------------------------------------- construction


def test_amount_is_kept_in_integer_minor_units() -> None:
    """Money(12345, "CNY") holds 12345 fen, which is 123.45 yuan."""
    money = Money(12345, "CNY")

    assert money.amount == 12345
    assert type(money.amount) is int
    assert money.currency == "CNY"
    assert money.format() == "123.45 CNY"


@pytest.mark.parametrize("amount", [1.0, 0.1, 100.0, float("nan"), Decimal("1.00"), "100", None])
def test_non_integer_amount_is_a_type_error(amount: object) -> None:
    """Floats, decimals, strings and None are not amounts of minor units."""
    with pytest.raises(TypeError, match="int of minor units"):
        Money(amount, "CNY")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [True, False])
def test_bool_amount_is_a_type_error(amount: bool) -> None:
    """A bool is an int subclass, but True fen is a bug, not an amount."""
    with pytest.raises(TypeError, match="bool"):
        Money(amount, "CNY")


@pytest.mark.parametrize("currency", [None, 156, b"CNY"])
def test_non_string_currency_is_a_type_error(currency: object) -> None:
    """The currency must be given as its ISO 4217 code string."""
    with pytest.raises(TypeError, match="ISO 4217"):
        Money(100, currency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "currency",
    [
        "ABC",  # not a code at all
        "cny",  # lower case
        "Cny",  # mixed case
        "CN",  # too short
        "CNYY",  # too long
        "",  # empty
        " CNY",  # padded
        "\uff23\uff2e\uff39",  # full-width CNY
    ],
)
def test_invalid_currency_code_is_refused(currency: str) -> None:
    """Anything but an upper-case ISO 4217 code raises UnknownCurrency."""
    with pytest.raises(UnknownCurrency, match="not an ISO 4217 currency code"):
        Money(100, currency)


@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "XAG", "XDR"])
def test_code_without_minor_unit_is_refused(currency: str) -> None:
    """ISO codes with no minor unit (no currency, testing, metals, SDR) cannot hold a balance."""
    with pytest.raises(UnknownCurrency, match="no minor unit"):
        Money(100, currency)


def test_unknown_currency_is_a_value_error() -> None:
    """Callers that catch ValueError also catch a bad currency code."""
    assert issubclass(UnknownCurrency, ValueError)
    assert issubclass(CurrencyMismatch, ValueError)


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("CNY", 2), ("USD", 2), ("HKD", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)],
)
def test_minor_unit_exponent_follows_iso_4217(currency: str, exponent: int) -> None:
    """The number of minor-unit digits is ISO 4217's (2 for CNY, 0 for JPY, 3 for KWD)."""
    assert minor_unit_exponent(currency) == exponent


def test_money_is_immutable() -> None:
    """An amount cannot be changed in place; arithmetic returns new values."""
    money = Money(100, "CNY")

    with pytest.raises(dataclasses.FrozenInstanceError):
        money.amount = 200  # type: ignore[misc]


def test_equal_amounts_are_interchangeable_as_keys() -> None:
    """Equal money values are equal and hash alike."""
    assert Money(100, "CNY") == Money(100, "CNY")
    assert len({Money(100, "CNY"), Money(100, "CNY"), Money(101, "CNY")}) == 2


def test_zero_is_falsy_and_any_other_amount_truthy() -> None:
    """Money.zero is nothing of a currency; only zero is falsy."""
    assert Money.zero("JPY") == Money(0, "JPY")
    assert not Money.zero("CNY")
    assert Money(1, "CNY")
    assert Money(-1, "CNY")


# ----------------------------------------------------------------------------- arithmetic


def test_same_currency_amounts_add_and_subtract() -> None:
    """Addition, subtraction and negation stay in minor units and in the currency."""
    a, b = Money(1050, "CNY"), Money(-75, "CNY")

    assert a + b == Money(975, "CNY")
    assert a - b == Money(1125, "CNY")
    assert -a == Money(-1050, "CNY")
    assert b - a == Money(-1125, "CNY")


def test_same_currency_amounts_compare_by_amount() -> None:
    """Ordering of one currency follows the amounts."""
    small, large = Money(99, "CNY"), Money(100, "CNY")

    assert small < large
    assert small <= large
    assert small <= Money(99, "CNY")
    assert large > small
    assert large >= small
    assert large >= Money(100, "CNY")
    assert not large < small
    assert not small > large


@pytest.mark.parametrize(
    "op",
    [operator.add, operator.sub, operator.lt, operator.le, operator.gt, operator.ge],
    ids=["+", "-", "<", "<=", ">", ">="],
)
def test_mixing_currencies_raises_currency_mismatch(op: Callable[[Money, Money], object]) -> None:
    """Yuan and dollars never combine or compare, whatever the operator."""
    with pytest.raises(CurrencyMismatch, match="CNY with USD"):
        op(Money(100, "CNY"), Money(100, "USD"))


def test_same_amount_in_another_currency_is_not_equal() -> None:
    """100 fen is not 100 cents."""
    assert Money(100, "CNY") != Money(100, "USD")


@pytest.mark.parametrize(
    "op", [operator.add, operator.sub, operator.lt, operator.ge], ids=["+", "-", "<", ">="]
)
@pytest.mark.parametrize("other", [100, 1.0, Decimal(1)])
def test_combining_with_a_bare_number_is_a_type_error(
    op: Callable[[Money, object], object], other: object
) -> None:
    """A bare number has no currency, so it cannot be added to or compared with money."""
    with pytest.raises(TypeError, match="cannot combine Money"):
        op(Money(100, "CNY"), other)


# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (123456, "CNY", "1,234.56 CNY"),
        (-123456, "CNY", "-1,234.56 CNY"),
        (0, "CNY", "0.00 CNY"),
        (7, "CNY", "0.07 CNY"),
        (-5, "CNY", "-0.05 CNY"),
        (100, "CNY", "1.00 CNY"),
        (99, "USD", "0.99 USD"),
        (100_000_000_000, "CNY", "1,000,000,000.00 CNY"),
        (1234567, "JPY", "1,234,567 JPY"),
        (-1000, "JPY", "-1,000 JPY"),
        (5, "JPY", "5 JPY"),
        (1234567, "KWD", "1,234.567 KWD"),
        (-1, "BHD", "-0.001 BHD"),
        (1050, "BHD", "1.050 BHD"),
    ],
)
def test_format_groups_major_units_and_shows_exact_minor_units(
    amount: int, currency: str, text: str
) -> None:
    """Rendering uses the currency's own number of decimals, a leading minus and the code."""
    money = Money(amount, currency)

    assert money.format() == text
    assert str(money) == text


# ----------------------------------------------------------------------------- allocation


def _amounts(parts: list[Money]) -> list[int]:
    return [part.amount for part in parts]


@pytest.mark.parametrize(
    ("amount", "ratios", "expected"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (1, [1, 1, 1], [1, 0, 0]),
        (2, [1, 1, 1], [1, 1, 0]),
        (100, [1, 2], [33, 67]),  # 33.33 / 66.67: the larger remainder gets the fen
        (10, [3, 7], [3, 7]),
        (5, [0, 1, 0, 1], [0, 3, 0, 2]),
        (100, [0, 1], [0, 100]),
        (0, [1, 2, 3], [0, 0, 0]),
        (1234, [7], [1234]),
        (-7, [1, 1], [-4, -3]),
    ],
)
def test_allocate_splits_by_largest_remainder(
    amount: int, ratios: list[int], expected: list[int]
) -> None:
    """Parts get their floor share; left-over fen go to the largest remainders, earliest first."""
    parts = Money(amount, "CNY").allocate(ratios)

    assert _amounts(parts) == expected
    assert all(part.currency == "CNY" for part in parts)


def test_allocate_keeps_the_currency() -> None:
    """The parts of a yen amount are yen."""
    parts = Money(1000, "JPY").allocate([1, 1, 1])

    assert parts == [Money(334, "JPY"), Money(333, "JPY"), Money(333, "JPY")]


def test_allocate_needs_at_least_one_ratio() -> None:
    """An empty ratio list has nothing to split into."""
    with pytest.raises(ValueError, match="at least one ratio"):
        Money(100, "CNY").allocate([])


def test_allocate_refuses_all_zero_ratios() -> None:
    """All-zero ratios would leave the whole amount unallocated."""
    with pytest.raises(ValueError, match="not all be zero"):
        Money(100, "CNY").allocate([0, 0, 0])


@pytest.mark.parametrize(
    "ratios", [[1, -1], [-1], [0.5, 0.5], [1.0], [Decimal(1)], [True, 1], ["1"]]
)
def test_allocate_refuses_negative_float_and_bool_ratios(ratios: list[object]) -> None:
    """Ratios are non-negative ints; anything else could silently skew the split."""
    with pytest.raises(TypeError, match="non-negative ints"):
        Money(100, "CNY").allocate(ratios)  # type: ignore[arg-type]


@given(
    amount=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(["CNY", "JPY", "KWD"]),
    ratios=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20),
)
def test_allocate_always_adds_back_to_the_whole(
    amount: int, currency: str, ratios: list[int]
) -> None:
    """For any amount and ratios, the parts sum exactly to the whole and each is within a fen."""
    assume(sum(ratios) > 0)
    whole = Money(amount, currency)

    parts = whole.allocate(ratios)

    assert len(parts) == len(ratios)
    assert all(part.currency == currency for part in parts)
    assert sum(_amounts(parts)) == amount
    total = sum(ratios)
    for part, ratio in zip(parts, ratios, strict=True):
        # |part - amount * ratio / total| < 1, in integers.
        assert abs(part.amount * total - amount * ratio) < total
        if ratio == 0:
            assert part.amount == 0
        # A part never has the opposite sign of the whole.
        assert part.amount * amount >= 0
