"""Operations on whole subtrees: MOVE, COPY and DELETE.

MOVE re-wraps one row whatever lies below it; COPY gives every copied node and version new
keys but shares the blobs; DELETE removes the index rows in one transaction and leaves the
blobs to the collector.
"""

from __future__ import annotations

import logging
import time

from davserver import crypto
from davserver.crypto import envelopes, names
from davserver.errors import AlreadyExists, Forbidden, InsufficientStorage, IntegrityError
from davserver.index import fast
from davserver.index.models import DeadProps, Node, User, Version
from davserver.vault import perms as _perms
from davserver.vault.nodes import (
    _VMETA_LABEL,
    _VMETA_PURPOSE,
    DIR,
    FILE,
    NodeLike,
    _b,
    _Ref,
    split_path,
)
from davserver.vault.props import _PropOps

log = logging.getLogger(__name__)

_BATCH = 500


class _SubtreeOps(_PropOps):
    """MOVE, COPY and DELETE (``Session`` inherits these; COPY copies dead properties too)."""

    def _check_not_inside(self, src: _Ref, dst_parent: _Ref) -> None:
        """Refuse to put a directory inside itself (walks up from the destination)."""
        if src.row.kind != DIR:
            return  # nothing can be inside a file
        node_id: str | None = dst_parent.row.id
        while node_id is not None:
            if node_id == src.row.id:
                raise Forbidden("cannot move or copy a directory into itself")
            node_id = Node.select(Node.parent).where(Node.id == node_id).scalar()

    def _prepare_destination(
        self, src: _Ref, dst_parts: list[str], overwrite: bool
    ) -> tuple[_Ref, str, _Ref | None]:
        """Resolve the destination's parent, refuse cycles and clashes. Returns (parent,
        name, the node being overwritten or None); the caller replaces it
        (``_merge_onto`` or ``_remove_replaced``)."""
        dst_parent, existing = self._parent_and_child(dst_parts)
        name = dst_parts[-1]
        if existing is not None and existing.row.id == src.row.id:
            raise Forbidden("source and destination are the same")
        self._check_not_inside(src, dst_parent)
        if existing is None:
            return dst_parent, name, None
        if not overwrite:
            raise AlreadyExists("destination exists")
        if existing.row.kind == DIR:
            # Overwriting an ancestor of the source would delete the source with it.
            node_id: str | None = src.row.parent_id
            while node_id is not None:
                if node_id == existing.row.id:
                    raise Forbidden("cannot overwrite an ancestor of the source")
                node_id = Node.select(Node.parent).where(Node.id == node_id).scalar()
        return dst_parent, name, existing

    def _merge_onto(self, src: _Ref, dst: _Ref, move: bool) -> bool:
        """Overwrite the file ``dst`` with ``src`` by adding versions to it (when versions
        are kept: ``history``); False when the caller is to replace it instead."""
        return False

    def _remove_replaced(self, ref: _Ref) -> None:
        """Remove a node that a MOVE or COPY overwrites (``history`` keeps it in the trash)."""
        self._delete_subtree(ref.row)

    def move(self, src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        """Move or rename a file or a whole tree by re-wrapping one row.

        Returns True if the destination existed (and was replaced). ``AlreadyExists`` if it
        exists and ``overwrite`` is false; ``Forbidden`` for the root or a move into itself.
        """
        self._may(_perms.CHANGE)
        src_parts, dst_parts = split_path(src_path), split_path(dst_path)
        if not src_parts:
            raise Forbidden("the root cannot be moved")
        existed = self._retried(lambda: self._move_once(src_parts, dst_parts, overwrite))
        if existed:
            self._collect()
        return existed

    def _move_once(self, src_parts: list[str], dst_parts: list[str], overwrite: bool) -> bool:
        with self._db(), self._txn():
            src = self._walk(src_parts)
            dst_parent, name, existing = self._prepare_destination(src, dst_parts, overwrite)
            if existing is not None:
                if self._merge_onto(src, existing, move=True):
                    return True
                self._remove_replaced(existing)
            # One round trip for the writes (fast.batch) while the user's row is held.
            batch = [self._move_statement(src, dst_parent, name)]
            batch += self._propagate_move(src, dst_parent)
            fast.batch(batch)
        return existing is not None

    def _propagate_move(self, ref: _Ref, dst: _Ref) -> list[tuple[str, tuple[object, ...]]]:
        """The ``propagate`` statements of moving ``ref`` into the directory ``dst``: both
        ancestor chains change (their counters, and their byte totals by what moved), the
        moved node's own counter does not (a moved directory keeps its ETag)."""
        row = ref.row
        if row.parent_id == dst.row.id:
            return [self._propagation_of(dst)]
        moved = self._bytes_below(row)
        old_up = None if not ref.up else ref.up[1:]
        return [
            self._propagation(row.parent_id, old_up, -moved),
            self._propagation_of(dst, moved),
        ]

    def _bytes_below(self, row: NodeLike) -> int:
        """A file's size, or the bytes below a directory (its ``dir_tree`` total)."""
        if row.kind == DIR:
            return fast.dir_bytes(row.id)
        return int(row.size or 0)

    def _move_statement(self, ref: _Ref, parent: _Ref, name: str) -> tuple[str, tuple[object, ...]]:
        """The one row a move rewrites: the node's key wrapped under its new parent, its
        name MACed and sealed under the parent's name keys, its metadata re-sealed."""
        assert ref.parent_key is not None
        meta = self._meta(ref.row, ref.parent_key)
        node_id, dst_id = ref.row.id, parent.row.id
        return (
            "node_move",
            (
                dst_id,
                envelopes.wrap_node_key(ref.key, parent.key, _b(node_id), _b(dst_id), ref.row.kind),
                names.name_mac(parent.key, name),
                names.encrypt_name(parent.key, name, _b(node_id), _b(dst_id)),
                self._seal_meta(parent.key, node_id, dst_id, meta),
                node_id,
            ),
        )

    def _delete_file(self, row: NodeLike) -> int:
        """``_delete_subtree`` of one file: one query for its versions, then one batch (one
        round trip on PostgreSQL). Its blobs are queued for the collector, which checks
        that no other version (COPY shares blobs) still uses one before deleting it."""
        now = time.time()
        batch: list[tuple[str, tuple[object, ...]]] = []
        if row.parent_id is not None:
            batch.append(("propagate", (row.parent_id, -int(row.size or 0))))
        freed = 0
        for v in fast.execute("history_of", (row.id,)).fetchall():
            batch.append(("version_delete", (v[0],)))
            batch.append(("gc_dead", (v[1], now)))
            freed += int(v[5])  # every kept version counts toward usage
        batch += [
            ("props_delete", (row.id,)),
            ("node_delete", (row.id,)),
            ("usage_add", (-freed, self.user_id)),
        ]
        fast.batch(batch)
        return freed

    def copy(
        self, src_path: str, dst_path: str, overwrite: bool = False, depth_infinity: bool = True
    ) -> bool:
        """Copy a file or tree under new keys; blobs are shared, not re-encrypted.

        Each copied version gets its own content-key envelope, bound to the new node; the
        immutable blob is referenced by both versions and collected when neither is left
        (a documented leak: the index shows that two versions share a blob). With
        ``depth_infinity`` false a directory is copied without its members (Depth: 0).
        """
        self._may(_perms.CHANGE)  # wo too: a copy reads its source
        src_parts, dst_parts = split_path(src_path), split_path(dst_path)
        existed = self._retried(
            lambda: self._copy_once(src_parts, dst_parts, overwrite, depth_infinity)
        )
        if existed:
            self._collect()
        return existed

    def _copy_once(
        self, src_parts: list[str], dst_parts: list[str], overwrite: bool, depth_infinity: bool
    ) -> bool:
        with self._db(), self._txn():
            src = self._walk(src_parts)
            dst_parent, name, existing = self._prepare_destination(src, dst_parts, overwrite)
            if existing is not None:
                if self._merge_onto(src, existing, move=False):
                    return True
                self._remove_replaced(existing)
            added = self._copy_node(src, dst_parent, name, depth_infinity)
            user = User.get_by_id(self.user_id)
            quota = self._quota(user)
            if quota is not None and user.usage_bytes + added > quota:
                raise InsufficientStorage("quota exceeded")
            User.update(usage_bytes=User.usage_bytes + added).where(
                User.id == self.user_id
            ).execute()
        return existing is not None

    def _copy_node(self, src: _Ref, dst_parent: _Ref, name: str, recurse: bool) -> int:
        meta = self._meta(src.row, src.parent_key)
        now = time.time()
        new_key = crypto.random_key()
        row = self._insert_node(dst_parent, name, src.row.kind, new_key, meta.get("m", now), now)
        new = _Ref(row, new_key, dst_parent.key, name)
        self._copy_props(src, new)
        added = 0
        if src.row.kind == FILE and src.row.current_version:
            v = Version.get_by_id(src.row.current_version)
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
                hashes = (
                    crypto.open_sealed(
                        src.key,
                        _VMETA_PURPOSE,
                        _VMETA_LABEL,
                        (_b(src.row.id), v.version_no, _b(v.blob_id)),
                        bytes(v.meta_ct),
                    )
                    if v.meta_ct is not None
                    else b"{}"
                )
            except crypto.AuthenticationFailed as exc:
                log.error("integrity failure: content key of node %s", src.row.id)
                raise IntegrityError("content key failed authentication") from exc
            vid = crypto.random_id().hex()
            Version.create(
                id=vid,
                node=row.id,
                version_no=1,
                blob_id=v.blob_id,
                plain_size=v.plain_size,
                header24=header24,
                ck_env=envelopes.wrap_content_key(
                    ck, new_key, _b(row.id), 1, _b(v.blob_id), v.plain_size, header24
                ),
                meta_ct=crypto.seal(
                    new_key, _VMETA_PURPOSE, _VMETA_LABEL, (_b(row.id), 1, _b(v.blob_id)), hashes
                ),
                created=now,
                digest=v.digest,  # the same object: its keyless digest carries over
            )
            Node.update(current_version=vid, size=v.plain_size).where(Node.id == row.id).execute()
            fast.propagate(dst_parent.row.id, int(v.plain_size))
            added += v.plain_size
        elif src.row.kind == DIR and recurse:
            for child in Node.select().where(Node.parent == src.row.id):
                child_name = self._entry(child, src.key).name
                child_ref = _Ref(child, self._node_key(child, src.key), src.key, child_name)
                added += self._copy_node(child_ref, new, child_name, True)
        return added

    def delete(self, path: str) -> None:
        """Delete a file or a whole tree: index first (one transaction), blobs collected after."""
        self._may(_perms.CHANGE)
        parts = split_path(path)
        if not parts:
            raise Forbidden("the root cannot be deleted")

        def once() -> None:
            with self._db(), self._txn():
                self._delete_subtree(self._walk(parts).row)

        # Works on a full disk too: the space reserve is released if the commit needs room.
        self.vault.freeing_space(lambda: self._retried(once))
        self._collect()

    def _delete_subtree(self, row: NodeLike) -> int:
        """Within a transaction: remove a node and all below it, deepest level first, with
        every version they keep. Returns the bytes freed (taken off the user's usage)."""
        if row.kind == FILE and row.parent_id is not None:
            return self._delete_file(row)
        if row.parent_id is not None:
            fast.propagate(row.parent_id, -self._bytes_below(row))
        levels: list[list[str]] = [[row.id]]
        while row.kind == DIR:
            below: list[str] = []
            frontier = levels[-1]
            for i in range(0, len(frontier), _BATCH):
                below += [
                    r.id
                    for r in Node.select(Node.id).where(
                        Node.parent.in_(frontier[i : i + _BATCH]), Node.kind == DIR
                    )
                ]
            files: list[str] = []
            for i in range(0, len(frontier), _BATCH):
                files += [
                    r.id
                    for r in Node.select(Node.id).where(
                        Node.parent.in_(frontier[i : i + _BATCH]), Node.kind == FILE
                    )
                ]
            if files:
                levels.append(files)
            if not below:
                break
            levels.append(below)
        freed = 0
        blob_ids: list[str] = []
        for level in reversed(levels):
            for i in range(0, len(level), _BATCH):
                ids = level[i : i + _BATCH]
                for v in Version.select(Version.blob_id, Version.plain_size).where(
                    Version.node.in_(ids)
                ):
                    blob_ids.append(v.blob_id)
                    freed += int(v.plain_size)
                Version.delete().where(Version.node.in_(ids)).execute()
                DeadProps.delete().where(DeadProps.node.in_(ids)).execute()
                Node.delete().where(Node.id.in_(ids)).execute()
        User.update(usage_bytes=User.usage_bytes - freed).where(User.id == self.user_id).execute()
        self.vault.mark_blobs_dead(blob_ids)
        return freed
