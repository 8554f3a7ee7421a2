"""Logging: what actually gets written, in JSON and console form, never holds personal data.

Every test configures logging onto a StringIO and asserts on the rendered text, for
structlog loggers and for standard-library loggers (the libraries' path) alike.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from stdnum import luhn
from stdnum.cn import ric

from custodia.core.logging import (
    REDACTED,
    bind_context,
    clear_context,
    configure_logging,
    context_value,
    get_logger,
)
from custodia.core.settings import load_settings

FORMATS = ["json", "console"]
LOGGERS = ["structlog", "stdlib"]
LOGGER_NAME = "custodia.test"
# The timestamp on every line is noise for "these digits must not appear" checks.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")


def _id_number(first17: str) -> str:
    """Complete a PRC resident identity number with its ISO 7064 check character."""
    number = first17 + ric.calc_check_digit(first17 + "0")
    assert ric.is_valid(number), number
    return number


def _card(first15: str) -> str:
    """Complete a 16-digit card number with its Luhn check digit."""
    number = first15 + luhn.calc_check_digit(first15)
    assert luhn.is_valid(number), number
    return number


ID_X = _id_number("11010519491231002")  # 11010519491231002X
ID_DIGIT = _id_number("44030519900307001")
UNIONPAY = _card("622202123456789")
VISA = _card("411111111111111")
# A 13-digit millisecond timestamp. One in ten such numbers passes Luhn and is then masked
# like a 13-digit card; this one does not.
MS_TIMESTAMP = "1795320000123"
assert not luhn.is_valid(MS_TIMESTAMP)


class Rendered:
    """A logging setup writing to memory, and what it has written."""

    def __init__(self, log_format: str, **overrides: Any) -> None:
        self.stream = io.StringIO()
        self.log_format = log_format
        configure_logging(load_settings({}, log_format=log_format, **overrides), self.stream)

    @property
    def text(self) -> str:
        """Everything written, with the line timestamps blanked out."""
        return _TIMESTAMP.sub("<ts>", self.stream.getvalue())

    @property
    def lines(self) -> list[str]:
        """The rendered lines, timestamps blanked out."""
        return self.text.splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Each JSON line decoded (JSON format only)."""
        assert self.log_format == "json"
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def emit(self, kind: str, message: str) -> None:
        """Log ``message`` at INFO through a structlog or a standard-library logger."""
        if kind == "structlog":
            get_logger(LOGGER_NAME).info(message)
        else:
            # %-style arguments, the way libraries log.
            logging.getLogger(LOGGER_NAME).info("%s", message)


@pytest.fixture
def render(logging_restored: None) -> Callable[..., Rendered]:
    """Configure logging onto a StringIO (put back as it was after the test)."""
    return Rendered


# ----------------------------------------------------------------------------- the output itself


def test_json_format_writes_one_json_object_per_line(render: Callable[..., Rendered]) -> None:
    """Each line is a JSON object with the event, level, ISO timestamp and, for stdlib, logger."""
    out = render("json")

    get_logger(LOGGER_NAME).warning("disk nearly full", free_mb=12)
    logging.getLogger(LOGGER_NAME).error("library says %s", "hello")

    first, second = out.records()
    assert first["event"] == "disk nearly full"
    assert first["free_mb"] == 12
    assert first["level"] == "warning"
    assert re.fullmatch(_TIMESTAMP.pattern, first["timestamp"])
    assert second["event"] == "library says hello"
    assert second["level"] == "error"
    assert second["logger"] == LOGGER_NAME


def test_console_format_writes_readable_lines(render: Callable[..., Rendered]) -> None:
    """Console lines carry level, event and key=value pairs, without colour codes."""
    out = render("console")

    get_logger(LOGGER_NAME).warning("disk nearly full", free_mb=12)
    logging.getLogger(LOGGER_NAME).error("library says %s", "hello")

    first, second = out.lines
    assert "[warning  ]" in first
    assert "disk nearly full" in first
    assert "free_mb=12" in first
    assert "[error    ]" in second
    assert "library says hello" in second
    assert f"[{LOGGER_NAME}]" in second
    assert "\x1b[" not in out.text
    assert not first.startswith("{")


@pytest.mark.parametrize("fmt", FORMATS)
def test_lines_below_the_level_are_not_written(render: Callable[..., Rendered], fmt: str) -> None:
    """CUSTODIA_LOG_LEVEL=WARNING drops INFO from both logger kinds."""
    out = render(fmt, log_level="WARNING")

    get_logger(LOGGER_NAME).info("quiet structlog")
    logging.getLogger(LOGGER_NAME).info("quiet stdlib")
    get_logger(LOGGER_NAME).warning("loud structlog")
    logging.getLogger(LOGGER_NAME).warning("loud stdlib")

    assert "quiet" not in out.text
    assert "loud structlog" in out.text
    assert "loud stdlib" in out.text


