"""Tests for davserver.crypto.primitives: subkey, fields, wrap/unwrap (DESIGN.md section 4).

Expected values are recomputed with independent code (hashlib's BLAKE2b, struct, PyNaCl's raw
AEAD binding) rather than by calling the functions under test a second time.
"""

from __future__ import annotations

import hashlib
import struct

import nacl.bindings
import nacl.exceptions
import pytest

from davserver.crypto import (
    ID_BYTES,
    KEY_BYTES,
    WRAPPED_KEY_BYTES,
    AuthenticationFailed,
    CryptoError,
    fields,
    random_id,
    random_key,
    subkey,
    unwrap,
    wrap,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_authentication_failed_is_a_crypto_error() -> None:
    assert issubclass(AuthenticationFailed, CryptoError)
    assert issubclass(CryptoError, Exception)


def test_random_key_and_id_lengths_and_freshness() -> None:
    assert KEY_BYTES == 32 and ID_BYTES == 16
    keys = {random_key() for _ in range(50)}
    ids = {random_id() for _ in range(50)}
    assert all(len(k) == 32 for k in keys) and len(keys) == 50
    assert all(len(i) == 16 for i in ids) and len(ids) == 50


def test_subkey_matches_independent_blake2b() -> None:
    expected = hashlib.blake2b(b"node-7", digest_size=32, key=KEY, person=b"root-wrap").digest()
    assert subkey(KEY, b"root-wrap", b"node-7") == expected
    empty = hashlib.blake2b(b"", digest_size=32, key=KEY, person=b"ck-wrap").digest()
    assert subkey(KEY, b"ck-wrap") == empty


def test_subkey_separates_purpose_id_and_key() -> None:
    base = subkey(KEY, b"node-wrap", b"x")
    assert len(base) == 32
    assert base != subkey(KEY, b"ck-wrap", b"x")
    assert base != subkey(KEY, b"node-wrap", b"y")
    assert base != subkey(OTHER_KEY, b"node-wrap", b"x")


def test_subkey_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        subkey(KEY[:31], b"root-wrap")
    with pytest.raises(ValueError):
        subkey(KEY, b"p" * 17)  # BLAKE2b personalisation is at most 16 bytes
    with pytest.raises(ValueError):
        subkey(KEY, b"")


def test_fields_layout_exact() -> None:
    encoded = fields(b"wdv/x/v1", b"\x01\x02", 5, "é")
    expected = (
        struct.pack(">H", 8)
        + b"wdv/x/v1"
        + struct.pack(">H", 2)
        + b"\x01\x02"
        + struct.pack(">HQ", 8, 5)
        + struct.pack(">H", 2)
        + "é".encode()
    )
    assert encoded == expected


def test_fields_label_only_and_empty_items() -> None:
    assert fields(b"L") == b"\x00\x01L"
    assert fields(b"L", b"", "") == b"\x00\x01L\x00\x00\x00\x00"


def test_fields_is_unambiguous() -> None:
    # Without length prefixes these would both be the bytes "abc".
    assert fields(b"l", b"ab", b"c") != fields(b"l", b"a", b"bc")
    assert fields(b"l", b"ab") != fields(b"l", b"a", b"b")


def test_fields_int_bounds() -> None:
    assert fields(b"l", 2**64 - 1).endswith(b"\xff" * 8)
    assert fields(b"l", 0).endswith(b"\x00\x08" + b"\x00" * 8)
    with pytest.raises(ValueError):
        fields(b"l", -1)
    with pytest.raises(ValueError):
        fields(b"l", 2**64)
    with pytest.raises(TypeError):
        fields(b"l", True)


def test_fields_length_limit() -> None:
    assert len(fields(b"l", b"x" * 0xFFFF)) == 2 + 1 + 2 + 0xFFFF
    with pytest.raises(ValueError):
        fields(b"l", b"x" * 0x10000)
    with pytest.raises(ValueError):
        fields(b"l" * 0x10000)


def test_fields_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        fields(b"l", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fields("label")  # type: ignore[arg-type]


def test_wrap_layout_is_nonce_then_aead() -> None:
    ad = fields(b"wdv/test/v1", b"row")
    wrapped = wrap(OTHER_KEY, KEY, ad)
    assert len(wrapped) == WRAPPED_KEY_BYTES == 72
    nonce, body = wrapped[:24], wrapped[24:]
    plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(body, ad, nonce, KEY)
    assert plain == OTHER_KEY


def test_wrap_uses_fresh_nonces() -> None:
    first = wrap(b"secret", KEY, b"ad")
    second = wrap(b"secret", KEY, b"ad")
    assert first[:24] != second[:24]
    assert first != second


def test_unwrap_round_trip_including_empty_secret() -> None:
    for secret in (b"", b"x", OTHER_KEY, b"y" * 1000):
        assert unwrap(wrap(secret, KEY, b"ad"), KEY, b"ad") == secret


def test_unwrap_rejects_every_flipped_bit() -> None:
    wrapped = wrap(OTHER_KEY, KEY, b"ad")
    for i in range(len(wrapped)):
        for bit in range(8):
            bad = bytearray(wrapped)
            bad[i] ^= 1 << bit
            with pytest.raises(AuthenticationFailed):
                unwrap(bytes(bad), KEY, b"ad")


def test_unwrap_rejects_wrong_key_and_ad() -> None:
    wrapped = wrap(OTHER_KEY, KEY, b"ad")
    with pytest.raises(AuthenticationFailed):
        unwrap(wrapped, OTHER_KEY, b"ad")
    with pytest.raises(AuthenticationFailed):
        unwrap(wrapped, KEY, b"ae")
    with pytest.raises(AuthenticationFailed):
        unwrap(wrapped, KEY, b"")


def test_unwrap_never_leaks_nacl_exceptions() -> None:
    wrapped = wrap(OTHER_KEY, KEY, b"ad")
    bad_inputs: list[tuple[object, object, object]] = [
        (b"", KEY, b"ad"),
        (wrapped[:39], KEY, b"ad"),
        (wrapped[:-1], KEY, b"ad"),
        (wrapped + b"\x00", KEY, b"ad"),
        (wrapped, KEY[:31], b"ad"),
        (wrapped, "not bytes", b"ad"),
        (bytearray(wrapped), KEY, b"ad"),
        (wrapped, KEY, None),
    ]
    for env, kek, ad in bad_inputs:
        with pytest.raises(AuthenticationFailed) as info:
            unwrap(env, kek, ad)  # type: ignore[arg-type]
        assert not isinstance(info.value, nacl.exceptions.CryptoError)


def test_wrap_rejects_bad_kek() -> None:
    with pytest.raises(ValueError):
        wrap(b"s", KEY[:16], b"ad")
    with pytest.raises(TypeError):
        wrap("s", KEY, b"ad")  # type: ignore[arg-type]


def test_keyed_hash_equals_libsodium_salt_personal() -> None:
    """keyed_hash runs on hashlib; libsodium's generichash with salt and personalisation is
    the reference (docs/design.md's name MACs and subkeys are defined on it)."""
    import random

    import nacl.encoding
    import nacl.hash

    from davserver.crypto.primitives import keyed_hash

    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randint(1, 64))
        data = rng.randbytes(rng.randint(0, 300))
        person = rng.randbytes(rng.randint(1, 16))
        salt = rng.randbytes(rng.randint(0, 16))
        size = rng.choice([16, 24, 32, 64])
        expected = nacl.hash.blake2b(
            data,
            digest_size=size,
            key=key,
            salt=salt,
            person=person,
            encoder=nacl.encoding.RawEncoder,
        )
        assert keyed_hash(key, data, person, salt, size) == expected
