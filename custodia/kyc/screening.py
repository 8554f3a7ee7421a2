"""Watchlist screening: names matched across scripts, spellings, order and typos (REGULATION.md L3).

Normalising
    A name becomes tokens: NFKC (full-width letters become plain), case-folded, accents
    removed, punctuation dropped; Han characters become their pinyin (pypinyin), one token
    per character. Two keys are compared: the tokens sorted and joined with spaces
    (``Wei ZHANG`` and ``Zhang Wei`` alike) and the tokens run together in their written
    order (``Zhangwei``). So ``Zhang Wei``, ``ZHANG Wei``, ``Zhangwei`` and ``张伟`` all meet.

Scoring
    The name score is the best rapidfuzz ratio (0–100) between the query's keys and a
    listed name's or alias's keys. When both sides are written in Han characters and the
    characters differ, a pinyin match is a homophone, not the same name: it loses 20
    points unless the characters themselves score higher. A known date of birth that agrees
    with the entry adds 5 (2 when the entry gives only a year or month), one that
    contradicts it takes 25; a nationality adds 3 or takes 10. The additions are small on
    purpose: they tip a close name over, never a different one; a contradiction is strong
    evidence of another person. A match is a score at or above the threshold
    (``CUSTODIA_SCREENING_THRESHOLD``, 85 by default).

Speed
    Scanning every listed key costs ~13 ms per key for 50,000 names on this machine, so the
    index first finds candidates: postings from each token (and each name's run-together
    key) to the names holding it, reached exactly or through a one-character deletion
    (so one typo, insertion or swap per token still meets). A name with up to two tokens
    must meet a candidate on all of them, a longer one on all but one. Only candidates are
    scored (``bench/onboarding.py`` measures the result).
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import msgspec
from rapidfuzz import fuzz, process

# Names are read one Han character at a time, so pypinyin's phrase dictionary (readings of
# words in context) is never consulted; loading it, and the copies pypinyin makes of its
# dictionaries, cost every server process ~45 MiB of resident memory. These are pypinyin's
# own switches, read when it is first imported; every character's reading is the same
# without them (tests/kyc/test_screening.py::test_han_names_are_read_without_the_phrase_dictionary).
os.environ.setdefault("PYPINYIN_NO_PHRASES", "1")
os.environ.setdefault("PYPINYIN_NO_DICT_COPY", "1")

from pypinyin import lazy_pinyin  # after its switches, above

from custodia.kyc.errors import InvalidWatchlist

#: A small synthetic list for development (invented names only: no real person's data).
SAMPLE_LIST = Path(__file__).parent / "data" / "sample_watchlist.jsonl"

DOB_AGREES = 5  # the full date agrees; a year (or year and month) alone adds DOB_PARTIAL
DOB_PARTIAL = 2
DOB_CONTRADICTS = -25
NATIONALITY_AGREES = 3
NATIONALITY_CONTRADICTS = -10
HOMOPHONE_PENALTY = 20


def _is_han(ch: str) -> bool:
    return (
        "\u3400" <= ch <= "\u9fff"
        or "\uf900" <= ch <= "\ufaff"
        or "\U00020000" <= ch <= "\U0002ffff"
    )


@dataclass(frozen=True, slots=True)
class NameKeys:
    """The comparable forms of one name."""

    sorted_key: str
    compact_key: str
    han: str  # the Han characters alone ("" if none)
    #: For a Han name, its pinyin with the family name last, run together: the Western
    #: order people write Chinese names in ("Guiying Tang" for 汤桂英).
    given_first_key: str = ""


def name_keys(name: str) -> NameKeys:
    """Return the keys a name is compared by (see the module docstring)."""
    text = unicodedata.normalize("NFKC", name).casefold()
    tokens: list[str] = []
    han: list[str] = []
    word: list[str] = []

    def flush() -> None:
        if word:
            tokens.append("".join(word))
            word.clear()

    for ch in text:
        if _is_han(ch):
            flush()
            han.append(ch)
            tokens.extend(lazy_pinyin(ch))
            continue
        for part in unicodedata.normalize("NFKD", ch):
            if unicodedata.combining(part):
                continue
            if part.isalnum():
                word.append(part)
            else:
                flush()
    flush()
    given_first = "".join(tokens[1:] + tokens[:1]) if han and len(tokens) > 1 else ""
    return NameKeys(" ".join(sorted(tokens)), "".join(tokens), "".join(han), given_first)


def name_score(query: NameKeys, listed: NameKeys) -> int:
    """Return how alike two names are, 0–100 (see the module docstring)."""
    score = max(
        fuzz.ratio(query.sorted_key, listed.sorted_key),
        fuzz.ratio(query.compact_key, listed.compact_key),
        fuzz.ratio(query.compact_key, listed.given_first_key) if listed.given_first_key else 0,
    )
    if query.han and listed.han and query.han != listed.han:
        score = max(fuzz.ratio(query.han, listed.han), score - HOMOPHONE_PENALTY)
    return round(score)


def dob_adjustment(query: date | None, listed: str | None) -> int:
    """Return how a date of birth moves the score (the entry may give only year or month)."""
    if query is None or not listed:
        return 0
    if not query.isoformat().startswith(listed):
        return DOB_CONTRADICTS
    return DOB_AGREES if len(listed) == len("YYYY-MM-DD") else DOB_PARTIAL


def nationality_adjustment(query: str | None, listed: str | None) -> int:
    """Return how a nationality moves the score."""
    if not query or not listed:
        return 0
    return NATIONALITY_AGREES if query == listed else NATIONALITY_CONTRADICTS


@dataclass(frozen=True, slots=True)
class ListedEntry:
    """A watchlist entry as the matcher sees it."""

    id: int
    list_id: str
    reference: str | None
    name: str
    aliases: tuple[str, ...]
    date_of_birth: str | None
    nationality: str | None

    @property
    def key(self) -> str:
        """Return what identifies the entry across re-uploads of its list."""
        return f"{self.list_id}:{self.reference or self.name}"


@dataclass(frozen=True, slots=True)
class Match:
    """A listed entry that a screened name matched, with the score and the name it matched."""

    entry: ListedEntry
    matched_name: str
    score: int
    name_score: int


_MIN_FUZZY_TOKEN = 4  # shorter tokens ("li", "wei") are matched exactly only


def _deletions(token: str) -> list[str]:
    """Return ``token`` with each one of its characters left out."""
    return [token[:i] + token[i + 1 :] for i in range(len(token))]


class _Vocabulary:
    """The distinct listed tokens, each with the rows holding it, reachable within one edit.

    One-deletion variants are kept per distinct token (not per name), which keeps the
    index small: a list of 50,000 names has far fewer distinct tokens.
    """

    def __init__(self) -> None:
        self.postings: dict[str, list[int]] = {}
        self._variants: dict[str, set[str]] = {}

    def add(self, token: str, row: int) -> None:
        rows = self.postings.get(token)
        if rows is None:
            self.postings[token] = rows = []
            if len(token) >= _MIN_FUZZY_TOKEN:
                for variant in _deletions(token):
                    self._variants.setdefault(variant, set()).add(token)
        rows.append(row)

    def similar(self, token: str) -> set[str]:
        """Return the listed tokens within one edit of ``token`` (itself if listed)."""
        found = {token} if token in self.postings else set()
        if len(token) >= _MIN_FUZZY_TOKEN - 1:
            # A listed token that lost a character is ``token``; one that has a character
            # more, or one other, shares a deletion with it.
            found |= self._variants.get(token, set())
            for variant in _deletions(token):
                if variant in self.postings and len(variant) >= _MIN_FUZZY_TOKEN - 1:
                    found.add(variant)
                found |= self._variants.get(variant, set())
        return found

    def exact(self, token: str) -> set[str]:
        """Return ``{token}`` if it is listed, else nothing."""
        return {token} if token in self.postings else set()

    def split(self, token: str) -> list[str]:
        """Return ``token`` cut into two listed tokens if it is two run together (zhangwei)."""
        for cut in range(2, len(token) - 1):
            head, tail = token[:cut], token[cut:]
            if head in self.postings and tail in self.postings:
                return [head, tail]
        return []

    def rows(self, tokens: set[str]) -> set[int]:
        """Return the rows holding any of ``tokens``."""
        found: set[int] = set()
        for token in tokens:
            found.update(self.postings[token])
        return found


class ScreeningIndex:
    """Every listed name and alias, prepared for fast fuzzy search."""

    def __init__(self, entries: Sequence[ListedEntry], version: tuple[int, int] = (0, 0)) -> None:
        self.entries = entries
        self.version = version
        self._keys: list[NameKeys] = []
        self._owner: list[int] = []
        self._names: list[str] = []
        self._vocabulary = _Vocabulary()
        self._compact: dict[str, list[int]] = {}
        self._row_tokens: list[frozenset[str]] = []
        self._sorted: list[str] = []
        self._compacts: list[str] = []
        self._given_first: list[str] = []
        for position, entry in enumerate(entries):
            for name in (entry.name, *entry.aliases):
                keys = name_keys(name)
                if not keys.sorted_key:
                    continue
                row = len(self._keys)
                self._keys.append(keys)
                self._owner.append(position)
                self._names.append(name)
                tokens = frozenset(keys.sorted_key.split(" "))
                self._row_tokens.append(tokens)
                self._sorted.append(keys.sorted_key)
                self._compacts.append(keys.compact_key)
                self._given_first.append(keys.given_first_key)
                for token in tokens:
                    self._vocabulary.add(token, row)
                self._compact.setdefault(keys.compact_key, []).append(row)
                if keys.given_first_key:
                    self._compact.setdefault(keys.given_first_key, []).append(row)

    def _candidates(self, query: NameKeys) -> set[int]:
        vocabulary = self._vocabulary
        wanted: list[set[str]] = []
        # Pinyin made from Han characters has no typos; widening it by one edit would only
        # reach other syllables (wang → wan, ang) and flood the candidates.
        fuzzy = not query.han
        for token in set(query.sorted_key.split(" ")):
            similar = vocabulary.similar(token) if fuzzy else vocabulary.exact(token)
            if similar:
                wanted.append(similar)
            else:
                wanted.extend({part} for part in vocabulary.split(token))
        found: set[int] = set(self._compact.get(query.compact_key, ()))
        if not wanted:
            return found  # no token is listed at all: only a run-together match is left
        # Start from the rarest token(s) and check the rest against each row's own tokens,
        # rather than building (and intersecting) the large sets of common tokens.
        wanted.sort(key=lambda tokens: sum(len(vocabulary.postings[t]) for t in tokens))
        needed = len(wanted) if len(wanted) <= 2 else len(wanted) - 1
        base = vocabulary.rows(wanted[0] if needed == len(wanted) else wanted[0] | wanted[1])
        row_tokens = self._row_tokens
        for row in base:
            held = row_tokens[row]
            if sum(1 for tokens in wanted if not held.isdisjoint(tokens)) >= needed:
                found.add(row)
        return found

    def __len__(self) -> int:
        return len(self.entries)

    def screen(
        self,
        name: str,
        *,
        date_of_birth: date | None,
        nationality: str | None,
        threshold: int,
    ) -> list[Match]:
        """Return the entries ``name`` matches at ``threshold`` or more, best first."""
        query = name_keys(name)
        if not query.sorted_key or not self._keys:
            return []
        rows = list(self._candidates(query))
        # A name whose best key ratio is below this cannot reach the threshold: rapidfuzz
        # drops those in C++ before the full score is computed in Python.
        cutoff = threshold - (DOB_AGREES if date_of_birth else 0)
        cutoff -= NATIONALITY_AGREES if nationality else 0
        passing: set[int] = set()
        columns = (
            (query.sorted_key, self._sorted),
            (query.compact_key, self._compacts),
            (query.compact_key, self._given_first),
        )
        for key, column in columns:
            choices = [column[row] for row in rows]
            for _choice, _score, position in process.extract(
                key, choices, scorer=fuzz.ratio, score_cutoff=cutoff, limit=None
            ):
                passing.add(rows[position])
        best: dict[int, Match] = {}
        for row in passing:
            entry = self.entries[self._owner[row]]
            by_name = name_score(query, self._keys[row])
            total = by_name + dob_adjustment(date_of_birth, entry.date_of_birth)
            total = max(0, min(100, total + nationality_adjustment(nationality, entry.nationality)))
            if total < threshold:
                continue
            current = best.get(entry.id)
            if current is None or total > current.score:
                best[entry.id] = Match(entry, self._names[row], total, by_name)
        return sorted(best.values(), key=lambda m: (-m.score, m.entry.id))


# ----------------------------------------------------------------------------------- lists


class UploadedEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One line of an uploaded list (JSON lines, or a CSV row with these columns)."""

    list_id: str
    name: str
    aliases: list[str] = []
    date_of_birth: str | None = None
    nationality: str | None = None
    source: str | None = None
    reference: str | None = None


