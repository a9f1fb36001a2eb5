"""Tests for davserver.crypto.kdf: KDF parameters, Argon2id, KEKs and the login verifier.

Argon2id runs with libsodium's minimum passes and 8 MiB here to keep the suite fast; one test
runs the production defaults (3 passes, 64 MiB).
"""

from __future__ import annotations

import hashlib
import struct

import nacl.bindings
import pytest

from davserver.crypto import (
    ALG_ARGON2ID,
    ALG_TOKEN,
    AuthenticationFailed,
    CryptoError,
    KdfParams,
    check_verifier,
    derive_prk,
    make_verifier,
    password_kek,
    random_id,
    random_key,
    token_kek,
    unwrap_master_key,
    wrap_master_key,
)

FAST_OPS = nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MIN
FAST_MEM = 8 * 1024 * 1024
PEPPER = bytes(range(100, 132))
SALT = bytes(range(16))


def fast_params(salt: bytes = SALT) -> KdfParams:
    return KdfParams(ALG_ARGON2ID, FAST_OPS, FAST_MEM, salt)


def test_encode_layout_exact() -> None:
    params = KdfParams(ALG_ARGON2ID, 3, 64 * 1024 * 1024, SALT)
    encoded = params.encode()
    assert encoded == struct.pack(">BIQ", 1, 3, 64 * 1024 * 1024) + SALT
    assert len(encoded) == 29
    assert KdfParams.decode(encoded) == params


def test_token_params() -> None:
    params = KdfParams.for_token()
    assert (params.alg, params.opslimit, params.memlimit) == (ALG_TOKEN, 0, 0)
    assert len(params.salt) == 16
    assert params.encode()[:13] == b"\x00" * 13
    assert KdfParams.decode(params.encode()) == params
    assert KdfParams.for_token().salt != params.salt


def test_for_password_defaults_and_fresh_salt() -> None:
    first = KdfParams.for_password()
    assert (first.alg, first.opslimit, first.memlimit) == (1, 3, 64 * 1024 * 1024)
    assert first.salt != KdfParams.for_password().salt
    with pytest.raises(CryptoError):
        KdfParams.for_password(opslimit=0)


@pytest.mark.parametrize(
    "alg, ops, mem",
    [
        (2, 3, 64 * 1024 * 1024),  # unknown algorithm
        (255, 3, 64 * 1024 * 1024),
        (ALG_ARGON2ID, 0, 64 * 1024 * 1024),  # below libsodium's minimum passes
        (ALG_ARGON2ID, 101, 64 * 1024 * 1024),  # a DB writer asking for a slow login
        (ALG_ARGON2ID, 2**32 - 1, 64 * 1024 * 1024),
        (ALG_ARGON2ID, 3, 8191),  # below libsodium's minimum memory
        (ALG_ARGON2ID, 3, 4 * 1024**3 + 1),  # more than 4 GiB per login
        (ALG_ARGON2ID, 3, 2**64 - 1),
        (ALG_TOKEN, 1, 0),  # token parameters must not carry limits
        (ALG_TOKEN, 0, 1),
    ],
)
def test_decode_rejects_out_of_range(alg: int, ops: int, mem: int) -> None:
    with pytest.raises(CryptoError):
        KdfParams.decode(struct.pack(">BIQ", alg, ops, mem) + SALT)


def test_decode_accepts_the_bounds() -> None:
    for ops, mem in ((FAST_OPS, 8192), (100, 4 * 1024**3)):
        params = KdfParams.decode(struct.pack(">BIQ", 1, ops, mem) + SALT)
        assert (params.opslimit, params.memlimit) == (ops, mem)


@pytest.mark.parametrize("length", [0, 13, 28, 30, 45])
def test_decode_rejects_wrong_length(length: int) -> None:
    with pytest.raises(CryptoError):
        KdfParams.decode(bytes([1]) + b"\x00" * (length - 1) if length else b"")


def test_constructor_rejects_bad_salt() -> None:
    with pytest.raises(CryptoError):
        KdfParams(ALG_ARGON2ID, 3, 64 * 1024 * 1024, b"short")


def test_derive_prk_is_argon2id_v13() -> None:
    params = fast_params()
    expected = nacl.bindings.crypto_pwhash_alg(
        32,
        b"hunter2",
        SALT,
        FAST_OPS,
        FAST_MEM,
        nacl.bindings.crypto_pwhash_ALG_ARGON2ID13,
    )
    assert derive_prk(b"hunter2", params) == expected
    assert derive_prk(b"hunter2", params) == expected  # deterministic
    assert derive_prk(b"hunter3", params) != expected
    assert derive_prk(b"hunter2", fast_params(bytes(16))) != expected
    stronger = KdfParams(ALG_ARGON2ID, FAST_OPS + 1, FAST_MEM, SALT)
    assert derive_prk(b"hunter2", stronger) != expected


def test_derive_prk_at_production_defaults() -> None:
    params = KdfParams(ALG_ARGON2ID, 3, 64 * 1024 * 1024, SALT)
    prk = derive_prk(b"correct horse", params)
    assert len(prk) == 32
    assert prk != derive_prk(b"correct horse", fast_params())


def test_derive_prk_refuses_token_params() -> None:
    with pytest.raises(CryptoError):
        derive_prk(b"pw", KdfParams.for_token())


def test_password_kek_matches_independent_blake2b() -> None:
    prk = bytes(range(50, 82))
    expected = hashlib.blake2b(prk, digest_size=32, key=PEPPER, person=b"wdv-kek-pw-v1").digest()
    assert password_kek(PEPPER, prk) == expected


