"""Settings: one frozen object from ``CUSTODIA_*`` variables, refusing every bad input."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from custodia.core.errors import ConfigError
from custodia.core.settings import (
    Environment,
    LogFormat,
    env_name,
    load_settings,
    parse_database_url,
)

# ----------------------------------------------------------------------------- defaults


def test_no_environment_gives_the_defaults() -> None:
    """With no variables: development, SQLite under var/, Asia/Shanghai, INFO."""
    settings = load_settings({})

    assert settings.env is Environment.DEVELOPMENT
    assert not settings.is_production
    assert settings.var_dir == "var"
    assert settings.resolved_database_url == f"sqlite:///{Path('var') / 'custodia.db'}"
    assert settings.timezone == "Asia/Shanghai"
    assert settings.tz == ZoneInfo("Asia/Shanghai")
    assert settings.log_level == "INFO"
    assert settings.db_pool_size == 10
    assert settings.resolved_keys_file == Path("var") / "keys.json"


def test_sqlite_default_lives_under_the_var_dir(tmp_path: Path) -> None:
    """The embedded database file follows the var directory."""
    settings = load_settings({}, var_dir=str(tmp_path))

    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'custodia.db'}"
    assert settings.resolved_keys_file == tmp_path / "keys.json"
    assert parse_database_url(settings.resolved_database_url).drivername == "sqlite+pysqlite"


def test_variables_set_the_matching_fields() -> None:
    """Each CUSTODIA_<FIELD> sets <field>, converted to the field's type."""
    settings = load_settings(
        {
            "CUSTODIA_ENV": "production",
            "CUSTODIA_TIMEZONE": "UTC",
            "CUSTODIA_DB_POOL_SIZE": "25",
            "CUSTODIA_DB_POOL_TIMEOUT_S": "2.5",
            "CUSTODIA_LOG_LEVEL": "debug",
            "CUSTODIA_KEYS_FILE": "/etc/custodia/keys.json",
        }
    )

    assert settings.env is Environment.PRODUCTION
    assert settings.tz == ZoneInfo("UTC")
    assert settings.db_pool_size == 25
    assert settings.db_pool_timeout_s == 2.5
    assert settings.log_level == "debug"
    assert settings.resolved_keys_file == Path("/etc/custodia/keys.json")


def test_empty_variable_keeps_the_default() -> None:
    """An exported-but-empty variable means "not set", not an empty value."""
    settings = load_settings({"CUSTODIA_TIMEZONE": "", "CUSTODIA_DB_POOL_SIZE": ""})

    assert settings.timezone == "Asia/Shanghai"
    assert settings.db_pool_size == 10


def test_other_variables_are_ignored() -> None:
    """Only CUSTODIA_* variables are read; the rest of the environment is not ours."""
    settings = load_settings({"PATH": "/usr/bin", "TZ": "Mars/Base", "custodia_env": "x"})

    assert settings == load_settings({})


