"""Password hashing: scrypt with a pepper, parameters in the stored string, rehash on change."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from custodia.core.keys import KeyFile, KeyPurpose, rotate
from custodia.core.passwords import ScryptParams, SecretHasher, digests_equal, token_digest
from custodia.core.settings import Settings

FAST = ScryptParams(log2_n=4, r=8, p=1)


def test_a_hash_verifies_its_password_and_nothing_else(keys: KeyFile) -> None:
    hasher = SecretHasher(keys, FAST)
    stored = hasher.hash("correct horse battery staple")
    assert hasher.verify("correct horse battery staple", stored)
    assert not hasher.verify("correct horse battery stapl", stored)
    assert "correct" not in stored


def test_the_stored_string_carries_algorithm_parameters_pepper_and_salt(keys: KeyFile) -> None:
    hasher = SecretHasher(keys, FAST)
    first, second = hasher.hash("123456"), hasher.hash("123456")
    assert first.startswith("$scrypt$ln=4,r=8,p=1,k=1$")
    assert first != second  # a fresh salt each time


def test_passwords_are_compared_after_nfkc_normalisation(keys: KeyFile) -> None:
    hasher = SecretHasher(keys, FAST)
    assert hasher.verify("ｐａｓｓｗｏｒｄ１２３", hasher.hash("password123"))


def test_without_the_pepper_a_stolen_hash_does_not_verify(keys: KeyFile) -> None:
    """The pepper key is outside the database: another key file cannot check guesses."""
    from custodia.core.keys import generate_key_file  # noqa: PLC0415
    from custodia.core.settings import Environment  # noqa: PLC0415
    from tests.conftest import START  # noqa: PLC0415

    stored = SecretHasher(keys, FAST).hash("123456")
    thief = generate_key_file(Environment.DEVELOPMENT, START)
    assert not SecretHasher(thief, FAST).verify("123456", stored)


def test_needs_rehash_when_parameters_or_pepper_change(keys: KeyFile) -> None:
    stored = SecretHasher(keys, FAST).hash("pw")
    assert not SecretHasher(keys, FAST).needs_rehash(stored)
    assert SecretHasher(keys, ScryptParams(log2_n=5)).needs_rehash(stored)
    rotated = SecretHasher(rotate(keys, KeyPurpose.PEPPER), FAST)
    assert rotated.needs_rehash(stored)
    assert rotated.verify("pw", stored)  # the old pepper still verifies until rehashed


@pytest.mark.parametrize(
    "stored", [None, "", "plain", "$scrypt$ln=x$$", "$scrypt$ln=4,r=8,p=1,k=9$AA$AA"]
)
def test_missing_or_malformed_hashes_never_verify(keys: KeyFile, stored: str | None) -> None:
    assert not SecretHasher(keys, FAST).verify("anything", stored)


def test_default_parameters_are_owasps_2_15_8_3_at_32_mib() -> None:
    params = ScryptParams()
    # OWASP lists N = 2^15, r = 8, p = 3 as equal to 2^17, 8, 1: about as many block mixes.
    assert (params.log2_n, params.r, params.p) == (15, 8, 3)
    assert params.memory_bytes == 32 * 1024 * 1024
    defaults = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    assert (defaults["scrypt_log2_n"], defaults["scrypt_r"], defaults["scrypt_p"]) == (15, 8, 3)


# VmHWM, the peak of this process's own memory (ru_maxrss would carry the forking parent's).
_PEAK_OF_ONE_HASH = """
import os, re
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from custodia.core.passwords import ScryptParams
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
p = ScryptParams()
before = peak()
Scrypt(salt=os.urandom(16), length=32, n=1 << p.log2_n, r=p.r, p=p.p).derive(b"123456")
print(peak() - before)
"""


def test_one_default_hash_takes_its_32_mib_once_whatever_the_lanes() -> None:
    """scrypt's p lanes run one after the other over one table: memory is 128 · N · r."""
    grown = int(
        subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", _PEAK_OF_ONE_HASH], capture_output=True, text=True, check=True
        ).stdout
    )
    table = ScryptParams().memory_bytes
    assert table <= grown < table + 16 * 1024 * 1024


def test_token_digests_are_sha256_and_compare_in_constant_time() -> None:
    digest = token_digest("cs_abc")
    assert len(digest) == 64
    assert digests_equal(digest, token_digest("cs_abc"))
    assert not digests_equal(digest, token_digest("cs_abd"))
