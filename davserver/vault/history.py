"""Versions and trash: nothing a user deletes or overwrites is gone at once (DESIGN §12).

Versions. An overwrite keeps the version it replaces (``writes``); ``retention`` thins them on
every write and in the maintenance loop (``Vault.expire_history``). Restoring a version adds a
new current version that shares the old one's blob: its content key is re-wrapped for the new
version number and nothing of the content is copied. A blob is deleted only once no version
references it (the collector asks), which is the reference count.

Trash. Each user has a trash directory, a second parentless directory whose key is wrapped
under the master key (``wdv/trash/v1``). A DELETE moves the node into it: one row re-wrapped
(key, name, metadata), whatever lies below, plus a ``trash_item`` row with a sealed origin
record (original parent, name, deletion time; ``wdv/origin/v1``). Items are named like
Nextcloud's (``NAME.d<deletion time>``). Restore moves the row back; purge is the real delete.
Dead properties, versions and checksums belong to the node and so come back with it.

Usage. ``user.usage_bytes`` counts every version row of the user's nodes, in the tree and in
the trash: a trash move changes nothing, a kept version keeps counting. A write that would
exceed the quota first purges trash items, oldest first, then old versions, oldest first
(never a file's two newest, never a labelled one), as far as the retention settings allow.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from davserver import crypto
from davserver.crypto import envelopes
from davserver.errors import (
    BadRequest,
    Forbidden,
    InsufficientStorage,
    IntegrityError,
    NotFound,
)
from davserver.index import fast
from davserver.index.models import Node, TrashItem, User, Version, database_proxy
from davserver.vault import perms as _perms
from davserver.vault.nodes import (
    _VMETA_LABEL,
    _VMETA_PURPOSE,
    DIR,
    FILE,
    Entry,
    NodeLike,
    _b,
    _Ref,
    split_path,
)
from davserver.vault.reader import FileReader, InlineBlob
from davserver.vault.subtrees import _SubtreeOps

log = logging.getLogger(__name__)

_LABEL_PURPOSE, _LABEL_LABEL = b"wdv-vlabel-v1", b"wdv/vlabel/v1"
_LOCKS_PURPOSE, _LOCKS_LABEL = b"wdv-tlocks-v1", b"wdv/trashlocks/v1"
MAX_LABEL_BYTES = 1024
MAX_HOPS = 4096  # deepest tree walked up from a node

# All the nodes of one user's trash, with their version bytes (one statement: usage, room).
_TRASH_BYTES = (
    'WITH RECURSIVE t(id) AS (SELECT id FROM "node" WHERE parent_id = {p} '
    'UNION ALL SELECT n.id FROM "node" AS n JOIN t ON n.parent_id = t.id) '
    'SELECT COALESCE(SUM(v.plain_size), 0) FROM "version" AS v JOIN t ON v.node_id = t.id'
)
# Old versions that quota pressure may remove: not current, not labelled, not among the two
# newest of their file; oldest first.
_EVICTABLE = (
    'SELECT v.id, v.blob_id, v.plain_size, v.created FROM "version" AS v '
    'JOIN "node" AS n ON n.id = v.node_id '
    "WHERE n.owner_id = {p} AND v.id <> n.current_version AND v.labelled = {p} "
    'AND (SELECT COUNT(*) FROM "version" AS w WHERE w.node_id = v.node_id '
    "AND w.version_no > v.version_no) >= 2 ORDER BY v.created"
)


def _sql(template: str) -> str:
    return template.replace("{p}", database_proxy.obj.param)


class _Stamp(NamedTuple):
    """A version row as retention sees it (rows of ``fast`` ``history_of``)."""

    id: str
    blob_id: str
    version_no: int
    created: float
    labelled: bool
    plain_size: int


@dataclass(frozen=True)
class VersionInfo:
    version_no: int
    id: str
    size: int
    created: float
    mtime: float
    label: str | None
    current: bool

    @property
    def etag(self) -> str:
        return self.id


@dataclass(frozen=True)
class TrashEntry:
    """One item of the trash: ``name`` is its name in the trash (``NAME.d<time>``)."""

    name: str
    original_name: str
    original_location: str  # relative to the user's root, no leading slash
    deleted_at: float
    entry: Entry


# Imported under this name by the layers above (the API note calls it so).
TrashItemInfo = TrashEntry


def trash_name(name: str, deleted_at: int, n: int = 0) -> str:
    """Nextcloud's name for a trashed node: ``NAME.d<seconds>`` (``.N`` added on a clash)."""
    return f"{name}.d{deleted_at}" + (f".{n}" if n else "")


