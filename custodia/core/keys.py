"""The service's secret keys: where they come from, how they are made, and who may use them.

Keys never live in the database (DESIGN.md "Security"). They come from a JSON key file
(``CUSTODIA_KEYS_FILE``, default ``var/keys.json``) or, for containers, from the same JSON in
``CUSTODIA_KEYS_JSON``. The file holds one *ring* per purpose: a primary key id that new
data is written under, and every older key still needed to read old data:

- ``pii``: AES-256-GCM keys of the personal-data vault;
- ``index``: HMAC keys for blind indexes (lookups and uniqueness without plaintext);
- ``audit``: HMAC keys that chain the audit trail;
- ``signing``: Ed25519 seeds that sign consent receipts and audit checkpoints;
- ``pepper``: the secret mixed into payment-password hashes.

``custodia keys init`` writes a new file (mode 0600) marked with the environment it was
made for; a production service refuses a file made for development and says why.
"""

from __future__ import annotations

import base64
import os
import secrets
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import msgspec

from custodia.core.errors import ConfigError
from custodia.core.settings import Environment, Settings

KEY_BYTES = 32
KEY_FILE_FORMAT = 1


class KeyPurpose(StrEnum):
    """What a ring of keys is for; a key is only ever used for its own purpose."""

    PII = "pii"
    INDEX = "index"
    AUDIT = "audit"
    SIGNING = "signing"
    PEPPER = "pepper"


class KeyRing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One purpose's keys: the primary id and every key by id (base64 of 32 bytes)."""

    primary: str
    keys: dict[str, str]


class KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The content of a key file."""

    format: int = KEY_FILE_FORMAT
    environment: Environment
    created_at: datetime
    rings: dict[KeyPurpose, KeyRing]

    def secret(self, purpose: KeyPurpose, key_id: str | None = None) -> bytes:
        """Return the key ``key_id`` of ``purpose`` (the primary one when None)."""
        ring = self.rings[purpose]
        encoded = ring.keys[ring.primary if key_id is None else key_id]
        return base64.b64decode(encoded)

    def primary_id(self, purpose: KeyPurpose) -> str:
        """Return the id new data of ``purpose`` is written under."""
        return self.rings[purpose].primary


def _new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def generate_key_file(environment: Environment, now: datetime) -> KeyFile:
    """Return fresh random keys for every purpose, each ring holding one key ``1``."""
    return KeyFile(
        environment=environment,
        created_at=now,
        rings={purpose: KeyRing(primary="1", keys={"1": _new_secret()}) for purpose in KeyPurpose},
    )


def write_key_file(path: Path, key_file: KeyFile) -> None:
    """Write ``key_file`` to ``path`` readable by its owner only; never overwrite a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgspec.json.format(msgspec.json.encode(key_file), indent=2)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite keys") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data + b"\n")
        out.flush()
        os.fsync(out.fileno())


def rotate(key_file: KeyFile, purpose: KeyPurpose) -> KeyFile:
    """Return ``key_file`` with a fresh primary key for ``purpose``; older keys stay for reading.

    Key ids are consecutive integers as strings (``"1"``, ``"2"`` …), so the newest is obvious.
    """
    ring = key_file.rings[purpose]
    new_id = str(max(int(k) for k in ring.keys if k.isdigit()) + 1 if ring.keys else 1)
    rings = dict(key_file.rings)
    rings[purpose] = KeyRing(primary=new_id, keys={**ring.keys, new_id: _new_secret()})
    return msgspec.structs.replace(key_file, rings=rings)


def replace_key_file(path: Path, key_file: KeyFile) -> None:
    """Atomically replace the key file at ``path`` (owner-only, fsynced, then renamed)."""
    data = msgspec.json.format(msgspec.json.encode(key_file), indent=2)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data + b"\n")
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _parse(raw: bytes, source: str) -> KeyFile:
    try:
        key_file = msgspec.json.decode(raw, type=KeyFile)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source} is not a Custodia key file: {exc}") from None
    if key_file.format != KEY_FILE_FORMAT:
        raise ConfigError(f"{source} has key file format {key_file.format}, expected 1")
    missing = [p.value for p in KeyPurpose if p not in key_file.rings]
    if missing:
        raise ConfigError(f"{source} has no keys for: {', '.join(missing)}")
    for purpose, ring in key_file.rings.items():
        if ring.primary not in ring.keys:
            raise ConfigError(
                f"{source}: primary {purpose} key {ring.primary!r} is not in the ring"
            )
        for key_id, encoded in ring.keys.items():
            try:
                size = len(base64.b64decode(encoded, validate=True))
            except ValueError:
                size = -1
            if size != KEY_BYTES:
                raise ConfigError(f"{source}: {purpose} key {key_id!r} is not 32 bytes of base64")
    return key_file


def load_keys(settings: Settings) -> KeyFile:
    """Load the keys the settings point to; raise ConfigError with the reason if unusable.

    Production refuses keys generated for development and a key file that others can read.
    """
    if settings.keys_json:
        source = "CUSTODIA_KEYS_JSON"
        key_file = _parse(settings.keys_json.encode(), source)
    else:
        path = settings.resolved_keys_file
        source = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"no key file at {path}: run `custodia keys init` (or set CUSTODIA_KEYS_FILE)"
            ) from None
        key_file = _parse(raw, source)
        if settings.is_production and path.stat().st_mode & 0o077:
            raise ConfigError(
                f"CUSTODIA_ENV=production refuses {path}: the key file is readable by other "
                "users (chmod 600 it)"
            )
    if settings.is_production and key_file.environment is not Environment.PRODUCTION:
        raise ConfigError(
            f"CUSTODIA_ENV=production refuses the development keys in {source}: they were "
            "made by `custodia keys init` on a development machine and may have been copied "
            "anywhere; create production keys with CUSTODIA_ENV=production custodia keys init "
            "and point CUSTODIA_KEYS_FILE at them"
        )
    return key_file