def test_configuring_twice_does_not_duplicate_lines(render: Callable[..., Rendered]) -> None:
    """Reconfiguring replaces the root handler instead of adding a second one."""
    render("json")
    out = render("json")

    logging.getLogger(LOGGER_NAME).warning("once")

    assert len(out.lines) == 1


def test_uvicorn_access_log_is_silenced(render: Callable[..., Rendered]) -> None:
    """The access log would repeat the canonical request line without the context."""
    out = render("json")

    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')

    assert out.text == ""


# ----------------------------------------------------------------------------- request context


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_bound_request_id_is_on_every_line(
    render: Callable[..., Rendered], fmt: str, kind: str
) -> None:
    """bind_context puts the request id on every line until the context is cleared."""
    out = render(fmt)

    bind_context(request_id="req_01jd3xyzabc")
    out.emit(kind, "first")
    out.emit(kind, "second")
    assert context_value("request_id") == "req_01jd3xyzabc"
    clear_context()
    out.emit(kind, "after")

    first, second, after = out.lines
    assert "req_01jd3xyzabc" in first
    assert "req_01jd3xyzabc" in second
    assert "req_01jd3xyzabc" not in after
    assert context_value("request_id") is None
    if fmt == "json":
        assert [r.get("request_id") for r in out.records()] == [
            "req_01jd3xyzabc",
            "req_01jd3xyzabc",
            None,
        ]


# ----------------------------------------------------------------------------- patterns in text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("number", "masked"),
    [
        (ID_X, "110105********002X"),
        (ID_X.lower(), "110105********002x"),
        (ID_DIGIT, f"440305********{ID_DIGIT[-4:]}"),
    ],
)
def test_identity_numbers_show_first_six_and_last_four(
    render: Callable[..., Rendered], fmt: str, kind: str, number: str, masked: str
) -> None:
    """A PRC identity number keeps its region code and last four, the birth date is hidden."""
    out = render(fmt)

    out.emit(kind, f"verifying holder {number} now")

    assert number not in out.text
    assert number[6:14] not in out.text  # the birth date
    assert f"verifying holder {masked} now" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_identity_numbers_are_masked_inside_chinese_text(
    render: Callable[..., Rendered], fmt: str, kind: str
) -> None:
    """Masking does not depend on spaces: CJK characters around the number are boundaries."""
    out = render(fmt)

    out.emit(kind, f"身份证号{ID_X}已核验")

    assert ID_X not in out.text
    assert "身份证号110105********002X已核验" in out.text


def test_every_valid_identity_number_is_masked(render: Callable[..., Rendered]) -> None:
    """Fifty generated valid numbers (check digit 0-9 or X) never appear in the output."""
    rng = random.Random(20261122)
    numbers = [
        _id_number(
            f"{rng.choice(['110101', '110105', '310104'])}"
            f"{rng.randint(1950, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"{rng.randint(0, 999):03d}"
        )
        for _ in range(50)
    ]
    out = render("json")

    for number in numbers:
        get_logger(LOGGER_NAME).info(f"id {number}")
        logging.getLogger(LOGGER_NAME).info("id %s", number)

    for number in numbers:
        assert number not in out.text
        assert f"id {number[:6]}********{number[-4:]}" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "written",
    [
        UNIONPAY,
        " ".join(UNIONPAY[i : i + 4] for i in range(0, 16, 4)),
        "-".join(UNIONPAY[i : i + 4] for i in range(0, 16, 4)),
    ],
    ids=["plain", "spaces", "hyphens"],
)
def test_card_numbers_found_by_luhn_are_masked(
    render: Callable[..., Rendered], fmt: str, kind: str, written: str
) -> None:
    """A Luhn-valid card number, however grouped, shows only its first and last four."""
    out = render(fmt)

    out.emit(kind, f"binding card {written} for holder")

    assert written not in out.text
    assert UNIONPAY[4:12] not in out.text.replace(" ", "").replace("-", "")
    assert f"binding card 6222 **** **** {UNIONPAY[-4:]} for holder" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("digits", ["123456789012345", "1234567890123456", "9876543210987654321"])
