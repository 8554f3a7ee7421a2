"""The personal-data vault: field-level encryption and blind indexes (REGULATION.md K5).

Encryption
    Each personal field is encrypted on its own with AES-256-GCM under the primary key of
    the ``pii`` ring. The stored blob is ``version (1 byte) ‖ key-id length (1 byte) ‖ key id
    ‖ nonce (12 bytes) ‖ ciphertext and tag``, so any key of the ring can still open old
    data after a rotation. The associated data binds the blob to its table, column and row
    id: a ciphertext copied into another row or column fails to decrypt instead of
    silently showing someone else's data.

Blind indexes
    Equality lookups and uniqueness over encrypted values use an HMAC-SHA256 of the
    normalised value (NFKC, case-folded, without spaces and hyphens) under a per-field key
    derived by HKDF from the ``index`` ring, so the index of one field says nothing about
    another's. Indexes are full length (64 hex characters): they back UNIQUE constraints,
    where a truncated index would turn collisions into false "already registered" refusals.
    Lookups try every key of the ring, so rows indexed under an older key keep being found
    until ``custodia keys reindex`` has rebuilt them.

Keys never enter the database (they come from :mod:`custodia.core.keys`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import TableClause, column, select, table, update
from sqlalchemy.orm import Session

from custodia.core.db import Database
from custodia.core.keys import KeyFile, KeyPurpose

BLOB_VERSION = 1
NONCE_BYTES = 12
_AAD_LABEL = b"custodia-pii-v1"
_INDEX_INFO = b"custodia-blind-index-v1:"
#: ASCII hyphen, Unicode hyphen, non-breaking hyphen, en and em dash (NFKC keeps them apart).
_HYPHENS = frozenset("-\u2010\u2011\u2013\u2014")


class VaultError(Exception):
    """A blob cannot be opened: unknown format or key, or it belongs to another place."""


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def associated_data(table: str, column: str, row_id: str) -> bytes:
    """Return the associated data that binds a ciphertext to one table, column and row."""
    return _length_prefixed(_AAD_LABEL, table.encode(), column.encode(), row_id.encode())


def key_id_of(blob: bytes) -> str:
    """Return the id of the key a blob was encrypted under (VaultError if malformed)."""
    if len(blob) < 2 or blob[0] != BLOB_VERSION:
        raise VaultError("not a vault blob of a known version")
    size = blob[1]
    if len(blob) < 2 + size + NONCE_BYTES + 16:
        raise VaultError("vault blob is truncated")
    return blob[2 : 2 + size].decode("ascii")


class Vault:
    """Encrypts and decrypts personal fields with the ``pii`` key ring."""

    def __init__(self, keys: KeyFile, *, random: Callable[[int], bytes] = os.urandom) -> None:
        ring = keys.rings[KeyPurpose.PII]
        self.primary_key_id = ring.primary
        self._ciphers = {kid: AESGCM(keys.secret(KeyPurpose.PII, kid)) for kid in ring.keys}
        self._random = random

    def encrypt(self, plaintext: str, *, table: str, column: str, row_id: str) -> bytes:
        """Return the blob of ``plaintext`` under the primary key, bound to its place."""
        kid = self.primary_key_id.encode("ascii")
        nonce = self._random(NONCE_BYTES)
        sealed = self._ciphers[self.primary_key_id].encrypt(
            nonce, plaintext.encode("utf-8"), associated_data(table, column, row_id)
        )
        return bytes([BLOB_VERSION, len(kid)]) + kid + nonce + sealed

    def decrypt(self, blob: bytes, *, table: str, column: str, row_id: str) -> str:
        """Return the plaintext of ``blob``; VaultError if it was not made for this place."""
        kid = key_id_of(blob)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise VaultError(f"vault blob is under key {kid!r}, which is not in the pii ring")
        start = 2 + len(kid)
        nonce = blob[start : start + NONCE_BYTES]
        try:
            plain = cipher.decrypt(
                nonce, blob[start + NONCE_BYTES :], associated_data(table, column, row_id)
            )
        except InvalidTag:
            raise VaultError(
                f"vault blob does not open for {table}.{column} row {row_id}: altered, or "
                "copied from another row"
            ) from None
        return plain.decode("utf-8")

    def is_current(self, blob: bytes) -> bool:
        """Return whether ``blob`` is already under the primary key."""
        return key_id_of(blob) == self.primary_key_id


def normalise(value: str) -> str:
    """Return the form a blind index is computed over: NFKC, case-folded, no spaces/hyphens.

    Full-width digits, ``x`` versus ``X`` check characters and the spaces or hyphens people
    type into document and phone numbers therefore all index alike.
    """
    folded = unicodedata.normalize("NFKC", value).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and ch not in _HYPHENS)


class BlindIndexer:
    """Computes blind indexes with per-field keys derived from the ``index`` ring."""

    def __init__(self, keys: KeyFile) -> None:
        ring = keys.rings[KeyPurpose.INDEX]
        self.primary_key_id = ring.primary
        self._secrets = {kid: keys.secret(KeyPurpose.INDEX, kid) for kid in ring.keys}
        self._derived: dict[tuple[str, str], bytes] = {}

    def _field_key(self, field_name: str, key_id: str) -> bytes:
        cached = self._derived.get((field_name, key_id))
        if cached is None:
            cached = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=_INDEX_INFO + field_name.encode(),
            ).derive(self._secrets[key_id])
            self._derived[(field_name, key_id)] = cached
        return cached

    def compute(self, field_name: str, value: str, *, key_id: str | None = None) -> str:
        """Return the index of ``value`` for ``field_name`` (under the primary key by default)."""
        key = self._field_key(field_name, key_id or self.primary_key_id)
        return hmac.new(key, normalise(value).encode("utf-8"), hashlib.sha256).hexdigest()

    @property
    def rotating(self) -> bool:
        """Return whether older index keys are still in the ring (a reindex may be due)."""
        return len(self._secrets) > 1

    def candidates(self, field_name: str, value: str) -> list[str]:
        """Return the index under every key of the ring, primary first (for lookups)."""
        others = sorted(k for k in self._secrets if k != self.primary_key_id)
        return [self.compute(field_name, value, key_id=k) for k in [self.primary_key_id, *others]]


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A column holding vault blobs; ``keys reencrypt`` walks every registered one."""

    table: str
    column: str
    id_column: str = "id"


