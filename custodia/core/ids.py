"""Prefixed, random, time-sortable identifiers such as ``cus_01jd3…``.

An id is a type prefix and a ULID (48-bit millisecond timestamp + 80 random bits from the
operating system's CSPRNG) in lower-case Crockford base32. Ids sort by creation time, which
keeps B-tree inserts local, yet cannot be guessed or enumerated (API.md "Conventions"). The
usual "monotonic" ULID mode is deliberately not used: it makes the next id of the same
millisecond the previous one plus one, which is guessable.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from ulid import PureRandomPolicy, ULIDGenerator

from custodia.core.clock import Clock, SystemClock


class IdPrefix(StrEnum):
    """The type prefixes of API.md; the prefix tells what an id names."""

    CUSTOMER = "cus"
    ACCOUNT = "acc"
    TRANSACTION = "txn"
    AGREEMENT = "agr"
    CONSENT = "con"
    BANK_CARD = "card"
    ALERT = "alr"
    MERCHANT = "mer"
    EVENT = "evt"
    REQUEST = "req"
    STAFF = "stf"
    CLIENT = "cli"
    PARTY = "pty"
    VERIFICATION = "ver"
    SCREENING_HIT = "hit"
    RISK_WARNING = "rwn"
    SIGNING_KEY = "key"
    CASE = "case"
    NOTE = "note"
    AML_ACTION = "act"
    HOLD = "hld"
    REPORT = "rpt"


# 26 Crockford characters encode 130 bits; a ULID has 128, so the first is 0-7.
_ULID_RE = r"[0-7][0-9a-hjkmnp-tv-z]{25}"
_ID_RE = re.compile(rf"(?P<prefix>[a-z]+)_(?P<ulid>{_ULID_RE})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class IdGenerator:
    """Makes new ids; the clock is injected so that tests can pin the time part."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._generator = ULIDGenerator(policy=PureRandomPolicy())

    def new(self, prefix: IdPrefix) -> str:
        """Return a fresh id with ``prefix``."""
        # Whole milliseconds by integer arithmetic: float timestamps round some instants
        # down by one millisecond, which would misorder ids made 1 ms apart.
        millis = (self._clock.now() - _EPOCH) // _MILLISECOND
        ulid = self._generator.generate(millis)
        return f"{prefix.value}_{str(ulid).lower()}"


def is_valid_id(value: str, prefix: IdPrefix) -> bool:
    """Return whether ``value`` is a well-formed id of the type ``prefix`` names."""
    match = _ID_RE.fullmatch(value)
    return match is not None and match["prefix"] == prefix.value
