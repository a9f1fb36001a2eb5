"""Key envelopes: every key in the tree, wrapped under its parent and bound to its row.

DESIGN.md section 4 (normative)::

    MK       wrap(MK, KEK, fields("wdv/mk/v1", user_id, kind, envelope_id, kdf_params))
    root DK  wrap(DK_root, subkey(MK,"root-wrap"),  fields("wdv/root/v1", user_id, root_id))
    DK / FK  wrap(K, subkey(DK_parent,"node-wrap"), fields("wdv/node/v1", node_id, parent_id, kind))
    CK       wrap(CK, subkey(FK,"ck-wrap"),
                  fields("wdv/ck/v1", node_id, version_no, blob_id, plain_size, header24))

The associated data names the database row an envelope belongs to, so a database writer who
copies an envelope to another row, user, parent, version, size or blob makes it fail to open.
(Restoring an *older*, self-consistent row is not detected; DESIGN.md section 2 accepts that.)

``seal`` / ``open_sealed`` apply the same construction to small non-normative metadata
(modification times, content hashes, dead properties).

Sealing functions raise ``ValueError``/``TypeError`` for wrongly shaped arguments; every
``unwrap_*`` / ``open_sealed`` raises ``AuthenticationFailed`` for any failure, because their
inputs come from the untrusted database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .primitives import (
    ID_BYTES,
    KEY_BYTES,
    WRAPPED_KEY_BYTES,
    AuthenticationFailed,
    fields,
    require_bytes,
    subkey,
    unwrap,
    wrap,
)

__all__ = [
    "NODE_KINDS",
    "Origin",
    "open_origin",
    "open_sealed",
    "seal",
    "seal_origin",
    "unwrap_content_key",
    "unwrap_master_key",
    "unwrap_node_key",
    "unwrap_root_key",
    "unwrap_trash_key",
    "wrap_content_key",
    "wrap_master_key",
    "wrap_node_key",
    "wrap_root_key",
    "wrap_trash_key",
]

NODE_KINDS = ("dir", "file")

# Same values as blobfmt.HEADER_AD_LEN and kdf.KDF_PARAMS_BYTES, repeated so that the
# envelope layer does not depend on the blob or KDF modules.
_HEADER_AD_BYTES = 24
_KDF_PARAMS_BYTES = 29


def _ids(**ids: bytes) -> None:
    for what, value in ids.items():
        require_bytes(value, ID_BYTES, what)


def _size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{what} must be an integer in 0..2^64-1")


def _open_key(
    check: Callable[[], tuple[bytes, bytes]],
    env: bytes,
) -> bytes:
    """Run the argument check and unwrap; every failure becomes ``AuthenticationFailed``.

    ``check`` validates the row's fields and returns ``(kek, ad)``. A malformed field read from
    the database (an id of the wrong length, say) is as much a sign of tampering as a bad tag.
    """
    try:
        kek, ad = check()
    except (ValueError, TypeError):
        raise AuthenticationFailed("envelope row is malformed") from None
    # 72 bytes = nonce 24 + key 32 + tag 16: this alone keeps the promise that what comes out
    # is a 32-byte key, even if another writer sealed a secret of another size under the KEK.
    if not isinstance(env, bytes) or len(env) != WRAPPED_KEY_BYTES:
        raise AuthenticationFailed("key envelope has the wrong length")
    return unwrap(env, kek, ad)


# -- master key ------------------------------------------------------------------------------


def _mk_ad(
    kek: bytes, user_id: bytes, kind: str, envelope_id: bytes, kdf_params: bytes
) -> tuple[bytes, bytes]:
    require_bytes(kek, KEY_BYTES, "kek")
    _ids(user_id=user_id, envelope_id=envelope_id)
    if not isinstance(kind, str) or not kind:
        raise ValueError("envelope kind must be a non-empty str")
    require_bytes(kdf_params, _KDF_PARAMS_BYTES, "kdf_params")
    return kek, fields(b"wdv/mk/v1", user_id, kind, envelope_id, kdf_params)


def wrap_master_key(
    mk: bytes,
    kek: bytes,
    user_id: bytes,
    kind: str,
    envelope_id: bytes,
    kdf_params: bytes,
) -> bytes:
    """Wrap the user's master key under a password or token KEK (72 bytes)."""
    require_bytes(mk, KEY_BYTES, "mk")
    kek, ad = _mk_ad(kek, user_id, kind, envelope_id, kdf_params)
    return wrap(mk, kek, ad)