_DOB_FORMS = (4, 7, 10)


def _partial_date(value: str) -> bool:
    if len(value) not in _DOB_FORMS:
        return False
    try:
        date.fromisoformat((value + "-01-01")[:10] if len(value) < 10 else value)
    except ValueError:
        return False
    return True


def _check_entry(entry: UploadedEntry, where: str, problems: list[str]) -> UploadedEntry:
    if not entry.list_id.strip() or len(entry.list_id) > 100:
        problems.append(f"{where}: list_id must be 1 to 100 characters")
    if not entry.name.strip() or len(entry.name) > 300:
        problems.append(f"{where}: name must be 1 to 300 characters")
    if entry.date_of_birth and not _partial_date(entry.date_of_birth):
        problems.append(f"{where}: date_of_birth must be YYYY, YYYY-MM or YYYY-MM-DD")
    if entry.nationality and (len(entry.nationality) != 2 or not entry.nationality.isalpha()):
        problems.append(f"{where}: nationality must be an ISO 3166-1 alpha-2 code")
    return msgspec.structs.replace(
        entry,
        list_id=entry.list_id.strip(),
        name=" ".join(entry.name.split()),
        aliases=[a.strip() for a in entry.aliases if a.strip()],
        nationality=entry.nationality.upper() if entry.nationality else None,
        date_of_birth=entry.date_of_birth or None,
    )


