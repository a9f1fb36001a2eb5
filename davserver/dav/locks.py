"""WsgiDAV's lock manager on top of the vault's lock store (shared by all server processes).

``VaultLockStorage`` adapts ``davserver.vault.locks.LockStore`` to WsgiDAV's lock-storage
interface. Lock URLs are the resources' ref URLs, ``/<user id>/<quoted path>``: the first
segment picks the user's namespace, the rest is the path in that user's tree.

``DavLockManager`` is WsgiDAV's ``LockManager`` with two changes:

- ``acquire`` runs the conflict check and the insert in one index transaction, because
  WsgiDAV's own serialisation is an in-process lock (DESIGN §10; upstream issue 332);
- a lock *below* the target of a depth-infinity write (DELETE or MOVE of a collection) does
  not conflict when its owner submitted its token (RFC 4918 §7.4) — WsgiDAV refuses those.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from wsgidav import util
from wsgidav.dav_error import HTTP_LOCKED, DAVError, DAVErrorCondition
from wsgidav.dav_error import PRECONDITION_CODE_LockConflict as LOCK_CONFLICT
from wsgidav.lock_man.lock_manager import LockManager, normalize_lock_root

from davserver.dav.errors import vault_call
from davserver.vault.locks import LockStore

_USER_ID = re.compile(r"^[0-9a-f]{32}$")


def split_lock_url(url: str) -> tuple[str | None, str]:
    """``/<user id>/a%20b`` → (user id, ``/a b``); (None, "/") when there is no namespace."""
    parts = url.strip("/").split("/", 1)
    if not parts or not _USER_ID.match(parts[0]):
        return None, "/"
    rest = unquote(parts[1]) if len(parts) > 1 else ""
    return parts[0], "/" + rest.strip("/")


def lock_href(root: str) -> str:
    """The client-facing href of a lock root (the user-id segment removed)."""
    parts = root.strip("/").split("/", 1)
    return "/" + (parts[1] if len(parts) > 1 else "")


def _to_wsgidav(record: dict[str, Any]) -> dict[str, Any]:
    lock = {
        k: record[k] for k in ("type", "scope", "depth", "principal", "timeout", "expire", "token")
    }
    root = record.get("root")
    if root is None:
        # A lock put back by a trash restore, perhaps at another path: its root is the
        # lock URL of that path (as ``resources.ref_url`` makes it).
        path = unicodedata.normalize("NFC", str(record["path"]))
        root = normalize_lock_root(quote("/" + str(record["user_id"]) + path))
    lock["root"] = root
    lock["owner"] = str(record.get("owner", "")).encode("utf-8")
    return lock


class VaultLockStorage:
    """WsgiDAV lock storage (``get``/``create``/``refresh``/``delete``/``get_lock_list``)."""

    def __init__(self, store: LockStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return "VaultLockStorage()"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        with vault_call():
            self.store.purge_expired()

    def clear(self) -> None:  # pragma: no cover - WsgiDAV test helper
        pass

    def get(self, token: str) -> dict[str, Any] | None:
        with vault_call():
            record = self.store.get(token)
        return _to_wsgidav(record) if record else None

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        user_id, tree_path = split_lock_url(path)
        if user_id is None:
            raise DAVError(403, "cannot lock outside a user's tree")
        owner = lock.get("owner") or b""
        record = {
            "root": normalize_lock_root(path),
            "type": lock["type"],
            "scope": lock["scope"],
            "depth": lock["depth"],
            "owner": owner.decode("utf-8") if isinstance(owner, bytes) else str(owner),
            "principal": lock["principal"],
        }
        timeout = lock.get("timeout")
        with vault_call():
            created = self.store.create(
                user_id, tree_path, record, -1 if timeout is None else float(timeout)
            )
        out = _to_wsgidav(created)
        lock.update(out)
        return out

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        with vault_call():
            record = self.store.refresh(token, timeout)
        if record is None:
            raise DAVError(412, "no such lock")
        return _to_wsgidav(record)

    def delete(self, token: str) -> bool:
        with vault_call():
            return self.store.delete(token)

    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[Any]:
        user_id, tree_path = split_lock_url(path)
        if user_id is None:
            return []
        with vault_call():
            records = self.store.find(user_id, tree_path, include_root, include_children)
        locks = [_to_wsgidav(r) for r in records]
        return [lk["token"] for lk in locks] if token_only else locks


class DavLockManager(LockManager):  # type: ignore[misc]
    """WsgiDAV's lock manager with transactional acquire (see the module docstring)."""

    storage: VaultLockStorage

    def __init__(self, storage: VaultLockStorage) -> None:
        super().__init__(storage)

    def atomic(self, user_id: str | None) -> contextlib.AbstractContextManager[None]:
        """One index transaction serialised with every lock grant of ``user_id`` (in every
        server process): a tree change runs its lock checks, its changes and the removal of
        the locks of what it removed in it, so no lock is granted between check and change
        (a LOCK waits, then sees the changed tree). Nested vault transactions join it."""
        return self.storage.store.transaction(user_id)

    @contextlib.contextmanager
    def checked(
        self, user_id: str, urls: list[str], token_list: list[str], principal: str
    ) -> Iterator[None]:
        """``atomic`` with a depth-0 write check of each of ``urls`` first (423 on a
        conflict): a PUT commits in it, so a lock granted by another process while the body
        streamed in is seen."""
        with self.atomic(user_id):
            for url in urls:
                self.check_write_permission(
                    url=url, depth="0", token_list=token_list, principal=principal
                )
            yield

    def acquire(self, *, url: str, **kw: Any) -> dict[str, Any]:
        user_id, _ = split_lock_url(url)

        def acquire() -> dict[str, Any]:
            lock: dict[str, Any] = super(DavLockManager, self).acquire(url=url, **kw)
            return lock

        with vault_call():
            return self.storage.store.atomically(user_id, acquire)

    def _get_write_conflicts(
        self, url: str, depth: str, token_list: list[str], principal: str
    ) -> DAVErrorCondition:
        """Locks that forbid this write: on ``url``, on an ancestor with depth infinity, and
        (for a depth-infinity write) below ``url``. The locks rooted at one URL are satisfied
        when their owner submitted the token of any of them: an exclusive lock is alone at
        its root, and any holder of a shared lock may write (RFC 4918 §6.2)."""
        applicable: list[dict[str, Any]] = []
        u: str | None = url
        while u:
            for lock in self.get_url_lock_list(u):
                if u == url or lock["depth"] == "infinity":
                    applicable.append(lock)
            u = util.get_uri_parent(u)
        if depth == "infinity":
            applicable += self.storage.get_lock_list(
                url, include_root=False, include_children=True, token_only=False
            )
        by_root: dict[str, list[dict[str, Any]]] = {}
        for lock in applicable:
            by_root.setdefault(lock["root"], []).append(lock)
        errcond = DAVErrorCondition(LOCK_CONFLICT)
        for root, locks in by_root.items():
            if not any(lk["principal"] == principal and lk["token"] in token_list for lk in locks):
                errcond.add_href(lock_href(root))
        return errcond

    def check_write_permission(
        self, *, url: str, depth: str, token_list: list[str], principal: str
    ) -> None:
        errcond = self._get_write_conflicts(url, depth, token_list, principal)
        if errcond.hrefs:
            raise DAVError(HTTP_LOCKED, err_condition=errcond)

    def remove_locks_below(self, user_id: str, path: str) -> None:
        """Forget the locks on ``path`` and below it (the node is gone or moved away)."""
        with vault_call():
            self.storage.store.delete_user_locks(user_id, path)
