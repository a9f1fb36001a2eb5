"""Device tokens and recovery codes: their text form, their KEK and their envelope (DESIGN §13).

::

    token       = envelope_id16 ‖ secret32                         (48 bytes)
    text        = "wdvt_" + base64url(token), no padding           (a recovery code: "wdvr_")
    KEK         = BLAKE2b-256(key = pepper, salt = salt16, data = secret, person = "wdv-kek-tok-v1")
    kdf_params  = alg 0 ‖ ops 0 ‖ mem 0 ‖ salt16                    (29 bytes, kdf.KdfParams)
    verifier    = BLAKE2b-256(key = KEK, data = kdf_params, person = "wdv-commit-v1")
    wrapped     = wrap(K, KEK, fields("wdv/tok/v1", user_id, envelope_id, kind,
                                      scope_node_id or "", perms, u64be(expires or 0),
                                      kdf_params))

``K`` is the master key (kind ``token`` and ``recovery``) or one directory's key (kind
``scoped``). The envelope id travels inside the token so that a login finds its row with one
indexed lookup instead of trying every envelope of the user; the secret is the only part an
attacker must guess. Everything that limits what a token may do (kind, scope, permissions,
expiry) is in the associated data, so a database writer who widens a row's permissions or
pushes its expiry makes the envelope fail to open.

Parsing is strict (exact prefix, exact length, canonical base64url): anything else is not a
token and the caller treats it as a password. Opening raises ``AuthenticationFailed`` for any
failure, since every stored input comes from the untrusted database.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import nacl.utils

from . import kdf
from .primitives import (
    ID_BYTES,
    KEY_BYTES,
    WRAPPED_KEY_BYTES,
    AuthenticationFailed,
    CryptoError,
    fields,
    require_bytes,
    unwrap,
    wrap,
)

__all__ = [
    "KINDS",
    "PERMS",
    "RECOVERY_PREFIX",
    "SECRET_BYTES",
    "TOKEN_BYTES",
    "TOKEN_PREFIX",
    "ParsedToken",
    "SealedToken",
    "WrongSecret",
    "decode",
    "encode",
    "new_secret",
    "open_token",
    "seal_token",
    "token_ad",
]

TOKEN_PREFIX = "wdvt_"  # noqa: S105 - a prefix, not a secret
RECOVERY_PREFIX = "wdvr_"
SECRET_BYTES = 32
TOKEN_BYTES = ID_BYTES + SECRET_BYTES  # 48
# 48 bytes are exactly 64 base64 characters: no padding to strip, and no spare bits, so
# every accepted text decodes to one token and every token has one text.
_TEXT_CHARS = 64

KIND_TOKEN = "token"  # noqa: S105 - envelope kinds
KIND_SCOPED = "scoped"
KIND_RECOVERY = "recovery"
KINDS = (KIND_TOKEN, KIND_SCOPED, KIND_RECOVERY)
PERMS = ("rw", "ro", "wo")

_LABEL = b"wdv/tok/v1"
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class ParsedToken:
    """A token string taken apart: which envelope it names, and the secret that opens it."""

    envelope_id: bytes
    secret: bytes

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"ParsedToken(envelope_id={self.envelope_id.hex()})"


@dataclass(frozen=True)
class SealedToken:
    """What a new token's envelope row stores (the secret itself is never stored)."""

    kdf_params: bytes
    verifier: bytes
    wrapped: bytes


class WrongSecret(AuthenticationFailed):
    """The verifier did not match: the token text is wrong (not the row damaged)."""


def new_secret() -> bytes:
    return nacl.utils.random(SECRET_BYTES)


def encode(envelope_id: bytes, secret: bytes, prefix: str = TOKEN_PREFIX) -> str:
    """The text shown once to the user: ``prefix`` + base64url(id ‖ secret)."""
    require_bytes(envelope_id, ID_BYTES, "envelope_id")
    require_bytes(secret, SECRET_BYTES, "secret")
    if prefix not in (TOKEN_PREFIX, RECOVERY_PREFIX):
        raise ValueError("unknown token prefix")
    return prefix + base64.urlsafe_b64encode(envelope_id + secret).decode("ascii").rstrip("=")


