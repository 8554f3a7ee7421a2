"""Money in integer minor units with an ISO 4217 currency; never a float.

``Money(12345, "CNY")`` is 123.45 CNY. Arithmetic across currencies raises, a float or a
bool amount is a :class:`TypeError`, and :meth:`Money.allocate` splits an amount so that the
parts always add back to the whole (the largest-remainder method).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import iso4217


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


class UnknownCurrency(ValueError):
    """A currency code that ISO 4217 does not define."""


@cache
def minor_unit_exponent(currency: str) -> int:
    """Return the number of minor-unit digits of ``currency`` (2 for CNY, 0 for JPY).

    Raises UnknownCurrency for a code outside ISO 4217 and for the codes that have no minor
    unit defined (precious metals, testing codes).
    """
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise UnknownCurrency(f"{currency!r} is not an ISO 4217 currency code")
    try:
        exponent = iso4217.Currency(currency).exponent
    except ValueError:
        raise UnknownCurrency(f"{currency!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise UnknownCurrency(f"{currency!r} has no minor unit and cannot hold a balance")
    return int(exponent)


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency in its minor units (fen for CNY)."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; True fen is a bug, not an amount.
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError(
                f"Money amount must be an int of minor units, not {type(self.amount).__name__}"
            )
        if not isinstance(self.currency, str):
            raise TypeError("Money currency must be an ISO 4217 code string")
        minor_unit_exponent(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Return nothing of ``currency``."""
        return cls(0, currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def __bool__(self) -> bool:
        return self.amount != 0

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """Render as ``1,234.56 CNY`` (grouped major units, exact minor units, the code)."""
        exponent = minor_unit_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        major, minor = divmod(abs(self.amount), 10**exponent)
        if exponent == 0:
            return f"{sign}{major:,} {self.currency}"
        return f"{sign}{major:,}.{minor:0{exponent}d} {self.currency}"

    def allocate(self, ratios: Sequence[int]) -> list[Money]:
        """Split into parts proportional to ``ratios`` that add back exactly to this amount.

        Each part gets its floor share; the minor units left over go one each to the parts
        with the largest remainders (earlier parts first on ties), so the split is
        deterministic and never off by a fen.
        """
        if not ratios:
            raise ValueError("allocate needs at least one ratio")
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 0 for r in ratios):
            raise TypeError("ratios must be non-negative ints")
        total = sum(ratios)
        if total == 0:
            raise ValueError("ratios must not all be zero")
        sign = -1 if self.amount < 0 else 1
        whole = abs(self.amount)
        shares = [divmod(whole * r, total) for r in ratios]
        parts = [q for q, _ in shares]
        leftover = whole - sum(parts)
        by_remainder = sorted(range(len(ratios)), key=lambda i: (-shares[i][1], i))
        for i in by_remainder[:leftover]:
            parts[i] += 1
        return [Money(sign * p, self.currency) for p in parts]
