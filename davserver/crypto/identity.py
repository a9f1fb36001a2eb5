"""Identity keys and what is sealed to them: the pending trash items of scoped sessions.

DESIGN §13 (normative)::

    sk      wrap(sk, subkey(MK, "id-wrap"), fields("wdv/id/v1", user_id, pk))
    pk_mac  BLAKE2b-256(key = subkey(pepper, "pk-bind"), data = user_id ‖ pk,
                        person = "wdv-pkbind-v1")

Every user has an X25519 key pair. The public key is stored in clear with ``pk_mac``, which
the server checks before every use: a database writer who swaps in a key of their own (to
read what is sealed to it) fails that check, since the pepper is not in the database.

A scoped session (which holds one directory's key, never MK) deletes by sealing the node's key
and origin to ``pk`` with a sealed box (``crypto_box_seal``: anyone can seal, only the owner
opens). A sealed box authenticates nothing about its sender, so the origin record also
carries ``tag``, a MAC under ``subkey(DK_S, "wdv-pending-v1")`` of everything in the two
records: the owner, who can derive DK_S, folds an item only if it was made by a holder of
S's key, not by someone who merely wrote to the database::

    key box     seal_to(pk, fields("wdv/pending-key/v1", user_id, node_id, kind, key))
    origin box  seal_to(pk, fields("wdv/pending/v1", user_id, node_id, scope_id,
                                   orig_parent_id, NFC name, deleted_at, meta, tag))
    tag         BLAKE2b-256(key = subkey(DK_S, "wdv-pending-v1"),
                            data = fields("wdv/pending-tag/v1", user_id, node_id, kind, key,
                                          scope_id, orig_parent_id, name, deleted_at, meta),
                            person = "wdv-pending-v1")

Like the rest of ``davserver.crypto``: no I/O, no logging, ``AuthenticationFailed`` for every
failure to open.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

import nacl.exceptions
import nacl.public

from .primitives import (
    ID_BYTES,
    KEY_BYTES,
    AuthenticationFailed,
    fields,
    keyed_hash,
    require_bytes,
    subkey,
    unwrap,
    wrap,
)

__all__ = [
    "Identity",
    "PendingKey",
    "PendingOrigin",
    "check_pk",
    "new_identity",
    "open_pending",
    "open_sk",
    "pk_mac",
    "seal_pending",
]

PK_BYTES = 32
_ID_PURPOSE, _ID_LABEL = b"id-wrap", b"wdv/id/v1"
_BIND_PERSON = b"wdv-pkbind-v1"
_PENDING_PURPOSE = b"wdv-pending-v1"
_KEY_LABEL, _ORIGIN_LABEL = b"wdv/pending-key/v1", b"wdv/pending/v1"
_TAG_LABEL = b"wdv/pending-tag/v1"


class Identity(NamedTuple):
    """What the ``user`` row stores: the public key, its binding MAC, the wrapped secret."""

    pk: bytes
    pk_mac: bytes
    sk_env: bytes


class PendingKey(NamedTuple):
    node_id: bytes
    kind: str
    key: bytes


class PendingOrigin(NamedTuple):
    node_id: bytes
    scope_id: bytes
    parent_id: bytes
    name: str
    deleted_at: int
    meta: bytes
    tag: bytes


def pk_mac(bind_key: bytes, user_id: bytes, pk: bytes) -> bytes:
    """The MAC binding ``pk`` to its user (``bind_key`` = ``subkey(pepper, "pk-bind")``)."""
    require_bytes(bind_key, KEY_BYTES, "bind_key")
    require_bytes(user_id, ID_BYTES, "user_id")
    require_bytes(pk, PK_BYTES, "pk")
    return keyed_hash(bind_key, user_id + pk, _BIND_PERSON)


def check_pk(bind_key: bytes, user_id: bytes, pk: bytes, mac: bytes) -> None:
    """``AuthenticationFailed`` unless ``mac`` binds ``pk`` to the user."""
    try:
        expected = pk_mac(bind_key, user_id, pk)
    except (TypeError, ValueError):
        raise AuthenticationFailed("malformed identity public key") from None
    if not isinstance(mac, bytes) or not hmac.compare_digest(expected, mac):
        raise AuthenticationFailed("identity public key is not bound to its user")


def new_identity(mk: bytes, bind_key: bytes, user_id: bytes) -> Identity:
    """A fresh X25519 key pair for a user: the secret key wrapped under MK."""
    require_bytes(mk, KEY_BYTES, "mk")
    sk = nacl.public.PrivateKey.generate()
    pk = bytes(sk.public_key)
    env = wrap(bytes(sk), subkey(mk, _ID_PURPOSE), fields(_ID_LABEL, user_id, pk))
    return Identity(pk, pk_mac(bind_key, user_id, pk), env)


def open_sk(mk: bytes, user_id: bytes, pk: bytes, sk_env: bytes) -> bytes:
    """The user's X25519 secret key; ``AuthenticationFailed`` if it does not open or does
    not belong to ``pk``."""
    try:
        require_bytes(mk, KEY_BYTES, "mk")
        kek, ad = subkey(mk, _ID_PURPOSE), fields(_ID_LABEL, user_id, pk)
    except (TypeError, ValueError):
        raise AuthenticationFailed("malformed identity envelope") from None
    sk = unwrap(sk_env, kek, ad)
    if len(sk) != KEY_BYTES or bytes(nacl.public.PrivateKey(sk).public_key) != pk:
        raise AuthenticationFailed("identity secret key does not match its public key")
    return sk


def _tag(dk_scope: bytes, user_id: bytes, key: PendingKey, origin: PendingOrigin) -> bytes:
    data = fields(
        _TAG_LABEL,
        user_id,
        key.node_id,
        key.kind,
        key.key,
        origin.scope_id,
        origin.parent_id,
        origin.name,
        int(origin.deleted_at),
        origin.meta,
    )
    return keyed_hash(subkey(dk_scope, _PENDING_PURPOSE), data, _PENDING_PURPOSE)


def seal_pending(
    pk: bytes, dk_scope: bytes, user_id: bytes, key: PendingKey, origin: PendingOrigin
) -> tuple[bytes, bytes]:
    """(key box, origin box) of a pending trash item; ``origin.tag`` is computed here.
    ``pk`` must have passed ``check_pk``."""
    require_bytes(pk, PK_BYTES, "pk")
    require_bytes(key.key, KEY_BYTES, "key")
    box = nacl.public.SealedBox(nacl.public.PublicKey(pk))
    tag = _tag(dk_scope, user_id, key, origin)
    key_box = box.encrypt(fields(_KEY_LABEL, user_id, key.node_id, key.kind, key.key))
    origin_box = box.encrypt(
        fields(
            _ORIGIN_LABEL,
            user_id,
            origin.node_id,
            origin.scope_id,
            origin.parent_id,
            origin.name,
            int(origin.deleted_at),
            origin.meta,
            tag,
        )
    )
    return key_box, origin_box


def _items(plain: bytes) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    while at < len(plain):
        if at + 2 > len(plain):
            raise AuthenticationFailed("malformed pending record")
        n = int.from_bytes(plain[at : at + 2], "big")
        if at + 2 + n > len(plain):
            raise AuthenticationFailed("malformed pending record")
        out.append(plain[at + 2 : at + 2 + n])
        at += 2 + n
    return out


def _unseal(sk: bytes, box: bytes) -> list[bytes]:
    try:
        plain = nacl.public.SealedBox(nacl.public.PrivateKey(sk)).decrypt(box)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise AuthenticationFailed("pending record does not open") from None
    return _items(plain)


def open_pending(
    sk: bytes, user_id: bytes, node_id: bytes, key_box: bytes, origin_box: bytes
) -> tuple[PendingKey, PendingOrigin, bytes]:
    """Open both boxes of the pending item of node ``node_id``: (key, origin, the tag to
    check with ``check_pending_tag`` once DK_S is known). ``AuthenticationFailed`` if a box
    does not open, is malformed or names another user or node."""
    k = _unseal(sk, key_box)
    o = _unseal(sk, origin_box)
    try:
        ok = (
            len(k) == 5
            and k[0] == _KEY_LABEL
            and len(o) == 9
            and o[0] == _ORIGIN_LABEL
            and hmac.compare_digest(k[1], user_id)
            and hmac.compare_digest(o[1], user_id)
            and k[2] == node_id
            and o[2] == node_id
            and len(k[4]) == KEY_BYTES
            and len(o[3]) == ID_BYTES
            and len(o[4]) == ID_BYTES
            and len(o[6]) == 8
        )
        if not ok:
            raise AuthenticationFailed("pending record does not belong to this node")
        key = PendingKey(node_id, k[3].decode("ascii"), k[4])
        origin = PendingOrigin(
            node_id, o[3], o[4], o[5].decode("utf-8"), int.from_bytes(o[6], "big"), o[7], o[8]
        )
    except UnicodeDecodeError:
        raise AuthenticationFailed("malformed pending record") from None
    if key.kind not in ("dir", "file"):
        raise AuthenticationFailed("malformed pending record")
    return key, origin, origin.tag


def check_pending_tag(
    dk_scope: bytes, user_id: bytes, key: PendingKey, origin: PendingOrigin
) -> None:
    """``AuthenticationFailed`` unless the item was made by a holder of DK_S."""
    if not hmac.compare_digest(_tag(dk_scope, user_id, key, origin), origin.tag):
        raise AuthenticationFailed("pending trash item was not made by its scope")
