"""``davserver fsck --deep``: authenticate everything of one user, with their password.

Logs in through ``Vault.login`` and walks the user's tree by node ids (a directory at a time,
a stack of directory keys), then the user's trash the same way from its own key (wrapped
under the master key as ``wdv/trash/v1``), using the session's and the reader's own code:
every key envelope is unwrapped, every name, metadata record, property set and checksum
record opened, every name MAC compared with the sealed name, every version label and every
trash item's origin record and sealed locks opened, and every segment of every version (old
ones and those in the trash too) read and authenticated (``FileReader``). No cryptography is
written here.
Problems go by node, version and blob id into the keyless run's report
(``davserver.admin.fsck``); a node whose key fails is not descended.
"""

from __future__ import annotations

import hmac

import peewee as pw

from davserver import crypto
from davserver.admin import ProgressFactory, Ticker
from davserver.admin.fsck import FsckReport, Problem, _bytes, _q
from davserver.crypto import envelopes, names
from davserver.errors import BlobNotFound, DavServerError, IntegrityError, StorageError
from davserver.index import fast
from davserver.index.models import DeadProps, Version
from davserver.vault import Vault
from davserver.vault.nodes import _Ref
from davserver.vault.reader import FileReader, InlineBlob
from davserver.vault.tree import Session


