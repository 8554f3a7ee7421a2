"""Structured logs: JSON in production, readable lines in development, never personal data.

Every line passes :func:`redact` last before rendering, for Custodia's own log calls and for
those of libraries (uvicorn, SQLAlchemy, alembic) alike. Redaction works on two levels:

- by key: values under names such as ``password``, ``cvv``, ``token``, ``authorization``,
  ``id_number``, ``phone`` or ``card_number`` are replaced or masked, at any depth;
- by pattern, in every string (messages and rendered exceptions too): PRC resident identity
  numbers (``110101********1234``), card numbers found by the Luhn check
  (``6222 **** **** 1234``), any other run of 15 or more digits, mainland mobile numbers
  (``138****5678``), bearer credentials, Custodia API keys and ``otpauth://`` URIs (which
  carry TOTP secrets).

The request id lives in a contextvar (``structlog.contextvars``) so it is on every line
written while a request is served.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import msgspec
import structlog
from stdnum import luhn
from structlog.typing import EventDict, Processor, WrappedLogger

from custodia.core.settings import LogFormat, Settings

REDACTED = "[REDACTED]"

# Keys are compared lower-cased with "-" and "_" removed (``new-Password`` → ``newpassword``).
#: Keys whose values are secrets, never shown, when they contain one of these ...
_SECRET_KEY_PARTS = (
    "password", "passwd", "passphrase", "secret", "token", "authorization", "cookie",
    "apikey", "privatekey", "pepper", "cvv", "securitycode", "credential", "signingkey",
    "otpauth",
)  # fmt: skip
#: ... or when one of their ``_``-separated words is one of these (short words that are also
#: parts of innocent keys: ``pin`` in ``mapping`` and ``pinyin``).
_SECRET_KEY_WORDS = frozenset(
    {"pin", "pwd", "otp", "totp", "cvc", "cvn", "track", "track1", "track2", "expiry", "exp"}
)
#: Keys whose values are personal data: shown masked (last digits only).
_PII_KEY_PARTS = ("idnumber", "cardnumber", "accountnumber", "phone", "mobile")

_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[0-9Xx])(?![0-9A-Za-z])")
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")
_PHONE = re.compile(r"(?<![0-9A-Za-z])(\+?86[ -]?)?(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?![0-9A-Za-z])")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
#: Custodia API keys are ``ck_<dev|live>_<key id>_<secret>`` (issue 3 issues them).
_API_KEY = re.compile(r"\bck_(?:dev|live)_[A-Za-z0-9_-]+")
_OTPAUTH = re.compile(r"otpauth://\S+")


def _mask_digit_run(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"[ -]", "", text)
    if luhn.is_valid(digits):
        return f"{digits[:4]} **** **** {digits[-4:]}"
    if len(digits) >= 15:
        return "*" * (len(digits) - 4) + digits[-4:]
    return text


#: No pattern above matches fewer characters than ``basic x``.
_SHORTEST_MATCH = 7
#: The only characters outside ASCII that the patterns above can match: decimal digits of
#: other scripts (``\d``) and the three letters IGNORECASE equates with s and i: long s U+017F,
#: dotted capital I U+0130, dotless i U+0131 (a test checks this against the whole of Unicode).
_NON_ASCII_SPECIAL = re.compile(r"[\d\u017f\u0130\u0131](?<![0-9])")
#: The quick test's folding: digits become 0, the letters of bearer/basic lower case, and the
#: separators of digit runs (space, dash) are deleted.
_FOLD = bytes.maketrans(b"123456789BEARSIC", b"000000000bearsic")
_FOLD_DELETE = b" -"
#: Every phone, identity or card number and digit run has at least 11 digits.
_ELEVEN_DIGITS = "0" * 11


def _may_match(text: str) -> bool:
    """Return False only if no pattern of :func:`redact_text` can match ``text``.

    The test is a necessary condition for each pattern, cheaper than the six searches (most
    log values, such as ``/v1/transfers`` or ``req_01JD8X…``, match none):

    - phone, identity and card numbers and other digit runs hold 11 or more ASCII digits,
      with at most one space or dash between two of them: 11 zeros once separators are
      deleted and digits folded to 0;
    - credentials start with ``bearer``/``basic`` in any case, ``ck_`` or ``otpauth://``.

    Text holding characters outside ASCII is folded the same way (each such character to
    ``?``) unless it holds one of the few that the patterns treat as digits or letters
    (``_NON_ASCII_SPECIAL``), which sends it to the full searches.
    """
    if len(text) < _SHORTEST_MATCH:
        return False
    if not text.isascii() and _NON_ASCII_SPECIAL.search(text):
        return True
    folded = text.encode("ascii", "replace").translate(_FOLD, _FOLD_DELETE).decode("ascii")
    return (
        _ELEVEN_DIGITS in folded
        or "bearer" in folded
        or "basic" in folded
        or "ck_" in folded
        or "otpauth://" in folded
    )


def redact_text(text: str) -> str:
    """Return ``text`` with identity, card and phone numbers and credentials masked.

    Text that cannot match any pattern (:func:`_may_match`, most log values) is returned as
    it is: a substitution whose pattern does not match leaves the text unchanged, so the six
    would have returned it unchanged too.
    """
    if not _may_match(text):
        return text
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _API_KEY.sub("ck_" + REDACTED, text)
    text = _OTPAUTH.sub("otpauth://" + REDACTED, text)
    text = _ID_NUMBER.sub(lambda m: f"{m.group(1)}********{m.group(2)[-4:]}", text)
    text = _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(3)}", text)
    return _DIGIT_RUN.sub(_mask_digit_run, text)


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)
def _key_class(key: object) -> str | None:
    """Return ``pii``, ``secret`` or None for a field name (cached: names repeat)."""
    if not isinstance(key, str):
        return None
    words = _CAMEL_BOUNDARY.sub("_", key).lower().replace("-", "_")
    joined = words.replace("_", "")
    if any(part in joined for part in _PII_KEY_PARTS):
        return "pii"
    if any(part in joined for part in _SECRET_KEY_PARTS):
        return "secret"
    if not _SECRET_KEY_WORDS.isdisjoint(words.split("_")):
        return "secret"
    return None


#: Most digits a masked value shows (``110101********1234``); anything with more is masked.
_MASKED_MAX_DIGITS = 10


def _mask_pii(value: object) -> str:
    text = str(value)
    digits = re.sub(r"\D", "", text)
    if "***" in text and len(digits) <= _MASKED_MAX_DIGITS:
        return text  # masked already (``138****5678``): masking again would lose the prefix
    if len(digits) >= 4:
        return "*" * max(len(text) - 4, 0) + text[-4:]
    return REDACTED


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return _redact_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return _redact_scalar(value)


def redact_value(value: Any) -> Any:
    """Return ``value`` (any JSON-like structure) with personal data and secrets masked."""
    return _redact(value)


def _redact_scalar(value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    # Numbers keep their type unless they look like a card or identity number; anything
    # else (exceptions, ids, dates …) is logged as its text, so redact that text.
    text = str(value)
    masked = redact_text(text)
    if isinstance(value, int | float) and masked == text:
        return value
    return masked


def _redact_mapping(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        kind = _key_class(key)
        if value is None or kind is None:
            out[key] = _redact(value)
        elif kind == "secret":
            out[key] = REDACTED
        else:
            out[key] = _mask_pii(value)
    return out


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Structlog processor: mask secrets and personal data anywhere in the event."""
    return _redact_mapping(event_dict)


def _json_serializer(obj: Any, **_kw: Any) -> str:
    return msgspec.json.encode(obj, enc_hook=str).decode()


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging through redaction to ``stream``."""
    stream = stream or sys.stdout
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    renderer: Processor
    if settings.resolved_log_format is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(serializer=_json_serializer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*_shared_processors(), redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                *_shared_processors(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's access log repeats our canonical request line without the context.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic narrates every step at INFO; `custodia db upgrade` prints the outcome itself.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """Return a structlog logger bound to ``initial`` values."""
    return structlog.get_logger(name, **initial)


def bind_context(**values: Any) -> None:
    """Bind ``values`` to every log line of the current context (request or job)."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context() -> None:
    """Forget the values bound by :func:`bind_context` in the current context."""
    structlog.contextvars.clear_contextvars()


def context_value(key: str) -> Any:
    """Return a value bound to the current context, or None."""
    values: MutableMapping[str, Any] = structlog.contextvars.get_contextvars()
    return values.get(key)
