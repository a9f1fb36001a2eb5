"""Pending trash items: what a scoped session deletes, until the owner's next full session.

A scoped session (DESIGN §13) holds the key of one directory S and never MK, so it cannot
open the trash directory (whose key is wrapped under MK) to re-wrap a deleted node under it.
It can still delete, and what it deletes is kept like any deletion, without the device ever
reading the trash:

- the node's row moves under the trash directory at once (out of S's listing; the trash
  counts it and expiry, purge and quota pressure treat it like any trash item: they need no
  key); its ``key_env`` becomes a sealed box of its key to the owner's identity public key
  (checked against its pepper-keyed MAC first: a swapped key is an ``IntegrityError`` and
  nothing is sealed), its name MAC is random (unique, meaningless) and its name and metadata
  go into its ``trash_item``'s origin record, a second sealed box, marked ``pending``;
- the owner's next full session (at a password login, and before every trash operation)
  *folds* each pending item: opens both boxes with the identity secret key, checks the tag
  only a holder of DK_S could have made (``crypto.identity``; DK_S comes from the owner's own
  key tree), and re-wraps key, name and metadata under the trash key with the ordinary
  ``wdv/node/v1`` and ``wdv/origin/v1`` formats. From then on it is an ordinary trash item.

The trash directory must exist for this: ``Session.scope_key`` (a full session, which mints
every scope) creates it, so a scoped session always finds one; it refuses to delete if the
database says otherwise. Usage does not change (no version row is touched). Locks on what a
scoped session deletes are in its own namespace (``lock_namespace``) and are dropped with it.
An item that cannot be folded (a box that does not open, a tag that does not match, S purged
meanwhile so DK_S is gone) is logged and stays pending; it is invisible in listings and goes
with expiry or an empty trash like any other.
"""

from __future__ import annotations

import json
import logging
import os

from davserver import crypto
from davserver.crypto import envelopes, identity, names
from davserver.errors import DavServerError, Forbidden, IntegrityError
from davserver.index import fast
from davserver.index.models import TrashItem
from davserver.vault import identity as ids
from davserver.vault.history import _HistoryOps, trash_name
from davserver.vault.nodes import NodeLike, _b, _Ref

log = logging.getLogger(__name__)


