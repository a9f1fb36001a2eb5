"""Tests for davserver.crypto.envelopes: the key tree and sealed metadata.

The central property: an envelope opens only under the exact row it was sealed for. Each test
changes one associated-data field (the envelope "moved" to another row, user, parent, version,
size or blob) and expects ``AuthenticationFailed``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import nacl.bindings
import pytest

from davserver.crypto import (
    WRAPPED_KEY_BYTES,
    AuthenticationFailed,
    fields,
    make_header,
    open_sealed,
    random_id,
    random_key,
    seal,
    subkey,
    unwrap_content_key,
    unwrap_master_key,
    unwrap_node_key,
    unwrap_root_key,
    wrap,
    wrap_content_key,
    wrap_master_key,
    wrap_node_key,
    wrap_root_key,
)
from davserver.crypto.kdf import KdfParams


def field(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def open_raw(env: bytes, kek: bytes, ad: bytes) -> bytes:
    """Decrypt with PyNaCl directly, to pin the normative construction independently."""
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(env[24:], ad, env[:24], kek)


def flipped(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def assert_rejects_every_change(
    opener: Callable[..., bytes], good: dict[str, Any], changes: dict[str, list[Any]]
) -> None:
    """``opener(**good)`` succeeds; changing any one argument to any listed value fails."""
    opener(**good)
    for name, values in changes.items():
        for value in values:
            args = dict(good, **{name: value})
            with pytest.raises(AuthenticationFailed):
                opener(**args)


def env_changes(env: bytes) -> list[bytes]:
    return [
        flipped(env, 0),  # nonce
        flipped(env, 30),  # ciphertext
        flipped(env, len(env) - 1),  # tag
        env[:-1],
        env + b"\x00",
        b"",
        wrap_root_key(random_key(), random_key(), random_id(), random_id()),
    ]


def ids(n: int) -> list[bytes]:
    return [random_id() for _ in range(n)]


# -- master key ------------------------------------------------------------------------------


def test_master_key_layout_and_round_trip() -> None:
    mk, kek = random_key(), random_key()
    user_id, envelope_id = random_id(), random_id()
    params = KdfParams.for_password().encode()
    env = wrap_master_key(mk, kek, user_id, "password", envelope_id, params)
    assert len(env) == WRAPPED_KEY_BYTES == 72
    ad = (
        field(b"wdv/mk/v1")
        + field(user_id)
        + field(b"password")
        + field(envelope_id)
        + field(params)
    )
    assert open_raw(env, kek, ad) == mk
    assert unwrap_master_key(env, kek, user_id, "password", envelope_id, params) == mk


def test_master_key_rejects_moved_or_tampered() -> None:
    kek, params = random_key(), KdfParams.for_password().encode()
    good: dict[str, Any] = {
        "kek": kek,
        "user_id": random_id(),
        "kind": "password",
        "envelope_id": random_id(),
        "kdf_params": params,
    }
    env = wrap_master_key(random_key(), **good)
    assert_rejects_every_change(
        unwrap_master_key,
        dict(good, env=env),
        {
            "env": env_changes(env),
            "kek": [random_key(), kek[:31]],
            "user_id": [*ids(1), b"", good["user_id"][:15]],
            "kind": ["token", "Password", ""],
            "envelope_id": ids(1),
            "kdf_params": [KdfParams.for_password().encode(), flipped(params, 0), b""],
        },
    )


# -- root directory key ----------------------------------------------------------------------


def test_root_key_layout_and_round_trip() -> None:
    dk, mk, user_id, root_id = random_key(), random_key(), random_id(), random_id()
    env = wrap_root_key(dk, mk, user_id, root_id)
    assert len(env) == 72
    ad = field(b"wdv/root/v1") + field(user_id) + field(root_id)
    assert open_raw(env, subkey(mk, b"root-wrap"), ad) == dk
    assert unwrap_root_key(env, mk, user_id, root_id) == dk


def test_root_key_rejects_moved_or_tampered() -> None:
    mk, user_id, root_id = random_key(), random_id(), random_id()
    env = wrap_root_key(random_key(), mk, user_id, root_id)
    assert_rejects_every_change(
        unwrap_root_key,
        {"env": env, "mk": mk, "user_id": user_id, "root_id": root_id},
        {
            "env": env_changes(env),
            "mk": [random_key(), subkey(mk, b"root-wrap")],
            "user_id": [*ids(2), root_id],
            "root_id": [*ids(2), user_id],
        },
    )


# -- directory and file keys -----------------------------------------------------------------


def test_node_key_layout_and_round_trip() -> None:
    key, parent_dk, node_id, parent_id = random_key(), random_key(), *ids(2)
    for kind in ("dir", "file"):
        env = wrap_node_key(key, parent_dk, node_id, parent_id, kind)
        assert len(env) == 72
        ad = field(b"wdv/node/v1") + field(node_id) + field(parent_id) + field(kind.encode())
        assert open_raw(env, subkey(parent_dk, b"node-wrap"), ad) == key
        assert unwrap_node_key(env, parent_dk, node_id, parent_id, kind) == key


def test_node_key_rejects_moved_or_tampered() -> None:
    parent_dk, node_id, parent_id = random_key(), *ids(2)
    env = wrap_node_key(random_key(), parent_dk, node_id, parent_id, "dir")
    assert_rejects_every_change(
        unwrap_node_key,
        {
            "env": env,
            "parent_dk": parent_dk,
            "node_id": node_id,
            "parent_id": parent_id,
            "kind": "dir",
        },
        {
            "env": env_changes(env),
            "parent_dk": [random_key()],  # moved under another directory's key
            "node_id": [*ids(2), parent_id],  # copied to another row
            "parent_id": [*ids(2), node_id],  # reparented in the index only
            "kind": ["file", "DIR", "", "directory"],  # a directory key posing as a file
        },
    )


def test_node_key_swapping_node_and_parent_ids_fails() -> None:
    a, b, dk = random_id(), random_id(), random_key()
    env = wrap_node_key(random_key(), dk, a, b, "file")
    with pytest.raises(AuthenticationFailed):
        unwrap_node_key(env, dk, b, a, "file")


def test_move_rewraps_one_envelope_only() -> None:
    dir_a, dir_b = random_key(), random_key()
    a_id, b_id, dir_id, file_id = ids(4)
    sub_dk = random_key()
    sub_env = wrap_node_key(sub_dk, dir_a, dir_id, a_id, "dir")
    file_fk = random_key()
    file_env = wrap_node_key(file_fk, sub_dk, file_id, dir_id, "file")
    # Move "sub" from A to B: unwrap under A, re-wrap under B; the file below is untouched.
    moved = wrap_node_key(
        unwrap_node_key(sub_env, dir_a, dir_id, a_id, "dir"), dir_b, dir_id, b_id, "dir"
    )
    assert unwrap_node_key(moved, dir_b, dir_id, b_id, "dir") == sub_dk
    assert unwrap_node_key(file_env, sub_dk, file_id, dir_id, "file") == file_fk
    with pytest.raises(AuthenticationFailed):
        unwrap_node_key(sub_env, dir_b, dir_id, b_id, "dir")
    with pytest.raises(AuthenticationFailed):
        unwrap_node_key(moved, dir_a, dir_id, a_id, "dir")


def test_authentic_envelope_of_a_non_key_secret_is_rejected() -> None:
    """Sealed under the right KEK and AD, but not 32 bytes: still not a key."""
    parent_dk, node_id, parent_id = random_key(), *ids(2)
    kek = subkey(parent_dk, b"node-wrap")
    ad = fields(b"wdv/node/v1", node_id, parent_id, "file")
    for secret in (b"", random_key()[:31], random_key() + b"\x00"):
        with pytest.raises(AuthenticationFailed):
            unwrap_node_key(wrap(secret, kek, ad), parent_dk, node_id, parent_id, "file")


def test_wrap_node_key_rejects_bad_kind_and_ids() -> None:
    with pytest.raises(ValueError):
        wrap_node_key(random_key(), random_key(), random_id(), random_id(), "link")
    with pytest.raises(ValueError):
        wrap_node_key(random_key(), random_key(), b"short", random_id(), "dir")
    with pytest.raises(ValueError):
        wrap_node_key(random_key()[:16], random_key(), random_id(), random_id(), "dir")


# -- content keys ----------------------------------------------------------------------------


def test_content_key_layout_and_round_trip() -> None:
    ck, fk, node_id, blob_id = random_key(), random_key(), *ids(2)
    header24 = make_header(ck)[:24]
    env = wrap_content_key(ck, fk, node_id, 3, blob_id, 123456, header24)
    assert len(env) == 72
    ad = (
        field(b"wdv/ck/v1")
        + field(node_id)
        + field(struct.pack(">Q", 3))
        + field(blob_id)
        + field(struct.pack(">Q", 123456))
        + field(header24)
    )
    assert open_raw(env, subkey(fk, b"ck-wrap"), ad) == ck
    assert unwrap_content_key(env, fk, node_id, 3, blob_id, 123456, header24) == ck


def test_content_key_rejects_moved_or_tampered() -> None:
    ck, fk, node_id, blob_id = random_key(), random_key(), *ids(2)
    header24 = make_header(ck, 16)[:24]
    env = wrap_content_key(ck, fk, node_id, 7, blob_id, 1000, header24)
    assert_rejects_every_change(
        unwrap_content_key,
        {
            "env": env,
            "fk": fk,
            "node_id": node_id,
            "version_no": 7,
            "blob_id": blob_id,
            "plain_size": 1000,
            "header24": header24,
        },
        {
            "env": env_changes(env),
            "fk": [random_key(), ck],  # another file's key
            "node_id": ids(2),  # version row moved to another file
            "version_no": [6, 8, 0, 2**63],  # rolled to another version number
            "blob_id": ids(2),  # pointed at another object
            "plain_size": [999, 1001, 0, 1000 + 2**32],  # size lie (truncation, padding)
            "header24": [
                make_header(ck, 16)[:24],  # other file nonce
                make_header(ck, 8, header24[8:24])[:24],  # other segment size
                flipped(header24, 23),
                header24[:23],
            ],
        },
    )


def test_content_key_rejects_negative_or_bool_integers() -> None:
    ck, fk, node_id, blob_id = random_key(), random_key(), *ids(2)
    header24 = make_header(ck)[:24]
    with pytest.raises(ValueError):
        wrap_content_key(ck, fk, node_id, -1, blob_id, 0, header24)
    with pytest.raises(ValueError):
        wrap_content_key(ck, fk, node_id, True, blob_id, 0, header24)
    env = wrap_content_key(ck, fk, node_id, 1, blob_id, 0, header24)
    with pytest.raises(AuthenticationFailed):
        unwrap_content_key(env, fk, node_id, 1, blob_id, -1, header24)


def test_full_key_tree() -> None:
    """password KEK → MK → root DK → dir DK → file FK → CK, every hop authenticated."""
    kek, mk, root_dk, dk, fk, ck = (random_key() for _ in range(6))
    user_id, env_id, root_id, dir_id, file_id, blob_id = ids(6)
    params = KdfParams.for_token().encode()
    header24 = make_header(ck)[:24]
    mk_env = wrap_master_key(mk, kek, user_id, "token", env_id, params)
    root_env = wrap_root_key(root_dk, mk, user_id, root_id)
    dir_env = wrap_node_key(dk, root_dk, dir_id, root_id, "dir")
    file_env = wrap_node_key(fk, dk, file_id, dir_id, "file")
    ck_env = wrap_content_key(ck, fk, file_id, 1, blob_id, 42, header24)

    got_mk = unwrap_master_key(mk_env, kek, user_id, "token", env_id, params)
    got_root = unwrap_root_key(root_env, got_mk, user_id, root_id)
    got_dk = unwrap_node_key(dir_env, got_root, dir_id, root_id, "dir")
    got_fk = unwrap_node_key(file_env, got_dk, file_id, dir_id, "file")
    got_ck = unwrap_content_key(ck_env, got_fk, file_id, 1, blob_id, 42, header24)
    assert (got_mk, got_root, got_dk, got_fk, got_ck) == (mk, root_dk, dk, fk, ck)
    # Another user's MK cannot open this user's root, even with the right ids.
    with pytest.raises(AuthenticationFailed):
        unwrap_root_key(root_env, random_key(), user_id, root_id)


# -- sealed metadata -------------------------------------------------------------------------


def test_seal_layout_and_round_trip() -> None:
    key, node_id = random_key(), random_id()
    sealed = seal(key, b"meta-mtime", b"wdv/mtime/v1", (node_id, 5), b"1700000000")
    ad = field(b"wdv/mtime/v1") + field(node_id) + field(struct.pack(">Q", 5))
    assert open_raw(sealed, subkey(key, b"meta-mtime"), ad) == b"1700000000"
    assert open_sealed(key, b"meta-mtime", b"wdv/mtime/v1", (node_id, 5), sealed) == b"1700000000"
    assert open_sealed(key, b"p", b"l", (), seal(key, b"p", b"l", (), b"")) == b""


def test_open_sealed_rejects_moved_or_tampered() -> None:
    key, node_id = random_key(), random_id()
    binding: tuple[bytes | int | str, ...] = (node_id, "DAV:getetag", 2)
    sealed = seal(key, b"deadprop", b"wdv/prop/v1", binding, b"value")
    assert_rejects_every_change(
        open_sealed,
        {
            "key": key,
            "purpose": b"deadprop",
            "label": b"wdv/prop/v1",
            "binding": binding,
            "sealed": sealed,
        },
        {
            "sealed": [flipped(sealed, i) for i in range(len(sealed))] + [sealed[:-1]],
            "key": [random_key(), b""],
            "purpose": [b"deadprop2", b"p" * 17],
            "label": [b"wdv/prop/v2"],
            "binding": [
                (random_id(), "DAV:getetag", 2),
                (node_id, "DAV:displayname", 2),
                (node_id, "DAV:getetag", 3),
                (node_id, "DAV:getetag"),
                (node_id, "DAV:getetag", 2, b""),
                (node_id, "DAV:getetag", -1),
            ],
        },
    )
