"""Encrypted file names and their lookup MACs (DESIGN.md section 6, normative).

For a node named ``name`` under a directory with key ``DK_p``::

    name_mac = BLAKE2b-256(key=subkey(DK_p, "wdv-name-mac-v1"), data=NFC(name) UTF-8,
                           person="wdv-name-v1")
    name_ct  = wrap(sodium_pad(NFC(name) UTF-8, 32), subkey(DK_p, "wdv-name-enc-v1"),
                    fields("wdv/name/v1", node_id, parent_id))

The MAC is deterministic so the index can keep ``UNIQUE(parent_id, name_mac)`` and look a child
up in one indexed query; it is keyed by the parent, so equal names in different directories (or
of different users) are unlinkable. Padding to 32-byte buckets hides exact name lengths.

Names are NFC-normalised first because macOS sends NFD while Windows and Linux send NFC: both
spellings must reach the same node. This module does not decide which names are *allowed*
(empty, ``/``, ``..``, length limits): that is the vault's job.
"""

from __future__ import annotations

import unicodedata

import nacl.bindings
import nacl.exceptions

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
    "NAME_PAD_BLOCK",
    "decrypt_name",
    "encrypt_name",
    "name_mac",
    "normalize_name",
]

NAME_PAD_BLOCK = 32

_PURPOSE_MAC = b"wdv-name-mac-v1"
_PURPOSE_ENC = b"wdv-name-enc-v1"
_PERSON_NAME = b"wdv-name-v1"
_LABEL = b"wdv/name/v1"


def normalize_name(name: str) -> str:
    """Unicode NFC, the one spelling under which names are MACed and stored."""
    return unicodedata.normalize("NFC", name)


def _name_bytes(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError("name must be str")
    # strict UTF-8: a lone surrogate (e.g. from os.fsdecode of invalid bytes) raises ValueError
    return normalize_name(name).encode("utf-8")


def name_mac(parent_dk: bytes, name: str) -> bytes:
    """The 32-byte lookup MAC of ``name`` under the directory whose key is ``parent_dk``."""
    require_bytes(parent_dk, KEY_BYTES, "parent_dk")
    return keyed_hash(subkey(parent_dk, _PURPOSE_MAC), _name_bytes(name), _PERSON_NAME)


def encrypt_name(parent_dk: bytes, name: str, node_id: bytes, parent_id: bytes) -> bytes:
    """Encrypt NFC(``name``), padded to a multiple of 32 bytes, bound to (node, parent)."""
    require_bytes(parent_dk, KEY_BYTES, "parent_dk")
    require_bytes(node_id, ID_BYTES, "node_id")
    require_bytes(parent_id, ID_BYTES, "parent_id")
    padded = nacl.bindings.sodium_pad(_name_bytes(name), NAME_PAD_BLOCK)
    return wrap(padded, subkey(parent_dk, _PURPOSE_ENC), fields(_LABEL, node_id, parent_id))


def decrypt_name(parent_dk: bytes, name_ct: bytes, node_id: bytes, parent_id: bytes) -> str:
    """Decrypt a stored name; ``AuthenticationFailed`` on any failure. Returns NFC."""
    try:
        require_bytes(parent_dk, KEY_BYTES, "parent_dk")
        require_bytes(node_id, ID_BYTES, "node_id")
        require_bytes(parent_id, ID_BYTES, "parent_id")
    except (ValueError, TypeError):
        raise AuthenticationFailed("name row is malformed") from None
    padded = unwrap(name_ct, subkey(parent_dk, _PURPOSE_ENC), fields(_LABEL, node_id, parent_id))
    try:
        raw = nacl.bindings.sodium_unpad(padded, NAME_PAD_BLOCK)
        name = raw.decode("utf-8")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError):
        # Only reachable if a holder of DK_p sealed garbage; still never return it.
        raise AuthenticationFailed("name plaintext is malformed") from None
    if len(padded) % NAME_PAD_BLOCK:
        raise AuthenticationFailed("name is not padded to the block size")
    # Normalising again is idempotent for names we wrote, and keeps the promise "returns the
    # spelling the MAC was computed over" even for a row written by another implementation.
    return normalize_name(name)