class _PendingOps(_HistoryOps):
    """Deleting from a scoped session, and folding what it deleted (``Session`` inherits)."""

    def _trash_node(self, ref: _Ref, path: str | None = None) -> None:
        if self._mk is None:
            self._trash_pending(ref, path)
        else:
            super()._trash_node(ref, path)

    def _trash_pending(self, ref: _Ref, path: str | None) -> None:
        """Within a transaction: move a node of S's subtree into the trash as a pending
        item, sealed to the owner's identity key."""
        if self._scope_key is None:
            raise Forbidden("this session holds no key to delete with")
        trash_id = self._trash_id()
        if trash_id is None:
            raise Forbidden("the owner's trash does not exist yet: log in with the password once")
        pk = ids.verified_pk(self.vault, self.user_id)
        assert ref.row.parent_id is not None and ref.parent_key is not None
        meta = json.dumps(self._meta(ref.row, ref.parent_key), separators=(",", ":")).encode()
        deleted = self.vault.clock()
        key_box, origin_box = identity.seal_pending(
            pk,
            self._scope_key,
            _b(self.user_id),
            identity.PendingKey(_b(ref.row.id), ref.row.kind, ref.key),
            identity.PendingOrigin(
                _b(ref.row.id),
                _b(self.root_id),
                _b(ref.row.parent_id),
                ref.name,
                int(deleted),
                meta,
                b"",
            ),
        )
        if path is not None:
            self._locks().delete_user_locks(self.lock_namespace, path)
        moved = self._bytes_below(ref.row)
        fast.batch(
            [
                # name_ct empty, name_mac random: the name is in the sealed origin.
                ("node_move", (trash_id, key_box, os.urandom(32), b"", None, ref.row.id)),
                self._propagation(ref.row.parent_id, ref.up[1:] if ref.up else None, -moved),
                ("propagate", (trash_id, moved)),
            ]
        )
        TrashItem.create(
            node=ref.row.id,
            owner=self.user_id,
            deleted_at=deleted,
            origin_ct=origin_box,
            locks_ct=None,
            pending=True,
        )

    def _fold_pending(self) -> int:
        """Full sessions: fold every pending item of the user into the trash (one
        transaction). Returns how many were folded."""
        if self._mk is None:
            return 0
        with self._db():
            if (
                not TrashItem.select()
                .where(
                    (TrashItem.owner == self.user_id) & (TrashItem.pending == True)  # noqa: E712
                )
                .exists()
            ):
                return 0

        def once() -> int:
            with self._db(), self._txn():
                return self._fold_pending_once()

        count = self._retried(once)
        if count:
            log.info("folded %d items deleted by scoped sessions into the trash", count)
        return count

    def _fold_pending_once(self) -> int:
        items = list(
            TrashItem.select().where(
                (TrashItem.owner == self.user_id) & (TrashItem.pending == True)  # noqa: E712
            )
        )
        if not items:
            return 0
        trash = self._trash_ref()
        try:
            sk = ids.secret_key(self.vault, self.user_id, self._master_key())
        except IntegrityError:
            # Logged by ``secret_key``: the items stay pending, the rest of the trash works.
            return 0
        if trash is None or sk is None:
            log.error("integrity failure: pending trash items without a trash or identity key")
            return 0
        folded = 0
        for item in items:
            row = fast.node_by_id(item.node_id, self.user_id)
            if row is None or row.parent_id != trash.row.id:
                log.error("integrity failure: pending trash item %s is off the trash", item.node_id)
                continue
            try:
                self._fold_one(trash, sk, row, item)
            except (crypto.AuthenticationFailed, IntegrityError, DavServerError) as exc:
                log.error("integrity failure: pending trash item %s: %s", item.node_id, exc)
                continue
            folded += 1
        return folded

    def _scope_key_of(self, scope_id: str) -> bytes:
        """DK_S from the owner's own key tree (S live or in the trash)."""
        row = fast.node_by_id(scope_id, self.user_id)
        if row is None:
            raise IntegrityError("the scope of a pending trash item is gone")
        return self._ref_of_row(row)[0].key

    def _fold_one(self, trash: _Ref, sk: bytes, row: NodeLike, item: TrashItem) -> None:
        key, origin, _ = identity.open_pending(
            sk, _b(self.user_id), _b(row.id), bytes(row.key_env), bytes(item.origin_ct)
        )
        if key.kind != row.kind:
            raise IntegrityError("a pending trash item names another kind of node")
        identity.check_pending_tag(
            self._scope_key_of(origin.scope_id.hex()), _b(self.user_id), key, origin
        )
        n = 0
        while self._child(trash, trash_name(origin.name, origin.deleted_at, n)) is not None:
            n += 1
        name = trash_name(origin.name, origin.deleted_at, n)
        meta = json.loads(origin.meta.decode()) if origin.meta else {}
        node_id, trash_id = row.id, trash.row.id
        fast.batch(
            [
                (
                    "node_move",
                    (
                        trash_id,
                        envelopes.wrap_node_key(
                            key.key, trash.key, _b(node_id), _b(trash_id), row.kind
                        ),
                        names.name_mac(trash.key, name),
                        names.encrypt_name(trash.key, name, _b(node_id), _b(trash_id)),
                        self._seal_meta(trash.key, node_id, trash_id, meta),
                        node_id,
                    ),
                ),
                ("propagate", (trash_id, 0)),
            ]
        )
        TrashItem.update(
            origin_ct=envelopes.seal_origin(
                trash.key,
                _b(node_id),
                envelopes.Origin(origin.parent_id, origin.name, origin.deleted_at),
            ),
            pending=False,
        ).where(TrashItem.node == node_id).execute()
        self._keys.pop(node_id, None)
        self._remember(node_id, key.key)
