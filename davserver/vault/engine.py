"""What a user's ``Session`` needs from the engine, declared below both.

``Vault`` (``davserver.vault``) creates sessions, and every session works through its vault's
index, blob store and settings. So that the session modules (``nodes``, ``tree`` and the
operations built on them) need not import the package that imports them, they know the vault
only as ``Engine``, the small protocol here, which ``Vault`` satisfies. ``VaultSettings``, the
engine's tunables, live here for the same reason (``davserver.vault`` re-exports them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from davserver.crypto import blobfmt
from davserver.retention import Retention

if TYPE_CHECKING:
    from davserver.blobs import BlobStore
    from davserver.index import Index

T = TypeVar("T")


@dataclass(frozen=True)
class VaultSettings:
    """Engine tunables (filled from ``Config`` by the server and CLI)."""

    argon2_opslimit: int = 3
    argon2_memlimit: int = 64 * 1024 * 1024
    argon2_concurrency: int = 0
    login_cache_ttl: float = 600.0
    login_cache_size: int = 1024
    default_quota: int = 0  # 0 = unlimited
    seg_log2: int = blobfmt.DEFAULT_SEG_LOG2
    upload_expiry: float = 86400.0
    upload_grace: float = 86400.0  # partial uploads idle this long are crash leftovers
    inline_max: int = 16384  # files up to this size (known length) live in the index
    checksums: tuple[str, ...] = ("sha1", "md5")  # computed on upload, offered to clients
    max_dead_props: int = 256  # dead properties per node (PropertyLimit beyond)
    max_dead_props_bytes: int = 65536  # their names and values, UTF-8
    max_shared_locks: int = 64  # locks rooted at one path (LockLimit beyond)
    versions_retention: str = "auto"  # versions.retention (davserver.retention)
    trash_retention: str = "auto"  # trash.retention

    @property
    def versions_policy(self) -> Retention:
        return _policy(self.versions_retention, "versions")

    @property
    def trash_policy(self) -> Retention:
        return _policy(self.trash_retention, "trash")


@functools.lru_cache(maxsize=16)
def _policy(text: str, kind: str) -> Retention:
    return Retention.parse(text, kind)


class Engine(Protocol):
    """The part of ``Vault`` that sessions use: rows, objects, tunables, collection."""

    index: Index
    blobs: BlobStore
    settings: VaultSettings
    #: The time (``time.time``; tests inject a clock to age versions and trash).
    clock: Callable[[], float]

    def pin_blob(self, blob_id: str) -> Callable[[], None]:
        """Keep a blob from this process's collection while a reader of it is open; call
        the returned function (once or more) when it closes."""
        ...

    def server_key(self, purpose: bytes) -> bytes:
        """A server-wide key for one purpose (the lock store's MAC and sealing keys)."""
        ...

    def mark_blobs_dead(self, blob_ids: list[str]) -> None:
        """Queue blobs that no version references any more for collection."""

    def collect_garbage(self, grace: float = 0.0) -> int:
        """Delete queued blobs nothing references; how many were deleted."""

    def freeing_space(self, op: Callable[[], T]) -> T:
        """Run ``op``, which frees space, even on a full disk."""