def test_other_long_digit_runs_are_masked(
    render: Callable[..., Rendered], fmt: str, kind: str, digits: str
) -> None:
    """A run of 15+ digits that is no valid card (a bank account, say) keeps its last four."""
    assert not luhn.is_valid(digits)
    out = render(fmt)

    out.emit(kind, f"account {digits} opened")

    assert digits not in out.text
    assert f"account {'*' * (len(digits) - 4)}{digits[-4:]} opened" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "written",
    ["6222 0212 3456 7891", "6222-0212-3456-7891"],
    ids=["spaces", "hyphens"],
)
def test_grouped_digit_runs_failing_luhn_are_masked_too(
    render: Callable[..., Rendered], fmt: str, kind: str, written: str
) -> None:
    """A mistyped card number (fails Luhn) in 4-digit groups is as sensitive as a valid one."""
    assert not luhn.is_valid(written.replace(" ", "").replace("-", ""))
    out = render(fmt)

    out.emit(kind, f"card {written} declined")

    assert written not in out.text
    assert "0212" not in out.text
    assert "3456" not in out.text
    assert "7891" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("written", "masked"),
    [
        ("13812345678", "138****5678"),
        ("19912345678", "199****5678"),
        ("+8613812345678", "+86138****5678"),
        ("+86 13812345678", "+86 138****5678"),
        ("+86-13812345678", "+86-138****5678"),
        ("8613812345678", "86138****5678"),
    ],
)
def test_mainland_mobile_numbers_are_masked(
    render: Callable[..., Rendered], fmt: str, kind: str, written: str, masked: str
) -> None:
    """A mobile number keeps its carrier prefix and last four, with or without +86."""
    out = render(fmt)

    out.emit(kind, f"sms sent to {written} ok")

    assert "1234" not in out.text
    assert f"sms sent to {masked} ok" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "written", ["139 8765 4321", "139-8765-4321", "+86 139 8765 4321", "+86-139-8765-4321"]
)
def test_mobile_numbers_written_in_groups_are_masked(
    render: Callable[..., Rendered], fmt: str, kind: str, written: str
) -> None:
    """The usual 3-4-4 grouping of a mobile number does not let it through."""
    out = render(fmt)

    out.emit(kind, f"sms sent to {written} ok")

    assert "8765" not in out.text
    assert "4321" in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("written", "secret", "shown"),
    [
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
            "eyJhbGciOiJIUzI1NiJ9",
            f"Authorization: Bearer {REDACTED}",
        ),
        ("authorization: bearer s3ss10n-t0ken_x", "s3ss10n-t0ken_x", f"bearer {REDACTED}"),
        ("Authorization: Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg", f"Basic {REDACTED}"),
        (
            "key ck_live_4eC39HqLyjWDarjtT1zdp7dc used",
            "4eC39HqLyjWDarjtT1zdp7dc",
            f"key ck_{REDACTED} used",
        ),
        (
            "otpauth://totp/Custodia:alice?secret=JBSWY3DPEHPK3PXP&issuer=Custodia",
            "JBSWY3DPEHPK3PXP",
            f"otpauth://{REDACTED}",
        ),
    ],
    ids=["bearer-jwt", "bearer-lower", "basic", "api-key", "otpauth"],
)
def test_credentials_in_text_are_redacted(
    render: Callable[..., Rendered], fmt: str, kind: str, *, written: str, secret: str, shown: str
) -> None:
    """Bearer and Basic credentials, Custodia API keys and TOTP URIs never reach the log."""
    out = render(fmt)

    out.emit(kind, f"request header {written}")

    assert secret not in out.text
    assert shown in out.text


# ----------------------------------------------------------------------------- near misses


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "text",
    [
        "amount 100000 fen",
        "amount 1234.56 CNY",
        "order of 12 items",
        f"at {MS_TIMESTAMP} ms",
        "unix time 1795320000",
        "on 2026-11-22 in Shanghai",
        "at 2026-11-22T12:00:00+08:00",
        "reference 123456789012",
        "customer cus_01m80pjbg0qg3sdqajptfdhvsc",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "code 400 after 3 retries",
    ],
)
def test_ordinary_numbers_are_left_alone(
    render: Callable[..., Rendered], fmt: str, kind: str, text: str
) -> None:
    """Amounts, short references, timestamps, dates and ids are not personal data."""
    out = render(fmt)

    out.emit(kind, text)

    assert text in out.text
    assert "*" not in out.text
    assert REDACTED not in out.text


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "text",
    [
        'new row violates check constraint "ck_outbox_events_attempts_not_negative"',
        "constraint ck_idempotency_keys_state failed",
    ],
)
def test_check_constraint_names_are_not_mistaken_for_api_keys(
    render: Callable[..., Rendered], fmt: str, kind: str, text: str
) -> None:
    """Database errors name ck_* constraints (models.py naming); hiding them hides the cause."""
    out = render(fmt)

    out.emit(kind, text)

    assert REDACTED not in out.text
    if fmt == "json":
        assert out.records()[0]["event"] == text
    else:
        assert text in out.text


# ----------------------------------------------------------------------------- keys


