"""redact_text's quick exit never changes its output.

``redact_text`` returns text that cannot match any of its patterns as it is, without the six
searches. These tests compare it with the full searches alone (``_reference_redact_text``, the
implementation before the quick exit) on generated text rich in what the patterns look for,
and on hand-written examples of every pattern with and without separators.
"""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from custodia.core import logging as custodia_logging
from custodia.core.logging import REDACTED, redact_text


def _reference_redact_text(text: str) -> str:
    """``redact_text`` as it was before the quick exit: the six substitutions, always.

    It uses the module's own patterns so that a pattern changed later without updating the
    quick exit (``_may_match``) fails these tests.
    """
    m = custodia_logging
    text = m._BEARER.sub(lambda g: f"{g.group(1)} {REDACTED}", text)
    text = m._API_KEY.sub("ck_" + REDACTED, text)
    text = m._OTPAUTH.sub("otpauth://" + REDACTED, text)
    text = m._ID_NUMBER.sub(lambda g: f"{g.group(1)}********{g.group(2)[-4:]}", text)
    text = m._PHONE.sub(lambda g: f"{g.group(1) or ''}{g.group(2)}****{g.group(3)}", text)
    return m._DIGIT_RUN.sub(m._mask_digit_run, text)


# What the patterns look for, their near misses, and the letters IGNORECASE equates with
# theirs (ſ with s; İ and ı with i; the Kelvin sign K with k).
_keyword = st.sampled_from(
    [
        "Bearer ", "bearer", "BEARER\t", "Basic ", "basic", "bAsIc", "BASIC ", "BaSiC",
        "baſic ", "BASİC ", "basıc\u3000", "beare", "basi", "bear er",
        "ck_", "ck_dev_", "ck_live_", "CK_dev_", "ck_test_", "ck_outbox_", "ck_ dev_",
        "otpauth://", "otpauth:/", "OTPAUTH://", "otpauth", "otpauth:// ",
        "+86", "86", "+86-", "+86 ",
    ]
)  # fmt: skip
# Everything else: ASCII letters and punctuation, ids, Chinese, digits of other scripts.
_filler = st.sampled_from(
    [
        *"0123456789", *"0123456789", " ", "-", "--", " -", "+", "\t", "\n", "\u3000",
        *"aAbBcCeEiIkKrRsStTxXzZ_.:/=~", "ſ", "İ", "ı", "\u212a", "é", "ß",
        "acc_01JD8XK3M9Q7R2T5V8W0YZ", "req_", "/v1/transfers", "2025-01-14T08:31:22.123456Z",
        "张", "转账", "身份证", "，",
        "１", "２", "٣", "४",  # decimal digits of other scripts: \d matches them
    ]
)  # fmt: skip
_digit_run = st.one_of(
    st.text(alphabet="0123456789 -", min_size=8, max_size=26),
    st.text(alphabet="0123456789 -１２٣४٠", min_size=8, max_size=26),
)
_sep = st.sampled_from(["", " ", "-"])
_digits = st.text(alphabet="0123456789", min_size=4, max_size=4)
# Mobile numbers in every grouping the pattern accepts: [+86][ -]1[3-9]d[ -]dddd[ -]dddd.
_phone = st.builds(
    "{}{}1{}{}{}{}{}{}".format,
    st.sampled_from(["", "+86", "86"]),
    _sep,
    st.sampled_from("3456789"),
    st.sampled_from("0123456789"),
    _sep,
    _digits,
    _sep,
    _digits,
)
_piece = st.one_of(_keyword, _filler, _filler, _digit_run, _phone)
# Short texts hold one thing to find (or a near miss) alone; long ones mix several.
_texts = st.one_of(st.lists(_piece, max_size=4), st.lists(_piece, max_size=30)).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_texts)
@example("basic x")
@example("baſic x")
@example("BASİC x")
@example("basıc x")
@example("１３８１２３４５６７８")
@example("tel ٠١٢٣٤٥٦٧٨٩٠١٢٣")
@example("张三 13812345678 转账")
def test_redact_text_equals_the_full_searches_on_generated_text(text: str) -> None:
    assert redact_text(text) == _reference_redact_text(text)


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_redact_text_equals_the_full_searches_on_any_text(text: str) -> None:
    assert redact_text(text) == _reference_redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        # identity numbers
        "id 11010519491231002X ok",
        "id 110105194912310021",
        "身份证110105194912310021号",
        # card numbers and other digit runs, with and without separators
        "card 6222021234567890",
        "card 6222 0212 3456 7890",
        "card 6222-0212-3456-7890",
        "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5",
        "1-2-3-4-5-6-7-8-9-0-1-2-3-4-5",
        "run 123456789012345",
        "ms 4222222222222",  # 13 digits passing Luhn
        "run 123456789012345678",
        # mobile numbers
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "+8613812345678",
        "8613812345678",
        # credentials
        "Authorization: Bearer abc.def",
        "authorization: bearer\ts3ss10n",
        "Authorization: Basic YWxpY2U6aHVudGVyMg==",
        "BASIC\u3000x",
        "baſic x",
        "basİc x",
        "key ck_live_4eC39HqLyjWDarjtT1zdp7dc used",
        "key ck_dev_abc",
        "otpauth://totp/Custodia:alice?secret=JBSWY3DPEHPK3PXP",
        # digits of other scripts
        "１３８１２３４５６７８９０１２３",
        "tel ٠١٢٣٤٥٦٧٨٩٠١٢٣٤",
    ],
)
def test_every_pattern_still_redacts(text: str) -> None:
    """Each pattern, written with separators or odd characters, passes the quick exit."""
    assert custodia_logging._may_match(text)
    assert redact_text(text) == _reference_redact_text(text)
    assert redact_text(text) != text


@pytest.mark.parametrize(
    "text",
    [
        "POST",
        "/v1/transfers",
        "transfers_create",
        "req_01JD8XK3M9Q7R2T5V8W0YZABCD",
        "client:cli_01JD8XK3M9Q7R2T5V8W0YZABCD:onboarding_app",
        "2025-01-14T08:31:22.123456Z",
        "138 1234 567",  # 10 digits
        "1 2 3 4 5 6 7 8 9 0",
        "bearer",
        "客户张三提交了身份证照片",
    ],
)
def test_ordinary_values_take_the_quick_exit(text: str) -> None:
    assert not custodia_logging._may_match(text)
    assert redact_text(text) == text == _reference_redact_text(text)


def test_shortest_match_is_the_shortest_text_a_pattern_matches() -> None:
    assert redact_text("basic x") == f"basic {REDACTED}"
    assert len("basic x") == custodia_logging._SHORTEST_MATCH


def test_non_ascii_characters_the_patterns_can_match_are_all_listed() -> None:
    """The quick exit folds other non-ASCII characters to ``?``: they must not matter.

    Outside ASCII, the patterns match only ``\\d`` (decimal digits of other scripts) and the
    letters that IGNORECASE equates with those of bearer/basic; ``\\s`` after the keyword
    is not part of the quick test.
    """
    everything = "".join(
        chr(c) for c in range(0x80, sys.maxunicode + 1) if not 0xD800 <= c < 0xE000
    )
    case_equivalents = set(re.findall(r"(?i)[bearsic]", everything))
    digits = set(re.findall(r"\d", everything))
    special = set(custodia_logging._NON_ASCII_SPECIAL.findall(everything))

    assert case_equivalents == {"\u017f", "\u0130", "\u0131"}
    assert special == case_equivalents | digits
    assert custodia_logging._NON_ASCII_SPECIAL.search("0123456789") is None
