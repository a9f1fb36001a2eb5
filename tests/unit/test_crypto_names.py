"""Tests for davserver.crypto.names: lookup MACs and padded encrypted names (DESIGN.md 6)."""

from __future__ import annotations

import hashlib
import struct
import unicodedata

import nacl.bindings
import pytest

from davserver.crypto import (
    AuthenticationFailed,
    decrypt_name,
    encrypt_name,
    name_mac,
    normalize_name,
    random_id,
    random_key,
    subkey,
    wrap,
)
from davserver.crypto.primitives import fields

NFC = "Résumé Ångström.txt"
NFD = unicodedata.normalize("NFD", NFC)


def test_spellings_differ_before_normalisation() -> None:
    # Guard: if these were equal the NFC/NFD tests below would prove nothing.
    assert NFC != NFD
    assert normalize_name(NFD) == NFC
    assert normalize_name(NFC) == NFC


def test_name_mac_matches_independent_blake2b() -> None:
    dk = random_key()
    key = hashlib.blake2b(b"", digest_size=32, key=dk, person=b"wdv-name-mac-v1").digest()
    expected = hashlib.blake2b(
        NFC.encode(), digest_size=32, key=key, person=b"wdv-name-v1"
    ).digest()
    assert name_mac(dk, NFC) == expected


def test_nfc_and_nfd_give_the_same_mac() -> None:
    dk = random_key()
    assert name_mac(dk, NFD) == name_mac(dk, NFC)
    assert name_mac(dk, "resume.txt") != name_mac(dk, NFC)


def test_name_mac_is_keyed_by_the_parent() -> None:
    assert name_mac(random_key(), "a.txt") != name_mac(random_key(), "a.txt")
    dk = random_key()
    assert name_mac(dk, "a.txt") == name_mac(dk, "a.txt")
    assert name_mac(dk, "a.txt") != name_mac(dk, "A.txt")  # case-sensitive, like the spec


def test_nfd_name_decrypts_to_nfc() -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    ct = encrypt_name(dk, NFD, node_id, parent_id)
    assert decrypt_name(dk, ct, node_id, parent_id) == NFC


def test_encrypt_name_layout() -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    ct = encrypt_name(dk, NFD, node_id, parent_id)
    ad = struct.pack(">H", 11) + b"wdv/name/v1" + b"\x00\x10" + node_id + b"\x00\x10" + parent_id
    key = subkey(dk, b"wdv-name-enc-v1")
    padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct[24:], ad, ct[:24], key)
    raw = NFC.encode()
    # ISO/IEC 7816-4: 0x80 then zeros up to the next multiple of 32.
    assert padded == raw + b"\x80" + b"\x00" * (31 - len(raw) % 32)


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 20, "x" * 31, "x" * 32, "ü" * 100, "名前.txt", " ", "a" * 255, "🙂"],
)
def test_round_trip(name: str) -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    ct = encrypt_name(dk, name, node_id, parent_id)
    assert decrypt_name(dk, ct, node_id, parent_id) == normalize_name(name)


def test_ciphertext_length_hides_exact_length() -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()

    def size(name: str) -> int:
        return len(encrypt_name(dk, name, node_id, parent_id))

    assert size("a") == size("x" * 20) == size("y" * 31) == 24 + 32 + 16
    # The padding always adds at least one byte, so 32 bytes move to the next bucket.
    assert size("z" * 32) == size("z" * 63) == 24 + 64 + 16
    assert size("z" * 64) == 24 + 96 + 16
    # Bytes, not characters, decide the bucket.
    assert size("é" * 16) == 24 + 64 + 16


def test_decrypt_rejects_moved_names() -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    ct = encrypt_name(dk, "secret.txt", node_id, parent_id)
    for args in [
        (random_key(), ct, node_id, parent_id),  # another directory's key
        (dk, ct, random_id(), parent_id),  # name copied to another row
        (dk, ct, node_id, random_id()),  # reparented without re-encrypting
        (dk, ct, parent_id, node_id),  # ids swapped
        (dk, ct, node_id[:15], parent_id),  # malformed row
    ]:
        with pytest.raises(AuthenticationFailed):
            decrypt_name(*args)


def test_decrypt_rejects_tampering() -> None:
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    ct = encrypt_name(dk, "secret.txt", node_id, parent_id)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x80
        with pytest.raises(AuthenticationFailed):
            decrypt_name(dk, bytes(bad), node_id, parent_id)
    for bad_ct in (b"", ct[:-1], ct + b"\x00", ct[:40]):
        with pytest.raises(AuthenticationFailed):
            decrypt_name(dk, bad_ct, node_id, parent_id)


def test_decrypt_rejects_bad_padding_and_utf8_under_a_valid_tag() -> None:
    """A holder of DK_p sealing garbage must still not get garbage back out."""
    dk, node_id, parent_id = random_key(), random_id(), random_id()
    key = subkey(dk, b"wdv-name-enc-v1")
    ad = fields(b"wdv/name/v1", node_id, parent_id)
    bad_plaintexts = [
        b"abc" + b"\x00" * 29,  # no 0x80 marker
        b"",  # nothing to unpad
        b"\xff\xfe" + b"\x80" + b"\x00" * 29,  # invalid UTF-8
        b"abc\x80" + b"\x00" * 29,  # 33 bytes: not a multiple of the block
    ]
    for plain in bad_plaintexts:
        with pytest.raises(AuthenticationFailed):
            decrypt_name(dk, wrap(plain, key, ad), node_id, parent_id)


def test_encrypt_name_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encrypt_name(random_key(), "a", b"short", random_id())
    with pytest.raises(ValueError):
        encrypt_name(random_key(), "\udc80", random_id(), random_id())  # lone surrogate
    with pytest.raises(ValueError):
        name_mac(random_key()[:31], "a")
