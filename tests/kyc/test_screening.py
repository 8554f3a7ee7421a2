"""Watchlist screening: normalisation, scoring, list uploads, re-screening (REGULATION.md L3)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import date
from typing import Any

import pytest
from litestar.testing import TestClient

from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.kyc.errors import InvalidWatchlist
from custodia.kyc.screening import ListedEntry, ScreeningIndex, name_keys, parse_list
from tests.factories import bearer, corporate_body, make_client, make_staff, person_body
from tests.kyc.corpus import make_corpus, measure

Client = TestClient[Any]


def _entry(
    id_: int,
    name: str,
    *,
    dob: str | None = None,
    nationality: str | None = None,
    aliases: tuple[str, ...] = (),
) -> ListedEntry:
    return ListedEntry(id_, "TEST", f"T-{id_}", name, aliases, dob, nationality)


def _names(index: ScreeningIndex, name: str, **kwargs: Any) -> list[str]:
    kwargs.setdefault("date_of_birth", None)
    kwargs.setdefault("nationality", None)
    return [m.entry.name for m in index.screen(name, threshold=85, **kwargs)]


# ------------------------------------------------------------------------------ normalising


@pytest.mark.parametrize(
    "variant",
    ["Zhang Wei", "ZHANG Wei", "Wei Zhang", "zhang  wei", "Ｚｈａｎｇ Ｗｅｉ", "Zhang-Wei"],
)
def test_spellings_of_one_name_share_their_sorted_key(variant: str) -> None:
    assert name_keys(variant).sorted_key == "wei zhang"


def test_han_characters_become_pinyin_and_keep_their_characters() -> None:
    keys = name_keys("张伟")
    assert (keys.sorted_key, keys.compact_key, keys.han, keys.given_first_key) == (
        "wei zhang",
        "zhangwei",
        "张伟",
        "weizhang",
    )


_EVERY_HAN_READING = """
import hashlib
from custodia.kyc.screening import name_keys
import pypinyin.constants
ranges = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF)]
keys = "|".join(name_keys(chr(c)).compact_key for lo, hi in ranges for c in range(lo, hi + 1))
print(len(pypinyin.constants.PHRASES_DICT), hashlib.sha256(keys.encode()).hexdigest())
"""


def test_han_names_are_read_without_the_phrase_dictionary() -> None:
    """The service skips pypinyin's phrase dictionary (~45 MiB a process); no reading changes."""

    def run(**switches: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYPINYIN_")}
        out = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", _EVERY_HAN_READING],
            env={**env, **switches},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return int(out[0]), out[1]

    phrases, readings = run()
    # pypinyin's switches are read only when non-empty: "" loads the dictionary as before.
    phrases_loaded, readings_with_phrases = run(PYPINYIN_NO_PHRASES="", PYPINYIN_NO_DICT_COPY="")
    assert phrases == 0
    assert phrases_loaded > 40_000
    assert readings == readings_with_phrases


def test_accents_are_removed() -> None:
    assert name_keys("José Álvarez").sorted_key == name_keys("jose alvarez").sorted_key


# ------------------------------------------------------------------------------ matching


@pytest.fixture
def index() -> ScreeningIndex:
    return ScreeningIndex(
        [
            _entry(1, "张伟", dob="1975-03-02", nationality="CN"),
            _entry(2, "Ivan Fictitious", dob="1960", nationality="XK", aliases=("Ivan Fiktivny",)),
            _entry(3, "欧阳娜娜", nationality="CN"),
            _entry(4, "Maximilian Beispielmann", dob="1980-07-14", nationality="DE"),
        ]
    )


@pytest.mark.parametrize(
    "query",
    ["Zhang Wei", "WEI ZHANG", "Zhangwei", "张伟", "Wei Zhang"],
)
def test_zhang_wei_finds_the_han_entry(index: ScreeningIndex, query: str) -> None:
    assert _names(index, query) == ["张伟"]


@pytest.mark.parametrize(
    "query",
    [
        "Maximilian Beispielman",
        "Beispielmann Maximilian",
        "Maxmilian Beispielmann",
        "MAXIMILIAN BEISPIELMANN",
    ],
)
def test_typos_and_reordering_still_match(index: ScreeningIndex, query: str) -> None:
    assert _names(index, query) == ["Maximilian Beispielmann"]


def test_aliases_are_screened(index: ScreeningIndex) -> None:
    matches = index.screen("Ivan Fiktivny", date_of_birth=None, nationality=None, threshold=85)
    assert [(m.entry.name, m.matched_name) for m in matches] == [
        ("Ivan Fictitious", "Ivan Fiktivny")
    ]


def test_a_contradicting_birth_date_clears_a_same_name(index: ScreeningIndex) -> None:
    assert _names(index, "Zhang Wei", date_of_birth=date(1975, 3, 2)) == ["张伟"]
    assert _names(index, "Zhang Wei", date_of_birth=date(1990, 1, 1), nationality="CN") == []


def test_a_homophone_in_han_characters_is_not_the_same_name(index: ScreeningIndex) -> None:
    """章维 sounds like 张伟 (zhang wei) but is written differently: a different person."""
    assert _names(index, "章维", date_of_birth=date(1990, 1, 1)) == []


def test_near_misses_do_not_match(index: ScreeningIndex) -> None:
    for name in ("Ivan Petrov", "Maximilian Schmidt", "李娜", "欧阳"):
        assert _names(index, name) == [], name


def test_scores_are_bounded_and_explained(index: ScreeningIndex) -> None:
    (match,) = index.screen("张伟", date_of_birth=date(1975, 3, 2), nationality="CN", threshold=85)
    assert match.name_score == 100
    assert match.score == 100


def test_recall_and_precision_on_a_generated_corpus() -> None:
    """Transliterations, reordered tokens, typos, accents, width, and near misses.

    bench/screening.py reports the figures on a larger corpus; these floors guard them.
    """
    entries, queries = make_corpus(1000, 1000, seed=3)
    quality = measure(ScreeningIndex(entries), queries, threshold=85)
    assert quality.recall >= 0.99, quality
    assert quality.precision >= 0.98, quality


# ------------------------------------------------------------------------------ lists


def test_csv_and_json_lines_are_read() -> None:
    csv_entries = parse_list(
        b"list_id,name,aliases,date_of_birth,nationality,source\nL1,Ivan Fictitious,Ivan F;I. Fictitious,1960,XK,UN\n",
        "text/csv",
    )
    assert csv_entries[0].aliases == ["Ivan F", "I. Fictitious"]
    jsonl = parse_list(
        b'{"list_id": "L2", "name": "Test Person", "nationality": "de"}\n\n{"list_id": "L2", "name": "Other"}\n',
        "application/x-ndjson",
    )
    assert [e.nationality for e in jsonl] == ["DE", None]


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b'{"list_id": "L", "name": ""}', "application/x-ndjson", "line 1: name"),
        (
            b'{"list_id": "L", "name": "A", "date_of_birth": "1960-13"}',
            "application/x-ndjson",
            "date_of_birth",
        ),
        (b'{"list_id": "L", "name": "A", "colour": "red"}', "application/x-ndjson", "line 1"),
        (b"not json", "application/x-ndjson", "line 1"),
        (b"", "text/csv", "no entries"),
        (b"\xff\xfe", "text/csv", "UTF-8"),
    ],
)
def test_bad_lists_are_refused_naming_the_line(
    content: bytes, content_type: str, fragment: str
) -> None:
    with pytest.raises(InvalidWatchlist) as refused:
        parse_list(content, content_type)
    assert any(fragment in e for e in refused.value.data["errors"]), refused.value.data


