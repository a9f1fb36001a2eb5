"""The three building blocks every other crypto module is made of (DESIGN.md section 4).

- ``subkey``: BLAKE2b-256 keyed by a parent key, personalised by a purpose string, so one key
  can feed several independent uses without any two of them sharing key material;
- ``fields``: the only way associated data (AD) is built. Every item is length-prefixed, so
  two different field lists can never encode to the same bytes;
- ``wrap`` / ``unwrap``: XChaCha20-Poly1305-IETF with a fresh random 24-byte nonce stored in
  front of the ciphertext. The nonce is large enough to be drawn at random for the lifetime of
  a key, which is why we never keep counters for envelopes.

Exceptions raised by this package::

    CryptoError                 stored data is unusable (e.g. KDF parameters out of range)
    └── AuthenticationFailed    a MAC, tag, commitment, header, padding or length check failed:
                                the data was modified, truncated, moved, or the key is wrong

Functions that *open* stored data raise ``AuthenticationFailed`` for every malformed input,
because that input comes from the untrusted database or object store. Functions that *seal*
raise ``ValueError``/``TypeError`` when the caller passes an argument of the wrong shape: that
is a bug in our code, not an attack.

This module imports nothing from davserver, never logs, and never lets a PyNaCl exception escape.
"""

from __future__ import annotations

import functools
import hashlib

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

__all__ = [
    "ID_BYTES",
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "WRAPPED_KEY_BYTES",
    "AuthenticationFailed",
    "CryptoError",
    "fields",
    "keyed_hash",
    "random_id",
    "random_key",
    "subkey",
    "unwrap",
    "wrap",
]

KEY_BYTES = 32
ID_BYTES = 16
NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
# A wrapped 32-byte key: nonce ‖ ciphertext ‖ tag (DESIGN.md section 4 states 72 bytes).
WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES

_PERSON_MAX = nacl.hash.BLAKE2B_PERSONALBYTES  # 16
_SALT_MAX = nacl.hash.BLAKE2B_SALTBYTES  # 16
_FIELD_MAX = 0xFFFF  # lengths are u16be
_U64_MAX = 2**64 - 1


class CryptoError(Exception):
    """Stored cryptographic data is unusable (base class of this package's errors)."""


class AuthenticationFailed(CryptoError):
    """Authentication failed: tampered, truncated, moved, or opened with the wrong key."""


def random_key() -> bytes:
    """Return 32 bytes from the operating system's CSPRNG (libsodium ``randombytes``)."""
    return nacl.utils.random(KEY_BYTES)


def random_id() -> bytes:
    """Return a random 16-byte identifier (node, version, blob, envelope and user ids)."""
    return nacl.utils.random(ID_BYTES)


def require_bytes(value: object, length: int, what: str) -> bytes:
    """Return ``value`` if it is ``bytes`` of exactly ``length``; else raise ``ValueError``.

    Used on the sealing side, where a wrong-sized key or id is a programming error. The message
    names the argument but never includes its value (it may be a key).
    """
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes")
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(value)}")
    return value


def keyed_hash(
    key: bytes, data: bytes, person: bytes, salt: bytes = b"", digest_size: int = 32
) -> bytes:
    """BLAKE2b(key, salt, person) over ``data``; raw bytes out, ``digest_size`` bytes long.

    ``person`` and ``salt`` are at most 16 bytes. libsodium zero-pads shorter values, so the
    callers in this package use fixed, distinct strings that are never a prefix-plus-NULs of
    one another.
    """
    if not isinstance(key, bytes) or not 0 < len(key) <= nacl.hash.BLAKE2B_KEYBYTES_MAX:
        raise ValueError("BLAKE2b key must be 1..64 bytes")
    if not isinstance(person, bytes) or not 0 < len(person) <= _PERSON_MAX:
        raise ValueError(f"personalisation must be 1..{_PERSON_MAX} bytes")
    if not isinstance(salt, bytes) or len(salt) > _SALT_MAX:
        raise ValueError(f"salt must be at most {_SALT_MAX} bytes")
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    # hashlib's BLAKE2b takes the same key, salt and personalisation parameter block as
    # libsodium's crypto_generichash_blake2b_salt_personal (both zero-pad salt and person to
    # 16 bytes), so the digest is the same, at ~0.7 us instead of PyNaCl's ~5.8 us per call:
    # every path component of every request is one of these. test_primitives compares the two.
    return hashlib.blake2b(
        data, digest_size=digest_size, key=key, salt=salt, person=person
    ).digest()


def subkey(key: bytes, purpose: bytes, id: bytes = b"") -> bytes:
    """``BLAKE2b-256(key=key, person=purpose, data=id)``: a 32-byte key for one purpose."""
    require_bytes(key, KEY_BYTES, "key")
    if not isinstance(purpose, bytes) or not isinstance(id, bytes):
        raise TypeError("purpose and id must be bytes")
    return _subkey_cached(key, purpose, id)


