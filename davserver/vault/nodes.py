"""Node rows and the keys that open them: path resolution, entries, node creation.

``_SessionCore`` is the base that every operation of ``Session`` (``davserver.vault.tree``)
builds on: the user's master key and the node-key cache, walking a path to a row, opening and
sealing a node's name and metadata, the quota in force, inserting a node. It offers no public
operation itself and must not import the modules that build on it.

A session is *full* (it holds the master key MK; its root is the user's root directory) or
*scoped* (``Vault.open_scoped``: it holds only the key DK_S of one directory S, which is its
root ``/``). A scoped session has ``_mk = None``: every use of MK goes through
``_master_key``, which raises ``Forbidden`` there, so nothing above S can be opened — not by a
check but because no key of it is derivable from DK_S (DESIGN §13). ``perms`` (``rw``, ``ro``,
``wo``; ``davserver.vault.perms``) limits what either kind may do.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from davserver import crypto
from davserver.crypto import envelopes, names
from davserver.errors import (
    BadRequest,
    Conflict,
    DavServerError,
    Forbidden,
    IntegrityError,
    NotFound,
    ScopeGone,
)
from davserver.index import fast
from davserver.index.models import User, database_proxy
from davserver.vault import perms as _perms

if TYPE_CHECKING:
    from davserver.vault.engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

DIR, FILE = "dir", "file"
_META_PURPOSE, _META_LABEL = b"wdv-meta-enc-v1", b"wdv/meta/v1"
# A version's checksums, sealed under its node's key: written by ``writes``, re-sealed by COPY
# (``subtrees``), opened by ``props``.
_VMETA_PURPOSE, _VMETA_LABEL = b"wdv-vmeta-v1", b"wdv/vmeta/v1"
MAX_NAME_BYTES = 1024
# The stand-in name of a listed member whose sealed name failed authentication.
DAMAGED_PREFIX = ".damaged-"
MAX_DEPTH = 4096  # deepest tree walked up from a node

# The parentless top of a node's chain of parents (scoped sessions: is S still in the tree?).
_TOP_OF = (
    'WITH RECURSIVE up(id, parent_id, n) AS (SELECT id, parent_id, 0 FROM "node" '
    "WHERE id = {p} AND owner_id = {p} UNION ALL SELECT m.id, m.parent_id, up.n + 1 "
    'FROM "node" AS m JOIN up ON m.id = up.parent_id WHERE up.n < {depth}) '
    "SELECT id FROM up WHERE parent_id IS NULL"
)


@dataclass(frozen=True)
class Entry:
    """What the layers above see of a node: no keys, names in clear (in memory only)."""

    id: str
    parent_id: str | None
    name: str
    kind: str
    size: int
    mtime: float
    ctime: float
    version_id: str | None
    # A member of a listing whose name or metadata failed authentication (logged): ``name``
    # is then a placeholder made of the node id, and nothing else about it is to be trusted.
    damaged: bool = False
    #: Nextcloud's FILEID (``oc:fileid``): random, unique, stable across moves and trash.
    fileid: int = 0
    #: A directory's ``dir_tree`` counters: changes below it, bytes of the files below it.
    changes: int = 0
    tree_bytes: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def etag(self) -> str:
        """A file's changes with content (a new version id), not with MOVE (same node, same
        version). A directory's is its id and its change counter, which every change below
        it raises (DESIGN §7): a sync client descends only where it changed. Unquoted."""
        if self.kind == DIR:
            return f"{self.id}-{self.changes}"
        return self.version_id or self.id

    @property
    def bytes_below(self) -> int:
        """``oc:size``: a file's size, or the bytes of all files below a directory."""
        return self.tree_bytes if self.kind == DIR else self.size


# A node row: a peewee ``Node`` or a ``fast.NodeRow`` tuple (same attribute names).
NodeLike = Any


@dataclass
class _Ref:
    row: NodeLike
    key: bytes
    parent_key: bytes | None  # None for the root
    name: str
    #: The ids of the node's ancestors, parent first, up to its parentless top, when the walk
    #: that made this ref saw them in the current transaction; None when not known.
    up: tuple[str, ...] | None = None


def _b(id_hex: str | None) -> bytes:
    return bytes.fromhex(id_hex) if id_hex else b""


def split_path(path: str) -> list[str]:
    """Split a tree path into NFC names; refuse ``.``/``..`` and control characters."""
    out = []
    for part in path.split("/"):
        if part == "":
            continue
        if part in (".", ".."):
            raise BadRequest("'.' and '..' are not allowed in paths")
        if "\x00" in part or len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadRequest("invalid name")
        out.append(names.normalize_name(part))
    return out


