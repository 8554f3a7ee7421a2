"""The PII vault: AES-256-GCM blobs bound to their place, blind indexes, key rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custodia.core.keys import KeyFile, KeyPurpose, rotate
from custodia.core.vault import (
    BLOB_VERSION,
    NONCE_BYTES,
    BlindIndexer,
    Vault,
    VaultError,
    key_id_of,
    normalise,
)

PLACE = {"table": "customers", "column": "id_number", "row_id": "cus_1"}


def test_round_trip_restores_the_plaintext(keys: KeyFile) -> None:
    vault = Vault(keys)
    blob = vault.encrypt("110101199003074578", **PLACE)
    assert vault.decrypt(blob, **PLACE) == "110101199003074578"


@given(text=st.text(max_size=200))
def test_round_trip_holds_for_any_text(keys: KeyFile, text: str) -> None:
    vault = Vault(keys)
    assert vault.decrypt(vault.encrypt(text, **PLACE), **PLACE) == text


def test_blob_carries_version_key_id_and_a_fresh_nonce(keys: KeyFile) -> None:
    vault = Vault(keys)
    first, second = vault.encrypt("same", **PLACE), vault.encrypt("same", **PLACE)
    assert first[0] == BLOB_VERSION
    assert key_id_of(first) == keys.primary_id(KeyPurpose.PII)
    kid_len = first[1]
    assert (
        first[2 + kid_len : 2 + kid_len + NONCE_BYTES]
        != second[2 + kid_len : 2 + kid_len + NONCE_BYTES]
    )
    assert first != second
    assert b"same" not in first


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"row_id": "cus_2"},
        {"column": "phone"},
        {"table": "staff"},
    ],
)
def test_a_blob_copied_to_another_place_does_not_open(
    keys: KeyFile, elsewhere: dict[str, str]
) -> None:
    """The associated data binds table, column and row: a moved ciphertext fails loudly."""
    vault = Vault(keys)
    blob = vault.encrypt("13812345678", **PLACE)
    with pytest.raises(VaultError, match="altered, or copied"):
        vault.decrypt(blob, **{**PLACE, **elsewhere})


def test_a_flipped_byte_does_not_open(keys: KeyFile) -> None:
    vault = Vault(keys)
    blob = bytearray(vault.encrypt("13812345678", **PLACE))
    blob[-1] ^= 0x01
    with pytest.raises(VaultError):
        vault.decrypt(bytes(blob), **PLACE)


def test_malformed_blobs_are_refused(keys: KeyFile) -> None:
    vault = Vault(keys)
    for bad in (b"", b"\x02\x01x" + bytes(40), b"\x01\x05ab"):
        with pytest.raises(VaultError):
            vault.decrypt(bad, **PLACE)


def test_after_rotation_new_blobs_use_the_new_key_and_old_ones_still_open(keys: KeyFile) -> None:
    old_blob = Vault(keys).encrypt("secret", **PLACE)
    rotated = rotate(keys, KeyPurpose.PII)
    vault = Vault(rotated)
    assert rotated.primary_id(KeyPurpose.PII) == "2"
    assert key_id_of(vault.encrypt("secret", **PLACE)) == "2"
    assert vault.decrypt(old_blob, **PLACE) == "secret"
    assert not vault.is_current(old_blob)


def test_a_blob_under_a_key_missing_from_the_ring_is_refused(keys: KeyFile) -> None:
    future = Vault(rotate(keys, KeyPurpose.PII)).encrypt("x", **PLACE)
    with pytest.raises(VaultError, match="not in the pii ring"):
        Vault(keys).decrypt(future, **PLACE)


# ------------------------------------------------------------------------------ blind index


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("11010519491231002x", "11010519491231002x"),
        ("11010519491231002X", "11010519491231002x"),
        ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002x"),  # full-width
        ("110105 1949 1231 002X", "11010519491231002x"),
        ("110105-19491231-002X", "11010519491231002x"),
        ("+86 138-1234\u20115678", "+8613812345678"),
    ],
)
def test_normalise_folds_width_case_spaces_and_hyphens(typed: str, canonical: str) -> None:
    assert normalise(typed) == canonical


def test_blind_index_matches_variants_and_is_full_length(keys: KeyFile) -> None:
    index = BlindIndexer(keys)
    a = index.compute("id_number", "11010519491231002X")
    assert a == index.compute("id_number", "110105 19491231 002x")
    assert len(a) == 64
    assert a != index.compute("id_number", "11010519491231003X")


def test_each_field_has_its_own_derived_key(keys: KeyFile) -> None:
    """The same value indexes differently per field, so indexes cannot be joined."""
    index = BlindIndexer(keys)
    assert index.compute("phone", "13812345678") != index.compute("id_number", "13812345678")


def test_lookup_candidates_cover_every_index_key_primary_first(keys: KeyFile) -> None:
    old = BlindIndexer(keys).compute("phone", "13812345678")
    rotated = BlindIndexer(rotate(keys, KeyPurpose.INDEX))
    candidates = rotated.candidates("phone", "13812345678")
    assert candidates[0] == rotated.compute("phone", "13812345678")
    assert candidates[0] != old
    assert old in candidates
