"""Failed-login counters kept in the index, so every server process sees the same counts.

With ``server.workers`` > 1 the kernel spreads connections over several processes, and with
PostgreSQL several hosts serve one index: counters held in one process's memory would give a
guesser one allowance per process. Here each failure is a row ``(key_mac, at)``; a key is a
user name or a client address, stored only as a keyed BLAKE2b (the key derives from the
pepper), so the table lists neither names nor addresses.

The window slides: a key is over the limit while ``limit`` failures lie within the last
``window`` seconds, and ``retry_after`` says when the oldest of those ages out. Rows older
than the window are purged by the maintenance loop; while a key is over the limit no further
failure is recorded for it, so a guesser cannot grow the table faster than ``limit`` rows
per key and window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from davserver.crypto.primitives import keyed_hash
from davserver.index.models import LoginFailure

if TYPE_CHECKING:
    from davserver.vault import Vault

_PERSON = b"wdv-throttle-v1"


class LoginThrottle:
    """Sliding-window failed-login counters per key, shared through the index."""

    def __init__(
        self,
        vault: Vault,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.limit = limit
        self.window = window
        self._clock = clock
        self._key = vault.server_key(b"login-throttle")

    def _mac(self, key: str) -> bytes:
        return keyed_hash(self._key, key.encode("utf-8", "surrogatepass"), _PERSON, b"", 16)

    def _recent(self, macs: list[bytes], now: float) -> dict[bytes, list[float]]:
        out: dict[bytes, list[float]] = {m: [] for m in macs}
        with self.vault.index.connection():
            rows = LoginFailure.select(LoginFailure.key_mac, LoginFailure.at).where(
                LoginFailure.key_mac.in_(macs), LoginFailure.at > now - self.window
            )
            for row in rows:
                out[bytes(row.key_mac)].append(float(row.at))
        for times in out.values():
            times.sort()
        return out

    def retry_after(self, keys: Iterable[str]) -> int | None:
        """Seconds until every key is under the limit again; None if none is over it."""
        now = self._clock()
        wait = 0.0
        for times in self._recent([self._mac(k) for k in keys], now).values():
            if len(times) >= self.limit:
                # The oldest failure that keeps the key at the limit must age out first.
                wait = max(wait, times[len(times) - self.limit] + self.window - now)
        return max(1, int(wait + 0.999)) if wait > 0 else None

    def failed(self, keys: Iterable[str]) -> None:
        """Count one failure against each key (not against keys already over the limit)."""
        now = self._clock()
        recent = self._recent([self._mac(k) for k in keys], now)
        rows = [{"key_mac": m, "at": now} for m, t in recent.items() if len(t) < self.limit]
        if rows:
            with self.vault.index.connection(), self.vault.index.atomic():
                LoginFailure.insert_many(rows).execute()

    def reset(self, key: str) -> None:
        """Forget the failures of one key (a user who just logged in)."""
        with self.vault.index.connection(), self.vault.index.atomic():
            LoginFailure.delete().where(LoginFailure.key_mac == self._mac(key)).execute()

    def purge(self) -> int:
        """Drop failures older than the window; how many."""
        with self.vault.index.connection(), self.vault.index.atomic():
            return int(
                LoginFailure.delete()
                .where(LoginFailure.at <= self._clock() - self.window)
                .execute()
            )