def unwrap_master_key(
    env: bytes,
    kek: bytes,
    user_id: bytes,
    kind: str,
    envelope_id: bytes,
    kdf_params: bytes,
) -> bytes:
    """Open an MK envelope; ``AuthenticationFailed`` if anything differs from sealing time."""
    return _open_key(lambda: _mk_ad(kek, user_id, kind, envelope_id, kdf_params), env)


# -- root directory key ----------------------------------------------------------------------


def _root_ad(mk: bytes, user_id: bytes, root_id: bytes) -> tuple[bytes, bytes]:
    require_bytes(mk, KEY_BYTES, "mk")
    _ids(user_id=user_id, root_id=root_id)
    return subkey(mk, b"root-wrap"), fields(b"wdv/root/v1", user_id, root_id)


def wrap_root_key(dk: bytes, mk: bytes, user_id: bytes, root_id: bytes) -> bytes:
    """Wrap the user's root directory key under ``subkey(MK, "root-wrap")``."""
    require_bytes(dk, KEY_BYTES, "dk")
    kek, ad = _root_ad(mk, user_id, root_id)
    return wrap(dk, kek, ad)


def unwrap_root_key(env: bytes, mk: bytes, user_id: bytes, root_id: bytes) -> bytes:
    """Open a root DK envelope."""
    return _open_key(lambda: _root_ad(mk, user_id, root_id), env)


# -- the trash directory key and origin records (versions and trash) ---------------------------


def _trash_ad(mk: bytes, user_id: bytes, trash_id: bytes) -> tuple[bytes, bytes]:
    require_bytes(mk, KEY_BYTES, "mk")
    _ids(user_id=user_id, trash_id=trash_id)
    return subkey(mk, b"trash-wrap"), fields(b"wdv/trash/v1", user_id, trash_id)


def wrap_trash_key(dk: bytes, mk: bytes, user_id: bytes, trash_id: bytes) -> bytes:
    """Wrap the key of the user's trash directory (a second parentless directory) under
    ``subkey(MK, "trash-wrap")``, AD ``fields("wdv/trash/v1", user_id, trash_id)``: its own
    purpose and label, so that a database writer cannot pass the trash off as the root."""
    require_bytes(dk, KEY_BYTES, "dk")
    kek, ad = _trash_ad(mk, user_id, trash_id)
    return wrap(dk, kek, ad)


def unwrap_trash_key(env: bytes, mk: bytes, user_id: bytes, trash_id: bytes) -> bytes:
    return _open_key(lambda: _trash_ad(mk, user_id, trash_id), env)


class Origin(NamedTuple):
    """Where a trashed node came from: its parent then, its NFC name, when it was deleted
    (whole seconds)."""

    parent_id: bytes
    name: str
    deleted_at: int


def seal_origin(dk_trash: bytes, node_id: bytes, origin: Origin) -> bytes:
    """``wrap(fields(orig_parent_id, NFC name, deleted_at), subkey(DK_trash, "wdv-origin-v1"),
    fields("wdv/origin/v1", node_id))`` (DESIGN §12)."""
    require_bytes(dk_trash, KEY_BYTES, "dk_trash")
    _ids(node_id=node_id, parent_id=origin.parent_id)
    plain = fields(origin.parent_id, origin.name, int(origin.deleted_at))
    return wrap(plain, subkey(dk_trash, b"wdv-origin-v1"), fields(b"wdv/origin/v1", node_id))


