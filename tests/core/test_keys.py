"""Key files: generated, written owner-only, loaded back, and refused when unusable."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from custodia.core.errors import ConfigError
from custodia.core.keys import (
    KEY_BYTES,
    KeyFile,
    KeyPurpose,
    generate_key_file,
    load_keys,
    write_key_file,
)
from custodia.core.settings import Environment, Settings, load_settings

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


def _development(tmp_path: Path, **environ: str) -> Settings:
    return load_settings(environ, var_dir=str(tmp_path))


def _production(tmp_path: Path, **environ: str) -> Settings:
    return load_settings({"CUSTODIA_ENV": "production", **environ}, var_dir=str(tmp_path))


def _written(settings: Settings, environment: Environment) -> KeyFile:
    key_file = generate_key_file(environment, NOW)
    write_key_file(settings.resolved_keys_file, key_file)
    return key_file


def _as_json(key_file: KeyFile) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(key_file))
    return decoded


# ----------------------------------------------------------------------------- generation


def test_generated_file_has_one_fresh_32_byte_key_per_purpose() -> None:
    """Every purpose gets a ring whose primary key "1" is 32 random bytes."""
    key_file = generate_key_file(Environment.DEVELOPMENT, NOW)

    assert set(key_file.rings) == set(KeyPurpose)
    assert key_file.environment is Environment.DEVELOPMENT
    assert key_file.created_at == NOW
    secrets = [key_file.secret(purpose) for purpose in KeyPurpose]
    assert all(len(secret) == KEY_BYTES for secret in secrets)
    assert all(key_file.primary_id(purpose) == "1" for purpose in KeyPurpose)
    # A key serves one purpose only: no two purposes share key material.
    assert len(set(secrets)) == len(KeyPurpose)


def test_two_generations_never_share_a_key() -> None:
    """Keys come from a CSPRNG: generating twice gives different keys."""
    first = generate_key_file(Environment.DEVELOPMENT, NOW)
    second = generate_key_file(Environment.DEVELOPMENT, NOW)

    for purpose in KeyPurpose:
        assert first.secret(purpose) != second.secret(purpose)


# ----------------------------------------------------------------------------- write and load


def test_written_keys_load_back_unchanged(tmp_path: Path) -> None:
    """What keys init writes is exactly what the service later loads."""
    settings = _development(tmp_path)
    key_file = _written(settings, Environment.DEVELOPMENT)

    loaded = load_keys(settings)

    assert loaded == key_file
    for purpose in KeyPurpose:
        assert loaded.secret(purpose) == key_file.secret(purpose)
        assert loaded.secret(purpose, "1") == key_file.secret(purpose)


def test_written_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The key file is created with mode 0600, whatever the umask allows."""
    settings = _development(tmp_path)
    previous = os.umask(0o000)
    try:
        _written(settings, Environment.DEVELOPMENT)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(settings.resolved_keys_file.stat().st_mode) == 0o600


def test_writing_creates_missing_directories(tmp_path: Path) -> None:
    """keys init works on a fresh machine where var/ does not exist yet."""
    path = tmp_path / "var" / "secrets" / "keys.json"

    write_key_file(path, generate_key_file(Environment.DEVELOPMENT, NOW))

    assert path.is_file()


def test_writing_refuses_to_overwrite_existing_keys(tmp_path: Path) -> None:
    """A second keys init fails and leaves the first keys intact (data depends on them)."""
    settings = _development(tmp_path)
    _written(settings, Environment.DEVELOPMENT)
    before = settings.resolved_keys_file.read_bytes()

    with pytest.raises(ConfigError, match="already exists; refusing to overwrite"):
        write_key_file(settings.resolved_keys_file, generate_key_file(Environment.DEVELOPMENT, NOW))

    assert settings.resolved_keys_file.read_bytes() == before


