"""One logged-in user's tree: the ``Session`` that offers every tree operation.

A ``Session`` holds the user's master key and a bounded cache of node keys (a node's key never
changes, not even when it moves, so caching by node id is always safe). Paths are
``/``-separated strings relative to the user's root; names are NFC-normalised.

Every mutation is one index transaction. Reads and directory operations are here; the rest
``Session`` inherits, one module each: keys, path resolution and node rows (``nodes``), writing
files (``writes``), MOVE, COPY and DELETE (``subtrees``), dead properties and checksums
(``props``). Names long imported from here (``Entry``, ``split_path``, ``_Counter``) still are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from davserver import crypto
from davserver.errors import AlreadyExists, Conflict, IntegrityError, NotFound, VersionGone
from davserver.index import fast
from davserver.index.models import Node, User
from davserver.vault import perms as _perms
from davserver.vault.nodes import DIR, FILE, MAX_NAME_BYTES, Entry, NodeLike, _Ref, split_path
from davserver.vault.pending import _PendingOps
from davserver.vault.props import _PropOps
from davserver.vault.reader import FileReader
from davserver.vault.writes import _Counter, _WriteOps

if TYPE_CHECKING:
    from davserver.vault.engine import Engine

__all__ = [
    "DIR",
    "FILE",
    "MAX_NAME_BYTES",
    "Entry",
    "NodeLike",
    "Session",
    "_Counter",
    "split_path",
]

log = logging.getLogger(__name__)


class Session(_PendingOps, _WriteOps, _PropOps):
    """A logged-in user. Thread-safe for concurrent requests of the same user."""

    LISTING_CACHE_ENTRIES = 100_000  # decrypted entries kept per session

    def __init__(
        self,
        vault: Engine,
        user_id: str,
        user_name: str,
        mk: bytes | None,
        root_id: str,
        *,
        perms: str = "rw",
        token_id: str | None = None,
        scope_key: bytes | None = None,
    ) -> None:
        super().__init__(
            vault,
            user_id,
            user_name,
            mk,
            root_id,
            perms=perms,
            token_id=token_id,
            scope_key=scope_key,
        )
        # dir id -> (listing version, entries): decrypted listings, in memory only.
        self._listings: OrderedDict[str, tuple[int, tuple[Entry, ...]]] = OrderedDict()
        self._listed = 0
        self._listings_lock = threading.Lock()

    def __repr__(self) -> str:
        scope = f" scope={self.scope_id}" if self.scoped else ""
        return f"<Session user_id={self.user_id}{scope} perms={self.perms}>"

    def require(self, op: str) -> None:
        """``Forbidden`` unless this session's ``perms`` allow ``op`` (``vault.perms``:
        ``READ``, ``STAT``, ``CREATE``, ``CHANGE``), for what the DAV layer does itself
        (LOCK and UNLOCK)."""
        self._may(op)

    # -- scopes --------------------------------------------------------------------------
    def scope_key(self, path: str) -> tuple[str, bytes]:
        """(node id, DK) of the directory at ``path``, for a scoped device token (DESIGN
        §13): whoever holds DK can open S and everything below it, and nothing else.
        ``NotFound`` if nothing is there, ``Conflict`` if it is a file. The root is allowed
        (a whole-account token is the better choice there: it can also use the trash).

        Needs the master key (a full ``rw`` session). It makes sure the user's trash
        directory exists, since a scoped session, which cannot create it, puts what it
        deletes there (``history``: pending trash items)."""
        self._master_key()
        self._may(_perms.CHANGE)
        parts = split_path(path)
        with self._db():
            ref = self._walk(parts)
            if ref.row.kind != DIR:
                raise Conflict("a scope must be a directory")
            scope = (str(ref.row.id), ref.key)

        def once() -> None:
            with self._db(), self._txn():
                self._trash_ref(create=True)

        self._retried(once)
        return scope

    def server_identity(self) -> tuple[str, str]:
        """(instance id, data fingerprint) of the index: ``oc:id`` and the root's
        ``oc:data-fingerprint`` (``davserver.index.instance``)."""
        return self.vault.index.identity()

    # -- reading the tree --------------------------------------------------------------------
    def stat(self, path: str) -> Entry:
        """The entry at ``path``; ``NotFound`` if there is none."""
        with self._db():
            ref = self._walk(split_path(path))
            self._may(_perms.STAT, kind=ref.row.kind)
            return self._entry(ref.row, ref.parent_key, ref.name)

    def lookup(self, path: str) -> Entry | None:
        try:
            return self.stat(path)
        except NotFound:
            return None

    def lookup_with_parent(self, path: str) -> tuple[Entry | None, Entry | None]:
        """(the parent directory's entry, the entry at ``path``) from one walk, None for what
        does not exist; the parent of ``/`` is None. A PUT or MKCOL asks for both."""
        parts = split_path(path)
        with self._db():
            if not parts:
                root = self._root()
                return None, self._entry(root.row, None, "")
            try:
                parent = self._walk(parts[:-1])
            except NotFound:
                return None, None
            self._may(_perms.STAT, kind=parent.row.kind)
            parent_entry = self._entry(parent.row, parent.parent_key, parent.name)
            if parent.row.kind != DIR:
                return parent_entry, None
            child = self._child(parent, parts[-1])
            if child is None:
                return parent_entry, None
            self._may(_perms.STAT, kind=child.row.kind)
            return parent_entry, self._entry(child.row, child.parent_key, child.name)

    def list_dir(self, path: str, *, with_damaged: bool = False) -> list[Entry]:
        """The children of a directory, names decrypted, from one query.

        A member whose name or metadata fails authentication is logged; it is an
        ``IntegrityError`` for the whole listing unless ``with_damaged``, which returns it as
        an entry with ``damaged`` set (a listing answers for the others)."""
        self._may(_perms.READ)
        out = self._list_dir(path)
        if not with_damaged and any(e.damaged for e in out):
            raise IntegrityError("a member of the directory failed authentication")
        return out

    def _list_dir(self, path: str, base: _Ref | None = None) -> list[Entry]:
        with self._db():
            ref = self._walk(split_path(path), base)
            if ref.row.kind != DIR:
                raise Conflict("not a directory")
            # Revalidate a cached listing with one lookup of the directory's change counter
            # (raised in every transaction that changes anything below it, by any process).
            version = fast.dir_changes(ref.row.id)
            cached = self._listings.get(ref.row.id)
            if cached is not None and cached[0] == version:
                with self._listings_lock:
                    if ref.row.id in self._listings:
                        self._listings.move_to_end(ref.row.id)
                return list(cached[1])
            # Plain tuples from hand-written SQL: building a model object per child costs
            # more than decrypting its name.
            children = fast.children(ref.row.id, self.user_id)
            out = [self._member_entry(r, ref.key) for r in children]
        out.sort(key=lambda e: e.name)
        self._cache_listing(ref.row.id, version, out)
        return out

    def _cache_listing(self, dir_id: str, version: int, entries: list[Entry]) -> None:
        with self._listings_lock:
            old = self._listings.pop(dir_id, None)
            if old is not None:
                self._listed -= len(old[1])
            self._listings[dir_id] = (version, tuple(entries))
            self._listed += len(entries)
            while self._listed > self.LISTING_CACHE_ENTRIES and self._listings:
                _, (_, dropped) = self._listings.popitem(last=False)
                self._listed -= len(dropped)

    def usage(self) -> tuple[int, int | None]:
        """(bytes used, quota in bytes or None when unlimited)."""
        with self._db():
            user = User.get_by_id(self.user_id)
            return user.usage_bytes, self._quota(user)

    def open_file(
        self, path: str, version_id: str | None = None, base: _Ref | None = None
    ) -> FileReader:
        """A seekable reader of the current version of the file at ``path``, or of the
        version ``version_id`` of it: a GET serves the version whose size and ETag it
        announced (``VersionGone`` when that version has meanwhile been replaced and
        removed). The reader pins its blob against this process's garbage collection
        until it is closed. ``base``: a directory other than the root the path starts
        from (the trash)."""
        self._may(_perms.READ)
        with self._db():
            for _attempt in range(3):
                ref = self._walk(split_path(path), base)
                if ref.row.kind != FILE:
                    raise Conflict("not a file")
                v = fast.version(version_id or ref.row.current_version or "", ref.row.id)
                if v is not None:
                    break
                if version_id is not None:
                    raise VersionGone()
                # The node row and the version are two reads: a write that committed in
                # between replaced (and removed) the version the node row named.
            else:
                raise IntegrityError("file has no current version")
            return self._reader(ref, v)

    # -- directories -------------------------------------------------------------------------
    def mkdir(self, path: str, mtime: float | None = None) -> Entry:
        """Create a directory; ``AlreadyExists`` if the name is taken, ``Conflict`` if the
        parent is missing."""
        self._may(_perms.CREATE)
        parts = split_path(path)
        now = time.time()

        def once() -> Entry:
            with self._db(), self._txn():
                parent = self._parent_dir(parts)
                name = parts[-1]
                if self._child(parent, name) is not None:
                    raise AlreadyExists("already exists")
                row = self._insert_node(parent, name, DIR, crypto.random_key(), mtime or now, now)
                return self._entry(row, parent.key, name)

        return self._retried(once)

    def _touch(self, ref: _Ref, mtime: float | None = None) -> None:
        """Set a node's modification time.

        Directories keep the time they were created with (or were given): updating the parent
        on every member change would cost a row write per PUT and make MOVE touch more than
        the one row it re-wraps."""
        if ref.parent_key is None or ref.row.parent_id is None:
            return  # the root's time is not tracked
        meta = self._meta(ref.row, ref.parent_key)
        meta["m"] = mtime if mtime is not None else time.time()
        Node.update(
            meta_ct=self._seal_meta(ref.parent_key, ref.row.id, ref.row.parent_id, meta)
        ).where(Node.id == ref.row.id).execute()
        fast.propagate(ref.row.parent_id)

    def set_mtime(self, path: str, mtime: float) -> None:
        self._may(_perms.CHANGE)
        parts = split_path(path)

        def once() -> None:
            with self._db(), self._txn():
                self._touch(self._walk(parts), mtime)

        self._retried(once)

    def set_props(self, path: str, changes: dict[str, str | None]) -> None:
        """``_PropOps.set_props`` (one transaction), run again when it lost a race."""
        self._may(_perms.CHANGE)
        self._retried(lambda: super(Session, self).set_props(path, changes))

    def walk(self, path: str) -> Iterator[tuple[str, Entry]]:
        """Yield (path, entry) for ``path`` and everything below it, parents first."""
        top = self.stat(path)
        base = "/" + "/".join(split_path(path))
        yield base, top
        if not top.is_dir:
            return
        stack = [base]
        while stack:
            d = stack.pop()
            for e in self.list_dir(d):
                p = d.rstrip("/") + "/" + e.name
                yield p, e
                if e.is_dir:
                    stack.append(p)

    def exists(self, path: str) -> bool:
        return self.lookup(path) is not None
