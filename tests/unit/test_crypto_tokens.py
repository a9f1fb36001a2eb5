"""Tests for davserver.crypto.tokens: the token text, its KEK and its envelope (DESIGN §13).

The fixed vector below was computed once with this code and checked against PyNaCl's own
BLAKE2b (``nacl.hash.blake2b`` with salt and person); it pins the format: a change that
breaks it breaks every token already handed out.
"""

from __future__ import annotations

import os

import nacl.encoding
import nacl.hash
import pytest

from davserver.crypto import AuthenticationFailed, kdf, tokens
from davserver.crypto.primitives import fields, unwrap

PEPPER = bytes(range(32))
SALT = bytes(range(0x40, 0x50))
SECRET = bytes(range(0x80, 0xA0))
USER = bytes.fromhex("11" * 16)
ENV = bytes.fromhex("22" * 16)
MK = bytes.fromhex("33" * 32)
NODE = bytes.fromhex("44" * 16)

VECTOR_TEXT = "wdvt_IiIiIiIiIiIiIiIiIiIiIoCBgoOEhYaHiImKi4yNjo-QkZKTlJWWl5iZmpucnZ6f"
VECTOR_PARAMS = "00000000000000000000000000404142434445464748494a4b4c4d4e4f"
VECTOR_KEK = "45d8f06206be9ed8fed54dad5881893a8281fa440a2f3a0c8afd5df5ef365ae0"
VECTOR_VERIFIER = "e80c7d34f02d23490e88f06cc192df4dca1bf77c2f5f8112bc606085217ef415"
# fields("wdv/tok/v1", user, env, "token", "", "ro", u64 1800000000, kdf_params)
VECTOR_AD = (
    "000a7764762f746f6b2f7631"
    "0010" + "11" * 16 + "0010" + "22" * 16 + "0005746f6b656e" + "0000" + "0002726f"
    "0008000000006b49d200"
    "001d" + VECTOR_PARAMS
)
# wrap(MK, KEK, AD) with the nonce that happened to be drawn.
VECTOR_WRAPPED = (
    "f30eeeee505605af425216cdff9fa5d84ebd3b751ef207c99830e6f006c34b53b7ad0bd827295a88a7a906c3"
    "b7abfeb8d7eb64d4173a4ae2ddf16a7aa14ba0c4fb8f0ed17468655f"
)
VECTOR_EXPIRES = 1_800_000_000


def _vector_sealed() -> tokens.SealedToken:
    return tokens.SealedToken(
        bytes.fromhex(VECTOR_PARAMS), bytes.fromhex(VECTOR_VERIFIER), bytes.fromhex(VECTOR_WRAPPED)
    )


def test_fixed_vector_text_kek_verifier_ad() -> None:
    assert tokens.encode(ENV, SECRET) == VECTOR_TEXT
    parsed = tokens.decode(VECTOR_TEXT)
    assert parsed is not None and parsed.envelope_id == ENV and parsed.secret == SECRET
    params = kdf.KdfParams(kdf.ALG_TOKEN, 0, 0, SALT).encode()
    assert params.hex() == VECTOR_PARAMS
    kek = kdf.token_kek(PEPPER, SALT, SECRET)
    assert kek.hex() == VECTOR_KEK
    # The same KEK from PyNaCl's BLAKE2b, independently of our keyed_hash.
    assert (
        nacl.hash.blake2b(
            SECRET,
            digest_size=32,
            key=PEPPER,
            salt=SALT,
            person=b"wdv-kek-tok-v1",
            encoder=nacl.encoding.RawEncoder,
        )
        == kek
    )
    assert kdf.make_verifier(kek, params).hex() == VECTOR_VERIFIER
    ad = tokens.token_ad(USER, ENV, "token", b"", "ro", VECTOR_EXPIRES, params)
    assert ad.hex() == VECTOR_AD
    assert ad == fields(b"wdv/tok/v1", USER, ENV, "token", b"", "ro", VECTOR_EXPIRES, params)
    assert unwrap(bytes.fromhex(VECTOR_WRAPPED), kek, ad) == MK


def test_fixed_vector_opens() -> None:
    key = tokens.open_token(
        _vector_sealed(), PEPPER, SECRET, USER, ENV, "token", b"", "ro", VECTOR_EXPIRES
    )
    assert key == MK


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", bytes.fromhex("12" * 16)),
        ("env", bytes.fromhex("23" * 16)),
        ("kind", "recovery"),
        ("scope", NODE),  # with kind "scoped" below
        ("perms", "rw"),
        ("perms", "wo"),
        ("expires", VECTOR_EXPIRES + 1),
        ("expires", 0),
    ],
)
def test_a_changed_row_field_fails_to_open(field: str, value: object) -> None:
    args: dict[str, object] = {
        "user": USER,
        "env": ENV,
        "kind": "token",
        "scope": b"",
        "perms": "ro",
        "expires": VECTOR_EXPIRES,
    }
    args[field] = value
    if field == "scope":
        args["kind"] = "scoped"
    with pytest.raises(AuthenticationFailed) as info:
        tokens.open_token(
            _vector_sealed(),
            PEPPER,
            SECRET,
            args["user"],  # type: ignore[arg-type]
            args["env"],  # type: ignore[arg-type]
            args["kind"],  # type: ignore[arg-type]
            args["scope"],  # type: ignore[arg-type]
            args["perms"],  # type: ignore[arg-type]
            args["expires"],  # type: ignore[arg-type]
        )
    # The secret was right: the verifier passed, the AD did not.
    assert not isinstance(info.value, tokens.WrongSecret)