def test_writing_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    """A link planted at the key path is not written through."""
    target = tmp_path / "elsewhere.json"
    link = tmp_path / "keys.json"
    link.symlink_to(target)

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_key_file(link, generate_key_file(Environment.DEVELOPMENT, NOW))

    assert not target.exists()


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    """Without a key file the error points at `custodia keys init`."""
    with pytest.raises(ConfigError, match="custodia keys init") as caught:
        load_keys(_development(tmp_path))

    assert str(tmp_path / "keys.json") in str(caught.value)


def test_keys_file_setting_points_elsewhere(tmp_path: Path) -> None:
    """CUSTODIA_KEYS_FILE chooses the file instead of var/keys.json."""
    path = tmp_path / "etc" / "custodia-keys.json"
    key_file = generate_key_file(Environment.DEVELOPMENT, NOW)
    write_key_file(path, key_file)

    loaded = load_keys(_development(tmp_path / "var", CUSTODIA_KEYS_FILE=str(path)))

    assert loaded == key_file


# ----------------------------------------------------------------------------- production


def test_production_refuses_a_development_key_file(tmp_path: Path) -> None:
    """Development keys may have been copied anywhere; production says so and refuses them."""
    _written(_development(tmp_path), Environment.DEVELOPMENT)

    with pytest.raises(ConfigError) as caught:
        load_keys(_production(tmp_path))

    message = str(caught.value)
    assert "CUSTODIA_ENV=production refuses the development keys" in message
    assert "may have been copied anywhere" in message
    assert str(tmp_path / "keys.json") in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_production_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    """A group- or world-accessible production key file is refused with the fix to apply."""
    settings = _production(tmp_path)
    _written(settings, Environment.PRODUCTION)
    settings.resolved_keys_file.chmod(mode)

    with pytest.raises(ConfigError, match=r"readable by other users \(chmod 600 it\)"):
        load_keys(settings)


def test_production_loads_its_own_owner_only_key_file(tmp_path: Path) -> None:
    """Production keys in a 0600 file are accepted."""
    settings = _production(tmp_path)
    key_file = _written(settings, Environment.PRODUCTION)

    assert load_keys(settings) == key_file


def test_development_tolerates_a_loosely_permissioned_file(tmp_path: Path) -> None:
    """The permission check is a production rule; development keys are throw-away."""
    settings = _development(tmp_path)
    key_file = _written(settings, Environment.DEVELOPMENT)
    settings.resolved_keys_file.chmod(0o644)

    assert load_keys(settings) == key_file


# ----------------------------------------------------------------------------- CUSTODIA_KEYS_JSON


def test_keys_json_is_used_instead_of_a_file(tmp_path: Path) -> None:
    """Containers pass the same JSON in CUSTODIA_KEYS_JSON; no file is needed."""
    key_file = generate_key_file(Environment.PRODUCTION, NOW)
    raw = json.dumps(_as_json(key_file))

    loaded = load_keys(_production(tmp_path, CUSTODIA_KEYS_JSON=raw))

    assert loaded == key_file
    assert not (tmp_path / "keys.json").exists()


def test_keys_json_wins_over_a_key_file(tmp_path: Path) -> None:
    """When both are present, the JSON variable is the source."""
    settings = _development(tmp_path)
    _written(settings, Environment.DEVELOPMENT)
    from_json = generate_key_file(Environment.DEVELOPMENT, NOW)

    loaded = load_keys(_development(tmp_path, CUSTODIA_KEYS_JSON=json.dumps(_as_json(from_json))))

    assert loaded == from_json


def test_production_refuses_development_keys_in_keys_json(tmp_path: Path) -> None:
    """The environment mark is checked whatever the source, and the source is named."""
    raw = json.dumps(_as_json(generate_key_file(Environment.DEVELOPMENT, NOW)))

    with pytest.raises(ConfigError, match="development keys in CUSTODIA_KEYS_JSON"):
        load_keys(_production(tmp_path, CUSTODIA_KEYS_JSON=raw))