# A directory listing derives the same name and metadata subkeys of one parent key for every
# child; caching them turns 2 BLAKE2b calls per child into 2 per listing. The cache lives in
# process memory only, like every other key.
@functools.lru_cache(maxsize=4096)
def _subkey_cached(key: bytes, purpose: bytes, id: bytes) -> bytes:
    return keyed_hash(key, id, purpose)


def _encode_item(item: bytes | int | str) -> bytes:
    # bool is an int subclass; accepting it would silently encode True as 1.
    if isinstance(item, bool):
        raise TypeError("bool is not a valid AD field")
    if isinstance(item, int):
        if not 0 <= item <= _U64_MAX:
            raise ValueError("integer AD field out of u64 range")
        return item.to_bytes(8, "big")
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    raise TypeError(f"AD field of type {type(item).__name__} is not supported")


def fields(label: bytes, *items: bytes | int | str) -> bytes:
    """``u16be(len(label)) ‖ label ‖ u16be(len(f1)) ‖ f1 ‖ …``: associated data.

    Integers become 8-byte big-endian values (so an int field is ``u16be(8) ‖ u64be(v)``),
    strings UTF-8. Any item longer than 65535 bytes raises ``ValueError``.
    """
    if not isinstance(label, bytes):
        raise TypeError("label must be bytes")
    if all(type(item) is bytes and len(item) <= _FIELD_MAX for item in items):
        # The common case (ids and blobs), on every listed child: no per-item conversion.
        if len(label) > _FIELD_MAX:
            raise ValueError("AD field longer than 65535 bytes")
        parts = [len(label).to_bytes(2, "big"), label]
        for item in items:
            parts.append(len(item).to_bytes(2, "big"))  # type: ignore[arg-type]
            parts.append(item)  # type: ignore[arg-type]
        return b"".join(parts)
    out = bytearray()
    for raw in (label, *(_encode_item(item) for item in items)):
        if len(raw) > _FIELD_MAX:
            raise ValueError("AD field longer than 65535 bytes")
        out += len(raw).to_bytes(2, "big")
        out += raw
    return bytes(out)


def wrap(secret: bytes, kek: bytes, ad: bytes) -> bytes:
    """``nonce24 ‖ XChaCha20-Poly1305-IETF(kek, secret, ad)`` with a fresh random nonce."""
    require_bytes(kek, KEY_BYTES, "kek")
    if not isinstance(secret, bytes) or not isinstance(ad, bytes):
        raise TypeError("secret and ad must be bytes")
    nonce = nacl.utils.random(NONCE_BYTES)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(secret, ad, nonce, kek)


def unwrap(wrapped: bytes, kek: bytes, ad: bytes) -> bytes:
    """Inverse of ``wrap``; raises ``AuthenticationFailed`` on any failure whatsoever."""
    if (
        not isinstance(wrapped, bytes)
        or not isinstance(kek, bytes)
        or not isinstance(ad, bytes)
        or len(kek) != KEY_BYTES
        or len(wrapped) < NONCE_BYTES + TAG_BYTES
    ):
        raise AuthenticationFailed("malformed envelope")
    if _sodium is not None:
        return _open_direct(wrapped, kek, ad)
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrapped[NONCE_BYTES:], ad, wrapped[:NONCE_BYTES], kek
        )
    except nacl.exceptions.CryptoError:
        # Suppress the PyNaCl cause: it is always "tag mismatch" and adds nothing.
        raise AuthenticationFailed("envelope failed authentication") from None


# libsodium through PyNaCl's own cffi module, without the binding's per-call argument checks
# (arguments are checked above): 2.2 µs instead of 7.5 µs per small envelope, and a
# directory listing opens two per member. Falls back to the public binding if PyNaCl ever
# moves its internals.
try:
    from nacl import _sodium
except ImportError:  # pragma: no cover - depends on the PyNaCl build
    _sodium = None  # type: ignore[assignment]


def _open_direct(wrapped: bytes, kek: bytes, ad: bytes) -> bytes:
    ffi, lib = _sodium.ffi, _sodium.lib
    ct = wrapped[NONCE_BYTES:]
    out = ffi.new("unsigned char[]", max(1, len(ct) - TAG_BYTES))
    out_len = ffi.new("unsigned long long *")
    rc = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, out_len, ffi.NULL, ct, len(ct), ad, len(ad), wrapped[:NONCE_BYTES], kek
    )
    if rc != 0:
        raise AuthenticationFailed("envelope failed authentication")
    return bytes(ffi.buffer(out, out_len[0]))
