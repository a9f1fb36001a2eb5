"""WebDAV lock storage in the index database, shared by every server process on that index.

The DAV layer (``davserver.dav.locks``) adapts this store to WsgiDAV's lock manager; this module
knows nothing of WsgiDAV or HTTP. A lock is a small record (root URL, scope, depth, owner XML,
principal, timeout) attached to a *path* in one user's namespace.

What a row holds (DESIGN §2, no names or paths in clear):

- ``Lock.token``: the random lock token (``opaquelocktoken:<uuid4>``);
- ``Lock.path_mac``: ``BLAKE2b(key=lock MAC key, data=user_id ‖ 0x00 ‖ path)``;
- ``Lock.data_ct``: the record as JSON, sealed under the lock sealing key and bound to the
  token and path MAC, so a row cannot be swapped for another's;
- ``Lock.expire``: when the lock times out (seconds since the epoch);
- one ``LockScope`` row per strict ancestor of the locked path (its MAC), so "every lock
  below this path" is one indexed query.

Both keys derive from the server pepper, so whoever holds only the database learns nothing of
the locked names. Paths are canonical: NFC names joined by ``/`` with a leading ``/`` and no
trailing one (``/`` is a user's root).

Conflict checks and creation run in one transaction (:meth:`LockStore.atomically`): on SQLite
``BEGIN IMMEDIATE`` serialises writers across processes; on PostgreSQL an advisory lock per
user, taken first, serialises the lock changes of one user (locks never span two users).
Database errors leave as ``davserver.errors`` exceptions.

At most ``VaultSettings.max_shared_locks`` locks are rooted at one path (only shared locks can
share a root); one more is ``LockLimit`` (423), counted in the same transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from davserver import audit, crypto
from davserver.crypto.primitives import keyed_hash
from davserver.errors import IntegrityError, LockLimit
from davserver.index import fast
from davserver.index.models import Lock, LockScope
from davserver.vault.nodes import split_path

if TYPE_CHECKING:
    from davserver.vault.engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAC_PURPOSE = b"wdv-lock-mac-v1"
_SEAL_PURPOSE = b"wdv-lock-enc-v1"
_MAC_PERSON = b"wdv-lockpath-v1"
_SEAL_LABEL = b"wdv/lock/v1"

#: Lock lifetimes are capped (RFC 4918 §10.7 lets the server choose); "Infinite" gets this.
MAX_TIMEOUT = 4 * 7 * 86400.0
DEFAULT_TIMEOUT = 7 * 86400.0

LockRecord = dict[str, Any]


@dataclass(frozen=True)
class LockInfo:
    """What an administrator may see of a lock (``davserver locks list``): never its path,
    owner text or principal, which hold names. A lock is attached to a path, not to a node,
    so there is no node id to show."""

    token: str
    user_id: str
    scope: str
    depth: str
    expire: float


def canonical_path(path: str) -> str:
    """``/a/b`` for ``a/b/``, ``/a//b`` …; names NFC-normalised; ``/`` for the root."""
    return "/" + "/".join(split_path(path))


def _ancestors(path: str) -> list[str]:
    """Strict ancestors of a canonical path, root first (``/a/b`` → ``/``, ``/a``)."""
    if path == "/":
        return []
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(len(parts))]


def _advisory_key(user_id: str) -> int:
    """A signed 64-bit advisory-lock key for one user's lock namespace (user ids are random;
    the constant keeps the keys apart from any other use of advisory locks)."""
    key = int(user_id[:16], 16) ^ 0x5744_564C_4F43_4B53  # "WDVLOCKS"
    return key - (1 << 64) if key >= 1 << 63 else key


