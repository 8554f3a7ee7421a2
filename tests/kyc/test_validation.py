"""Identity validation on real valid and invalid examples (REGULATION.md R1, R2)."""

from __future__ import annotations

from datetime import date

import pytest

from custodia.kyc import validation as v
from custodia.kyc.errors import FieldProblem

TODAY = date(2026, 11, 22)
# The example of GB 11643-1999 (Beijing Chaoyang, born 1949-12-31, female: 17th digit 2).
VALID_RIC = "11010519491231002X"


def _problems(fn: object, *args: object, **kwargs: object) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    fn(*args, problems, **kwargs)  # type: ignore[operator]
    return problems


def _number(id_type: v.IdType, number: str, nationality: str | None = "CN") -> list[str]:
    problems: list[FieldProblem] = []
    v.document_number(id_type, number, "id_number", problems, nationality=nationality)
    return [p.message for p in problems]


def test_a_valid_resident_id_passes_and_tells_birth_date_and_gender() -> None:
    problems: list[FieldProblem] = []
    number, facts = v.document_number(
        v.IdType.PRC_RESIDENT_ID, "110105 19491231 002x", "id_number", problems, nationality="CN"
    )
    assert problems == []
    assert number == VALID_RIC
    assert facts == v.DocumentFacts(date(1949, 12, 31), v.Gender.FEMALE)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("110105194912310021", "check digit does not match"),  # check digit off by one
        ("11010519491231003X", "check digit does not match"),  # a body digit off by one
        ("110105194902300029", "check digit"),  # 30 February (and its check digit)
        ("99010519491231002X", "check digit"),
        ("1101051949123100", "17 digits"),
    ],
)
def test_invalid_resident_ids_are_refused_with_the_reason(number: str, message: str) -> None:
    assert any(message in m for m in _number(v.IdType.PRC_RESIDENT_ID, number))


def test_an_impossible_birth_date_with_a_correct_check_digit_is_refused() -> None:
    from stdnum.cn import ric  # noqa: PLC0415

    body = "11010519490230002"  # 30 February 1949
    number = body + ric.calc_check_digit(body + "0")
    assert _number(v.IdType.PRC_RESIDENT_ID, number) == [
        "impossible birth date or unknown region code"
    ]


def test_an_unknown_region_with_a_correct_check_digit_is_refused() -> None:
    from stdnum.cn import ric  # noqa: PLC0415

    body = "99999919491231002"
    number = body + ric.calc_check_digit(body + "0")
    assert _number(v.IdType.PRC_RESIDENT_ID, number) == [
        "impossible birth date or unknown region code"
    ]


def test_birth_date_and_gender_must_agree_with_the_id_number() -> None:
    facts = v.DocumentFacts(date(1949, 12, 31), v.Gender.FEMALE)
    problems: list[FieldProblem] = []
    v.agrees_with_document(facts, date(1950, 1, 1), v.Gender.MALE, "", problems)
    assert [p.field for p in problems] == ["date_of_birth", "gender"]


@pytest.mark.parametrize(
    ("number", "valid"),
    [("91110000600037341L", True), ("91110000600037341M", False), ("9111000060003734", False)],
)
def test_unified_social_credit_codes(number: str, valid: bool) -> None:
    assert (_number(v.IdType.USCC, number) == []) is valid


@pytest.mark.parametrize(
    ("id_type", "number", "nationality", "valid"),
    [
        (v.IdType.PASSPORT, "E12345678", "CN", True),
        (v.IdType.PASSPORT, "G12345678", "CN", True),
        (v.IdType.PASSPORT, "X1234", "CN", False),
        (v.IdType.PASSPORT, "AB1234567", "US", True),
        (v.IdType.PASSPORT, "A!B", "US", False),
        (v.IdType.HK_MACAU_PERMIT, "H12345678", "HK", True),
        (v.IdType.HK_MACAU_PERMIT, "M1234567890", "MO", True),
        (v.IdType.HK_MACAU_PERMIT, "K12345678", "HK", False),
        (v.IdType.TAIWAN_PERMIT, "12345678", "TW", True),
        (v.IdType.TAIWAN_PERMIT, "1234", "TW", False),
        (v.IdType.FOREIGN_PERMANENT_RESIDENT_ID, "USA110185031580", "US", True),
        (v.IdType.FOREIGN_PERMANENT_RESIDENT_ID, "U1234", "US", False),
    ],
)
def test_passport_and_permit_formats(
    id_type: v.IdType, number: str, nationality: str, valid: bool
) -> None:
    assert (_number(id_type, number, nationality) == []) is valid


def test_the_2017_permanent_resident_card_has_a_check_digit() -> None:
    from stdnum.cn import ric  # noqa: PLC0415

    body = "93315619800101001"
    good = body + ric.calc_check_digit(body + "0")
    bad = body + ("1" if good[-1] != "1" else "2")
    assert _number(v.IdType.FOREIGN_PERMANENT_RESIDENT_ID, good, "US") == []
    assert _number(v.IdType.FOREIGN_PERMANENT_RESIDENT_ID, bad, "US") == [
        "check digit does not match"
    ]


@pytest.mark.parametrize(
    "name",
    ["", "   ", "test", "Anonymous", "匿名", "测试", "12345", "----", "xxx", "aaaa", "张三", "N/A"],
)
def test_placeholder_and_anonymous_names_are_refused(name: str) -> None:
    assert _problems(v.real_name, name, "name"), name


@pytest.mark.parametrize("name", ["张伟", "欧阳娜娜", "Zhang Wei", "José Álvarez", "Ng Ka-ling"])
def test_real_names_pass(name: str) -> None:
    assert _problems(v.real_name, name, "name") == []


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("13812345678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_phones_become_e164(phone: str, e164: str) -> None:
    problems: list[FieldProblem] = []
    assert v.phone_e164(phone, "phone", problems) == e164
    assert problems == []


@pytest.mark.parametrize("phone", ["12345", "1381234567", "not a phone", "+86 100 0000 0000"])
def test_bad_phones_are_refused(phone: str) -> None:
    assert _problems(v.phone_e164, phone, "phone")


def test_countries_are_iso_alpha_2() -> None:
    assert _problems(v.country, "CN", "nationality") == []
    assert _problems(v.country, "CHN", "nationality")
    assert _problems(v.country, "ZZ", "nationality")


def test_validity_periods() -> None:
    def check(id_type: v.IdType, start: date | None, end: date | None) -> list[str]:
        problems: list[FieldProblem] = []
        v.validity(id_type, start, end, "", problems, today=TODAY)
        return [p.field for p in problems]

    assert check(v.IdType.PRC_RESIDENT_ID, date(2010, 1, 1), None) == []  # long-term
    assert check(v.IdType.PASSPORT, date(2020, 1, 1), None) == ["id_valid_until"]
    assert check(v.IdType.PASSPORT, date(2030, 1, 1), date(2040, 1, 1)) == ["id_valid_from"]
    assert check(v.IdType.PASSPORT, date(2020, 1, 1), date(2019, 1, 1)) == ["id_valid_until"]


def test_document_numbers_are_compacted_before_checking() -> None:
    assert v.compact_document_number(" 11010519491231002x ") == VALID_RIC
    assert v.compact_document_number("１１０１０５-１９４９") == "1101051949"
