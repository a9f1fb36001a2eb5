"""Failed-login throttle: slows guessing without letting anyone lock a user out.

Counters live in the index, so every server process and host sees the same counts (with
``server.workers`` > 1 or several hosts on one PostgreSQL, counters in one process's memory
would give a guesser one allowance per process). Each failure is a row ``(key_mac, at)``; a
key is a client address, a user name or an (address, user name) pair, stored only as a keyed
BLAKE2b under a key derived from the pepper, so the table lists neither names nor addresses.

**The policy.** Failures are counted in a sliding window of ``window`` seconds (300 by
default) against three keys at once: the client address (IPv6 addresses by their /64, since
one host commonly holds a whole /64), the user name, and the pair of both. Before any
password is checked, and before the login cache is consulted:

1. an address with ``limit`` failures in the window (10) gets 429, whatever the user: it is
   guessing;
2. a pair with ``pair_limit`` failures (5) gets 429: this address is guessing this user;
3. a user with ``user_limit`` failures (10) from anywhere is *guarded*: an address may still
   try that user while it has fewer than ``guarded_budget`` failures (2) against it, so
   addresses that have not been guessing it, and a user who mistyped once, are verified
   as usual; the others get 429.

No rule ever refuses an address that has no failures of its own: someone who knows a user's
name can make that user guarded, but cannot keep the user's correct password, sent from
their own address, from working. A distributed guesser gets at most ``guarded_budget``
guesses per address and window on a guarded user, ``pair_limit`` on any other, and
``limit`` per address in all. ``Retry-After`` says when the blocking failures age out.
Answering 429 costs no Argon2id and records nothing; nothing sleeps in a worker thread.

The checks run before the login cache on purpose: otherwise an address over its limit could
still test passwords against the cache (a hit logs in) at the price of one hash each. A
successful login forgets the failures of its (address, user) pair only: the user's and the
address's counts stand, so a user's own logins cannot wipe out the traces of a guesser.

Each key keeps at most its largest limit of rows: at the cap the oldest is replaced, so the
count always covers the latest failures and the table cannot grow faster than that per key.
Rows older than the window are purged by the maintenance loop. Malformed credentials are not
counted at all (the authenticator answers them 400 without trying any password).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import peewee as pw

from davserver.crypto.primitives import keyed_hash
from davserver.errors import StorageError
from davserver.index import fast
from davserver.index.models import LoginFailure

if TYPE_CHECKING:
    from davserver.vault import Vault

_PERSON = b"wdv-throttle-v1"
_LOG_PURPOSE = b"wdv-log-tag-v1"
_LOG_PERSON = b"wdv-logtag-v1"

#: Failures a guarded user tolerates from one address (see the module docstring).
DEFAULT_GUARDED_BUDGET = 2


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the query
def address_key(addr: str) -> str:
    """Throttle key of a client address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as
    the IPv4 address)."""
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return "a:" + addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "a:" + str(ip.ipv4_mapped)
        return "a:" + str(ipaddress.IPv6Network((ip, 64), strict=False))
    return "a:" + str(ip)


def user_key(name: str) -> str:
    """Throttle key of a user name (NFC, as the vault compares names)."""
    return "u:" + unicodedata.normalize("NFC", name)


def pair_key(addr: str, name: str) -> str:
    return "p:" + address_key(addr)[2:] + "\x00" + unicodedata.normalize("NFC", name)


@dataclass(frozen=True)
class Refusal:
    """Why an attempt is refused before its password is checked, and for how long."""

    retry_after: int
    reason: str  # "address", "pair" or "user" (for the log; never a name)


class LoginThrottle:
    """The shared failed-login counters and the policy of the module docstring."""

    def __init__(
        self,
        vault: Vault,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.time,
        *,
        pair_limit: int | None = None,
        user_limit: int | None = None,
        guarded_budget: int = DEFAULT_GUARDED_BUDGET,
    ) -> None:
        self.vault = vault
        self.limit = limit
        self.window = window
        self.pair_limit = pair_limit if pair_limit is not None else max(1, (limit + 1) // 2)
        self.user_limit = user_limit if user_limit is not None else limit
        self.guarded_budget = max(1, min(guarded_budget, self.pair_limit))
        self._cap = max(self.limit, self.pair_limit, self.user_limit)
        self._clock = clock
        self._key = vault.server_key(b"login-throttle")
        self._log_key = vault.server_key(_LOG_PURPOSE)

    # -- keys ----------------------------------------------------------------------------------
    def _mac(self, key: str) -> bytes:
        # hashlib's keyed BLAKE2b: the same function as crypto.keyed_hash (libsodium's),
        # without PyNaCl's per-call overhead; three of these run on every request.
        data = key.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16, key=self._key, person=_PERSON).digest()

    def log_tag(self, name: str) -> str:
        """What a log line may say of a user name: a keyed MAC (16 hex digits) under a
        server secret, so a log reader cannot confirm a guessed name."""
        data = unicodedata.normalize("NFC", name).encode("utf-8", "surrogatepass")
        return keyed_hash(self._log_key, data, _LOG_PERSON, b"", 8).hex()

    # -- the policy ----------------------------------------------------------------------------
    def check(self, addr: str, name: str) -> Refusal | None:
        """Whether ``name`` may be tried from ``addr`` now; a ``Refusal`` (429) if not."""
        now = self._clock()
        ka, ku, kp = (
            self._mac(k) for k in (address_key(addr), user_key(name), pair_key(addr, name))
        )
        recent = self._recent([ka, ku, kp], now)
        a, u, p = recent[ka], recent[ku], recent[kp]
        refusals: list[Refusal] = []
        if len(a) >= self.limit:
            refusals.append(Refusal(self._age_out(a, self.limit, now), "address"))
        if len(p) >= self.pair_limit:
            refusals.append(Refusal(self._age_out(p, self.pair_limit, now), "pair"))
        elif len(u) >= self.user_limit and len(p) >= self.guarded_budget:
            # Either ends it: the user's guard lapsing or this pair's failures ageing out.
            wait = min(
                self._age_out(u, self.user_limit, now),
                self._age_out(p, self.guarded_budget, now),
            )
            refusals.append(Refusal(wait, "user"))
        if not refusals:
            return None
        return max(refusals, key=lambda r: r.retry_after)

    def login_failed(self, addr: str, name: str) -> None:
        """Count a wrong password (or unknown user) against the address, user and pair."""
        self.failed([address_key(addr), user_key(name), pair_key(addr, name)])

    def login_succeeded(self, addr: str, name: str) -> None:
        """Forget the pair's failures (the user mistyped, then got it right)."""
        self.reset(pair_key(addr, name))

    # -- counters ------------------------------------------------------------------------------
    def _age_out(self, times: list[float], limit: int, now: float) -> int:
        """Seconds until fewer than ``limit`` of ``times`` (sorted) lie in the window."""
        wait = times[len(times) - limit] + self.window - now
        return max(1, int(wait + 0.999))

    def _recent(self, macs: list[bytes], now: float) -> dict[bytes, list[float]]:
        out: dict[bytes, list[float]] = {m: [] for m in macs}
        try:
            with self.vault.index.connection():
                if len(out) == 3:  # the per-request check: hand-written SQL (index.fast)
                    found = fast.login_failures((macs[0], macs[1], macs[2]), now - self.window)
                else:
                    found = [
                        (bytes(r.key_mac), float(r.at))
                        for r in LoginFailure.select(LoginFailure.key_mac, LoginFailure.at).where(
                            LoginFailure.key_mac.in_(list(out)), LoginFailure.at > now - self.window
                        )
                    ]
        except pw.DatabaseError as exc:
            raise StorageError("index database error") from exc
        for mac, at in found:
            out[mac].append(at)
        for times in out.values():
            times.sort()
        return out

    def retry_after(self, keys: Iterable[str], limit: int | None = None) -> int | None:
        """Seconds until every key has fewer than ``limit`` (default: ``self.limit``)
        failures in the window; None if none has that many."""
        limit = self.limit if limit is None else limit
        now = self._clock()
        waits = [
            self._age_out(times, limit, now)
            for times in self._recent([self._mac(k) for k in keys], now).values()
            if len(times) >= limit
        ]
        return max(waits) if waits else None

    def failed(self, keys: Iterable[str]) -> None:
        """Count one failure against each key. A key holding its cap of rows has its oldest
        ones replaced, so its count always covers the latest failures."""
        now = self._clock()
        recent = self._recent([self._mac(k) for k in keys], now)
        try:
            with self.vault.index.connection(), self.vault.index.atomic():
                for mac, times in recent.items():
                    if len(times) >= self._cap:
                        oldest_kept = times[len(times) - self._cap + 1]
                        LoginFailure.delete().where(
                            LoginFailure.key_mac == mac, LoginFailure.at < oldest_kept
                        ).execute()
                LoginFailure.insert_many([{"key_mac": m, "at": now} for m in recent]).execute()
        except pw.DatabaseError as exc:
            raise StorageError("index database error") from exc

    def reset(self, key: str) -> None:
        """Forget the failures of one key."""
        try:
            with self.vault.index.connection(), self.vault.index.atomic():
                LoginFailure.delete().where(LoginFailure.key_mac == self._mac(key)).execute()
        except pw.DatabaseError as exc:
            raise StorageError("index database error") from exc

    def purge(self) -> int:
        """Drop failures older than the window; how many."""
        with self.vault.index.connection(), self.vault.index.atomic():
            return int(
                LoginFailure.delete()
                .where(LoginFailure.at <= self._clock() - self.window)
                .execute()
            )
