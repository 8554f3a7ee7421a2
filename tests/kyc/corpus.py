"""A generated screening corpus: a synthetic list, name variants that must match, near misses.

Synthetic names only (Faker): no real person's data. Used by the screening tests and by
``bench/screening.py``, which reports recall, precision and latency on a larger corpus.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker
from pypinyin import lazy_pinyin

from custodia.kyc.screening import ListedEntry


@dataclass(frozen=True, slots=True)
class Query:
    """A name to screen; ``expected`` is the entry it must match (None: must match nothing)."""

    name: str
    date_of_birth: date | None
    nationality: str | None
    expected: int | None
    kind: str


def _pinyin(name: str, rng: random.Random) -> str:
    syllables = lazy_pinyin(name)
    surname, given = syllables[0].capitalize(), "".join(syllables[1:]).capitalize()
    variant = rng.choice(["western", "chinese", "upper", "spaced"])
    if variant == "western":
        return f"{given} {surname}"
    if variant == "upper":
        return f"{surname.upper()} {given}"
    if variant == "spaced":
        return " ".join(s.capitalize() for s in syllables)
    return f"{surname} {given}"


def _typo(name: str, rng: random.Random) -> str:
    words = name.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 5]
    if not long_words:
        return name
    i = rng.choice(long_words)
    word = words[i]
    at = rng.randrange(1, len(word) - 1)
    edit = rng.choice(["swap", "drop", "double", "replace"])
    if edit == "swap":
        word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    elif edit == "drop":
        word = word[:at] + word[at + 1 :]
    elif edit == "double":
        word = word[:at] + word[at] + word[at:]
    else:
        word = word[:at] + rng.choice("aeiouy") + word[at + 1 :]
    words[i] = word
    return " ".join(words)


def _strip_accents(name: str) -> str:
    return "".join(
        ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch)
    )


def _full_width(name: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in name)


def make_corpus(
    entries: int, queries: int, *, seed: int = 7
) -> tuple[list[ListedEntry], list[Query]]:
    """Return ``entries`` listed people and ``queries`` queries (half variants, half misses)."""
    rng = random.Random(seed)
    chinese, western = Faker("zh_CN"), Faker(["en_US", "de_DE", "es_ES", "fr_FR"])
    chinese.seed_instance(seed)
    western.seed_instance(seed)
    listed: list[ListedEntry] = []
    seen: set[str] = set()
    while len(listed) < entries:
        han = rng.random() < 0.5
        name = chinese.name() if han else f"{western.first_name()} {western.last_name()}"
        if name in seen:
            continue
        seen.add(name)
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 60 * 365))
        listed.append(
            ListedEntry(
                id=len(listed) + 1,
                list_id="SYNTHETIC",
                reference=f"S-{len(listed) + 1}",
                name=name,
                aliases=(),
                date_of_birth=born.isoformat() if rng.random() < 0.8 else born.isoformat()[:4],
                nationality="CN" if han else rng.choice(["US", "DE", "ES", "FR"]),
            )
        )
    result: list[Query] = []
    for n in range(queries):
        if n % 2 == 0:
            entry = rng.choice(listed)
            born = date.fromisoformat(
                (entry.date_of_birth or "1970")
                + "-01-01"[: 10 - len(entry.date_of_birth or "1970")]
            )
            han = any("\u4e00" <= ch <= "\u9fff" for ch in entry.name)
            kinds = ["exact", "case_width"] + (
                ["pinyin", "pinyin"] if han else ["reordered", "typo", "accents"]
            )
            kind = rng.choice(kinds)
            name = entry.name
            if kind == "case_width":
                name = _full_width(name.upper()) if not han else name
            elif kind == "pinyin":
                name = _pinyin(name, rng)
            elif kind == "reordered":
                name = " ".join(reversed(name.split()))
            elif kind == "typo":
                name = _typo(name, rng)
            elif kind == "accents":
                name = _strip_accents(name).lower()
            result.append(Query(name, born, entry.nationality, entry.id, kind))
        else:
            han = rng.random() < 0.5
            name = chinese.name() if han else f"{western.first_name()} {western.last_name()}"
            if name in seen:
                continue
            born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 60 * 365))
            result.append(Query(name, born, "CN" if han else "GB", None, "near_miss"))
    return listed, result


@dataclass(frozen=True, slots=True)
class Quality:
    """How well screening did on a corpus."""

    true_positives: int
    false_negatives: int
    false_positives: int

    @property
    def recall(self) -> float:
        """Return the share of listed people found."""
        return self.true_positives / max(self.true_positives + self.false_negatives, 1)

    @property
    def precision(self) -> float:
        """Return the share of alerts that were right."""
        return self.true_positives / max(self.true_positives + self.false_positives, 1)


def measure(index: object, queries: list[Query], threshold: int) -> Quality:
    """Screen every query and count hits and misses."""
    tp = fn = fp = 0
    for q in queries:
        matches = index.screen(  # type: ignore[attr-defined]
            q.name, date_of_birth=q.date_of_birth, nationality=q.nationality, threshold=threshold
        )
        found = {m.entry.id for m in matches}
        if q.expected is None:
            fp += len(found)
        else:
            if q.expected in found:
                tp += 1
            else:
                fn += 1
            fp += len(found - {q.expected})
    return Quality(tp, fn, fp)