class LockStore:
    """Locks of every user, in the index. Thread-safe; one per process is enough."""

    def __init__(self, vault: Engine) -> None:
        self._index = vault.index
        self._mac_key = vault.server_key(_MAC_PURPOSE)
        self._seal_key = vault.server_key(_SEAL_PURPOSE)
        self.max_locks = vault.settings.max_shared_locks

    # -- keys ----------------------------------------------------------------------------
    def _mac(self, user_id: str, path: str) -> bytes:
        data = user_id.encode("ascii") + b"\x00" + path.encode("utf-8")
        return keyed_hash(self._mac_key, data, _MAC_PERSON)

    def _seal(self, token: str, path_mac: bytes, record: LockRecord) -> bytes:
        raw = json.dumps(record, separators=(",", ":")).encode("utf-8")
        return crypto.seal(self._seal_key, _SEAL_PURPOSE, _SEAL_LABEL, (token, path_mac), raw)

    def _open(self, row: Lock | fast.LockRow) -> LockRecord:
        path_mac = bytes(row.path_mac)
        try:
            raw = crypto.open_sealed(
                self._seal_key,
                _SEAL_PURPOSE,
                _SEAL_LABEL,
                (row.token, path_mac),
                bytes(row.data_ct),
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: lock row failed authentication")
            raise IntegrityError("lock record failed authentication") from exc
        record: LockRecord = json.loads(raw)
        record["expire"] = float(row.expire)
        return record

    # -- transactions ----------------------------------------------------------------------
    def atomically(self, user_id: str | None, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one write transaction in which conflict checks and changes are
        atomic, run again if it lost a deadlock or a race (``Index.run``). ``fn`` must only
        touch the lock tables.

        On PostgreSQL the lock changes of one user queue on a transaction-scoped advisory
        lock of their own, first in the transaction, rather than on the user's row: they
        touch no row of the tree, so they need not wait behind the user's writes (nor the
        writes behind them), and no order with those rows can deadlock. On SQLite
        ``BEGIN IMMEDIATE`` serialises every writer."""

        def once() -> T:
            with self._index.atomic():
                if user_id is not None and not self._index.is_sqlite:
                    fast.execute("lock_advisory", (_advisory_key(user_id),))
                return fn()

        return self._index.run(once)

    @contextlib.contextmanager
    def transaction(self, user_id: str | None) -> Iterator[None]:
        """One write transaction that a tree change shares with its lock checks and with
        the removal of the locks of what it removed (``DavLockManager.atomic``). It is
        serialised with every lock change of ``user_id`` (the advisory lock ``atomically``
        takes, first) and with every write of that user (their row, second: the order in
        which every transaction that takes both takes them, so none deadlocks). Vault
        transactions inside it join it. SQLite's ``BEGIN IMMEDIATE`` serialises all."""
        with self._index.connection(), self._index.atomic():
            if user_id is not None and not self._index.is_sqlite:
                fast.execute("lock_advisory", (_advisory_key(user_id),))
                fast.execute("lock_user", (user_id,))
            yield

    @contextlib.contextmanager
    def _db(self) -> Iterator[None]:
        with self._index.connection():
            yield

    def _write(self, fn: Callable[[], T]) -> T:
        """A change of lock rows alone, in its own transaction (retried like any); inside
        ``atomically`` (a LOCK's create) it is part of that one, without a savepoint."""
        if self._index.db.in_transaction():
            return fn()

        def once() -> T:
            with self._index.atomic():
                return fn()

        return self._index.run(once)

    # -- the store -------------------------------------------------------------------------
    def create(self, user_id: str, path: str, record: LockRecord, timeout: float) -> LockRecord:
        """Store a new lock on ``path`` and return its record with ``token``, ``timeout`` and
        ``expire`` filled in. Conflicts are the caller's business (inside ``transaction``)."""
        path = canonical_path(path)
        if timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        token = "opaquelocktoken:" + str(uuid.uuid4())
        record = dict(record, token=token, timeout=timeout, user_id=user_id, path=path)
        expire = time.time() + timeout
        path_mac = self._mac(user_id, path)
        rows = [{"lock": token, "ancestor_mac": self._mac(user_id, a)} for a in _ancestors(path)]

        def insert() -> None:
            live = Lock.select().where(Lock.path_mac == path_mac, Lock.expire >= time.time())
            if live.count() >= self.max_locks:  # inside the caller's transaction: no race
                raise LockLimit(f"too many locks on this resource (at most {self.max_locks})")
            Lock.create(
                token=token,
                path_mac=path_mac,
                data_ct=self._seal(token, path_mac, record),
                expire=expire,
            )
            if rows:
                LockScope.insert_many(rows).execute()

        self._write(insert)
        record["expire"] = expire
        return record

    def reinstate(self, user_id: str, path: str, record: LockRecord, expire: float) -> bool:
        """Put a lock back, token and all, at ``path`` (its node came back from the trash,
        maybe elsewhere): ``record`` as ``find`` returned it. Its ``root`` is dropped (the
        DAV layer derives it from the path). False if the token exists or it has expired."""
        if expire <= time.time():
            return False
        path = canonical_path(path)
        token = str(record["token"])
        kept = {k: v for k, v in record.items() if k not in ("expire", "root")}
        kept.update(path=path, user_id=user_id, root=None)
        path_mac = self._mac(user_id, path)
        rows = [{"lock": token, "ancestor_mac": self._mac(user_id, a)} for a in _ancestors(path)]

        def insert() -> bool:
            if Lock.get_or_none(Lock.token == token) is not None:
                return False
            Lock.create(
                token=token,
                path_mac=path_mac,
                data_ct=self._seal(token, path_mac, kept),
                expire=expire,
            )
            if rows:
                LockScope.insert_many(rows).execute()
            return True

        return self._write(insert)

    def get(self, token: str) -> LockRecord | None:
        """The live lock with this token, or None (expired locks are purged)."""
        with self._db():
            row = Lock.get_or_none(Lock.token == token)
            if row is None:
                return None
            if row.expire < time.time():
                self._delete_rows([token])
                return None
            return self._open(row)

    def refresh(self, token: str, timeout: float) -> LockRecord | None:
        """Give a live lock a new timeout; None if there is no such lock."""
        if timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT

        def update() -> LockRecord | None:
            row = Lock.get_or_none(Lock.token == token)
            if row is None or row.expire < time.time():
                return None
            record = self._open(row)
            record.pop("expire", None)
            record["timeout"] = timeout
            expire = time.time() + timeout
            path_mac = bytes(row.path_mac)
            Lock.update(data_ct=self._seal(token, path_mac, record), expire=expire).where(
                Lock.token == token
            ).execute()
            record["expire"] = expire
            return record

        return self._write(update)

    def delete(self, token: str) -> bool:
        return self._write(lambda: self._delete_rows([token]) > 0)

    def _delete_rows(self, tokens: list[str]) -> int:
        LockScope.delete().where(LockScope.lock.in_(tokens)).execute()
        n: int = Lock.delete().where(Lock.token.in_(tokens)).execute()
        return n

    def find(
        self, user_id: str, path: str, include_root: bool = True, include_children: bool = False
    ) -> list[LockRecord]:
        """Live locks rooted at ``path`` (``include_root``) and/or strictly below it."""
        path = canonical_path(path)
        mac = self._mac(user_id, path)
        now = time.time()
        out: list[LockRecord] = []
        with self._db():
            # Hand-written SQL: WsgiDAV asks this several times per request.
            if include_root:
                out += [self._open(r) for r in fast.locks_at(mac, now)]
            if include_children:
                out += [self._open(r) for r in fast.locks_below(mac, now)]
        # A record is only valid for the (user, path) its MAC names.
        for rec in out:
            if rec.get("user_id") != user_id:
                log.error("integrity failure: lock record of another namespace")
                raise IntegrityError("lock record does not belong to this user")
        return out

    def iter_live(self, user_id: str | None = None, batch: int = 500) -> Iterator[LockInfo]:
        """Every live lock (of ``user_id`` only, if given), in token order, read in batches:
        memory stays bounded however many locks there are."""
        after = ""
        while True:
            with self._db():
                rows = list(
                    Lock.select()
                    .where(Lock.token > after, Lock.expire >= time.time())
                    .order_by(Lock.token)
                    .limit(batch)
                )
            for row in rows:
                rec = self._open(row)
                if user_id is not None and rec.get("user_id") != user_id:
                    continue
                yield LockInfo(
                    token=str(row.token),
                    user_id=str(rec.get("user_id", "")),
                    scope=str(rec.get("scope", "")),
                    depth=str(rec.get("depth", "")),
                    expire=float(row.expire),
                )
            if len(rows) < batch:
                return
            after = str(rows[-1].token)

    def break_lock(self, token: str) -> str | None:
        """Remove a lock whatever its owner (an administrator's ``locks break``); returns the
        user id it belonged to, or None if there is no such lock. Audited."""

        def drop() -> str | None:
            row = Lock.get_or_none(Lock.token == token)
            if row is None:
                return None
            owner = str(self._open(row).get("user_id", ""))
            self._delete_rows([token])
            return owner

        with self._db():
            user_id = self._write(drop)
        if user_id is None:
            return None
        audit.emit("lock_broken", user_id=user_id, token=token)
        return user_id

    def purge_expired(self) -> int:
        """Delete every expired lock; return how many."""

        def purge() -> int:
            expired = Lock.select(Lock.token).where(Lock.expire < time.time())
            tokens = sorted(r.token for r in expired)
            return self._delete_rows(tokens) if tokens else 0

        return self._write(purge)

    def delete_user_locks(self, user_id: str, path: str = "/") -> int:
        """Delete the locks on ``path`` and below it (e.g. after a DELETE or MOVE)."""
        path = canonical_path(path)
        mac = self._mac(user_id, path)

        def delete() -> int:
            tokens = [r.token for r in Lock.select(Lock.token).where(Lock.path_mac == mac)]
            below = Lock.select(Lock.token).join(LockScope).where(LockScope.ancestor_mac == mac)
            tokens += [r.token for r in below]
            return self._delete_rows(sorted(set(tokens))) if tokens else 0

        return self._write(delete)