def open_origin(dk_trash: bytes, node_id: bytes, sealed: bytes) -> Origin:
    """Open an origin record; ``AuthenticationFailed`` if it fails or is malformed."""
    require_bytes(dk_trash, KEY_BYTES, "dk_trash")
    plain = unwrap(sealed, subkey(dk_trash, b"wdv-origin-v1"), fields(b"wdv/origin/v1", node_id))
    items: list[bytes] = []
    at = 0
    while at < len(plain):
        if at + 2 > len(plain):
            raise AuthenticationFailed("malformed origin record")
        n = int.from_bytes(plain[at : at + 2], "big")
        items.append(plain[at + 2 : at + 2 + n])
        at += 2 + n
    if at != len(plain) or len(items) != 3 or len(items[0]) != ID_BYTES or len(items[2]) != 8:
        raise AuthenticationFailed("malformed origin record")
    try:
        name = items[1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthenticationFailed("malformed origin record") from exc
    return Origin(items[0], name, int.from_bytes(items[2], "big"))


# -- directory and file keys -----------------------------------------------------------------


def _node_ad(parent_dk: bytes, node_id: bytes, parent_id: bytes, kind: str) -> tuple[bytes, bytes]:
    require_bytes(parent_dk, KEY_BYTES, "parent_dk")
    _ids(node_id=node_id, parent_id=parent_id)
    if kind not in NODE_KINDS:
        raise ValueError("node kind must be 'dir' or 'file'")
    return subkey(parent_dk, b"node-wrap"), fields(b"wdv/node/v1", node_id, parent_id, kind)


def wrap_node_key(
    key: bytes, parent_dk: bytes, node_id: bytes, parent_id: bytes, kind: str
) -> bytes:
    """Wrap a DK (``kind="dir"``) or FK (``kind="file"``) under its parent's DK.

    A move or rename re-wraps exactly this envelope; descendants are untouched.
    """
    require_bytes(key, KEY_BYTES, "key")
    kek, ad = _node_ad(parent_dk, node_id, parent_id, kind)
    return wrap(key, kek, ad)


def unwrap_node_key(
    env: bytes, parent_dk: bytes, node_id: bytes, parent_id: bytes, kind: str
) -> bytes:
    """Open a DK/FK envelope."""
    return _open_key(lambda: _node_ad(parent_dk, node_id, parent_id, kind), env)


# -- content keys ----------------------------------------------------------------------------


def _ck_ad(
    fk: bytes,
    node_id: bytes,
    version_no: int,
    blob_id: bytes,
    plain_size: int,
    header24: bytes,
) -> tuple[bytes, bytes]:
    require_bytes(fk, KEY_BYTES, "fk")
    _ids(node_id=node_id, blob_id=blob_id)
    _size(version_no, "version_no")
    _size(plain_size, "plain_size")
    require_bytes(header24, _HEADER_AD_BYTES, "header24")
    return subkey(fk, b"ck-wrap"), fields(
        b"wdv/ck/v1", node_id, version_no, blob_id, plain_size, header24
    )


def wrap_content_key(
    ck: bytes,
    fk: bytes,
    node_id: bytes,
    version_no: int,
    blob_id: bytes,
    plain_size: int,
    header24: bytes,
) -> bytes:
    """Wrap a version's content key, binding the blob id, plaintext size and blob header."""
    require_bytes(ck, KEY_BYTES, "ck")
    kek, ad = _ck_ad(fk, node_id, version_no, blob_id, plain_size, header24)
    return wrap(ck, kek, ad)


def unwrap_content_key(
    env: bytes,
    fk: bytes,
    node_id: bytes,
    version_no: int,
    blob_id: bytes,
    plain_size: int,
    header24: bytes,
) -> bytes:
    """Open a CK envelope. Success vouches for ``plain_size`` and ``header24`` of the row."""
    return _open_key(lambda: _ck_ad(fk, node_id, version_no, blob_id, plain_size, header24), env)


# -- generic sealed metadata (not normative) -------------------------------------------------


def seal(
    key: bytes,
    purpose: bytes,
    label: bytes,
    binding: tuple[bytes | int | str, ...],
    plaintext: bytes,
) -> bytes:
    """``wrap(plaintext, subkey(key, purpose), fields(label, *binding))``.

    Use a distinct ``purpose`` per kind of metadata and put the row's identity (node id, version
    number, property name…) in ``binding`` so sealed values cannot be moved between rows.
    """
    require_bytes(key, KEY_BYTES, "key")
    return wrap(plaintext, subkey(key, purpose), fields(label, *binding))


def open_sealed(
    key: bytes,
    purpose: bytes,
    label: bytes,
    binding: tuple[bytes | int | str, ...],
    sealed: bytes,
) -> bytes:
    """Inverse of ``seal``; ``AuthenticationFailed`` on any failure."""
    try:
        require_bytes(key, KEY_BYTES, "key")
        kek = subkey(key, purpose)
        ad = fields(label, *binding)
    except (ValueError, TypeError):
        raise AuthenticationFailed("sealed value binding is malformed") from None
    return unwrap(sealed, kek, ad)