def test_test_postgres_url_is_tolerated_and_ignored() -> None:
    """CUSTODIA_TEST_POSTGRES_URL belongs to the test suite, not to the settings."""
    settings = load_settings({"CUSTODIA_TEST_POSTGRES_URL": "postgresql://pg@localhost/t"})

    assert settings.database_url == ""


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_settings() reads os.environ when no mapping is given."""
    for name in [n for n in os.environ if n.startswith("CUSTODIA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CUSTODIA_TIMEZONE", "Europe/Berlin")

    assert load_settings().timezone == "Europe/Berlin"


def test_env_name_is_the_prefixed_upper_case_field() -> None:
    """Error messages and docs name fields by their environment variable."""
    assert env_name("db_pool_size") == "CUSTODIA_DB_POOL_SIZE"


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"CUSTODIA_DB_POOL_SIZE": "abc"}, "CUSTODIA_DB_POOL_SIZE"),
        ({"CUSTODIA_DB_POOL_SIZE": "0"}, "CUSTODIA_DB_POOL_SIZE"),
        ({"CUSTODIA_DB_POOL_SIZE": "-3"}, "CUSTODIA_DB_POOL_SIZE"),
        ({"CUSTODIA_MAX_BODY_BYTES": "1.5"}, "CUSTODIA_MAX_BODY_BYTES"),
        ({"CUSTODIA_DB_POOL_TIMEOUT_S": "0"}, "CUSTODIA_DB_POOL_TIMEOUT_S"),
        ({"CUSTODIA_SQLITE_BUSY_TIMEOUT_MS": "-1"}, "CUSTODIA_SQLITE_BUSY_TIMEOUT_MS"),
        ({"CUSTODIA_TIMEZONE": "Mars/Base"}, "CUSTODIA_TIMEZONE"),
        ({"CUSTODIA_TIMEZONE": "../../etc/passwd"}, "CUSTODIA_TIMEZONE"),
        ({"CUSTODIA_ENV": "staging"}, "CUSTODIA_ENV"),
        ({"CUSTODIA_ENV": "Production"}, "CUSTODIA_ENV"),
        ({"CUSTODIA_LOG_LEVEL": "LOUD"}, "CUSTODIA_LOG_LEVEL"),
        ({"CUSTODIA_LOG_FORMAT": "xml"}, "CUSTODIA_LOG_FORMAT"),
        ({"CUSTODIA_INPROCESS_WORKERS": "maybe"}, "CUSTODIA_INPROCESS_WORKERS"),
        ({"CUSTODIA_TYPO": "1"}, "CUSTODIA_TYPO"),
        ({"CUSTODIA_DB_POOLSIZE": "5"}, "CUSTODIA_DB_POOLSIZE"),
        ({"CUSTODIA_TYPO": ""}, "CUSTODIA_TYPO"),
        ({"CUSTODIA_DATABASE_URL": "mysql://x"}, "CUSTODIA_DATABASE_URL"),
        ({"CUSTODIA_DATABASE_URL": "postgresql+asyncpg://u@h/d"}, "CUSTODIA_DATABASE_URL"),
        ({"CUSTODIA_DATABASE_URL": "not a url"}, "CUSTODIA_DATABASE_URL"),
    ],
)
def test_bad_input_raises_config_error_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    """Every refusal is a ConfigError whose message names the variable to fix."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert variable in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"CUSTODIA_DB_POOL_SIZE": "abc"}, "Expected `int`"),
        ({"CUSTODIA_DB_POOL_SIZE": "0"}, ">= 1"),
        ({"CUSTODIA_TIMEZONE": "Mars/Base"}, "not an IANA time zone"),
        ({"CUSTODIA_ENV": "staging"}, "'staging'"),
        ({"CUSTODIA_LOG_LEVEL": "LOUD"}, "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"CUSTODIA_TYPO": "1"}, "not a Custodia setting"),
        ({"CUSTODIA_DATABASE_URL": "mysql://x"}, "sqlite:/// or postgresql://, not mysql://"),
        ({"CUSTODIA_DATABASE_URL": "not a url"}, "not a database URL"),
    ],
)
def test_refusal_message_says_what_is_wrong(environ: dict[str, str], reason: str) -> None:
    """The message explains the problem, not just where it is."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert reason in str(caught.value)


def test_bad_override_is_refused_like_a_bad_variable() -> None:
    """Keyword overrides go through the same validation as the environment."""
    with pytest.raises(ConfigError, match="CUSTODIA_DB_POOL_SIZE"):
        load_settings({}, db_pool_size=0)


# ----------------------------------------------------------------------------- database URLs


@pytest.mark.parametrize(
    "url",
    [
        "postgres://custodia:pw@db.internal:5432/custodia",
        "postgresql://custodia:pw@db.internal:5432/custodia",
        "postgresql+psycopg://custodia:pw@db.internal:5432/custodia",
    ],
)
def test_postgres_urls_are_accepted_and_use_psycopg_3(url: str) -> None:
    """All three PostgreSQL spellings are accepted and resolve to the psycopg 3 driver."""
    settings = load_settings({"CUSTODIA_DATABASE_URL": url})

    parsed = parse_database_url(settings.resolved_database_url)

    assert parsed.drivername == "postgresql+psycopg"
    assert parsed.host == "db.internal"
    assert parsed.database == "custodia"


# ----------------------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_variables_accept_the_usual_words(word: str, value: bool) -> None:
    """CUSTODIA_INPROCESS_WORKERS takes true/false, 1/0, yes/no and on/off in any case."""
    settings = load_settings({"CUSTODIA_INPROCESS_WORKERS": word})

    assert settings.inprocess_workers is value
    assert settings.run_inprocess_workers is value


# ----------------------------------------------------------------------------- derived values


def test_log_format_defaults_to_json_in_production() -> None:
    """Production logs are JSON unless told otherwise."""
    assert load_settings({"CUSTODIA_ENV": "production"}).resolved_log_format is LogFormat.JSON


def test_log_format_defaults_to_console_in_development() -> None:
    """Development logs are readable lines unless told otherwise."""
    assert load_settings({}).resolved_log_format is LogFormat.CONSOLE


@pytest.mark.parametrize(
    ("env", "fmt", "expected"),
    [
        ("production", "console", LogFormat.CONSOLE),
        ("development", "json", LogFormat.JSON),
    ],
)
def test_explicit_log_format_wins(env: str, fmt: str, expected: LogFormat) -> None:
    """CUSTODIA_LOG_FORMAT overrides the environment's default."""
    settings = load_settings({"CUSTODIA_ENV": env, "CUSTODIA_LOG_FORMAT": fmt})

    assert settings.resolved_log_format is expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, True),
        ({"CUSTODIA_ENV": "production"}, False),
        ({"CUSTODIA_INPROCESS_WORKERS": "false"}, False),
        ({"CUSTODIA_ENV": "production", "CUSTODIA_INPROCESS_WORKERS": "true"}, True),
    ],
)
def test_inprocess_workers_default_to_development_only(
    environ: dict[str, str], expected: bool
) -> None:
    """serve runs the workers itself in development, not in production, unless set."""
    assert load_settings(environ).run_inprocess_workers is expected


# ----------------------------------------------------------------------------- the object


def test_settings_are_frozen() -> None:
    """Assigning to a field raises: settings are built once and passed down."""
    settings = load_settings({})

    with pytest.raises(AttributeError):
        settings.env = Environment.PRODUCTION  # type: ignore[misc]

    assert settings.env is Environment.DEVELOPMENT


def test_settings_refuse_unknown_fields() -> None:
    """A misspelt override is refused, not silently dropped."""
    with pytest.raises(ConfigError, match="db_poolsize"):
        load_settings({}, db_poolsize=5)


def test_repr_hides_the_database_password_and_key_json() -> None:
    """Settings appear in tracebacks, so their repr shows no secret."""
    settings = load_settings(
        {
            "CUSTODIA_DATABASE_URL": "postgresql://custodia:s3cr3t-pw@db/custodia",
            "CUSTODIA_KEYS_JSON": '{"rings": "key-material-here"}',
        }
    )

    shown = repr(settings)

    assert "s3cr3t-pw" not in shown
    assert "key-material-here" not in shown
    assert "postgresql://custodia:***@db/custodia" in shown
    assert shown.startswith("Settings(")
