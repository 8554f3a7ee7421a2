"""Password hashing with scrypt and a pepper; digests of random tokens (REGULATION.md K5).

Passwords (staff passwords, customers' payment passwords) are never stored: only
``$scrypt$ln=<log2 N>,r=<r>,p=<p>,k=<pepper key id>$<salt>$<hash>``. The password is first
NFKC-normalised and keyed with HMAC-SHA256 under the ``pepper`` ring's key, then stretched by
scrypt with a fresh 16-byte salt. The pepper lives outside the database, so a stolen table
of hashes cannot be attacked without also stealing the key file — which matters for 6-digit
payment passwords that no KDF alone protects. The parameters and the pepper key id are part
of the stored string, so :meth:`SecretHasher.needs_rehash` tells when a successful login
should store a fresh hash (parameters raised, pepper rotated).

The default cost is N = 2^15, r = 8, p = 3: one of the configurations OWASP's Password
Storage Cheat Sheet lists as equal in strength to N = 2^17, r = 8, p = 1 (the work of a
hash is about the same, 3 · 2^15 against 2^17 block mixes, ~0.25 s here), but scrypt's
memory is 128 · N · r bytes whatever p is (the p lanes run one after the other over the same
table): 32 MiB instead of 128 MiB. A server worker holds that memory once per hash running at
once, and the issue's budget is 250 MB per worker. A semaphore bounds how many run at once
(``CUSTODIA_KDF_CONCURRENCY``) so that a burst of logins cannot exhaust memory. Hashes made
under other parameters still verify (they carry theirs) and are redone under the current
ones after the next successful use (:meth:`SecretHasher.needs_rehash`).

Random tokens (API keys, session tokens) have ≥ 128 bits of entropy, so a single SHA-256
suffices for them (DESIGN.md "Security"); they are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from custodia.core.keys import KeyFile, KeyPurpose

SALT_BYTES = 16
HASH_BYTES = 32
_PREFIX = "$scrypt$"


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt's cost: N = 2**log2_n, block size r, parallelism p."""

    log2_n: int = 15
    r: int = 8
    p: int = 3

    @property
    def memory_bytes(self) -> int:
        """Return the memory one hash needs (128 · N · r bytes; the lanes share it)."""
        return 128 * (1 << self.log2_n) * self.r


@dataclass(frozen=True, slots=True)
class _Parsed:
    params: ScryptParams
    pepper_id: str
    salt: bytes
    digest: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse(stored: str) -> _Parsed | None:
    if not stored.startswith(_PREFIX):
        return None
    try:
        options, salt, digest = stored[len(_PREFIX) :].split("$")
        fields = dict(item.split("=", 1) for item in options.split(","))
        params = ScryptParams(int(fields["ln"]), int(fields["r"]), int(fields["p"]))
        return _Parsed(params, fields["k"], _unb64(salt), _unb64(digest))
    except (ValueError, KeyError):
        return None


class SecretHasher:
    """Hashes and verifies passwords (see the module docstring)."""

    def __init__(self, keys: KeyFile, params: ScryptParams, *, concurrency: int = 2) -> None:
        ring = keys.rings[KeyPurpose.PEPPER]
        self.params = params
        self._pepper_id = ring.primary
        self._peppers = {kid: keys.secret(KeyPurpose.PEPPER, kid) for kid in ring.keys}
        self._slots = threading.BoundedSemaphore(concurrency)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    @property
    def _dummy(self) -> str:
        """Return the hash verified against when there is none (no enumeration by timing).

        The answer then takes as long as for a wrong password. Made on first need: a scrypt
        hash takes its memory (32 MiB by default) for a moment, which a server should not
        pay at start-up.
        """
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hash("custodia-dummy-password")
            return self._dummy_hash

    def _peppered(self, secret: str, pepper_id: str) -> bytes:
        normalised = unicodedata.normalize("NFKC", secret).encode("utf-8")
        return hmac.new(self._peppers[pepper_id], normalised, hashlib.sha256).digest()

    def _kdf(self, params: ScryptParams, salt: bytes) -> Scrypt:
        return Scrypt(salt=salt, length=HASH_BYTES, n=1 << params.log2_n, r=params.r, p=params.p)

    def hash(self, secret: str) -> str:
        """Return the stored form of ``secret`` under the current parameters and pepper."""
        salt = os.urandom(SALT_BYTES)
        with self._slots:
            digest = self._kdf(self.params, salt).derive(self._peppered(secret, self._pepper_id))
        p = self.params
        options = f"ln={p.log2_n},r={p.r},p={p.p},k={self._pepper_id}"
        return f"{_PREFIX}{options}${_b64(salt)}${_b64(digest)}"

    def verify(self, secret: str, stored: str | None) -> bool:
        """Return whether ``secret`` matches ``stored`` (constant time; False if malformed).

        With ``stored`` None (no such account) the same work is done against a dummy hash.
        """
        parsed = _parse(stored if stored is not None else self._dummy)
        if parsed is None or parsed.pepper_id not in self._peppers:
            parsed = _parse(self._dummy)
            assert parsed is not None  # noqa: S101 - our own format
            stored = None
        with self._slots:
            try:
                self._kdf(parsed.params, parsed.salt).verify(
                    self._peppered(secret, parsed.pepper_id), parsed.digest
                )
            except InvalidKey:
                return False
        return stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Return whether ``stored`` was made with other parameters or an older pepper."""
        parsed = _parse(stored)
        return parsed is None or parsed.params != self.params or parsed.pepper_id != self._pepper_id


def token_digest(token: str) -> str:
    """Return the SHA-256 (hex) under which a random token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    """Compare two digests in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())