@dataclass(frozen=True, slots=True)
class BlindIndexColumn:
    """A column holding a blind index; ``keys reindex`` rebuilds every registered one.

    ``sources`` name the columns the indexed value is made from (encrypted ones are
    decrypted first) and ``compose`` turns their plaintexts into the indexed value.
    """

    table: str
    column: str
    field_name: str
    sources: tuple[str, ...]
    encrypted_sources: frozenset[str] = field(default_factory=frozenset)
    compose: Callable[[dict[str, str]], str] = field(
        default=lambda values: next(iter(values.values()))
    )
    id_column: str = "id"


@dataclass(frozen=True, slots=True)
class PiiSchema:
    """Every encrypted and blind-index column of the service (assembled by the runtime)."""

    encrypted: tuple[EncryptedColumn, ...] = ()
    indexes: tuple[BlindIndexColumn, ...] = ()


# ----------------------------------------------------------------------------- maintenance


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one maintenance batch did; ``last_id`` is where the next batch starts."""

    scanned: int
    changed: int
    last_id: str | None


def _table(name: str, *columns: str) -> TableClause:
    return table(name, *(column(c) for c in columns))


def reencrypt_batch(
    session: Session, vault: Vault, spec: EncryptedColumn, *, after: str | None, limit: int
) -> BatchResult:
    """Re-encrypt under the primary key the blobs of up to ``limit`` rows after ``after``.

    Each row is updated only if its blob is still the one that was read (compare and set),
    so a change the service makes to the row meanwhile is never overwritten.
    """
    t = _table(spec.table, spec.id_column, spec.column)
    row_id, blob_col = t.c[spec.id_column], t.c[spec.column]
    query = select(row_id, blob_col).order_by(row_id).limit(limit)
    if after is not None:
        query = query.where(row_id > after)
    rows = session.execute(query).all()
    changed = 0
    for rid, blob in rows:
        if blob is None or vault.is_current(blob):
            continue
        plain = vault.decrypt(blob, table=spec.table, column=spec.column, row_id=rid)
        fresh = vault.encrypt(plain, table=spec.table, column=spec.column, row_id=rid)
        result = session.execute(
            update(t).where(row_id == rid, blob_col == blob).values({spec.column: fresh})
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return BatchResult(len(rows), changed, rows[-1][0] if rows else None)


def reindex_batch(
    session: Session,
    vault: Vault,
    indexer: BlindIndexer,
    spec: BlindIndexColumn,
    *,
    after: str | None,
    limit: int,
) -> BatchResult:
    """Recompute under the primary index key the blind indexes of up to ``limit`` rows."""
    t = _table(spec.table, spec.id_column, spec.column, *spec.sources)
    row_id, index_col = t.c[spec.id_column], t.c[spec.column]
    query = select(row_id, index_col, *(t.c[s] for s in spec.sources)).order_by(row_id).limit(limit)
    if after is not None:
        query = query.where(row_id > after)
    rows = session.execute(query).all()
    changed = 0
    for rid, old, *raw in rows:
        if old is None:
            continue
        values: dict[str, str] = {}
        for name, stored in zip(spec.sources, raw, strict=True):
            plain = stored
            if name in spec.encrypted_sources and stored is not None:
                plain = vault.decrypt(stored, table=spec.table, column=name, row_id=rid)
            values[name] = "" if plain is None else str(plain)
        fresh = indexer.compute(spec.field_name, spec.compose(values))
        if fresh == old:
            continue
        result = session.execute(
            update(t).where(row_id == rid, index_col == old).values({spec.column: fresh})
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return BatchResult(len(rows), changed, rows[-1][0] if rows else None)


def _call_batch(
    batch: Callable[[Session, str | None], BatchResult], after: str | None, session: Session
) -> BatchResult:
    return batch(session, after)


def run_batches(
    db: Database,
    batch: Callable[[Session, str | None], BatchResult],
    *,
    progress: Callable[[BatchResult], None] = lambda _r: None,
) -> tuple[int, int]:
    """Run ``batch`` in short transactions until the table is walked; return (scanned, changed).

    Each batch commits on its own, so the service keeps running and an interrupted run
    loses at most one batch: running again skips what is already done.
    """
    after: str | None = None
    scanned = changed = 0
    while True:
        result = db.run(partial(_call_batch, batch, after))
        scanned += result.scanned
        changed += result.changed
        progress(result)
        if result.last_id is None:
            return scanned, changed
        after = result.last_id
