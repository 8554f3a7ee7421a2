"""One frozen settings object, built once from the environment and passed down.

Nothing in Custodia reads the environment at import time (STYLE.md 9): the CLI and the
test suite call :func:`load_settings` and hand the result to whatever needs it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy.engine import URL, make_url

from custodia.core.errors import ConfigError


class Environment(StrEnum):
    """Where the service runs; production refuses development shortcuts."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    """How log lines are rendered."""

    JSON = "json"
    CONSOLE = "console"


PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of the service; see the settings table in README.md."""

    env: Environment = Environment.DEVELOPMENT
    var_dir: str = "var"
    database_url: str = ""
    timezone: str = "Asia/Shanghai"
    keys_file: str = ""
    keys_json: str = ""
    log_level: str = "INFO"
    log_format: LogFormat | None = None
    db_pool_size: PositiveInt = 10
    db_pool_timeout_s: PositiveFloat = 10.0
    db_retry_attempts: PositiveInt = 5
    db_retry_base_delay_ms: PositiveFloat = 5.0
    db_retry_max_delay_ms: PositiveFloat = 200.0
    sqlite_busy_timeout_ms: NonNegativeInt = 5000
    max_body_bytes: PositiveInt = 1_048_576
    idempotency_ttl_hours: PositiveInt = 24
    idempotency_lock_wait_ms: PositiveInt = 100
    outbox_batch_size: PositiveInt = 100
    outbox_poll_interval_s: PositiveFloat = 0.5
    worker_job_slice_s: PositiveFloat = 0.25
    outbox_max_attempts: PositiveInt = 10
    outbox_retry_base_s: PositiveFloat = 1.0
    outbox_retry_max_s: PositiveFloat = 900.0
    outbox_retention_days: PositiveInt = 7
    maintenance_interval_s: PositiveFloat = 60.0
    inprocess_workers: bool | None = None
    # scrypt N = 2^15, r = 8, p = 3: 32 MiB per hash (see custodia/core/passwords.py).
    scrypt_log2_n: Annotated[int, msgspec.Meta(ge=4, le=22)] = 15
    scrypt_r: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    scrypt_p: Annotated[int, msgspec.Meta(ge=1, le=16)] = 3
    kdf_concurrency: PositiveInt = 2
    staff_session_hours: PositiveFloat = 12.0
    staff_session_idle_minutes: PositiveFloat = 30.0
    staff_password_min_length: Annotated[int, msgspec.Meta(ge=8, le=128)] = 12
    login_max_failures: PositiveInt = 5
    login_lockout_minutes: PositiveFloat = 15.0
    audit_seal_interval_s: PositiveFloat = 1.0
    audit_seal_batch: PositiveInt = 2000
    verification_channels: str = ""
    screening_threshold: Annotated[int, msgspec.Meta(ge=50, le=100)] = 85
    screening_list_check_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    risk_model: str = ""
    kyc_expiry_notice_days: PositiveInt = 30
    kyc_expiry_grace_days: PositiveInt = 30
    kyc_reverify_years_high: PositiveInt = 1
    kyc_reverify_years_medium: PositiveInt = 2
    kyc_reverify_years_low: PositiveInt = 3
    kyc_review_interval_s: PositiveFloat = 3600.0
    rescreen_batch: PositiveInt = 200
    agreement_notice_days: Annotated[int, msgspec.Meta(ge=30, le=365)] = 30
    agreement_clauses: str = ""
    risk_warnings: str = ""
    notice_batch: PositiveInt = 200
    customer_auth_max_failures: PositiveInt = 5
    customer_auth_lockout_minutes: PositiveFloat = 15.0
    limit_year: Literal["calendar_year", "rolling_12_months"] = "calendar_year"
    institution_rating: Literal["none", "A", "B"] = "none"
    signature_daily_limit: PositiveInt = 5_000_000
    bank_adapter: str = ""
    aml_due_hours_high: PositiveInt = 24
    aml_due_hours_medium: PositiveInt = 72
    aml_due_hours_low: PositiveInt = 168
    aml_home_country: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] = "CN"

    def __post_init__(self) -> None:
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{env_name(field)}: must be a finite number, not {value}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"CUSTODIA_TIMEZONE={self.timezone!r} is not an IANA time zone "
                "(for example Asia/Shanghai)"
            ) from None
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(
                f"CUSTODIA_LOG_LEVEL={self.log_level!r} is not one of DEBUG, INFO, WARNING, "
                "ERROR, CRITICAL"
            )

    def __repr__(self) -> str:
        # Settings end up in tracebacks and debug output: never show key material.
        shown = {field: getattr(self, field) for field in self.__struct_fields__}
        shown["database_url"] = _hide_password(self.database_url)
        shown["keys_json"] = "<set>" if self.keys_json else ""
        shown["verification_channels"] = "<set>" if self.verification_channels else ""
        shown["bank_adapter"] = "<set>" if self.bank_adapter else ""
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # Derived values: computed, never stored twice.

    @property
    def tz(self) -> ZoneInfo:
        """The institution's time zone, in which day and year limit windows are cut."""
        return ZoneInfo(self.timezone)

    @property
    def is_production(self) -> bool:
        """Whether development shortcuts are refused."""
        return self.env is Environment.PRODUCTION

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file under ``var_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.var_dir) / 'custodia.db'}"

    @property
    def resolved_keys_file(self) -> Path:
        """Where the key file lives (``var_dir/keys.json`` unless set)."""
        return Path(self.keys_file) if self.keys_file else Path(self.var_dir) / "keys.json"

    @property
    def resolved_log_format(self) -> LogFormat:
        """JSON in production, readable lines in development, unless set."""
        if self.log_format is not None:
            return self.log_format
        return LogFormat.JSON if self.is_production else LogFormat.CONSOLE

    @property
    def run_inprocess_workers(self) -> bool:
        """Whether ``serve`` also runs the background workers (default: in development)."""
        if self.inprocess_workers is not None:
            return self.inprocess_workers
        return not self.is_production