def test_the_shipped_sample_list_loads() -> None:
    from custodia.kyc.screening import SAMPLE_LIST  # noqa: PLC0415

    entries = parse_list(SAMPLE_LIST.read_bytes(), "application/x-ndjson")
    assert len(entries) >= 20
    assert {e.list_id for e in entries} == {"SYNTHETIC-SAMPLE"}


# ------------------------------------------------------------------------------ over HTTP


def _upload(client: Client, headers: dict[str, str], lines: str) -> Any:
    return client.post(
        "/v1/aml/watchlists",
        content=lines.encode(),
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )


def test_onboarding_screens_the_customer_and_a_hit_waits_for_review(
    client: Client, runtime: Runtime
) -> None:
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    loaded = _upload(
        client, lead.headers, '{"list_id": "TEST", "name": "Zhang Wei", "nationality": "CN"}\n'
    )
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["lists"] == [{"list_id": "TEST", "version": 1, "entries": 1}]
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    customer = client.post("/v1/customers", json=person_body(name="张伟"), headers=app).json()
    assert customer["screening_status"] == "potential_match"
    clear = client.post(
        "/v1/customers", json=person_body(name="李娜", gender="male"), headers=app
    ).json()
    assert clear["screening_status"] == "clear"


def test_parties_of_a_corporate_are_screened(client: Client, runtime: Runtime) -> None:
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    _upload(client, lead.headers, '{"list_id": "TEST", "name": "Wang Fang"}\n')
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    customer = client.post("/v1/customers", json=corporate_body(), headers=app).json()
    assert customer["screening_status"] == "potential_match"
    assert customer["beneficial_owners"][0]["screening_status"] == "potential_match"
    assert customer["legal_representative"]["screening_status"] == "clear"


