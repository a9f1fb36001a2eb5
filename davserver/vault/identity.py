"""Each user's identity key pair in the index (DESIGN §13): made, checked, opened.

The formats are ``davserver.crypto.identity``'s; this module reads and writes the ``user``
row. ``create_user`` makes the pair; a user from before schema v10 gets it at the next
password login (it needs MK, which only a password or a whole-account token opens). The
public key is checked against its pepper-keyed MAC before every use (``verified_pk``), so a
database writer cannot make a scoped session seal what it deletes to a key of theirs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import peewee as pw

from davserver import crypto
from davserver.crypto import identity
from davserver.errors import DavServerError, Forbidden, IntegrityError
from davserver.index.models import User

if TYPE_CHECKING:
    from davserver.vault.engine import Engine

log = logging.getLogger(__name__)

BIND_PURPOSE = b"pk-bind"


def _b(id_hex: str) -> bytes:
    return bytes.fromhex(id_hex)


def new_identity(vault: Engine, user_id: str, mk: bytes) -> identity.Identity:
    """A fresh key pair for ``user_id``, its secret wrapped under ``mk``."""
    return identity.new_identity(mk, vault.server_key(BIND_PURPOSE), _b(user_id))


def ensure_identity(vault: Engine, user_id: str, mk: bytes) -> None:
    """Give the user an identity key pair if they have none yet (a user from before schema
    v10), at a full login. Best effort, like ``_note_login``: a write the index cannot take
    now is made at a later login."""
    try:
        with vault.index.connection():
            if User.select(User.id_pk).where(User.id == user_id).scalar() is not None:
                return
            ident = new_identity(vault, user_id, mk)
            with vault.index.atomic():
                User.update(id_pk=ident.pk, id_pk_mac=ident.pk_mac, id_sk_env=ident.sk_env).where(
                    (User.id == user_id) & User.id_pk.is_null()
                ).execute()
    except (pw.DatabaseError, DavServerError) as exc:
        log.warning("could not create an identity key pair yet: %s", exc)


def verified_pk(vault: Engine, user_id: str) -> bytes:
    """The user's identity public key, after checking its binding MAC. ``Forbidden`` if
    there is none yet; ``IntegrityError`` (logged) if it is not the key the server bound to
    this user: nothing may then be sealed to it."""
    row = User.select(User.id_pk, User.id_pk_mac).where(User.id == user_id).tuples().first()
    if row is None or row[0] is None:
        raise Forbidden("the owner has no identity key yet (it is made at a password login)")
    pk, mac = bytes(row[0]), bytes(row[1] or b"")
    try:
        identity.check_pk(vault.server_key(BIND_PURPOSE), _b(user_id), pk, mac)
    except crypto.AuthenticationFailed as exc:
        log.error("integrity failure: the identity public key of user %s", user_id)
        raise IntegrityError("the owner's identity public key failed its binding check") from exc
    return pk


def secret_key(vault: Engine, user_id: str, mk: bytes) -> bytes | None:
    """The user's identity secret key (None if they have no pair yet); ``IntegrityError`` if
    the public key's binding or the wrapped secret fails."""
    row = User.select(User.id_pk, User.id_sk_env).where(User.id == user_id).tuples().first()
    if row is None or row[0] is None:
        return None
    pk = verified_pk(vault, user_id)
    try:
        return identity.open_sk(mk, _b(user_id), pk, bytes(row[1] or b""))
    except crypto.AuthenticationFailed as exc:
        log.error("integrity failure: the identity secret key of user %s", user_id)
        raise IntegrityError("the identity secret key failed authentication") from exc