def decode(text: str, prefix: str = TOKEN_PREFIX) -> ParsedToken | None:
    """The token in ``text``, or None if ``text`` is not exactly a token with ``prefix``
    (then it is a password). Never raises on any input."""
    if not isinstance(text, str) or len(text) != len(prefix) + _TEXT_CHARS:
        return None
    if not text.startswith(prefix):
        return None
    body = text[len(prefix) :]
    if not set(body) <= _B64URL:
        return None
    try:
        raw = base64.urlsafe_b64decode(body)
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        return None
    if len(raw) != TOKEN_BYTES:  # pragma: no cover - 64 characters are always 48 bytes
        return None
    return ParsedToken(raw[:ID_BYTES], raw[ID_BYTES:])


def token_ad(
    user_id: bytes,
    envelope_id: bytes,
    kind: str,
    scope_node_id: bytes,
    perms: str,
    expires: int,
    kdf_params: bytes,
) -> bytes:
    """``fields("wdv/tok/v1", …)``; ``ValueError``/``TypeError`` on a wrongly shaped field."""
    require_bytes(user_id, ID_BYTES, "user_id")
    require_bytes(envelope_id, ID_BYTES, "envelope_id")
    if kind not in KINDS:
        raise ValueError("unknown token kind")
    if kind == KIND_SCOPED:
        require_bytes(scope_node_id, ID_BYTES, "scope_node_id")
    elif scope_node_id != b"":
        raise ValueError("only a scoped token has a scope")
    if perms not in PERMS:
        raise ValueError("perms must be rw, ro or wo")
    if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 2**64:
        raise ValueError("expires must be a whole number of seconds in 0..2^64-1 (0 = never)")
    require_bytes(kdf_params, kdf.KDF_PARAMS_BYTES, "kdf_params")
    return fields(_LABEL, user_id, envelope_id, kind, scope_node_id, perms, expires, kdf_params)


def _kek(pepper: bytes, params: kdf.KdfParams, secret: bytes) -> bytes:
    return kdf.token_kek(pepper, params.salt, secret)


def seal_token(
    key: bytes,
    pepper: bytes,
    secret: bytes,
    user_id: bytes,
    envelope_id: bytes,
    kind: str,
    scope_node_id: bytes = b"",
    perms: str = "rw",
    expires: int = 0,
) -> SealedToken:
    """Wrap ``key`` (MK, or DK for a scoped token) for a fresh token with this secret."""
    require_bytes(key, KEY_BYTES, "key")
    require_bytes(secret, SECRET_BYTES, "secret")
    params = kdf.KdfParams.for_token()
    enc = params.encode()
    ad = token_ad(user_id, envelope_id, kind, scope_node_id, perms, expires, enc)
    kek = _kek(pepper, params, secret)
    return SealedToken(enc, kdf.make_verifier(kek, enc), wrap(key, kek, ad))


def open_token(
    sealed: SealedToken,
    pepper: bytes,
    secret: bytes,
    user_id: bytes,
    envelope_id: bytes,
    kind: str,
    scope_node_id: bytes,
    perms: str,
    expires: int,
) -> bytes:
    """The key in a token envelope; ``AuthenticationFailed`` for a wrong secret (the verifier,
    checked first in constant time: ``WrongSecret``), a row whose fields changed, or anything
    malformed."""
    try:
        params = kdf.KdfParams.decode(sealed.kdf_params)
        if params.alg != kdf.ALG_TOKEN:
            raise CryptoError("not a token envelope")
        ad = token_ad(user_id, envelope_id, kind, scope_node_id, perms, expires, sealed.kdf_params)
        require_bytes(secret, SECRET_BYTES, "secret")
        kek = _kek(pepper, params, secret)
    except (CryptoError, ValueError, TypeError):
        raise AuthenticationFailed("token envelope row is malformed") from None
    if not kdf.check_verifier(kek, sealed.kdf_params, sealed.verifier):
        raise WrongSecret("wrong token secret")
    if not isinstance(sealed.wrapped, bytes) or len(sealed.wrapped) != WRAPPED_KEY_BYTES:
        raise AuthenticationFailed("key envelope has the wrong length")
    return unwrap(sealed.wrapped, kek, ad)