def test_uploading_a_list_rescreens_existing_customers(client: Client, runtime: Runtime) -> None:
    app = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    customer_id = client.post(
        "/v1/customers", json=person_body(name="欧阳娜娜", gender="male"), headers=app
    ).json()["id"]
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    _upload(client, lead.headers, '{"list_id": "NEW", "name": "Ouyang Nana"}\n')
    worker = runtime.worker(threading.Event())
    while worker.run_once():
        pass
    after = client.get(f"/v1/customers/{customer_id}", headers=app).json()
    assert after["screening_status"] == "potential_match"


def test_an_officer_screens_a_name_ad_hoc(client: Client, runtime: Runtime) -> None:
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    _upload(
        client,
        lead.headers,
        '{"list_id": "TEST", "name": "Ivan Fictitious", "date_of_birth": "1960", "nationality": "XK"}\n',
    )
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    result = client.post(
        "/v1/aml/screenings",
        json={"name": "Fictitious Ivan", "nationality": "xk"},
        headers=officer.headers,
    ).json()
    assert result["threshold"] == 85
    assert [(m["name"], m["score"]) for m in result["matches"]] == [("Ivan Fictitious", 100)]
    listed = client.get("/v1/aml/watchlists", headers=officer.headers).json()["items"]
    assert [(w["list_id"], w["entries"]) for w in listed] == [("TEST", 1)]


def test_a_re_upload_replaces_the_list(client: Client, runtime: Runtime) -> None:
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    _upload(client, lead.headers, '{"list_id": "TEST", "name": "Ivan Fictitious"}\n')
    again = _upload(
        client,
        lead.headers,
        '{"list_id": "TEST", "name": "Other Person"}\n{"list_id": "TEST", "name": "Third Person"}\n',
    )
    assert again.json()["lists"] == [{"list_id": "TEST", "version": 2, "entries": 2}]
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    gone = client.post(
        "/v1/aml/screenings", json={"name": "Ivan Fictitious"}, headers=officer.headers
    ).json()
    assert gone["matches"] == []


def test_a_bad_upload_is_422_and_loads_nothing(client: Client, runtime: Runtime) -> None:
    lead = make_staff(runtime, Role.COMPLIANCE_LEAD)
    bad = _upload(
        client, lead.headers, '{"list_id": "TEST", "name": "Fine"}\n{"list_id": "TEST"}\n'
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_watchlist"
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER)
    assert client.get("/v1/aml/watchlists", headers=officer.headers).json()["items"] == []