def restored_name(name: str, n: int) -> str:
    """A free name at the root for a restored item whose place is gone or taken."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    tag = " (restored)" if n == 1 else f" (restored {n})"
    return f"{stem}{tag}" + (f".{ext}" if ext else "")


class _HistoryOps(_SubtreeOps):
    """Versions and trash (``Session`` inherits these)."""

    # -- nodes by id -------------------------------------------------------------------------
    def _chain(self, row: NodeLike) -> list[NodeLike]:
        """``row`` and its ancestors up to a parentless node (root or trash); in a scoped
        session up to S, its root (``NotFound`` for a node outside S: nothing above S
        could be opened anyway)."""
        chain = [row]
        while chain[-1].parent_id is not None:
            if self.scoped and chain[-1].id == self.root_id:
                self._check_scope_alive()
                return chain
            if len(chain) > MAX_HOPS:
                raise IntegrityError("the tree is deeper than any walk allows (a cycle?)")
            parent = fast.node_by_id(chain[-1].parent_id, self.user_id)
            if parent is None:
                raise IntegrityError("a parent directory is missing")
            chain.append(parent)
        if self.scoped and chain[-1].id != self.root_id:
            raise NotFound("not found")
        return chain

    def _ref_of_row(self, row: NodeLike) -> tuple[_Ref, list[_Ref]]:
        """The ref of any node of this user, live or trashed, and the refs of the way down
        to it from its parentless top (top first)."""
        chain = self._chain(row)
        top = chain[-1]
        key = self._node_key(top, None)
        ref = _Ref(top, key, None, "", ())
        trail = [ref]
        for r in reversed(chain[:-1]):
            name = self._entry_name(r, ref.key)
            assert ref.up is not None
            ref = _Ref(r, self._node_key(r, ref.key), ref.key, name, (ref.row.id, *ref.up))
            trail.append(ref)
        return ref, trail

    def _ref_by_fileid(self, fileid: int) -> _Ref:
        row = Node.get_or_none((Node.fileid == int(fileid)) & (Node.owner == self.user_id))
        if row is None or row.parent_id is None:
            raise NotFound("no such file id")
        return self._ref_of_row(row)[0]

    def node_by_fileid(self, fileid: int) -> Entry:
        self._may(_perms.READ)
        with self._db():
            ref = self._ref_by_fileid(fileid)
            return self._entry(ref.row, ref.parent_key, ref.name)

    def path_of(self, fileid: int) -> str | None:
        """``/a/b.txt`` for a node of the tree, None for one in the trash."""
        self._may(_perms.READ)
        with self._db():
            ref = self._ref_by_fileid(fileid)
            _, trail = self._ref_of_row(ref.row)
            if trail[0].row.id != self.root_id:
                return None
            return "/" + "/".join(r.name for r in trail[1:])

    # -- versions ----------------------------------------------------------------------------
    def _keeps_versions(self) -> bool:
        return self.vault.settings.versions_policy.enabled

    def _expired_on_write(self, old: list[Any], now: float) -> list[Any]:
        stamps = [_Stamp(*r) for r in old]
        going = self.vault.settings.versions_policy.expired_versions(now, stamps)
        return [old[i] for i in going]

    def _version_rows(self, ref: _Ref) -> list[Version]:
        return list(
            Version.select().where(Version.node == ref.row.id).order_by(Version.version_no.desc())
        )

    def _version_meta(self, ref: _Ref, v: Version) -> dict[str, Any]:
        if v.meta_ct is None:
            return {}
        try:
            raw = crypto.open_sealed(
                ref.key,
                _VMETA_PURPOSE,
                _VMETA_LABEL,
                (_b(ref.row.id), v.version_no, _b(v.blob_id)),
                bytes(v.meta_ct),
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: metadata of a version of node %s", ref.row.id)
            raise IntegrityError("version metadata failed authentication") from exc
        value: dict[str, Any] = json.loads(raw.decode())
        return value

    def _version_label(self, ref: _Ref, v: Version) -> str | None:
        if not v.labelled or v.label_ct is None:
            return None
        try:
            return crypto.open_sealed(
                ref.key,
                _LABEL_PURPOSE,
                _LABEL_LABEL,
                (_b(ref.row.id), v.version_no, _b(v.blob_id)),
                bytes(v.label_ct),
            ).decode("utf-8")
        except (crypto.AuthenticationFailed, UnicodeDecodeError) as exc:
            log.error("integrity failure: label of a version of node %s", ref.row.id)
            raise IntegrityError("version label failed authentication") from exc

    def versions(self, fileid: int) -> tuple[Entry, list[VersionInfo]]:
        """A file's entry and every version kept of it, newest first, the current one
        included."""
        self._may(_perms.READ)
        with self._db():
            ref = self._file_by_fileid(fileid)
            out = []
            for v in self._version_rows(ref):
                meta = self._version_meta(ref, v)
                out.append(
                    VersionInfo(
                        version_no=int(v.version_no),
                        id=v.id,
                        size=int(v.plain_size),
                        created=float(v.created),
                        mtime=float(meta.get("m", v.created)),
                        label=self._version_label(ref, v),
                        current=v.id == ref.row.current_version,
                    )
                )
            return self._entry(ref.row, ref.parent_key, ref.name), out

    def _file_by_fileid(self, fileid: int) -> _Ref:
        ref = self._ref_by_fileid(fileid)
        if ref.row.kind != FILE:
            raise NotFound("not a file")
        return ref

    def _version_row(self, ref: _Ref, version_no: int) -> Version:
        v = Version.get_or_none((Version.node == ref.row.id) & (Version.version_no == version_no))
        if v is None:
            raise NotFound("no such version")
        return v

    def open_version(self, fileid: int, version_no: int) -> FileReader:
        self._may(_perms.READ)
        with self._db():
            ref = self._file_by_fileid(fileid)
            v = fast.version(self._version_row(ref, version_no).id, ref.row.id)
            if v is None:
                raise NotFound("no such version")
            return self._reader(ref, v)

    def _reader(self, ref: _Ref, v: Any) -> FileReader:
        """A reader of version row ``v`` (``fast.version``) of the file ``ref``, its blob
        pinned against this process's collector until it closes."""
        try:
            ck = envelopes.unwrap_content_key(
                v.ck_env,
                ref.key,
                _b(ref.row.id),
                v.version_no,
                _b(v.blob_id),
                v.plain_size,
                v.header24,
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: content key of node %s", ref.row.id)
            raise IntegrityError("content key failed authentication") from exc
        source = self.vault.blobs if v.inline is None else InlineBlob(v.blob_id, v.inline)
        unpin = self.vault.pin_blob(v.blob_id)
        try:
            return FileReader(source, v.blob_id, ck, v.header24, v.plain_size, v.id, on_close=unpin)
        except BaseException:
            unpin()
            raise

    def _rewrapped_version(
        self,
        src: _Ref,
        v: Version,
        dst: _Ref,
        version_no: int,
        created: float,
        vmeta: dict[str, Any],
    ) -> tuple[str, tuple[str, tuple[object, ...]]]:
        """A new version row of ``dst`` numbered ``version_no`` that shares the blob of
        ``src``'s version ``v``: its content key opened and wrapped again for the new row
        (the AD holds node id and number), its checksums re-sealed. Returns (the new
        version id, the insert for ``fast.batch``); no byte of content is touched."""
        header24 = bytes(v.header24)
        try:
            ck = envelopes.unwrap_content_key(
                bytes(v.ck_env),
                src.key,
                _b(src.row.id),
                v.version_no,
                _b(v.blob_id),
                v.plain_size,
                header24,
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: content key of node %s", src.row.id)
            raise IntegrityError("content key failed authentication") from exc
        node_id, size, new_id = dst.row.id, int(v.plain_size), crypto.random_id().hex()
        return new_id, (
            "version_insert",
            (
                new_id,
                node_id,
                version_no,
                v.blob_id,
                size,
                header24,
                envelopes.wrap_content_key(
                    ck, dst.key, _b(node_id), version_no, _b(v.blob_id), size, header24
                ),
                crypto.seal(
                    dst.key,
                    _VMETA_PURPOSE,
                    _VMETA_LABEL,
                    (_b(node_id), version_no, _b(v.blob_id)),
                    json.dumps(vmeta).encode(),
                ),
                created,
                v.digest,  # the same object: its keyless digest carries over
            ),
        )

    def restore_version(self, fileid: int, version_no: int) -> Entry:
        """Make a kept version current again: a new version row sharing its blob, with its
        content key re-wrapped for the new number. The version that was current is kept."""
        self._may(_perms.CHANGE)

        def once() -> Entry:
            with self._db(), self._txn() as locked:
                ref = self._file_by_fileid(fileid)
                v = self._version_row(ref, version_no)
                if v.id == ref.row.current_version:
                    return self._entry(ref.row, ref.parent_key, ref.name)
                vmeta = self._version_meta(ref, v)
                old = fast.execute("history_of", (ref.row.id,)).fetchall()
                new_no = max(int(r[2]) for r in old) + 1
                stamp = self.vault.clock()
                going = [r for r in self._expired_on_write(old, stamp) if r[0] != v.id]
                size = int(v.plain_size)
                growth = size - sum(int(r[5]) for r in going)
                usage, own = locked or fast.user_quota(self.user_id)
                quota = self._quota_value(own)
                if quota is not None and usage + growth > quota:
                    skip = {str(r[0]) for r in going} | {v.id}
                    if (
                        usage + growth - self._make_room(usage + growth - quota, stamp, skip)
                        > quota
                    ):
                        raise InsufficientStorage("quota exceeded")
                batch: list[tuple[str, tuple[object, ...]]] = []
                for r in going:
                    batch += [("version_delete", (r[0],)), ("gc_dead", (r[1], time.time()))]
                node_id = ref.row.id
                vmeta["m"] = time.time()
                new_id, insert = self._rewrapped_version(ref, v, ref, new_no, stamp, vmeta)
                batch.append(insert)
                assert ref.parent_key is not None
                meta = self._meta(ref.row, ref.parent_key)
                meta["m"] = vmeta["m"]
                meta_ct = self._seal_meta(ref.parent_key, node_id, ref.row.parent_id, meta)
                batch.append(("node_set_version_meta", (new_id, size, meta_ct, node_id)))
                batch.append(("propagate", (ref.row.parent_id, size - int(ref.row.size or 0))))
                if growth:
                    batch.append(("usage_add", (growth, self.user_id)))
                fast.batch(batch)
                row = fast.node_by_id(node_id, self.user_id)
                return self._entry(row, ref.parent_key, ref.name)

        entry = self._retried(once)
        self._collect()
        return entry

    def delete_version(self, fileid: int, version_no: int) -> None:
        """Remove one kept version (``Forbidden`` for the current one)."""
        self._may(_perms.CHANGE)

        def once() -> None:
            with self._db(), self._txn():
                ref = self._file_by_fileid(fileid)
                v = self._version_row(ref, version_no)
                if v.id == ref.row.current_version:
                    raise Forbidden("the current version cannot be deleted")
                fast.batch(
                    [
                        ("version_delete", (v.id,)),
                        ("gc_dead", (v.blob_id, time.time())),
                        ("usage_add", (-int(v.plain_size), self.user_id)),
                    ]
                )

        self._retried(once)
        self._collect()

    def set_version_label(self, fileid: int, version_no: int, label: str | None) -> None:
        """Label a version (labelled versions are never thinned); "" or None removes it."""
        self._may(_perms.CHANGE)
        if label is not None and len(label.encode("utf-8")) > MAX_LABEL_BYTES:
            raise BadRequest("a version label is at most 1024 bytes")

        def once() -> None:
            with self._db(), self._txn():
                ref = self._file_by_fileid(fileid)
                v = self._version_row(ref, version_no)
                if not label:
                    Version.update(labelled=False, label_ct=None).where(
                        Version.id == v.id
                    ).execute()
                    return
                sealed = crypto.seal(
                    ref.key,
                    _LABEL_PURPOSE,
                    _LABEL_LABEL,
                    (_b(ref.row.id), v.version_no, _b(v.blob_id)),
                    label.encode("utf-8"),
                )
                Version.update(labelled=True, label_ct=sealed).where(Version.id == v.id).execute()

        self._retried(once)

    # -- MOVE and COPY onto an existing file ------------------------------------------------
    def _remove_replaced(self, ref: _Ref) -> None:
        if self.vault.settings.trash_policy.enabled:
            self._trash_node(ref)  # an overwritten tree can be had back from the trash
        else:
            super()._remove_replaced(ref)

    def _merge_onto(self, src: _Ref, dst: _Ref, move: bool) -> bool:
        """A file MOVEd or COPYed onto a file, with versions kept: the destination keeps its
        identity (file id, history) and gets the source's content as its new current
        version, as a PUT would give it, the blob shared and its content key re-wrapped.
        A MOVE carries the source's older versions over too, and removes the source; the
        destination takes the source's dead properties (RFC 4918: they move with it)."""
        if src.row.kind != FILE or dst.row.kind != FILE or not self._keeps_versions():
            return False
        carried = self._version_rows(src)[::-1]  # oldest first
        if not move:
            carried = [v for v in carried if v.id == src.row.current_version]
        if not carried:
            return False
        old = fast.execute("history_of", (dst.row.id,)).fetchall()
        next_no = max((int(r[2]) for r in old), default=0) + 1
        stamp = self.vault.clock()
        going = self._expired_on_write(old, stamp)
        added = sum(int(v.plain_size) for v in carried) - sum(int(r[5]) for r in going)
        if not move:  # a MOVE's versions were counted already, under the source
            usage, own = fast.user_quota(self.user_id)
            quota = self._quota_value(own)
            if quota is not None and usage + added > quota:
                need = usage + added - quota
                if self._make_room(need, stamp, {str(r[0]) for r in going}) < need:
                    raise InsufficientStorage("quota exceeded")
        batch: list[tuple[str, tuple[object, ...]]] = []
        for r in going:
            batch += [("version_delete", (r[0],)), ("gc_dead", (r[1], time.time()))]
        node_id = dst.row.id
        current = ""
        size = 0
        for v in carried:
            created = float(v.created) if move else stamp
            current, insert = self._rewrapped_version(
                src, v, dst, next_no, created, self._version_meta(src, v)
            )
            batch.append(insert)
            size = int(v.plain_size)
            next_no += 1
        assert dst.parent_key is not None and src.parent_key is not None
        meta = self._meta(dst.row, dst.parent_key)
        meta["m"] = self._meta(src.row, src.parent_key).get("m", time.time())
        meta_ct = self._seal_meta(dst.parent_key, node_id, dst.row.parent_id, meta)
        batch.append(("node_set_version_meta", (current, size, meta_ct, node_id)))
        batch.append(("propagate", (dst.row.parent_id, size - int(dst.row.size or 0))))
        if added:  # for a MOVE, removing the source below takes its versions off again
            batch.append(("usage_add", (added, self.user_id)))
        fast.batch(batch)
        self._store_props(dst, self._props(src))
        if move:
            # The source's rows go; its blobs are the destination's now (the collector
            # keeps a queued blob that a version still references).
            self._delete_file(src.row)
        return True

    # -- room under the quota ----------------------------------------------------------------
    def _evictable_bytes(self) -> int:
        db = database_proxy.obj
        total = 0
        trash_id = self._trash_id()
        if trash_id is not None and self.vault.settings.trash_policy.enabled:
            total += int(db.execute_sql(_sql(_TRASH_BYTES), (trash_id,)).fetchone()[0] or 0)
        if self._keeps_versions():
            for r in db.execute_sql(_sql(_EVICTABLE), (self.user_id, False)).fetchall():
                total += int(r[2])
        return total

    def _make_room(self, need: int, now: float, skip: set[str]) -> int:
        freed = 0
        tp = self.vault.settings.trash_policy
        trash_id = self._trash_id()
        if trash_id is not None:
            items = TrashItem.select().where(TrashItem.owner == self.user_id)
            for item in items.order_by(TrashItem.deleted_at):
                if freed >= need:
                    return freed
                if not tp.is_expired(float(item.deleted_at), now, quota_exceeded=True):
                    continue
                row = fast.node_by_id(item.node_id, self.user_id)
                if row is not None:
                    TrashItem.delete().where(TrashItem.node == row.id).execute()
                    freed += self._delete_subtree(row)
        vp = self.vault.settings.versions_policy
        db = database_proxy.obj
        batch: list[tuple[str, tuple[object, ...]]] = []
        from_versions = 0
        for vid, blob_id, size, created in db.execute_sql(
            _sql(_EVICTABLE), (self.user_id, False)
        ).fetchall():
            if freed + from_versions >= need:
                break
            if vid in skip or not vp.is_expired(float(created), now, quota_exceeded=True):
                continue
            batch += [("version_delete", (vid,)), ("gc_dead", (blob_id, time.time()))]
            from_versions += int(size)
        if batch:
            batch.append(("usage_add", (-from_versions, self.user_id)))
            fast.batch(batch)
        freed += from_versions
        if freed:
            log.info("made room under the quota: %d bytes of trash and old versions", freed)
        return freed

    # -- the trash ---------------------------------------------------------------------------
    def _may_trash(self, op: str) -> None:
        """The trash is the whole account's: a session without MK (scoped) cannot open it
        (its key is wrapped under MK), whatever its permissions say."""
        if self._mk is None:
            raise Forbidden("a scoped session cannot use the trash")
        self._may(op)
        self._fold_pending()

    def _fold_pending(self) -> int:
        """Fold the items scoped sessions deleted into the trash (``vault.pending``)."""
        return 0

    def _trash_ref(self, create: bool = False) -> _Ref | None:
        """The trash directory (created in the caller's transaction with ``create``)."""
        trash_id = self._trash_id()
        if trash_id is None:
            if not create:
                return None
            trash_id = crypto.random_id().hex()
            dk = crypto.random_key()
            now = time.time()
            Node.create(
                id=trash_id,
                owner=self.user_id,
                parent=None,
                kind=DIR,
                name_mac=b"",
                name_ct=b"",
                key_env=envelopes.wrap_trash_key(
                    dk, self._master_key(), _b(self.user_id), _b(trash_id)
                ),
                created=now,
                fileid=fast.new_fileid(),
            )
            fast.execute("dir_tree_insert", (trash_id,))
            User.update(trash_id=trash_id).where(User.id == self.user_id).execute()
            self._remember(trash_id, dk)
        row = fast.node_by_id(trash_id, self.user_id)
        if row is None:
            raise IntegrityError("the trash directory is missing")
        return _Ref(row, self._node_key(row, None), None, "", ())

    def delete(self, path: str, permanently: bool = False) -> None:
        """Move a file or a whole tree into the trash (one row re-wrapped); with
        ``permanently``, or with ``trash.retention: disabled``, delete it for real."""
        self._may(_perms.CHANGE)
        if permanently or not self.vault.settings.trash_policy.enabled:
            super().delete(path)
            return
        parts = split_path(path)
        if not parts:
            raise Forbidden("the root cannot be deleted")

        def once() -> None:
            with self._db(), self._txn():
                self._trash_node(self._walk(parts), "/" + "/".join(parts))

        self.vault.freeing_space(lambda: self._retried(once))

    def _locks(self) -> Any:
        from davserver.vault.locks import LockStore  # builds on the tree: imported late

        return LockStore(self.vault)

    def _stash_locks(self, trash: _Ref, node_id: str, path: str) -> bytes | None:
        """Seal the locks on ``path`` and below it for the trash item, and remove them."""
        store = self._locks()
        records = store.find(self.user_id, path, include_root=True, include_children=True)
        if not records:
            return None
        base = path.rstrip("/")
        kept = [
            dict(r, path=str(r["path"])[len(base) :]) for r in records if r.get("path") is not None
        ]
        store.delete_user_locks(self.user_id, path)
        return crypto.seal(
            trash.key,
            _LOCKS_PURPOSE,
            _LOCKS_LABEL,
            (_b(node_id),),
            json.dumps(kept, separators=(",", ":")).encode(),
        )

    def _stashed_locks(self, trash: _Ref, node_id: str, sealed: bytes) -> list[dict[str, Any]]:
        """The lock records sealed with a trash item (``IntegrityError`` if they fail)."""
        try:
            raw = crypto.open_sealed(
                trash.key, _LOCKS_PURPOSE, _LOCKS_LABEL, (_b(node_id),), sealed
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: locks of trashed node %s", node_id)
            raise IntegrityError("the locks of a trash item failed authentication") from exc
        records: list[dict[str, Any]] = json.loads(raw)
        return records

    def _unstash_locks(self, trash: _Ref, node_id: str, sealed: bytes | None, path: str) -> int:
        """Put the locks of a restored item back below its new ``path``."""
        if sealed is None:
            return 0
        store = self._locks()
        count = 0
        for rec in self._stashed_locks(trash, node_id, sealed):
            where = path.rstrip("/") + str(rec["path"])
            if store.reinstate(self.user_id, where or "/", rec, float(rec["expire"])):
                count += 1
        return count

    def _trash_node(self, ref: _Ref, path: str | None = None) -> None:
        """Within a transaction: move a node of the tree into the trash (with the locks on
        ``path``, its place, and below it, when given)."""
        trash = self._trash_ref(create=True)
        assert trash is not None
        deleted = self.vault.clock()
        seconds = int(deleted)
        n = 0
        while self._child(trash, trash_name(ref.name, seconds, n)) is not None:
            n += 1
        name = trash_name(ref.name, seconds, n)
        assert ref.row.parent_id is not None and ref.parent_key is not None
        origin = envelopes.Origin(_b(ref.row.parent_id), ref.name, seconds)
        locks = None if path is None else self._stash_locks(trash, ref.row.id, path)
        self._rehome(ref, trash, name)
        TrashItem.create(
            node=ref.row.id,
            owner=self.user_id,
            deleted_at=deleted,
            origin_ct=envelopes.seal_origin(trash.key, _b(ref.row.id), origin),
            locks_ct=locks,
        )

    def _rehome(self, ref: _Ref, parent: _Ref, name: str) -> None:
        """Re-wrap one node's row under another directory (key, name, metadata)."""
        fast.batch([self._move_statement(ref, parent, name), *self._propagate_move(ref, parent)])

    def _origin(self, trash: _Ref, node_id: str) -> envelopes.Origin:
        item = TrashItem.get_or_none(TrashItem.node == node_id)
        if item is None:
            raise IntegrityError("a trashed node has no origin record")
        try:
            return envelopes.open_origin(trash.key, _b(node_id), bytes(item.origin_ct))
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: origin record of node %s", node_id)
            raise IntegrityError("origin record failed authentication") from exc

    def _original_path(self, node_id: str, trash: _Ref, memo: dict[str, str | None]) -> str | None:
        """Where a node is or was in the tree ("a/b", "" for the root), also for nodes
        inside trashed folders; None when that cannot be known any more."""
        if node_id in memo:
            return memo[node_id]
        memo[node_id] = None  # a cycle of origins ends here
        out: str | None = None
        if node_id == self.root_id:
            out = ""
        else:
            row = fast.node_by_id(node_id, self.user_id)
            if row is not None and row.parent_id is not None:
                _, trail = self._ref_of_row(row)
                if trail[0].row.id == self.root_id:
                    out = "/".join(r.name for r in trail[1:])
                elif trail[0].row.id == trash.row.id and len(trail) > 1:
                    top = trail[1]
                    origin = self._origin(trash, top.row.id)
                    above = self._original_path(origin.parent_id.hex(), trash, memo)
                    if above is not None:
                        out = "/".join(
                            p for p in [above, origin.name, *(r.name for r in trail[2:])] if p
                        )
        memo[node_id] = out
        return out

    def trash_items(self) -> list[TrashEntry]:
        """Every item in the trash, newest first."""
        self._may_trash(_perms.READ)
        with self._db():
            trash = self._trash_ref()
            if trash is None:
                return []
            memo: dict[str, str | None] = {}
            out = []
            items: dict[str, float] = {}
            pending: set[str] = set()  # left pending by ``_fold_pending`` (logged there)
            for t in TrashItem.select().where(TrashItem.owner == self.user_id):
                if t.pending:
                    pending.add(t.node_id)
                else:
                    items[t.node_id] = float(t.deleted_at)
            for row in fast.children(trash.row.id, self.user_id):
                if row.id in pending:
                    continue
                entry = self._member_entry(row, trash.key)
                if entry.damaged or row.id not in items:
                    log.error("integrity failure: trash member %s", row.id)
                    continue
                origin = self._origin(trash, row.id)
                above = self._original_path(origin.parent_id.hex(), trash, memo)
                location = origin.name if not above else f"{above}/{origin.name}"
                out.append(TrashEntry(entry.name, origin.name, location, items[row.id], entry))
        out.sort(key=lambda t: (-t.deleted_at, t.name))
        return out

    def trash_stat(self, path: str) -> Entry:
        self._may_trash(_perms.READ)
        with self._db():
            trash = self._trash_ref()
            parts = split_path(path)
            if trash is None:
                if parts:
                    raise NotFound("not found")
                now = time.time()
                return Entry("", None, "", DIR, 0, now, now, None)
            ref = self._walk(parts, trash)
            return self._entry(ref.row, ref.parent_key, ref.name)

    def trash_list_dir(self, path: str) -> list[Entry]:
        self._may_trash(_perms.READ)
        with self._db():
            trash = self._trash_ref()
            if trash is None:
                if split_path(path):
                    raise NotFound("not found")
                return []
            out: list[Entry] = self._list_dir(path, trash)  # type: ignore[attr-defined]
        if any(e.damaged for e in out):
            raise IntegrityError("a member of the directory failed authentication")
        return out

    def trash_open(self, path: str) -> FileReader:
        self._may_trash(_perms.READ)
        with self._db():
            trash = self._trash_ref()
            if trash is None:
                raise NotFound("not found")
            reader: FileReader = self.open_file(path, base=trash)  # type: ignore[attr-defined]
            return reader

    def _trash_top(self, trash: _Ref | None, name: str) -> _Ref:
        if trash is None:
            raise NotFound("no such item in the trash")
        parts = split_path(name)
        if len(parts) != 1:
            raise NotFound("no such item in the trash")
        ref = self._child(trash, parts[0])
        if ref is None:
            raise NotFound("no such item in the trash")
        return ref

    def _live_dir(self, node_id: str) -> _Ref | None:
        """The directory ``node_id`` if it is in the tree (not in the trash), else None."""
        if node_id == self.root_id:
            return self._root()
        row = fast.node_by_id(node_id, self.user_id)
        if row is None or row.kind != DIR or row.parent_id is None:
            return None
        ref, trail = self._ref_of_row(row)
        return ref if trail[0].row.id == self.root_id else None

    def trash_restore(self, name: str) -> str:
        """Put a trashed item back where it was; at the root under a free name if that
        place is gone or taken. Returns the path it now has."""
        self._may_trash(_perms.CHANGE)

        def once() -> str:
            with self._db(), self._txn():
                trash = self._trash_ref()
                ref = self._trash_top(trash, name)
                assert trash is not None
                origin = self._origin(trash, ref.row.id)
                parent = self._live_dir(origin.parent_id.hex())
                target = origin.name
                if parent is None or self._child(parent, target) is not None:
                    parent = self._root()
                    n = 1
                    while self._child(parent, target) is not None:
                        target = restored_name(origin.name, n)
                        n += 1
                item = TrashItem.get_by_id(ref.row.id)
                locks = None if item.locks_ct is None else bytes(item.locks_ct)
                TrashItem.delete().where(TrashItem.node == ref.row.id).execute()
                self._rehome(ref, parent, target)
                if parent.row.id == self.root_id:
                    where = "/" + target
                else:
                    _, trail = self._ref_of_row(parent.row)
                    where = "/" + "/".join([*(r.name for r in trail[1:]), target])
                self._unstash_locks(trash, ref.row.id, locks, where)
                return where

        return self._retried(once)

    def trash_purge(self, name: str) -> None:
        """Delete a trashed item for real (its blobs go to the collector)."""
        self._may_trash(_perms.CHANGE)

        def once() -> None:
            with self._db(), self._txn():
                ref = self._trash_top(self._trash_ref(), name)
                TrashItem.delete().where(TrashItem.node == ref.row.id).execute()
                self._delete_subtree(ref.row)

        self.vault.freeing_space(lambda: self._retried(once))
        self._collect()

    def trash_empty(self) -> int:
        """Purge every item of the trash; returns how many."""
        self._may_trash(_perms.CHANGE)

        def once() -> int:
            with self._db(), self._txn():
                trash = self._trash_ref()
                if trash is None:
                    return 0
                rows = fast.children(trash.row.id, self.user_id)
                for row in rows:
                    TrashItem.delete().where(TrashItem.node == row.id).execute()
                    self._delete_subtree(row)
                return len(rows)

        count = self.vault.freeing_space(lambda: self._retried(once))
        self._collect()
        return count

    def _purge_rows(self, node_id: str) -> int:
        """Keyless: purge the trash item ``node_id`` (expiry, admin). Returns bytes freed."""
        row = fast.node_by_id(node_id, self.user_id)
        TrashItem.delete().where(TrashItem.node == node_id).execute()
        return 0 if row is None else self._delete_subtree(row)