ENV_PREFIX = "CUSTODIA_"
_FIELDS: tuple[str, ...] = Settings.__struct_fields__
_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def env_name(field: str) -> str:
    """Return the environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``CUSTODIA_*`` variables; raise ConfigError on bad input.

    Unknown ``CUSTODIA_*`` variables are refused too, so that a typo never silently leaves a
    production default in place.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    known = {env_name(f) for f in _FIELDS} | {"CUSTODIA_TEST_POSTGRES_URL"}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name not in known:
            raise ConfigError(
                f"{name} is not a Custodia setting (see the settings table in README.md)"
            )
        if name == "CUSTODIA_TEST_POSTGRES_URL":
            continue
        field = name.removeprefix(ENV_PREFIX).lower()
        if value == "":
            continue
        raw[field] = _BOOL_WORDS.get(value.lower(), value) if _is_bool_field(field) else value
    raw.update(overrides)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    parse_database_url(settings.resolved_database_url)
    return settings


def _is_bool_field(field: str) -> bool:
    return field in {"inprocess_workers"}


def _describe(exc: msgspec.ValidationError) -> str:
    message, _, where = str(exc).partition(" - at `$.")
    field = where.rstrip("`")
    if field:
        return f"{env_name(field)}: {message}"
    return f"invalid settings: {message}"


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True) if url else ""
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as unparsable
        return "<unparsable>"


def parse_database_url(url: str) -> URL:
    """Parse a database URL, choosing psycopg 3 for ``postgresql://`` and ``postgres://``.

    Raises ConfigError for anything but SQLite and PostgreSQL URLs.
    """
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for bad URLs
        raise ConfigError(f"CUSTODIA_DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg"}:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        return parsed.set(drivername="sqlite+pysqlite")
    raise ConfigError(
        "CUSTODIA_DATABASE_URL must start with sqlite:/// or postgresql://, "
        f"not {parsed.drivername}://"
    )
