"""Login machinery: the per-process cache of unwrapped master keys and the Argon2id gate.

HTTP Basic auth resends the password with every request, and Argon2id costs ~64 MiB and tens
of milliseconds per call, so a process caches each successful login's master key under
``BLAKE2b(key=process_secret, data=user ‖ 0x00 ‖ password)`` (DESIGN §4). The cache key is
derived from the *password*, so a wrong password can never hit an entry. Entries expire after
an idle TTL and the cache holds at most ``size`` entries (least recently used evicted).

Nothing here is persisted: restart the process and every key is gone.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from davserver import metrics

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    value: T
    user_id: str
    last_used: float = field(default_factory=time.monotonic)


class LoginCache(Generic[T]):
    """A bounded, idle-expiring map from (user, password) to a logged-in session object."""

    def __init__(self, ttl: float = 600.0, size: int = 1024) -> None:
        self.ttl = ttl
        self.size = size
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, user: str, password: bytes) -> bytes:
        data = user.encode("utf-8") + b"\x00" + password
        # hashlib's keyed BLAKE2b: the same function as libsodium's, without PyNaCl's per-call
        # overhead (every request computes one of these).
        return hashlib.blake2b(data, key=self._secret, digest_size=32).digest()

    def get(self, key: bytes) -> T | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now - entry.last_used > self.ttl:
                del self._entries[key]
                return None
            entry.last_used = now
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: bytes, user_id: str, value: T) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = _Entry(value, user_id)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, key: bytes) -> None:
        """Drop one entry (a cached token session whose token was revoked or expired)."""
        with self._lock:
            self._entries.pop(key, None)

    def forget_user(self, user_id: str) -> None:
        """Drop every entry of a user (password changed, user deleted, token revoked)."""
        with self._lock:
            for k in [k for k, e in self._entries.items() if e.user_id == user_id]:
                del self._entries[k]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class KdfGate:
    """Bounds concurrent Argon2id computations (each allocates its memlimit, 64 MiB by default).

    Callers wait here for a slot (``davserver_argon2id_queue_depth``) and hold it for
    exactly one Argon2id computation (``davserver_argon2id_duration_seconds``)."""

    def __init__(self, concurrency: int = 0) -> None:
        n = concurrency if concurrency > 0 else (os.cpu_count() or 1)
        self._sem = threading.BoundedSemaphore(n)
        self._m = metrics.get()
        self._local = threading.local()

    def __enter__(self) -> KdfGate:
        self._m.argon2_queue.inc()
        try:
            self._sem.acquire()
        finally:
            self._m.argon2_queue.dec()
        self._local.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self._m.argon2_duration.observe(time.monotonic() - self._local.started)
        self._sem.release()