def parse_list(content: bytes, content_type: str) -> list[UploadedEntry]:
    """Read an uploaded list: CSV (aliases separated by ``;``) or JSON lines.

    Raises InvalidWatchlist naming every bad line; nothing is loaded from a bad file.
    """
    problems: list[str] = []
    entries: list[UploadedEntry] = []
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidWatchlist(["the file is not UTF-8"]) from None
    if "csv" in content_type:
        reader = csv.DictReader(io.StringIO(text))
        for number, row in enumerate(reader, start=2):
            where = f"line {number}"
            try:
                raw = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                aliases = [a for a in raw.pop("aliases", "").split(";") if a.strip()]
                values = {k: v or None for k, v in raw.items()}
                entry = msgspec.convert({**values, "aliases": aliases}, UploadedEntry, strict=False)
            except (msgspec.ValidationError, AttributeError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            entries.append(_check_entry(entry, where, problems))
    else:
        decoder = msgspec.json.Decoder(UploadedEntry)
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                problems.append(f"line {number}: {exc}")
                continue
            entries.append(_check_entry(entry, f"line {number}", problems))
    if problems:
        raise InvalidWatchlist(problems)
    if not entries:
        raise InvalidWatchlist(["the file holds no entries"])
    return entries


def group_by_list(entries: Iterable[UploadedEntry]) -> dict[str, list[UploadedEntry]]:
    """Return the entries of each list id, in file order."""
    groups: dict[str, list[UploadedEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.list_id, []).append(entry)
    return groups
