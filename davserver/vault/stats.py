"""Store-wide numbers for monitoring: users, stored bytes, live locks, blobs awaiting
collection, and whether the index and the blob store answer.

Each number is one aggregate query on an indexed or small table (no walk of the tree or of
the store), so a scrape costs a few milliseconds whatever the size of the store. Nothing
here names a user, a path or a blob.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import peewee as pw

from davserver.errors import BlobNotFound, DavServerError
from davserver.index.models import BlobGC, Lock, User

if TYPE_CHECKING:
    from davserver.vault import Vault


@dataclass(frozen=True)
class VaultStats:
    index_up: bool
    users: int = 0
    stored_bytes: int = 0  # plaintext bytes of current versions (what quotas count)
    active_locks: int = 0
    #: Blobs queued for garbage collection, by state ("dead", "uploading").
    gc_pending: dict[str, int] = field(default_factory=dict)


def index_stats(vault: Vault) -> VaultStats:
    """The index numbers; ``index_up`` False (and zeros) if the index does not answer."""
    try:
        with vault.index.connection():
            users = User.select().count()
            stored = User.select(pw.fn.COALESCE(pw.fn.SUM(User.usage_bytes), 0)).scalar()
            locks = Lock.select().where(Lock.expire >= time.time()).count()
            rows: Any = (
                BlobGC.select(BlobGC.state, pw.fn.COUNT(BlobGC.blob_id))
                .group_by(BlobGC.state)
                .tuples()
            )
            pending = {str(state): int(n) for state, n in rows}
    except (pw.DatabaseError, DavServerError):
        return VaultStats(index_up=False)
    return VaultStats(True, int(users), int(stored or 0), int(locks), pending)


def blob_store_up(vault: Vault) -> bool:
    """Whether the blob store answers: a ``stat`` of a random id (not found is an answer)."""
    store = getattr(vault.blobs, "inner", vault.blobs)  # not counted as a client's request
    try:
        store.stat(secrets.token_hex(16))
    except BlobNotFound:
        return True
    except DavServerError:
        return False
    return True
