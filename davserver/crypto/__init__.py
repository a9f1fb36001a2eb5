"""davserver.crypto: the normative formats of DESIGN.md sections 4-6 as pure functions.

- ``primitives``: ``subkey``, ``fields`` (associated data), ``wrap``/``unwrap``, the errors;
- ``kdf``: password/token → KEK, ``KdfParams`` and the login verifier;
- ``tokens``: device tokens and recovery codes: their text, their envelope (DESIGN §13);
- ``envelopes``: the key tree (MK, root DK, DK/FK, CK) and sealed metadata;
- ``names``: name MACs for lookups and padded encrypted names;
- ``blobfmt``: the segmented blob stream format, streaming encrypt/decrypt, range plans.

Rules: this package imports only the standard library and PyNaCl, never anything else from
davserver; it does no I/O and no logging; keys and plaintext never appear in exception messages.
Callers translate ``AuthenticationFailed`` into ``davserver.errors.IntegrityError`` (or an
authentication error where a wrong password is the likely cause).
"""

from __future__ import annotations

from .blobfmt import (
    ALG_XCHACHA20POLY1305,
    DEFAULT_SEG_LOG2,
    FORMAT_VERSION,
    HEADER_AD_LEN,
    HEADER_LEN,
    MAGIC,
    MAX_SEG_LOG2,
    MIN_SEG_LOG2,
    TAG_LEN,
    RangePlan,
    SegmentDecryptor,
    SegmentEncryptor,
    check_header,
    ciphertext_size,
    decrypt_chunks,
    decrypt_range,
    encrypt_chunks,
    make_header,
    parse_header_ad,
    plan_range,
    segment_count,
)
from .envelopes import (
    open_sealed,
    seal,
    unwrap_content_key,
    unwrap_master_key,
    unwrap_node_key,
    unwrap_root_key,
    wrap_content_key,
    wrap_master_key,
    wrap_node_key,
    wrap_root_key,
)
from .kdf import (
    ALG_ARGON2ID,
    ALG_TOKEN,
    KdfParams,
    check_verifier,
    derive_prk,
    make_verifier,
    password_kek,
    token_kek,
)
from .names import decrypt_name, encrypt_name, name_mac, normalize_name
from .primitives import (
    ID_BYTES,
    KEY_BYTES,
    WRAPPED_KEY_BYTES,
    AuthenticationFailed,
    CryptoError,
    fields,
    random_id,
    random_key,
    subkey,
    unwrap,
    wrap,
)

__all__ = [
    "ALG_ARGON2ID",
    "ALG_TOKEN",
    "ALG_XCHACHA20POLY1305",
    "DEFAULT_SEG_LOG2",
    "FORMAT_VERSION",
    "HEADER_AD_LEN",
    "HEADER_LEN",
    "ID_BYTES",
    "KEY_BYTES",
    "MAGIC",
    "MAX_SEG_LOG2",
    "MIN_SEG_LOG2",
    "TAG_LEN",
    "WRAPPED_KEY_BYTES",
    "AuthenticationFailed",
    "CryptoError",
    "KdfParams",
    "RangePlan",
    "SegmentDecryptor",
    "SegmentEncryptor",
    "check_header",
    "check_verifier",
    "ciphertext_size",
    "decrypt_chunks",
    "decrypt_name",
    "decrypt_range",
    "derive_prk",
    "encrypt_chunks",
    "encrypt_name",
    "fields",
    "make_header",
    "make_verifier",
    "name_mac",
    "normalize_name",
    "open_sealed",
    "parse_header_ad",
    "password_kek",
    "plan_range",
    "random_id",
    "random_key",
    "seal",
    "segment_count",
    "subkey",
    "token_kek",
    "unwrap",
    "unwrap_content_key",
    "unwrap_master_key",
    "unwrap_node_key",
    "unwrap_root_key",
    "wrap",
    "wrap_content_key",
    "wrap_master_key",
    "wrap_node_key",
    "wrap_root_key",
]
