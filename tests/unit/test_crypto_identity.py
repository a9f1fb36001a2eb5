"""Identity keys and pending trash records (``davserver.crypto.identity``, DESIGN §13)."""

from __future__ import annotations

import os

import nacl.public
import pytest

from davserver.crypto import AuthenticationFailed, identity

USER, NODE, SCOPE, PARENT = (os.urandom(16) for _ in range(4))


def _records(key: bytes) -> tuple[identity.PendingKey, identity.PendingOrigin]:
    return (
        identity.PendingKey(NODE, "file", key),
        identity.PendingOrigin(NODE, SCOPE, PARENT, "Füße.jpg", 1_700_000_000, b'{"m":1}', b""),
    )


def test_identity_round_trip_and_binding() -> None:
    mk, bind = os.urandom(32), os.urandom(32)
    ident = identity.new_identity(mk, bind, USER)
    identity.check_pk(bind, USER, ident.pk, ident.pk_mac)
    sk = identity.open_sk(mk, USER, ident.pk, ident.sk_env)
    assert bytes(nacl.public.PrivateKey(sk).public_key) == ident.pk
    other = bytes(nacl.public.PrivateKey.generate().public_key)
    for args in (
        (bind, USER, other, ident.pk_mac),  # a swapped key
        (bind, os.urandom(16), ident.pk, ident.pk_mac),  # another user
        (os.urandom(32), USER, ident.pk, ident.pk_mac),  # not the server's binding key
        (bind, USER, ident.pk[:31], ident.pk_mac),  # malformed
    ):
        with pytest.raises(AuthenticationFailed):
            identity.check_pk(*args)
    with pytest.raises(AuthenticationFailed):
        identity.open_sk(os.urandom(32), USER, ident.pk, ident.sk_env)
    with pytest.raises(AuthenticationFailed):
        identity.open_sk(mk, USER, other, ident.sk_env)  # sk bound to its pk


def test_pending_records_open_only_for_their_node_and_scope() -> None:
    sk = nacl.public.PrivateKey.generate()
    pk = bytes(sk.public_key)
    dk, fk = os.urandom(32), os.urandom(32)
    key, origin = _records(fk)
    key_box, origin_box = identity.seal_pending(pk, dk, USER, key, origin)
    got_key, got_origin, _ = identity.open_pending(bytes(sk), USER, NODE, key_box, origin_box)
    assert got_key == key
    assert got_origin._replace(tag=b"") == origin
    identity.check_pending_tag(dk, USER, got_key, got_origin)
    with pytest.raises(AuthenticationFailed):
        identity.check_pending_tag(os.urandom(32), USER, got_key, got_origin)
    with pytest.raises(AuthenticationFailed):  # another node's row
        identity.open_pending(bytes(sk), USER, os.urandom(16), key_box, origin_box)
    with pytest.raises(AuthenticationFailed):  # another user
        identity.open_pending(bytes(sk), os.urandom(16), NODE, key_box, origin_box)
    with pytest.raises(AuthenticationFailed):  # boxes swapped
        identity.open_pending(bytes(sk), USER, NODE, origin_box, key_box)
    with pytest.raises(AuthenticationFailed):  # not for this key
        other = nacl.public.PrivateKey.generate()
        identity.open_pending(bytes(other), USER, NODE, key_box, origin_box)
    with pytest.raises(AuthenticationFailed):
        identity.open_pending(bytes(sk), USER, NODE, key_box[:-1], origin_box)
    # A record re-sealed with another key K' but the old tag does not verify.
    forged_key, forged_origin_box = identity.seal_pending(
        pk, os.urandom(32), USER, identity.PendingKey(NODE, "file", os.urandom(32)), origin
    )
    k2, o2, _ = identity.open_pending(bytes(sk), USER, NODE, forged_key, forged_origin_box)
    with pytest.raises(AuthenticationFailed):
        identity.check_pending_tag(dk, USER, k2, o2)