def test_wrong_secret_or_pepper_is_told_apart_by_the_verifier() -> None:
    other = bytes([SECRET[0] ^ 1]) + SECRET[1:]
    with pytest.raises(tokens.WrongSecret):
        tokens.open_token(
            _vector_sealed(), PEPPER, other, USER, ENV, "token", b"", "ro", VECTOR_EXPIRES
        )
    with pytest.raises(tokens.WrongSecret):
        tokens.open_token(
            _vector_sealed(), os.urandom(32), SECRET, USER, ENV, "token", b"", "ro", VECTOR_EXPIRES
        )


def test_tampered_stored_values_fail() -> None:
    good = _vector_sealed()
    args = (PEPPER, SECRET, USER, ENV, "token", b"", "ro", VECTOR_EXPIRES)
    wrapped = bytearray(good.wrapped)
    wrapped[40] ^= 1
    for sealed in (
        tokens.SealedToken(good.kdf_params, good.verifier, bytes(wrapped)),
        tokens.SealedToken(good.kdf_params, good.verifier, good.wrapped[:-1]),
        tokens.SealedToken(good.kdf_params[:-1], good.verifier, good.wrapped),
        # An Argon2id parameter block: not a token envelope.
        tokens.SealedToken(
            kdf.KdfParams(kdf.ALG_ARGON2ID, 3, 64 * 1024 * 1024, SALT).encode(),
            good.verifier,
            good.wrapped,
        ),
    ):
        with pytest.raises(AuthenticationFailed):
            tokens.open_token(sealed, *args)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["token", "recovery"])
def test_seal_and_open_round_trip(kind: str) -> None:
    secret = tokens.new_secret()
    sealed = tokens.seal_token(MK, PEPPER, secret, USER, ENV, kind, perms="rw")
    assert len(sealed.kdf_params) == 29 and sealed.kdf_params[0] == 0
    assert len(sealed.wrapped) == 72
    assert tokens.open_token(sealed, PEPPER, secret, USER, ENV, kind, b"", "rw", 0) == MK
    again = tokens.seal_token(MK, PEPPER, secret, USER, ENV, kind)
    assert again.kdf_params[13:] != sealed.kdf_params[13:]  # a fresh salt each time


def test_scoped_round_trip_binds_the_node() -> None:
    dk = os.urandom(32)
    secret = tokens.new_secret()
    sealed = tokens.seal_token(dk, PEPPER, secret, USER, ENV, "scoped", NODE, "wo", 12345)
    assert tokens.open_token(sealed, PEPPER, secret, USER, ENV, "scoped", NODE, "wo", 12345) == dk
    with pytest.raises(AuthenticationFailed):
        tokens.open_token(sealed, PEPPER, secret, USER, ENV, "scoped", bytes(16), "wo", 12345)


def test_sealing_refuses_wrongly_shaped_fields() -> None:
    s = tokens.new_secret()
    with pytest.raises(ValueError):
        tokens.seal_token(MK, PEPPER, s, USER, ENV, "scoped")  # no scope node
    with pytest.raises(ValueError):
        tokens.seal_token(MK, PEPPER, s, USER, ENV, "token", NODE)  # a scope on a full token
    with pytest.raises(ValueError):
        tokens.seal_token(MK, PEPPER, s, USER, ENV, "token", perms="x")
    with pytest.raises(ValueError):
        tokens.seal_token(MK, PEPPER, s, USER, ENV, "password")
    with pytest.raises(ValueError):
        tokens.seal_token(MK, PEPPER, s, USER, ENV, "token", expires=-1)


def test_decode_is_strict() -> None:
    assert tokens.decode(VECTOR_TEXT) is not None
    assert tokens.decode(VECTOR_TEXT, tokens.RECOVERY_PREFIX) is None
    code = tokens.encode(ENV, SECRET, tokens.RECOVERY_PREFIX)
    assert code.startswith("wdvr_") and tokens.decode(code, tokens.RECOVERY_PREFIX) is not None
    assert tokens.decode(code) is None
    for text in (
        "",
        "wdvt_",
        VECTOR_TEXT[:-1],
        VECTOR_TEXT + "A",
        VECTOR_TEXT + "=",
        VECTOR_TEXT[:-1] + "=",
        VECTOR_TEXT[:-1] + "+",  # standard base64, not base64url
        VECTOR_TEXT[:-1] + "/",
        "WDVT_" + VECTOR_TEXT[5:],
        " " + VECTOR_TEXT[1:],
        "wdvt_" + "é" * 64,
        "correct horse battery staple",
    ):
        assert tokens.decode(text) is None, text


def test_repr_never_shows_the_secret() -> None:
    parsed = tokens.decode(VECTOR_TEXT)
    assert parsed is not None
    assert SECRET.hex() not in repr(parsed) and VECTOR_TEXT[5:] not in repr(parsed)