def test_token_kek_matches_independent_blake2b() -> None:
    token = bytes(range(200, 232))
    expected = hashlib.blake2b(
        token, digest_size=32, key=PEPPER, salt=SALT, person=b"wdv-kek-tok-v1"
    ).digest()
    assert token_kek(PEPPER, SALT, token) == expected
    assert token_kek(PEPPER, bytes(16), token) != expected
    with pytest.raises(ValueError):
        token_kek(PEPPER, SALT[:8], token)


def test_verifier_matches_independent_blake2b_and_checks() -> None:
    kek = random_key()
    encoded = fast_params().encode()
    expected = hashlib.blake2b(encoded, digest_size=32, key=kek, person=b"wdv-commit-v1").digest()
    assert make_verifier(kek, encoded) == expected
    assert check_verifier(kek, encoded, expected)
    assert not check_verifier(random_key(), encoded, expected)
    assert not check_verifier(kek, encoded, expected[:31])
    assert not check_verifier(kek, encoded, b"")
    assert not check_verifier(kek, encoded, bytes(32))


class Login:
    """A user with one password envelope, as the vault would store it."""

    def __init__(self, password: bytes, params: KdfParams) -> None:
        self.user_id = random_id()
        self.envelope_id = random_id()
        self.mk = random_key()
        self.params = params.encode()
        kek = password_kek(PEPPER, derive_prk(password, params))
        self.verifier = make_verifier(kek, self.params)
        self.env = wrap_master_key(
            self.mk, kek, self.user_id, "password", self.envelope_id, self.params
        )

    def login(self, password: bytes, pepper: bytes = PEPPER) -> bytes:
        params = KdfParams.decode(self.params)
        kek = password_kek(pepper, derive_prk(password, params))
        if not check_verifier(kek, self.params, self.verifier):
            raise AuthenticationFailed("wrong password")
        return unwrap_master_key(
            self.env, kek, self.user_id, "password", self.envelope_id, self.params
        )


def test_password_login_round_trip() -> None:
    user = Login(b"s3cret", fast_params(random_id()))
    assert user.login(b"s3cret") == user.mk


def test_wrong_password_fails_verifier_and_unwrap() -> None:
    user = Login(b"s3cret", fast_params())
    with pytest.raises(AuthenticationFailed):
        user.login(b"s3cret ")
    wrong_kek = password_kek(PEPPER, derive_prk(b"S3cret", fast_params()))
    with pytest.raises(AuthenticationFailed):
        unwrap_master_key(
            user.env, wrong_kek, user.user_id, "password", user.envelope_id, user.params
        )


def test_wrong_pepper_fails() -> None:
    user = Login(b"s3cret", fast_params())
    with pytest.raises(AuthenticationFailed):
        user.login(b"s3cret", pepper=bytes(32))
    prk = derive_prk(b"s3cret", fast_params())
    other = password_kek(bytes(32), prk)
    assert other != password_kek(PEPPER, prk)
    with pytest.raises(AuthenticationFailed):
        unwrap_master_key(user.env, other, user.user_id, "password", user.envelope_id, user.params)


def test_tampered_kdf_params_fail_verifier_and_mk_unwrap() -> None:
    user = Login(b"s3cret", fast_params())
    good_kek = password_kek(PEPPER, derive_prk(b"s3cret", fast_params()))
    tampered = [
        KdfParams(ALG_ARGON2ID, FAST_OPS + 1, FAST_MEM, SALT).encode(),
        KdfParams(ALG_ARGON2ID, FAST_OPS, FAST_MEM * 2, SALT).encode(),
        KdfParams(ALG_ARGON2ID, FAST_OPS, FAST_MEM, bytes(16)).encode(),
    ]
    for params in tampered:
        # The verifier binds the parameters even when the KEK happens to be right ...
        assert not check_verifier(good_kek, params, user.verifier)
        # ... and so does the MK envelope's AD.
        with pytest.raises(AuthenticationFailed):
            unwrap_master_key(
                user.env, good_kek, user.user_id, "password", user.envelope_id, params
            )
        # A full login with the tampered row fails as well.
        user_copy = Login.__new__(Login)
        user_copy.__dict__.update(user.__dict__, params=params)
        with pytest.raises(AuthenticationFailed):
            user_copy.login(b"s3cret")


def test_token_envelope_round_trip_and_revocation_by_salt() -> None:
    token = random_key()
    params = KdfParams.for_token()
    kek = token_kek(PEPPER, params.salt, token)
    user_id, envelope_id, mk = random_id(), random_id(), random_key()
    encoded = params.encode()
    env = wrap_master_key(mk, kek, user_id, "token", envelope_id, encoded)
    verifier = make_verifier(kek, encoded)
    assert check_verifier(kek, encoded, verifier)
    assert unwrap_master_key(env, kek, user_id, "token", envelope_id, encoded) == mk
    wrong = token_kek(PEPPER, params.salt, random_key())
    assert not check_verifier(wrong, encoded, verifier)
    with pytest.raises(AuthenticationFailed):
        unwrap_master_key(env, wrong, user_id, "token", envelope_id, encoded)
    # A token envelope presented as a password envelope is rejected (kind is in the AD).
    with pytest.raises(AuthenticationFailed):
        unwrap_master_key(env, kek, user_id, "password", envelope_id, encoded)