# ----------------------------------------------------------------------------- malformed


def _short_key(data: dict[str, Any]) -> None:
    data["rings"]["pii"]["keys"]["1"] = base64.b64encode(b"\x01" * 16).decode()


def _long_key(data: dict[str, Any]) -> None:
    data["rings"]["index"]["keys"]["1"] = base64.b64encode(b"\x01" * 33).decode()


def _not_base64(data: dict[str, Any]) -> None:
    data["rings"]["audit"]["keys"]["1"] = "this is not base64!!"


def _primary_missing(data: dict[str, Any]) -> None:
    data["rings"]["signing"]["primary"] = "2"


def _purpose_missing(data: dict[str, Any]) -> None:
    del data["rings"]["pepper"]


def _unknown_purpose(data: dict[str, Any]) -> None:
    data["rings"]["session"] = data["rings"]["pii"]


def _wrong_format(data: dict[str, Any]) -> None:
    data["format"] = 2


def _unknown_field(data: dict[str, Any]) -> None:
    data["comment"] = "hello"


def _no_environment(data: dict[str, Any]) -> None:
    del data["environment"]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_short_key, "pii key '1' is not 32 bytes of base64"),
        (_long_key, "index key '1' is not 32 bytes of base64"),
        (_not_base64, "audit key '1' is not 32 bytes of base64"),
        (_primary_missing, "primary signing key '2' is not in the ring"),
        (_purpose_missing, "has no keys for: pepper"),
        (_unknown_purpose, "is not a Custodia key file"),
        (_wrong_format, "has key file format 2, expected 1"),
        (_unknown_field, "is not a Custodia key file"),
        (_no_environment, "is not a Custodia key file"),
    ],
    ids=lambda value: getattr(value, "__name__", "").lstrip("_") or None,
)
def test_malformed_key_file_is_refused_with_the_reason(
    tmp_path: Path, corrupt: Callable[[dict[str, Any]], None], reason: str
) -> None:
    """Each defect is a ConfigError naming the file and what is wrong with it."""
    data = _as_json(generate_key_file(Environment.DEVELOPMENT, NOW))
    corrupt(data)
    settings = _development(tmp_path)
    settings.resolved_keys_file.write_text(json.dumps(data))

    with pytest.raises(ConfigError) as caught:
        load_keys(settings)

    message = str(caught.value)
    assert reason in message
    assert str(settings.resolved_keys_file) in message


@pytest.mark.parametrize("content", ["", "not json", "{", "[]", "null", '{"format": 1}'])
def test_non_key_file_content_is_refused(tmp_path: Path, content: str) -> None:
    """Anything that does not decode as a key file says so, naming the file."""
    settings = _development(tmp_path)
    settings.resolved_keys_file.write_text(content)

    with pytest.raises(ConfigError, match="is not a Custodia key file"):
        load_keys(settings)


def test_malformed_keys_json_names_the_variable(tmp_path: Path) -> None:
    """A bad CUSTODIA_KEYS_JSON is reported as the variable, not as a file path."""
    with pytest.raises(ConfigError, match=r"^CUSTODIA_KEYS_JSON is not a Custodia key file"):
        load_keys(_development(tmp_path, CUSTODIA_KEYS_JSON="not json"))


def test_refusal_does_not_repeat_key_material(tmp_path: Path) -> None:
    """Config errors are printed and logged, so they never contain a key."""
    data = _as_json(generate_key_file(Environment.DEVELOPMENT, NOW))
    data["rings"]["pii"]["keys"]["2"] = base64.b64encode(b"\x07" * 31).decode()
    settings = _development(tmp_path)
    settings.resolved_keys_file.write_text(json.dumps(data))

    with pytest.raises(ConfigError) as caught:
        load_keys(settings)

    message = str(caught.value)
    assert "pii key '2'" in message
    for ring in data["rings"].values():
        for encoded in ring["keys"].values():
            assert encoded not in message