class DeepCheck:
    """One user's tree, authenticated end to end."""

    def __init__(self, vault: Vault, report: FsckReport, progress: ProgressFactory) -> None:
        self.vault = vault
        self.report = report
        self.progress = progress

    def _add(self, kind: str, ids: dict[str, str], detail: str) -> None:
        self.report.problems.append(Problem(kind, ids, detail))

    def run(self, user_name: str, password: str) -> None:
        """Authenticate everything of one user: keys, names, metadata, properties, checksum
        records and every segment of every version. ``AuthError`` for a wrong password."""
        session = self.vault.login(user_name, password)
        uid = session.user_id
        try:
            with self.vault.index.connection():
                total = _q('SELECT COUNT(*) FROM "node" WHERE owner_id = ?', (uid,)).fetchone()[0]
                root = fast.node_by_id(session.root_id, uid)
                trash_id = _q('SELECT trash_id FROM "user" WHERE id = ?', (uid,)).fetchone()[0]
                with self.progress("deep", int(total)) as bar:
                    if root is None:
                        self._add("root_missing", {"user": uid}, "root directory is missing")
                    else:
                        self._deep_tree(session, root, bar)
                    if trash_id is not None:
                        self._deep_trash(session, trash_id, bar)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            raise StorageError("cannot read the index database") from exc

    def _deep_tree(self, session: Session, root: fast.NodeRow, bar: Ticker) -> None:
        try:
            key = session._node_key(root, None)
        except IntegrityError:
            self._add("key_envelope", {"node": root.id}, "the root's key failed authentication")
            return
        self._deep_below(session, root, key, bar)

    def _deep_trash(self, session: Session, trash_id: str, bar: Ticker) -> None:
        """The trash directory, its items' origin records, and everything below it."""
        uid = session.user_id
        row = fast.node_by_id(trash_id, uid)
        if row is None:
            return  # reported by the keyless run (trash_missing)
        try:
            key = session._node_key(row, None)
        except IntegrityError:
            self._add(
                "trash_key",
                {"user": uid, "node": trash_id},
                "the trash's key failed authentication",
            )
            return
        trash = _Ref(row, key, None, "")
        for node_id, locks in _q(
            'SELECT node_id, locks_ct FROM "trash_item" WHERE owner_id = ? ORDER BY node_id',
            (uid,),
        ).fetchall():
            self.report.count("deep origins")
            try:
                session._origin(trash, node_id)
            except IntegrityError:
                self._add("origin", {"node": node_id}, "the trash item's origin record failed")
            if locks is None:
                continue
            self.report.count("deep trashed locks")
            try:
                session._stashed_locks(trash, node_id, _bytes(locks))
            except (IntegrityError, ValueError):
                self._add("trashed_locks", {"node": node_id}, "the trash item's locks failed")
        self._deep_below(session, row, key, bar)

    def _deep_below(self, session: Session, top: fast.NodeRow, key: bytes, bar: Ticker) -> None:
        """A parentless directory (root or trash) whose key is ``key``, and its subtree."""
        self._deep_props(session, top, key, None)
        bar.advance()
        self.report.count("deep nodes")
        stack: list[tuple[str, bytes]] = [(top.id, key)]
        while stack:
            dir_id, dir_key = stack.pop()
            for row in fast.children(dir_id, session.user_id):
                bar.advance()
                self.report.count("deep nodes")
                child_key = self._deep_node(session, row, dir_key)
                if child_key is not None and row.kind == "dir":
                    stack.append((row.id, child_key))

    def _deep_node(self, session: Session, row: fast.NodeRow, parent_key: bytes) -> bytes | None:
        ids = {"node": row.id}
        try:
            key: bytes = session._node_key(row, parent_key)
        except IntegrityError:
            self._add("key_envelope", ids, "the node's key failed authentication (not descended)")
            return None
        try:
            name = session._entry_name(row, parent_key)
            if not hmac.compare_digest(names.name_mac(parent_key, name), row.name_mac):
                self._add("name_mac", ids, "the name index does not match the sealed name")
        except IntegrityError:
            self._add("name", ids, "the node's name failed authentication")
        try:
            session._meta(row, parent_key)
        except IntegrityError:
            self._add("metadata", ids, "the node's metadata failed authentication")
        self._deep_props(session, row, key, parent_key)
        if row.kind == "file":
            ref = _Ref(row, key, parent_key, "")
            for (vid,) in _q('SELECT id FROM "version" WHERE node_id = ?', (row.id,)).fetchall():
                self._deep_version(session, ref, vid)
        return key

    def _deep_props(
        self, session: Session, row: fast.NodeRow, key: bytes, parent_key: bytes | None
    ) -> None:
        props = DeadProps.get_or_none(DeadProps.node == row.id)
        if props is None:
            return
        try:
            session._open_props(_Ref(row, key, parent_key, ""), _bytes(props.props_ct))
        except IntegrityError:
            self._add("properties", {"node": row.id}, "the node's properties failed authentication")

    def _deep_version(self, session: Session, ref: _Ref, version_id: str) -> None:
        node_id, key = ref.row.id, ref.key
        v = fast.version(version_id, node_id)
        if v is None:
            return  # retired meanwhile
        ids = {"node": node_id, "version": v.id, "blob": v.blob_id}
        self.report.count("deep versions")
        try:
            ck = envelopes.unwrap_content_key(
                v.ck_env,
                key,
                bytes.fromhex(node_id),
                v.version_no,
                bytes.fromhex(v.blob_id),
                v.plain_size,
                v.header24,
            )
        except crypto.AuthenticationFailed:
            self._add("content_key", ids, "the version's content key failed authentication")
            return
        row = Version.get_or_none(Version.id == v.id)
        if row is None:
            return  # retired meanwhile
        if row.labelled:
            self.report.count("deep labels")
            try:
                session._version_label(ref, row)
            except IntegrityError:
                self._add("label", ids, "the version's label failed authentication")
        meta = row.meta_ct
        if meta is not None:
            try:
                session._open_hashes(key, node_id, v.version_no, v.blob_id, _bytes(meta))
            except IntegrityError:
                self._add("checksums", ids, "the version's checksum record failed authentication")
        source = self.vault.blobs if v.inline is None else InlineBlob(v.blob_id, v.inline)
        try:
            reader = FileReader(source, v.blob_id, ck, v.header24, v.plain_size, v.id)
            for _ in reader.iter_range():
                pass
        except BlobNotFound:
            self._add("blob_missing", ids, "the object is missing from the store")
        except IntegrityError as exc:
            self._add("segment", ids, f"contents failed authentication: {exc.reason}")
        except StorageError:
            raise
        except DavServerError as exc:
            self._add("segment", ids, f"contents could not be read: {exc.reason}")


__all__ = ["DeepCheck"]