class _SessionCore:
    """Keys, rows and paths of one logged-in user: what every ``Session`` operation uses."""

    KEY_CACHE_SIZE = 50_000

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
        """``mk`` None and ``scope_key`` given: a scoped session rooted at ``root_id`` (the
        directory S, whose key ``scope_key`` is); ``mk`` None without ``scope_key``: a
        keyless session (``Vault._keyless``: ids and sizes only)."""
        if mk is not None and scope_key is not None:
            raise ValueError("a session holds a master key or a scope key, not both")
        self.vault = vault
        self.user_id = user_id
        self.user_name = user_name
        self._mk = mk
        self.root_id = root_id
        #: What this session may do (``davserver.vault.perms``): ``rw``, ``ro`` or ``wo``.
        self.perms = _perms.checked(perms)
        #: The device token this session was opened with (None: a password login).
        self.token_id = token_id
        #: Scoped sessions: the id of S (= ``root_id``) and its key, kept apart from the
        #: bounded cache so that no eviction can ever lose it (nothing could open it again).
        self.scope_id: str | None = root_id if scope_key is not None else None
        self._scope_key = scope_key
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        # (parent id, name MAC) -> child id, as last seen: hints that let ``_walk_hinted``
        # ask for a whole path in one query (always checked against what it returns).
        self._hints: dict[tuple[str, bytes], str] = {}

    # -- keys and rows -----------------------------------------------------------------------
    @property
    def scoped(self) -> bool:
        """Whether this session is rooted at one directory and holds no master key."""
        return self.scope_id is not None

    @property
    def lock_namespace(self) -> str:
        """The namespace of this session's WebDAV locks (``LockStore`` ``user_id``): the
        user id for a full session. A scoped session cannot know where S lies in the tree
        (the names above S are sealed under keys it does not have), so its lock paths are
        relative to S and live in a namespace of their own, S's id: a full session and a
        scoped one do not see each other's locks (DESIGN §13)."""
        return self.scope_id or self.user_id

    def _master_key(self) -> bytes:
        """MK, for the few keys wrapped directly under it (root, trash, uploads, identity).
        Every use of MK goes through here, so a session without one fails loudly."""
        if self._mk is None:
            raise Forbidden("this session holds no master key (a scoped or keyless session)")
        return self._mk

    def _remember(self, node_id: str, key: bytes) -> None:
        self._keys[node_id] = key
        if len(self._keys) > self.KEY_CACHE_SIZE:
            try:
                self._keys.popitem(last=False)
            except KeyError:  # pragma: no cover - concurrent eviction
                pass

    def _node_key(self, row: NodeLike, parent_key: bytes | None) -> bytes:
        if self._scope_key is not None and row.id == self.root_id:
            return self._scope_key
        cached = self._keys.get(row.id)
        if cached is not None:
            return cached
        try:
            if row.parent_id is None:
                if row.id == self.root_id:
                    key = envelopes.unwrap_root_key(
                        bytes(row.key_env), self._master_key(), _b(self.user_id), _b(row.id)
                    )
                elif row.id == self._trash_id():
                    key = envelopes.unwrap_trash_key(
                        bytes(row.key_env), self._master_key(), _b(self.user_id), _b(row.id)
                    )
                else:
                    raise IntegrityError("node has no parent")
            else:
                assert parent_key is not None
                key = envelopes.unwrap_node_key(
                    bytes(row.key_env), parent_key, _b(row.id), _b(row.parent_id), row.kind
                )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: key envelope of node %s", row.id)
            raise IntegrityError("key envelope failed authentication") from exc
        self._remember(row.id, key)
        return key

    def _trash_id(self) -> str | None:
        """The id of the user's trash directory, once it exists (read each time: the
        transaction that creates it may yet be undone)."""
        value = fast.execute("user_trash", (self.user_id,)).fetchone()
        return None if value is None or value[0] is None else str(value[0])

    def _root(self) -> _Ref:
        row = fast.node_by_id(self.root_id, self.user_id)
        if row is None:
            if self.scoped:
                raise ScopeGone("the directory this session is scoped to was deleted")
            raise IntegrityError("root directory is missing")
        if self.scoped:
            self._check_scope_alive()
            # The ancestors above S are not this session's to name: writes below S update
            # the dir_tree rows up to the user's root by the recursive walk.
            return _Ref(row, self._node_key(row, None), None, "", None)
        return _Ref(row, self._node_key(row, None), None, "", ())

    def _check_scope_alive(self) -> None:
        """Scoped sessions: S must still be in the tree, below the user's root (one
        query). A DELETE of S (or of a directory above it) moves it into the trash, where a
        scoped session must not go on writing."""
        db = database_proxy.obj
        sql = _TOP_OF.replace("{depth}", str(MAX_DEPTH)).replace("{p}", db.param)
        top = db.execute_sql(sql, (self.root_id, self.user_id)).fetchone()
        user_root = User.select(User.root_id).where(User.id == self.user_id).scalar()
        if top is None or user_root is None or str(top[0]) != str(user_root):
            raise ScopeGone("the directory this session is scoped to was deleted")

    def _upload_key(self) -> bytes:
        """UK, the key of chunked uploads (``vault.uploads``): ``subkey(MK,
        "wdv-upload-v1")`` for a full session; ``subkey(DK_S, "wdv-upload-v1", S)`` for a
        scoped one. Independent keys, so the upload-id MACs of the two never name each
        other's rows (a clash in ``(owner, handle_mac)`` is a 2^-256 event, and would be an
        ``AlreadyExists``, never a shared upload)."""
        if self._scope_key is not None:
            return crypto.subkey(self._scope_key, b"wdv-upload-v1", _b(self.root_id))
        return crypto.subkey(self._master_key(), b"wdv-upload-v1")

    def _may(self, op: str, kind: str | None = None, exists: bool = False) -> None:
        """``perms.check`` for this session (``Forbidden`` when not allowed)."""
        _perms.check(self.perms, op, kind=kind, exists=exists)

    def _root_to_descend(self) -> _Ref:
        """The root as the start of a walk below it: descending needs only its id and key,
        which never change, so once the key is cached no query is made (one per request on
        every path below the root, ~4% of a small PUT). Not for reading the root's own row:
        its other fields here are placeholders."""
        key = self._keys.get(self.root_id)
        if key is None or self.scoped:
            return self._root()
        stub = fast.NodeRow(self.root_id, None, DIR, b"", b"", b"", None, None, 0, 0.0)
        return _Ref(stub, key, None, "", ())

    def _child(self, parent: _Ref, name: str) -> _Ref | None:
        mac = names.name_mac(parent.key, name)
        row = fast.child_by_mac(parent.row.id, mac, self.user_id)
        if row is None:
            return None
        return self._verified_child(parent, name, mac, row)

    def _verified_child(self, parent: _Ref, name: str, mac: bytes, row: NodeLike) -> _Ref:
        # The MAC is a lookup index, not bound to its row: a database writer could swap the
        # MACs of two siblings. The sealed name is bound to the node, so check it matches.
        try:
            stored = names.decrypt_name(
                parent.key, bytes(row.name_ct), _b(row.id), _b(row.parent_id)
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: name of node %s", row.id)
            raise IntegrityError("name failed authentication") from exc
        if stored != name:
            log.error("integrity failure: name MAC of node %s does not match its name", row.id)
            raise IntegrityError("name index does not match the sealed name")
        up = None if parent.up is None else (parent.row.id, *parent.up)
        ref = _Ref(row, self._node_key(row, parent.key), parent.key, name, up)
        if len(self._hints) >= self.KEY_CACHE_SIZE:
            self._hints.clear()
        self._hints[(parent.row.id, mac)] = row.id
        return ref

    def _walk(self, parts: list[str], base: _Ref | None = None) -> _Ref:
        """The node at ``parts`` below the root (or below ``base``, e.g. the trash)."""
        if base is not None:
            ref = base
        else:
            ref = self._root_to_descend() if parts else self._root()
        if len(parts) > 1:
            trail, parts, missing = self._walk_hinted(ref, parts)
            if missing:
                raise NotFound("not found")
            ref = trail[-1]
        for part in parts:
            if ref.row.kind != DIR:
                raise NotFound("not found")
            nxt = self._child(ref, part)
            if nxt is None:
                raise NotFound("not found")
            ref = nxt
        return ref

    def _walk_hinted(self, ref: _Ref, parts: list[str]) -> tuple[list[_Ref], list[str], bool]:
        """Resolve several components of a path with one query, when earlier walks left the
        ids (and the session the keys) of the directories on the way: every MAC is then
        known up front. The rows come from one statement, each checked as ``_child`` checks
        it; where a row is not the remembered node (something moved or was replaced), what
        is left of the path is for a walk step by step.

        Returns (the refs resolved, starting with ``ref``; the parts left; whether the
        next part is known to be missing under the last ref)."""
        plan: list[tuple[str, bytes]] = []
        parent_id, key = ref.row.id, ref.key
        for i, part in enumerate(parts):
            mac = names.name_mac(key, part)
            plan.append((parent_id, mac))
            if i == len(parts) - 1:
                break
            child_id = self._hints.get((parent_id, mac))
            child_key = self._keys.get(child_id) if child_id is not None else None
            if child_id is None or child_key is None:
                break
            parent_id, key = child_id, child_key
        if len(plan) < 2:
            return [ref], parts, False
        rows = fast.children_by_macs(plan, self.user_id)
        trail = [ref]
        for i, (planned_parent, mac) in enumerate(plan):
            if ref.row.kind != DIR:
                return trail, parts[i:], True
            row = rows.get((ref.row.id, mac))
            if row is None:
                # Missing for sure only if its parent is the one the MAC was made under.
                return trail, parts[i:], ref.row.id == planned_parent
            ref = self._verified_child(ref, parts[i], mac, row)
            trail.append(ref)
        return trail, parts[len(plan) :], False

    def _parent_and_child(self, parts: list[str]) -> tuple[_Ref, _Ref | None]:
        """(the parent directory, the node at ``parts`` or None): ``Conflict`` if the parent
        is missing or not a directory. One query when the hints cover the path."""
        if not parts:
            raise Forbidden("the root cannot be replaced")
        if len(parts) > 1:
            trail, rest, missing = self._walk_hinted(self._root_to_descend(), parts)
            done = len(trail) - 1
            if not rest:
                return trail[-2], trail[-1]
            if missing and done == len(parts) - 1:
                if trail[-1].row.kind != DIR:
                    raise Conflict("parent is not a directory")
                return trail[-1], None
            if missing:
                raise Conflict("parent directory does not exist")
        parent = self._parent_dir(parts)
        return parent, self._child(parent, parts[-1])

    def _parent_dir(self, parts: list[str]) -> _Ref:
        if not parts:
            raise Forbidden("the root cannot be replaced")
        try:
            parent = self._walk(parts[:-1])
        except NotFound as exc:
            raise Conflict("parent directory does not exist") from exc
        if parent.row.kind != DIR:
            raise Conflict("parent is not a directory")
        return parent

    def _dir(self, path: str) -> _Ref:
        ref = self._walk(split_path(path))
        if ref.row.kind != DIR:
            raise Conflict("not a directory")
        return ref

    @staticmethod
    def _propagation(
        dir_id: str, up: tuple[str, ...] | None, delta: int = 0
    ) -> tuple[str, tuple[object, ...]]:
        """The statement (for ``fast.batch``) that counts a change below ``dir_id`` in it and
        every ancestor, its byte totals moved by ``delta``: an UPDATE of the ancestors
        named when the walk saw them (``up``), else the recursive walk."""
        if up is None:
            return ("propagate", (dir_id, delta))
        return fast.propagate_known((dir_id, *up), delta)

    def _propagation_of(self, ref: _Ref, delta: int = 0) -> tuple[str, tuple[object, ...]]:
        """``_propagation`` for a change below the directory ``ref``."""
        return self._propagation(ref.row.id, ref.up, delta)

    def _meta(self, row: Any, parent_key: bytes | None) -> dict[str, Any]:
        if row.meta_ct is None or parent_key is None:
            return {}
        try:
            raw = crypto.open_sealed(
                parent_key,
                _META_PURPOSE,
                _META_LABEL,
                (_b(row.id), _b(row.parent_id)),
                bytes(row.meta_ct),
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: metadata of node %s", row.id)
            raise IntegrityError("metadata failed authentication") from exc
        value: dict[str, Any] = json.loads(raw.decode())
        return value

    @staticmethod
    def _seal_meta(parent_key: bytes, node_id: str, parent_id: str, meta: dict[str, Any]) -> bytes:
        raw = json.dumps(meta, separators=(",", ":")).encode()
        return crypto.seal(
            parent_key, _META_PURPOSE, _META_LABEL, (_b(node_id), _b(parent_id)), raw
        )

    def _entry(self, row: Any, parent_key: bytes | None, name: str | None = None) -> Entry:
        if name is None:
            name = "" if parent_key is None else self._entry_name(row, parent_key)
        meta = self._meta(row, parent_key)
        return Entry(
            id=row.id,
            parent_id=row.parent_id,
            name=name,
            kind=row.kind,
            size=row.size if row.kind == FILE else 0,
            mtime=float(meta.get("m", row.created)),
            ctime=float(meta.get("c", row.created)),
            version_id=row.current_version,
            fileid=int(row.fileid or 0),
            changes=int(getattr(row, "changes", 0) or 0),
            tree_bytes=int(getattr(row, "tree_bytes", 0) or 0),
        )

    def _member_entry(self, row: NodeLike, parent_key: bytes) -> Entry:
        """``_entry`` for a member of a listing: a member whose name or metadata fails
        authentication (logged as an integrity failure) becomes a ``damaged`` entry, so one
        damaged row does not take its whole directory's listing down."""
        try:
            return self._entry(row, parent_key)
        except IntegrityError:
            return Entry(
                id=row.id,
                parent_id=row.parent_id,
                name=DAMAGED_PREFIX + row.id,
                kind=row.kind,
                size=0,
                mtime=float(row.created),
                ctime=float(row.created),
                version_id=row.current_version,
                damaged=True,
                fileid=int(row.fileid or 0),
            )

    def _entry_name(self, row: NodeLike, parent_key: bytes) -> str:
        try:
            return names.decrypt_name(parent_key, bytes(row.name_ct), _b(row.id), _b(row.parent_id))
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: name of node %s", row.id)
            raise IntegrityError("name failed authentication") from exc

    def _db(self) -> Any:
        return self.vault.index.connection()

    def _txn(self) -> Any:
        """A write transaction on this user's data, in the canonical lock order (the user's
        row first, ``Index.write``). Run it through ``_retried`` so that a transaction that
        lost a deadlock or a race runs again."""
        return self.vault.index.write(self.user_id)

    def _retried(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a transaction, and nothing that cannot be repeated: no body is
        consumed, no blob written) with retries of deadlocks and races (``Index.run``)."""
        return self.vault.index.run(fn)

    def _collect(self) -> None:
        """Collect garbage after a committed change. The change stands whatever happens
        here: a failure is logged and left to the maintenance loop, never answered.

        Blobs that a reader in this process has open (a GET of a version this change just
        retired) are pinned (``Vault.pin_blob``) and left for a later run. Readers in other
        processes are not seen; their GET looks the file up again if its version is gone."""
        try:
            self.vault.collect_garbage(grace=0)
        except DavServerError as exc:
            log.warning("garbage collection after a change failed (%s); retried later", exc)

    def _quota(self, user: User) -> int | None:
        return self._quota_value(user.quota_bytes)

    def _quota_value(self, own: int | None) -> int | None:
        """The quota in force: the user's own, else the server default; None = unlimited."""
        q = own if own is not None else self.vault.settings.default_quota
        return q or None

    # -- creating nodes ----------------------------------------------------------------------
    def _insert_node(
        self,
        parent: _Ref,
        name: str,
        kind: str,
        key: bytes,
        mtime: float,
        ctime: float,
        batch: list[tuple[str, tuple[object, ...]]] | None = None,
        propagate: bool = True,
    ) -> fast.NodeRow:
        """Insert a node (a directory with its ``dir_tree`` row) and count the change in
        its ancestors (``propagate``; false: the caller does, with the size it writes);
        with ``batch``, the statements are appended to it for the caller's ``fast.batch``
        instead of run."""
        node_id = crypto.random_id().hex()
        row = fast.NodeRow(
            id=node_id,
            parent_id=parent.row.id,
            kind=kind,
            name_mac=names.name_mac(parent.key, name),
            name_ct=names.encrypt_name(parent.key, name, _b(node_id), _b(parent.row.id)),
            key_env=envelopes.wrap_node_key(key, parent.key, _b(node_id), _b(parent.row.id), kind),
            meta_ct=self._seal_meta(parent.key, node_id, parent.row.id, {"m": mtime, "c": ctime}),
            current_version=None,
            size=0,
            created=ctime,
            fileid=fast.new_fileid(),
        )
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "node_insert",
                (
                    row.id,
                    self.user_id,
                    row.parent_id,
                    row.kind,
                    row.name_mac,
                    row.name_ct,
                    row.key_env,
                    row.meta_ct,
                    None,
                    0,
                    ctime,
                    row.fileid,
                ),
            ),
        ]
        if kind == DIR:
            statements.append(("dir_tree_insert", (node_id,)))
        if propagate:
            statements.append(self._propagation_of(parent))
        if batch is None:
            fast.batch(statements)
        else:
            batch += statements
        self._remember(node_id, key)
        return row
