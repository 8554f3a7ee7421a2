"""Identity data checks: real names, identity documents, phones, countries (REGULATION.md R1, R2).

Documents are checked with python-stdnum (PRC resident identity number: checksum, birth date
and region; unified social credit code) and phones with phonenumbers; only the permit and
passport formats, which no library knows, are patterns here. Every check reports the field it
concerns, so a request with several mistakes gets all of them back at once.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import phonenumbers
from iso3166 import countries_by_alpha2
from stdnum import exceptions as stdnum_errors
from stdnum.cn import ric, uscc

from custodia.kyc.errors import FieldProblem


class IdType(StrEnum):
    """Identity documents accepted (API.md "Customers")."""

    PRC_RESIDENT_ID = "prc_resident_id"
    PASSPORT = "passport"
    HK_MACAU_PERMIT = "hk_macau_permit"
    TAIWAN_PERMIT = "taiwan_permit"
    FOREIGN_PERMANENT_RESIDENT_ID = "foreign_permanent_resident_id"
    USCC = "uscc"  # unified social credit code: corporate customers only


PERSONAL_ID_TYPES = frozenset(IdType) - {IdType.USCC}


class Gender(StrEnum):
    """Gender as recorded on the identity document."""

    MALE = "male"
    FEMALE = "female"


#: Names that are no names: refused so that no account is anonymous or pseudonymous (Art. 6).
PLACEHOLDER_NAMES = frozenset(
    {
        "test", "tester", "testing", "demo", "sample", "example", "anonymous", "anon",
        "unknown", "none", "null", "nil", "n/a", "na", "nobody", "noname", "no name",
        "customer", "user", "client", "guest", "xxx", "xx", "x", "abc", "asdf", "qwerty",
        "john doe", "jane doe", "匿名", "无名", "无名氏", "测试", "测试用户", "用户", "客户",
        "某某", "某人", "未知", "不详", "佚名", "张三", "李四", "王五",
    }
)  # fmt: skip

_PASSPORT = re.compile(r"^[A-Z0-9]{5,20}$")
_PRC_PASSPORT = re.compile(r"^(E[A-Z0-9]\d{7}|[GDSP]\d{8})$")
# Mainland travel permits for Hong Kong and Macao residents: H/M + 8 or 10 digits.
_HK_MACAU_PERMIT = re.compile(r"^[HM]\d{8}(\d{2})?$")
# Mainland travel permit for Taiwan residents: 8 digits (older ones 10 with a letter suffix).
_TAIWAN_PERMIT = re.compile(r"^\d{8}(\d{2})?$|^\d{8}[A-Z]$")
# Foreign permanent resident ID: the 2004 card (3 letters + 12 digits) or the 2017 card,
# which has the resident identity number's layout and check digit and starts with 9.
_FOREIGN_PR_OLD = re.compile(r"^[A-Z]{3}\d{12}$")
_FOREIGN_PR_NEW = re.compile(r"^9\d{16}[\dX]$")


def compact_document_number(number: str) -> str:
    """Return a document number without spaces and hyphens, upper-case, half-width."""
    folded = unicodedata.normalize("NFKC", number).upper()
    return re.sub(r"[\s\-]", "", folded)


def real_name(value: str, field: str, problems: list[FieldProblem]) -> str:
    """Return the trimmed name, or record why it is no real name (Art. 6: no anonymous data)."""
    name = " ".join(unicodedata.normalize("NFKC", value).split())
    if not name:
        problems.append(FieldProblem(field, "a name is required"))
        return name
    if len(name) > 100:
        problems.append(FieldProblem(field, "at most 100 characters"))
    letters = [ch for ch in name if unicodedata.category(ch).startswith("L")]
    if not letters:
        problems.append(
            FieldProblem(field, "a name must contain letters, not only digits or signs")
        )
    elif name.casefold() in PLACEHOLDER_NAMES or len(set(name.casefold().replace(" ", ""))) == 1:
        problems.append(
            FieldProblem(field, "placeholder or anonymous names are not accepted (Art. 6)")
        )
    return name


def country(value: str, field: str, problems: list[FieldProblem]) -> str:
    """Return an ISO 3166-1 alpha-2 code (upper-case) or record that it is none."""
    code = value.strip().upper()
    if code not in countries_by_alpha2:
        problems.append(FieldProblem(field, "not an ISO 3166-1 alpha-2 country code"))
    return code


def phone_e164(value: str, field: str, problems: list[FieldProblem]) -> str:
    """Return the phone number in E.164 (numbers without a country code are Chinese)."""
    try:
        parsed = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        problems.append(FieldProblem(field, "not a phone number"))
        return value
    if not phonenumbers.is_valid_number(parsed):
        problems.append(FieldProblem(field, "not a valid phone number"))
        return value
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    """What a document number itself says about its holder (PRC resident ids only)."""

    date_of_birth: date | None = None
    gender: Gender | None = None


def _ric_facts(number: str) -> DocumentFacts:
    born = ric.get_birth_date(number)
    gender = Gender.MALE if int(number[16]) % 2 else Gender.FEMALE
    return DocumentFacts(born, gender)


def _check_ric(number: str, _nationality: str | None) -> tuple[str, DocumentFacts, str | None]:
    try:
        number = ric.validate(number)
    except stdnum_errors.InvalidChecksum:
        return number, DocumentFacts(), "check digit does not match"
    except stdnum_errors.InvalidComponent:
        return number, DocumentFacts(), "impossible birth date or unknown region code"
    except stdnum_errors.ValidationError:
        return (
            number,
            DocumentFacts(),
            "a resident identity number has 17 digits and a check character",
        )
    return number, _ric_facts(number), None


def _check_uscc(number: str, _nationality: str | None) -> tuple[str, DocumentFacts, str | None]:
    try:
        return uscc.validate(number), DocumentFacts(), None
    except stdnum_errors.InvalidChecksum:
        return number, DocumentFacts(), "check character does not match"
    except stdnum_errors.ValidationError:
        return number, DocumentFacts(), "not a unified social credit code"


def _check_passport(number: str, nationality: str | None) -> tuple[str, DocumentFacts, str | None]:
    pattern = _PRC_PASSPORT if nationality == "CN" else _PASSPORT
    ok = pattern.match(number)
    return (
        number,
        DocumentFacts(),
        None if ok else "not a passport number of the stated nationality",
    )


def _check_hk_macau(number: str, _nationality: str | None) -> tuple[str, DocumentFacts, str | None]:
    ok = _HK_MACAU_PERMIT.match(number)
    return (
        number,
        DocumentFacts(),
        None if ok else "a permit number is H or M followed by 8 or 10 digits",
    )


def _check_taiwan(number: str, _nationality: str | None) -> tuple[str, DocumentFacts, str | None]:
    ok = _TAIWAN_PERMIT.match(number)
    return number, DocumentFacts(), None if ok else "a Taiwan residents' permit number has 8 digits"


def _check_foreign_pr(
    number: str, _nationality: str | None
) -> tuple[str, DocumentFacts, str | None]:
    if _FOREIGN_PR_NEW.match(number):
        ok = ric.calc_check_digit(number) == number[-1]
        return number, DocumentFacts(), None if ok else "check digit does not match"
    ok = bool(_FOREIGN_PR_OLD.match(number))
    return number, DocumentFacts(), None if ok else "not a foreign permanent resident ID number"


_CHECKS = {
    IdType.PRC_RESIDENT_ID: _check_ric,
    IdType.USCC: _check_uscc,
    IdType.PASSPORT: _check_passport,
    IdType.HK_MACAU_PERMIT: _check_hk_macau,
    IdType.TAIWAN_PERMIT: _check_taiwan,
    IdType.FOREIGN_PERMANENT_RESIDENT_ID: _check_foreign_pr,
}


def document_number(
    id_type: IdType, raw: str, field: str, problems: list[FieldProblem], *, nationality: str | None
) -> tuple[str, DocumentFacts]:
    """Return the compact document number and what it says, or record what is wrong."""
    number, facts, problem = _CHECKS[id_type](compact_document_number(raw), nationality)
    if problem is not None:
        problems.append(FieldProblem(field, problem))
    return number, facts


@dataclass(frozen=True, slots=True)
class Validity:
    """A document's validity period; ``until`` None is a long-term PRC resident id."""

    valid_from: date | None
    valid_until: date | None