@pytest.mark.parametrize("fmt", FORMATS)
def test_secret_keys_are_fully_redacted_at_any_depth(
    render: Callable[..., Rendered], fmt: str
) -> None:
    """Passwords, CVVs, PINs, tokens and authorization values are never shown, even in part."""
    out = render(fmt)

    get_logger(LOGGER_NAME).info(
        "login attempt",
        password="pw-hunter2-pw",
        authorization="Token zzz-auth-zzz",
        token="tok-123-tok",
        request={
            "new-Password": "pw-second-pw",
            "card": {"cvv": "919", "pin": "864209", "card_pin": "135790"},
            "factors": [{"otp": "424242"}, {"api_key": "key-abc-key"}, "plain entry"],
        },
    )

    for secret in (
        "hunter2",
        "zzz-auth-zzz",
        "tok-123-tok",
        "pw-second-pw",
        "919",
        "864209",
        "135790",
        "424242",
        "key-abc-key",
    ):
        assert secret not in out.text
    assert "plain entry" in out.text
    if fmt == "json":
        (record,) = out.records()
        assert record["password"] == REDACTED
        assert record["authorization"] == REDACTED
        assert record["token"] == REDACTED
        assert record["request"] == {
            "new-Password": REDACTED,
            "card": {"cvv": REDACTED, "pin": REDACTED, "card_pin": REDACTED},
            "factors": [{"otp": REDACTED}, {"api_key": REDACTED}, "plain entry"],
        }
    else:
        assert f"password={REDACTED}" in out.text
        assert f"'cvv': '{REDACTED}'" in out.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_personal_data_keys_show_only_the_last_four(
    render: Callable[..., Rendered], fmt: str
) -> None:
    """id_number, phone and card_number values are masked to their last four characters."""
    out = render(fmt)

    get_logger(LOGGER_NAME).info(
        "customer updated",
        id_number=ID_X,
        phone="13812345678",
        card_number=VISA,
        holder={"mobile": "+8613987654321", "bank_account_number": "6222600110012345"},
    )

    for raw in (ID_X, "13812345678", VISA, "13987654321", "6222600110012345"):
        assert raw not in out.text
    assert f"{'*' * 14}002X" in out.text
    assert f"{'*' * 7}5678" in out.text
    assert f"{'*' * 12}{VISA[-4:]}" in out.text
    if fmt == "json":
        (record,) = out.records()
        assert record["id_number"] == "**************002X"
        assert record["phone"] == "*******5678"
        assert record["card_number"] == f"************{VISA[-4:]}"
        assert record["holder"] == {
            "mobile": "**********4321",
            "bank_account_number": "************2345",
        }


@pytest.mark.parametrize("fmt", FORMATS)
def test_innocent_keys_that_contain_secret_words_are_kept(
    render: Callable[..., Rendered], fmt: str
) -> None:
    """Keys are matched by word: 'mapping', 'shipping' and 'pinyin' are not PINs."""
    out = render(fmt)

    get_logger(LOGGER_NAME).info(
        "profile",
        mapping="field-map",
        shipping_address="Chaoyang District",
        name_pinyin="zhang san",
        expires_at="2027-01-01",
        tracking_id="trk-77",
    )

    for value in ("field-map", "Chaoyang District", "zhang san", "2027-01-01", "trk-77"):
        assert value in out.text
    assert REDACTED not in out.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_that_are_not_strings_are_masked_too(
    render: Callable[..., Rendered], fmt: str
) -> None:
    """An int card number or an exception carrying an id number is rendered masked."""
    out = render(fmt)

    get_logger(LOGGER_NAME).warning(
        "verification failed",
        pan=int(VISA),
        error=ValueError(f"holder {ID_X} not found"),
    )

    assert VISA not in out.text
    assert ID_X not in out.text
    assert "110105********002X" in out.text


# ----------------------------------------------------------------------------- exceptions


@pytest.mark.parametrize("kind", LOGGERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_rendered_traceback_is_masked(render: Callable[..., Rendered], fmt: str, kind: str) -> None:
    """An exception message holding an identity number is masked in the logged traceback."""
    out = render(fmt)
    holder = ID_X

    try:
        raise LookupError("no customer with id number " + holder)  # noqa: TRY301
    except LookupError:
        if kind == "structlog":
            get_logger(LOGGER_NAME).exception("lookup failed")
        else:
            logging.getLogger(LOGGER_NAME).exception("lookup failed")

    assert "Traceback (most recent call last)" in out.text
    assert "lookup failed" in out.text
    assert ID_X not in out.text
    assert "LookupError: no customer with id number 110105********002X" in out.text
    if fmt == "json":
        (record,) = out.records()
        assert "110105********002X" in record["exception"]


def test_values_masked_already_are_kept_and_unmasked_ones_are_masked(
    render: Callable[..., Rendered],
) -> None:
    """Masking twice would hide the prefix that lets a reader recognise their own data."""
    out = render("json")
    get_logger(LOGGER_NAME).info(
        "update", phone="138****5678", id_number="110101********1234", mobile="13812345678***"
    )
    text = out.text
    assert "138****5678" in text
    assert "110101********1234" in text
    assert "13812345678" not in text
