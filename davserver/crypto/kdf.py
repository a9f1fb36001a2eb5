"""From a password or device token to a key-encryption key (KEK) (DESIGN.md section 4).

::

    password ──Argon2id(params)──▶ prk ──BLAKE2b(key=pepper, person="wdv-kek-pw-v1")──▶ KEK
    token    ──BLAKE2b(key=pepper, salt=salt16, person="wdv-kek-tok-v1")──────────────▶ KEK
    verifier = BLAKE2b(key=KEK, data=kdf_params, person="wdv-commit-v1")

The pepper lives outside the database, so a stolen database cannot be attacked offline. The
KDF parameters are stored beside each envelope and read back from the database, which we do not
trust: ``KdfParams.decode`` refuses limits that would let a database writer make every login
burn minutes of CPU or gigabytes of memory.

This module owns the ``kdf_params`` encoding and nothing else; it never sees the master key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.utils

from .primitives import KEY_BYTES, CryptoError, keyed_hash, require_bytes

__all__ = [
    "ALG_ARGON2ID",
    "ALG_TOKEN",
    "KDF_PARAMS_BYTES",
    "MAX_MEMLIMIT",
    "MAX_OPSLIMIT",
    "SALT_BYTES",
    "KdfParams",
    "check_verifier",
    "derive_prk",
    "make_verifier",
    "password_kek",
    "token_kek",
]

ALG_TOKEN = 0  # no KDF: the secret is a 32-byte random token
# Argon2id v1.3. Our format byte is 1; libsodium's crypto_pwhash_ALG_ARGON2ID13 is 2.
ALG_ARGON2ID = 1
SALT_BYTES = 16
KDF_PARAMS_BYTES = 1 + 4 + 8 + SALT_BYTES  # 29

# Upper bounds a database writer cannot exceed. 100 passes at 4 GiB is already far beyond any
# sane interactive login; libsodium's own maxima (2^32-1 passes, 4 TiB) would be a trivial DoS.
MAX_OPSLIMIT = min(100, nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MAX)
MAX_MEMLIMIT = min(4 * 1024**3, nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MAX)
MIN_OPSLIMIT = nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MIN
MIN_MEMLIMIT = nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MIN

_PERSON_KEK_PW = b"wdv-kek-pw-v1"
_PERSON_KEK_TOKEN = b"wdv-kek-tok-v1"
_PERSON_COMMIT = b"wdv-commit-v1"


@dataclass(frozen=True)
class KdfParams:
    """``u8 alg ‖ u32be opslimit ‖ u64be memlimit ‖ salt16``; validated on construction.

    ``alg`` is ``ALG_ARGON2ID`` (password envelopes) or ``ALG_TOKEN`` (token envelopes, where
    both limits must be 0 and only the salt is used). Raises ``CryptoError`` when invalid.
    """

    alg: int
    opslimit: int
    memlimit: int
    salt: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or len(self.salt) != SALT_BYTES:
            raise CryptoError("KDF salt must be 16 bytes")
        if self.alg == ALG_ARGON2ID:
            if not MIN_OPSLIMIT <= self.opslimit <= MAX_OPSLIMIT:
                raise CryptoError("Argon2id opslimit out of range")
            if not MIN_MEMLIMIT <= self.memlimit <= MAX_MEMLIMIT:
                raise CryptoError("Argon2id memlimit out of range")
        elif self.alg == ALG_TOKEN:
            if self.opslimit != 0 or self.memlimit != 0:
                raise CryptoError("token KDF parameters must have zero limits")
        else:
            raise CryptoError("unknown KDF algorithm")

    def encode(self) -> bytes:
        """The 29-byte stored form (also the AD field and the verifier's input)."""
        return (
            self.alg.to_bytes(1, "big")
            + self.opslimit.to_bytes(4, "big")
            + self.memlimit.to_bytes(8, "big")
            + self.salt
        )

    @classmethod
    def decode(cls, data: bytes) -> KdfParams:
        """Parse and validate the stored form; ``CryptoError`` if anything is off."""
        if not isinstance(data, bytes) or len(data) != KDF_PARAMS_BYTES:
            raise CryptoError("KDF parameters must be 29 bytes")
        return cls(
            alg=data[0],
            opslimit=int.from_bytes(data[1:5], "big"),
            memlimit=int.from_bytes(data[5:13], "big"),
            salt=data[13:29],
        )

    @classmethod
    def for_password(cls, opslimit: int = 3, memlimit: int = 64 * 1024 * 1024) -> KdfParams:
        """Argon2id parameters with a fresh random salt (defaults: 3 passes, 64 MiB)."""
        return cls(ALG_ARGON2ID, opslimit, memlimit, nacl.utils.random(SALT_BYTES))

    @classmethod
    def for_token(cls) -> KdfParams:
        """Token parameters: no KDF, only a fresh random salt for ``token_kek``."""
        return cls(ALG_TOKEN, 0, 0, nacl.utils.random(SALT_BYTES))


def derive_prk(password: bytes, params: KdfParams) -> bytes:
    """Argon2id(password, params) → 32 bytes. Slow by design; the caller bounds concurrency."""
    if params.alg != ALG_ARGON2ID:
        raise CryptoError("these KDF parameters are not for a password")
    if not isinstance(password, bytes):
        raise TypeError("password must be bytes")
    try:
        return nacl.bindings.crypto_pwhash_alg(
            KEY_BYTES,
            password,
            params.salt,
            params.opslimit,
            params.memlimit,
            nacl.bindings.crypto_pwhash_ALG_ARGON2ID13,
        )
    except nacl.exceptions.CryptoError:
        # libsodium fails only on resource exhaustion here (the limits were validated).
        raise CryptoError("Argon2id failed (out of memory?)") from None


def password_kek(pepper: bytes, prk: bytes) -> bytes:
    """``BLAKE2b-256(key=pepper, data=prk, person="wdv-kek-pw-v1")``."""
    require_bytes(pepper, KEY_BYTES, "pepper")
    require_bytes(prk, KEY_BYTES, "prk")
    return keyed_hash(pepper, prk, _PERSON_KEK_PW)


def token_kek(pepper: bytes, salt: bytes, token: bytes) -> bytes:
    """``BLAKE2b-256(key=pepper, salt=salt16, data=token, person="wdv-kek-tok-v1")``.

    No Argon2id: a token is 32 random bytes, so there is nothing to stretch.
    """
    require_bytes(pepper, KEY_BYTES, "pepper")
    require_bytes(salt, SALT_BYTES, "salt")
    if not isinstance(token, bytes) or not token:
        raise ValueError("token must be non-empty bytes")
    return keyed_hash(pepper, token, _PERSON_KEK_TOKEN, salt=salt)


def make_verifier(kek: bytes, params_encoded: bytes) -> bytes:
    """``BLAKE2b-256(key=KEK, data=kdf_params, person="wdv-commit-v1")``: stored per envelope.

    Checked before the MK unwrap, so a wrong password is told apart from a damaged envelope.
    """
    require_bytes(kek, KEY_BYTES, "kek")
    if not isinstance(params_encoded, bytes):
        raise TypeError("params_encoded must be bytes")
    return keyed_hash(kek, params_encoded, _PERSON_COMMIT)


def check_verifier(kek: bytes, params_encoded: bytes, stored: bytes) -> bool:
    """True iff ``stored`` equals ``make_verifier(kek, params_encoded)``; constant time."""
    expected = make_verifier(kek, params_encoded)
    if not isinstance(stored, bytes):
        return False
    return hmac.compare_digest(expected, stored)