def validity(
    id_type: IdType,
    valid_from: date | None,
    valid_until: date | None,
    prefix: str,
    problems: list[FieldProblem],
    *,
    today: date,
) -> Validity:
    """Check a validity period's shape; whether it has expired is judged separately."""
    if valid_from is not None and valid_from > today:
        problems.append(FieldProblem(f"{prefix}id_valid_from", "lies in the future"))
    if valid_until is None and id_type not in {IdType.PRC_RESIDENT_ID, IdType.USCC}:
        problems.append(
            FieldProblem(
                f"{prefix}id_valid_until", "only resident ids and licences may be long-term"
            )
        )
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        problems.append(FieldProblem(f"{prefix}id_valid_until", "must come after id_valid_from"))
    return Validity(valid_from, valid_until)


def birth_date(value: date, field: str, problems: list[FieldProblem], *, today: date) -> date:
    """Record a birth date in the future or more than 130 years ago."""
    if value > today:
        problems.append(FieldProblem(field, "lies in the future"))
    elif today.year - value.year > 130:
        problems.append(FieldProblem(field, "more than 130 years ago"))
    return value


def agrees_with_document(
    facts: DocumentFacts,
    date_of_birth: date | None,
    gender: Gender | None,
    prefix: str,
    problems: list[FieldProblem],
) -> None:
    """Record where the stated birth date or gender contradicts the document number."""
    if (
        facts.date_of_birth is not None
        and date_of_birth is not None
        and facts.date_of_birth != date_of_birth
    ):
        problems.append(
            FieldProblem(f"{prefix}date_of_birth", "does not match the birth date in the id number")
        )
    if facts.gender is not None and gender is not None and facts.gender is not gender:
        problems.append(
            FieldProblem(f"{prefix}gender", "does not match the gender in the id number")
        )
