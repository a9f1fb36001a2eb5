"""One logged-in user's tree: path resolution and every tree operation.

A ``Session`` holds the user's master key and a bounded cache of node keys (a node's key never
changes, not even when it moves, so caching by node id is always safe). Paths are
``/``-separated strings relative to the user's root; names are NFC-normalised.

Every mutation is one index transaction. Writes stream: the body is encrypted segment by
segment into the blob store, and only when the byte count (and checksum, if given) checks out
does one transaction insert the version and point the node at it. On any failure the previous
version stays current and the partial blob is removed (or left queued for the collector).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peewee as pw

from davserver import crypto
from davserver.crypto import blobfmt, envelopes, names
from davserver.errors import (
    AlreadyExists,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    DavServerError,
    Forbidden,
    InsufficientStorage,
    IntegrityError,
    LengthMismatch,
    NotFound,
)
from davserver.index import fast
from davserver.index.models import BlobGC, DeadProps, Node, User, Version
from davserver.vault.reader import FileReader, InlineBlob

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.uploads import Uploads

log = logging.getLogger(__name__)

DIR, FILE = "dir", "file"
_META_PURPOSE, _META_LABEL = b"wdv-meta-enc-v1", b"wdv/meta/v1"
_VMETA_PURPOSE, _VMETA_LABEL = b"wdv-vmeta-v1", b"wdv/vmeta/v1"
_PROPS_PURPOSE, _PROPS_LABEL = b"wdv-props-v1", b"wdv/props/v1"
_BATCH = 500
# What opening a member's name and key needs (batched member queries select these).
_MEMBER_KEY_COLUMNS = (
    Node.id,
    Node.parent.alias("parent_id"),
    Node.kind,
    Node.key_env,
    Node.name_ct,
)
MAX_NAME_BYTES = 1024


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

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def etag(self) -> str:
        """Changes with content (a new version id), not with MOVE (same node, same version)."""
        return self.version_id or self.id


# A node row: a peewee ``Node`` or a ``fast.NodeRow`` tuple (same attribute names).
NodeLike = Any


@dataclass
class _Ref:
    row: NodeLike
    key: bytes
    parent_key: bytes | None  # None for the root
    name: str


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


class _Counter:
    """Counts and hashes plaintext as it streams past, enforcing a byte ceiling.

    SHA-1 and MD5 cost more CPU than the encryption itself (measured per GiB: MD5 ~1.6 s,
    SHA-1 ~0.6 s, XChaCha20-Poly1305 ~0.8 s), and hashlib releases the GIL on large buffers,
    so once a body proves large each checksum moves to a helper thread of its own, beside the
    encryption: no single thread has to do all three.
    """

    THREAD_FROM = 256 * 1024  # chunk size from which helper threads pay off

    def __init__(
        self, chunks: Iterable[bytes], ceiling: int | None, algorithms: Iterable[str] = ()
    ) -> None:
        self._chunks = chunks
        self.ceiling = ceiling
        self.count = 0
        # "sha1" and/or "md5" (storage.checksums, plus any the client announced).
        self._hashers = [(a, hashlib.new(a, usedforsecurity=False)) for a in sorted(algorithms)]
        self._queues: list[queue.Queue[bytes | None]] = []
        self._threads: list[threading.Thread] = []

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                if not chunk:
                    continue
                self.count += len(chunk)
                if self.ceiling is not None and self.count > self.ceiling:
                    raise InsufficientStorage("quota exceeded")
                if self._hashers:
                    self._hash(chunk)
                yield chunk
        finally:
            self._stop()

    def _hash(self, chunk: bytes) -> None:
        if not self._threads and len(chunk) >= self.THREAD_FROM:
            for name, h in self._hashers:
                q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # 8 chunks behind at most
                t = threading.Thread(target=self._work, args=(h, q), name=name, daemon=True)
                t.start()
                self._queues.append(q)
                self._threads.append(t)
        if self._threads:
            for q in self._queues:
                q.put(chunk)
        else:
            for _, h in self._hashers:
                h.update(chunk)

    @staticmethod
    def _work(h: Any, q: queue.Queue[bytes | None]) -> None:
        while (chunk := q.get()) is not None:
            h.update(chunk)

    def _stop(self) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        self._queues, self._threads = [], []

    def digests(self) -> dict[str, str]:
        """{algorithm: hex digest} of everything counted, for the algorithms asked for."""
        self._stop()
        return {a: h.hexdigest() for a, h in self._hashers}


class Session:
    """A logged-in user. Thread-safe for concurrent requests of the same user."""

    KEY_CACHE_SIZE = 50_000
    LISTING_CACHE_ENTRIES = 100_000  # decrypted entries kept per session

    def __init__(self, vault: Vault, user_id: str, user_name: str, mk: bytes, root_id: str) -> None:
        self.vault = vault
        self.user_id = user_id
        self.user_name = user_name
        self._mk = mk
        self.root_id = root_id
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        # dir id -> (listing version, entries): decrypted listings, in memory only.
        self._listings: OrderedDict[str, tuple[int, tuple[Entry, ...]]] = OrderedDict()
        self._listed = 0
        self._listings_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Session user_id={self.user_id}>"

    @property
    def uploads(self) -> Uploads:
        """This user's chunked uploads (``davserver.vault.uploads``)."""
        from davserver.vault.uploads import Uploads

        return Uploads(self)

    # -- keys and rows ---------------------------------------------------------------------
    def _remember(self, node_id: str, key: bytes) -> None:
        self._keys[node_id] = key
        if len(self._keys) > self.KEY_CACHE_SIZE:
            try:
                self._keys.popitem(last=False)
            except KeyError:  # pragma: no cover - concurrent eviction
                pass

    def _node_key(self, row: NodeLike, parent_key: bytes | None) -> bytes:
        cached = self._keys.get(row.id)
        if cached is not None:
            return cached
        try:
            if row.parent_id is None:
                if row.id != self.root_id:
                    raise IntegrityError("node has no parent")
                key = envelopes.unwrap_root_key(
                    bytes(row.key_env), self._mk, _b(self.user_id), _b(row.id)
                )
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

    def _root(self) -> _Ref:
        row = fast.node_by_id(self.root_id, self.user_id)
        if row is None:
            raise IntegrityError("root directory is missing")
        return _Ref(row, self._node_key(row, None), None, "")

    def _child(self, parent: _Ref, name: str) -> _Ref | None:
        row = fast.child_by_mac(parent.row.id, names.name_mac(parent.key, name), self.user_id)
        if row is None:
            return None
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
        return _Ref(row, self._node_key(row, parent.key), parent.key, name)

    def _walk(self, parts: list[str]) -> _Ref:
        ref = self._root()
        for part in parts:
            if ref.row.kind != DIR:
                raise NotFound("not found")
            nxt = self._child(ref, part)
            if nxt is None:
                raise NotFound("not found")
            ref = nxt
        return ref

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
        )

    def _db(self) -> Any:
        return self.vault.index.connection()

    # -- reading the tree --------------------------------------------------------------------
    def stat(self, path: str) -> Entry:
        """The entry at ``path``; ``NotFound`` if there is none."""
        with self._db():
            ref = self._walk(split_path(path))
            return self._entry(ref.row, ref.parent_key, ref.name)

    def lookup(self, path: str) -> Entry | None:
        try:
            return self.stat(path)
        except NotFound:
            return None

    def list_dir(self, path: str) -> list[Entry]:
        """The children of a directory, names decrypted, from one query."""
        with self._db():
            ref = self._dir(path)
            # Revalidate a cached listing with one lookup of the directory's version
            # (bumped in every transaction that changes the listing, by any process).
            version = fast.dir_version(ref.row.id)
            cached = self._listings.get(ref.row.id)
            if cached is not None and cached[0] == version:
                with self._listings_lock:
                    if ref.row.id in self._listings:
                        self._listings.move_to_end(ref.row.id)
                return list(cached[1])
            # Plain tuples from hand-written SQL: building a model object per child costs
            # more than decrypting its name.
            out = [self._entry(r, ref.key) for r in fast.children(ref.row.id, self.user_id)]
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

    def _quota(self, user: User) -> int | None:
        return self._quota_value(user.quota_bytes)

    def _quota_value(self, own: int | None) -> int | None:
        """The quota in force: the user's own, else the server default; None = unlimited."""
        q = own if own is not None else self.vault.settings.default_quota
        return q or None

    def hashes(self, path: str) -> dict[str, str]:
        """{"sha1": hex, "md5": hex} of the current version's plaintext ({} for directories)."""
        with self._db():
            ref = self._walk(split_path(path))
            if ref.row.kind != FILE or ref.row.current_version is None:
                return {}
            v = Version.get_or_none(Version.id == ref.row.current_version)
            if v is None or v.meta_ct is None:
                return {}
            return self._open_hashes(ref.key, ref.row.id, v.version_no, v.blob_id, bytes(v.meta_ct))

    def open_file(self, path: str) -> FileReader:
        """A seekable reader of the current version of the file at ``path``."""
        with self._db():
            ref = self._walk(split_path(path))
            if ref.row.kind != FILE:
                raise Conflict("not a file")
            v = fast.version(ref.row.current_version or "", ref.row.id)
            if v is None:
                raise IntegrityError("file has no current version")
            header24 = v.header24
            try:
                ck = envelopes.unwrap_content_key(
                    v.ck_env,
                    ref.key,
                    _b(ref.row.id),
                    v.version_no,
                    _b(v.blob_id),
                    v.plain_size,
                    header24,
                )
            except crypto.AuthenticationFailed as exc:
                log.error("integrity failure: content key of node %s", ref.row.id)
                raise IntegrityError("content key failed authentication") from exc
            source = self.vault.blobs if v.inline is None else InlineBlob(v.blob_id, v.inline)
            return FileReader(source, v.blob_id, ck, header24, v.plain_size, v.id)

    # -- directories -------------------------------------------------------------------------
    def mkdir(self, path: str, mtime: float | None = None) -> Entry:
        """Create a directory; ``AlreadyExists`` if the name is taken, ``Conflict`` if the
        parent is missing."""
        parts = split_path(path)
        now = time.time()
        with self._db(), self._txn():
            parent = self._parent_dir(parts)
            name = parts[-1]
            if self._child(parent, name) is not None:
                raise AlreadyExists("already exists")
            row = self._insert_node(parent, name, DIR, crypto.random_key(), mtime or now, now)
            return self._entry(row, parent.key, name)

    def _insert_node(
        self, parent: _Ref, name: str, kind: str, key: bytes, mtime: float, ctime: float
    ) -> fast.NodeRow:
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
        )
        fast.execute(
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
            ),
        )
        fast.bump_dir(parent.row.id)
        self._remember(node_id, key)
        return row

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
        fast.bump_dir(ref.row.parent_id)

    def set_mtime(self, path: str, mtime: float) -> None:
        with self._db(), self._txn():
            ref = self._walk(split_path(path))
            self._touch(ref, mtime)

    def _txn(self) -> Any:
        return self.vault.index.atomic()

    # -- writing files -------------------------------------------------------------------------
    def write_file(
        self,
        path: str,
        chunks: Iterable[bytes],
        expected_length: int | None = None,
        mtime: float | None = None,
        sha1: str | None = None,
        md5: str | None = None,
    ) -> Entry:
        """Store ``chunks`` as the new current version of the file at ``path``.

        The file is created if missing (``Conflict`` if the parent is missing or the name is a
        directory). ``expected_length`` (Content-Length / X-Expected-Entity-Length) and the
        optional hex ``sha1``/``md5`` are checked before anything is committed
        (``LengthMismatch``, ``ChecksumMismatch``); a quota overrun is ``InsufficientStorage``.
        """
        parts = split_path(path)
        vault = self.vault
        if expected_length is not None and expected_length <= vault.settings.inline_max:
            return self._write_small(parts, chunks, expected_length, mtime, sha1, md5)
        with self._db():
            parent = self._parent_dir(parts)
            name = parts[-1]
            existing = self._child(parent, name)
            if existing is not None and existing.row.kind == DIR:
                raise Conflict("a directory has that name")
            old_size = existing.row.size if existing is not None else 0
            usage, own_quota = fast.user_quota(self.user_id)
            quota = self._quota_value(own_quota)
            ceiling = None if quota is None else quota - usage + old_size
            if ceiling is not None and expected_length is not None and expected_length > ceiling:
                raise InsufficientStorage("quota exceeded")
            blob_id = crypto.random_id().hex()
            # Committed before the upload starts, so a crash leaves a trace for the collector.
            fast.execute("gc_insert", (blob_id, "uploading", time.time()))

        ck = crypto.random_key()
        counter = _Counter(chunks, ceiling, self._algorithms(sha1, md5))
        enc = blobfmt.SegmentEncryptor(ck, vault.settings.seg_log2)
        try:
            vault.blobs.put(blob_id, blobfmt.encrypt_with(enc, counter))
            hashes = self._check_body(counter, expected_length, sha1, md5)
            entry, retired_any = self._commit_version(
                parts,
                blob_id,
                ck,
                enc.header[: blobfmt.HEADER_AD_LEN],
                counter.count,
                hashes,
                mtime,
            )
        except BaseException:
            self._discard_blob(blob_id)
            raise
        if retired_any:
            vault.collect_garbage(grace=0)
        return entry

    def _write_small(
        self,
        parts: list[str],
        chunks: Iterable[bytes],
        length: int,
        mtime: float | None,
        sha1: str | None,
        md5: str | None,
    ) -> Entry:
        """``write_file`` for a body of known length up to ``storage.inline_max``: encrypted in
        memory into the same blob bytes a stored object would hold, and committed with its
        version in one transaction. No object store round trip, no fsync of a blob file, and
        nothing to clean up when anything fails: nothing exists until the commit."""
        counter = _Counter(chunks, None, self._algorithms(sha1, md5))
        ck = crypto.random_key()
        enc = blobfmt.SegmentEncryptor(ck, self.vault.settings.seg_log2)
        blob = b"".join(blobfmt.encrypt_with(enc, counter))
        hashes = self._check_body(counter, length, sha1, md5)
        entry, retired_any = self._commit_version(
            parts,
            crypto.random_id().hex(),
            ck,
            enc.header[: blobfmt.HEADER_AD_LEN],
            counter.count,
            hashes,
            mtime,
            inline=blob,
        )
        if retired_any:
            self.vault.collect_garbage(grace=0)
        return entry

    def _algorithms(self, sha1: str | None, md5: str | None) -> set[str]:
        """Checksums to compute for one upload: the configured ones (storage.checksums) and
        any the client announced, which are verified whatever the configuration."""
        wanted = set(self.vault.settings.checksums)
        if sha1 is not None:
            wanted.add("sha1")
        if md5 is not None:
            wanted.add("md5")
        return wanted

    @staticmethod
    def _check_body(
        counter: _Counter, expected_length: int | None, sha1: str | None, md5: str | None
    ) -> dict[str, str]:
        """Length and announced checksums of a received body; its {algorithm: hex} digests."""
        if expected_length is not None and counter.count != expected_length:
            raise LengthMismatch(f"received {counter.count} bytes, expected {expected_length}")
        got = counter.digests()
        if sha1 is not None and sha1.lower() != got["sha1"]:
            raise ChecksumMismatch("SHA-1 of the body does not match")
        if md5 is not None and md5.lower() != got["md5"]:
            raise ChecksumMismatch("MD5 of the body does not match")
        return got

    def _discard_blob(self, blob_id: str) -> None:
        """Best effort: remove a blob that never became current (the GC row stays on failure)."""
        try:
            self.vault.blobs.delete(blob_id)
            with self._db(), self._txn():
                BlobGC.delete().where(BlobGC.blob_id == blob_id).execute()
        except (DavServerError, pw.DatabaseError):
            log.warning("could not remove uncommitted blob %s; the collector will", blob_id)

    def _commit_version(
        self,
        parts: list[str],
        blob_id: str,
        ck: bytes,
        header24: bytes,
        size: int,
        hashes: dict[str, str],
        mtime: float | None,
        inline: bytes | None = None,
    ) -> tuple[Entry, bool]:
        now = time.time()
        with self._db(), self._txn():
            # Re-resolve inside the transaction: the tree may have changed during the upload.
            parent = self._parent_dir(parts)
            name = parts[-1]
            ref = self._child(parent, name)
            if ref is not None and ref.row.kind == DIR:
                raise Conflict("a directory has that name")
            if ref is None:
                row = self._insert_node(parent, name, FILE, crypto.random_key(), mtime or now, now)
                ref = _Ref(row, self._keys[row.id], parent.key, name)
                old_size, version_no = 0, 1
            else:
                old_size = ref.row.size
                last = (
                    Version.select(pw.fn.MAX(Version.version_no))
                    .where(Version.node == ref.row.id)
                    .scalar()
                )
                version_no = (last or 0) + 1
            usage, own_quota = fast.user_quota(self.user_id)
            quota = self._quota_value(own_quota)
            if quota is not None and usage - old_size + size > quota:
                raise InsufficientStorage("quota exceeded")
            node_id = ref.row.id
            version_id = crypto.random_id().hex()
            # Hand-written SQL on this path: it runs for every PUT, and building peewee
            # queries cost more than the statements (cProfile of a 4 KiB PUT).
            fast.execute(
                "version_insert",
                (
                    version_id,
                    node_id,
                    version_no,
                    blob_id,
                    size,
                    header24,
                    envelopes.wrap_content_key(
                        ck, ref.key, _b(node_id), version_no, _b(blob_id), size, header24
                    ),
                    crypto.seal(
                        ref.key,
                        _VMETA_PURPOSE,
                        _VMETA_LABEL,
                        (_b(node_id), version_no, _b(blob_id)),
                        json.dumps(hashes).encode(),
                    ),
                    now,
                ),
            )
            retired = version_no > 1 and self._retire_versions(node_id, keep=version_id)
            meta = self._meta(ref.row, parent.key)
            if mtime is not None or version_no > 1:
                meta["m"] = mtime if mtime is not None else now
                meta_ct = self._seal_meta(parent.key, node_id, parent.row.id, meta)
                fast.execute("node_set_version_meta", (version_id, size, meta_ct, node_id))
            else:
                fast.execute("node_set_version", (version_id, size, node_id))
            if version_no > 1:  # a new node was counted by _insert_node
                fast.bump_dir(parent.row.id)
            if size != old_size:
                fast.execute("usage_add", (size - old_size, self.user_id))
            if inline is None:
                fast.execute("gc_delete", (blob_id,))  # the upload's crash-cleanup row
            else:
                fast.execute("inline_insert", (blob_id, inline))
            return Entry(
                id=node_id,
                parent_id=parent.row.id,
                name=name,
                kind=FILE,
                size=size,
                mtime=float(meta.get("m", now)),
                ctime=float(meta.get("c", now)),
                version_id=version_id,
            ), retired

    def _retire_versions(self, node_id: str, keep: str) -> bool:
        """Drop every version of a node but ``keep``; their blobs go to the collector.
        Returns whether any blob may now be collectable."""
        old = list(
            Version.select(Version.id, Version.blob_id).where(
                Version.node == node_id, Version.id != keep
            )
        )
        if old:
            Version.delete().where(Version.id.in_([v.id for v in old])).execute()
            self.vault.mark_blobs_dead([v.blob_id for v in old])
        return bool(old)

    # -- move, copy, delete ----------------------------------------------------------------------
    def _check_not_inside(self, src: _Ref, dst_parent: _Ref) -> None:
        """Refuse to put a directory inside itself (walks up from the destination)."""
        node_id: str | None = dst_parent.row.id
        while node_id is not None:
            if node_id == src.row.id:
                raise Forbidden("cannot move or copy a directory into itself")
            node_id = Node.select(Node.parent).where(Node.id == node_id).scalar()

    def _prepare_destination(
        self, src: _Ref, dst_parts: list[str], overwrite: bool
    ) -> tuple[_Ref, str, bool]:
        """Resolve the destination's parent, refuse cycles and clashes, and delete a
        destination being overwritten. Returns (parent, name, whether it existed)."""
        dst_parent = self._parent_dir(dst_parts)
        name = dst_parts[-1]
        existing = self._child(dst_parent, name)
        if existing is not None and existing.row.id == src.row.id:
            raise Forbidden("source and destination are the same")
        self._check_not_inside(src, dst_parent)
        if existing is None:
            return dst_parent, name, False
        if not overwrite:
            raise AlreadyExists("destination exists")
        if existing.row.kind == DIR:
            # Overwriting an ancestor of the source would delete the source with it.
            node_id: str | None = src.row.parent_id
            while node_id is not None:
                if node_id == existing.row.id:
                    raise Forbidden("cannot overwrite an ancestor of the source")
                node_id = Node.select(Node.parent).where(Node.id == node_id).scalar()
        self._delete_subtree(existing.row)
        return dst_parent, name, True

    def move(self, src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        """Move or rename a file or a whole tree by re-wrapping one row.

        Returns True if the destination existed (and was replaced). ``AlreadyExists`` if it
        exists and ``overwrite`` is false; ``Forbidden`` for the root or a move into itself.
        """
        src_parts, dst_parts = split_path(src_path), split_path(dst_path)
        if not src_parts:
            raise Forbidden("the root cannot be moved")
        with self._db(), self._txn():
            src = self._walk(src_parts)
            dst_parent, name, existed = self._prepare_destination(src, dst_parts, overwrite)
            meta = self._meta(src.row, src.parent_key)
            node_id = src.row.id
            Node.update(
                parent=dst_parent.row.id,
                key_env=envelopes.wrap_node_key(
                    src.key, dst_parent.key, _b(node_id), _b(dst_parent.row.id), src.row.kind
                ),
                name_mac=names.name_mac(dst_parent.key, name),
                name_ct=names.encrypt_name(
                    dst_parent.key, name, _b(node_id), _b(dst_parent.row.id)
                ),
                meta_ct=self._seal_meta(dst_parent.key, node_id, dst_parent.row.id, meta),
            ).where(Node.id == node_id).execute()
            fast.bump_dir(dst_parent.row.id)
            if src.row.parent_id != dst_parent.row.id:
                fast.bump_dir(src.row.parent_id)
        if existed:
            self.vault.collect_garbage(grace=0)
        return existed

    def copy(
        self, src_path: str, dst_path: str, overwrite: bool = False, depth_infinity: bool = True
    ) -> bool:
        """Copy a file or tree under new keys; blobs are shared, not re-encrypted.

        Each copied version gets its own content-key envelope, bound to the new node; the
        immutable blob is referenced by both versions and collected when neither is left
        (a documented leak: the index shows that two versions share a blob). With
        ``depth_infinity`` false a directory is copied without its members (Depth: 0).
        """
        src_parts, dst_parts = split_path(src_path), split_path(dst_path)
        with self._db(), self._txn():
            src = self._walk(src_parts)
            dst_parent, name, existed = self._prepare_destination(src, dst_parts, overwrite)
            added = self._copy_node(src, dst_parent, name, depth_infinity)
            user = User.get_by_id(self.user_id)
            quota = self._quota(user)
            if quota is not None and user.usage_bytes + added > quota:
                raise InsufficientStorage("quota exceeded")
            User.update(usage_bytes=User.usage_bytes + added).where(
                User.id == self.user_id
            ).execute()
        if existed:
            self.vault.collect_garbage(grace=0)
        return existed

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
            )
            Node.update(current_version=vid, size=v.plain_size).where(Node.id == row.id).execute()
            added += v.plain_size
        elif src.row.kind == DIR and recurse:
            for child in Node.select().where(Node.parent == src.row.id):
                child_name = self._entry(child, src.key).name
                child_ref = _Ref(child, self._node_key(child, src.key), src.key, child_name)
                added += self._copy_node(child_ref, new, child_name, True)
        return added

    def delete(self, path: str) -> None:
        """Delete a file or a whole tree: index first (one transaction), blobs collected after."""
        parts = split_path(path)
        if not parts:
            raise Forbidden("the root cannot be deleted")
        with self._db(), self._txn():
            ref = self._walk(parts)
            self._delete_subtree(ref.row)
        self.vault.collect_garbage(grace=0)

    def _delete_subtree(self, row: NodeLike) -> None:
        """Within a transaction: remove a node and all below it, deepest level first."""
        if row.parent_id is not None:
            fast.bump_dir(row.parent_id)
        levels: list[list[str]] = [[row.id]]
        while True:
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
                for v in Version.select(Version.blob_id).where(Version.node.in_(ids)):
                    blob_ids.append(v.blob_id)
                freed += (
                    Node.select(pw.fn.COALESCE(pw.fn.SUM(Node.size), 0))
                    .where(Node.id.in_(ids), Node.kind == FILE)
                    .scalar()
                ) or 0
                Version.delete().where(Version.node.in_(ids)).execute()
                DeadProps.delete().where(DeadProps.node.in_(ids)).execute()
                Node.delete().where(Node.id.in_(ids)).execute()
        User.update(usage_bytes=User.usage_bytes - freed).where(User.id == self.user_id).execute()
        self.vault.mark_blobs_dead(blob_ids)

    # -- dead properties -------------------------------------------------------------------------
    def get_props(self, path: str) -> dict[str, str]:
        """All dead properties of a node: {property name: value (XML text)}."""
        with self._db():
            ref = self._walk(split_path(path))
            return self._props(ref)

    def _dir(self, path: str) -> _Ref:
        ref = self._walk(split_path(path))
        if ref.row.kind != DIR:
            raise Conflict("not a directory")
        return ref

    def list_dir_props(self, path: str) -> dict[str, dict[str, str]]:
        """Dead properties of every member of a directory that has any, from one query:
        {member name: {property: value}} (a Depth 1 allprop PROPFIND needs them all)."""
        with self._db():
            ref = self._dir(path)
            rows = (
                Node.select(
                    *_MEMBER_KEY_COLUMNS,
                    DeadProps.props_ct,
                )
                .join(DeadProps, on=(DeadProps.node == Node.id))
                .where(Node.parent == ref.row.id, Node.owner == self.user_id)
                .namedtuples()
            )
            out: dict[str, dict[str, str]] = {}
            r: Any
            for r in rows:
                name = self._entry_name(r, ref.key)
                child = _Ref(r, self._node_key(r, ref.key), ref.key, name)
                out[name] = self._open_props(child, bytes(r.props_ct))
            return out

    def list_dir_hashes(self, path: str) -> dict[str, dict[str, str]]:
        """SHA-1 and MD5 of every file in a directory, from one query:
        {member name: {"sha1": hex, "md5": hex}}."""
        with self._db():
            ref = self._dir(path)
            rows = (
                Node.select(
                    *_MEMBER_KEY_COLUMNS,
                    Version.version_no,
                    Version.blob_id,
                    Version.meta_ct.alias("vmeta"),
                )
                .join(Version, on=(Version.id == Node.current_version))
                .where(Node.parent == ref.row.id, Node.owner == self.user_id)
                .namedtuples()
            )
            out: dict[str, dict[str, str]] = {}
            r: Any
            for r in rows:
                if r.vmeta is None:
                    continue
                name = self._entry_name(r, ref.key)
                key = self._node_key(r, ref.key)
                out[name] = self._open_hashes(key, r.id, r.version_no, r.blob_id, bytes(r.vmeta))
            return out

    def _entry_name(self, row: NodeLike, parent_key: bytes) -> str:
        try:
            return names.decrypt_name(parent_key, bytes(row.name_ct), _b(row.id), _b(row.parent_id))
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: name of node %s", row.id)
            raise IntegrityError("name failed authentication") from exc

    def _open_hashes(
        self, key: bytes, node_id: str, version_no: int, blob_id: str, sealed: bytes
    ) -> dict[str, str]:
        try:
            raw = crypto.open_sealed(
                key, _VMETA_PURPOSE, _VMETA_LABEL, (_b(node_id), version_no, _b(blob_id)), sealed
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: version metadata of node %s", node_id)
            raise IntegrityError("version metadata failed authentication") from exc
        value: dict[str, str] = json.loads(raw)
        return value

    def _props(self, ref: _Ref) -> dict[str, str]:
        row = DeadProps.get_or_none(DeadProps.node == ref.row.id)
        if row is None:
            return {}
        return self._open_props(ref, bytes(row.props_ct))

    def _open_props(self, ref: _Ref, sealed: bytes) -> dict[str, str]:
        try:
            raw = crypto.open_sealed(
                ref.key, _PROPS_PURPOSE, _PROPS_LABEL, (_b(ref.row.id),), sealed
            )
        except crypto.AuthenticationFailed as exc:
            log.error("integrity failure: properties of node %s", ref.row.id)
            raise IntegrityError("properties failed authentication") from exc
        value: dict[str, str] = json.loads(raw)
        return value

    def _store_props(self, ref: _Ref, props: dict[str, str]) -> None:
        if not props:
            DeadProps.delete().where(DeadProps.node == ref.row.id).execute()
            return
        ct = crypto.seal(
            ref.key,
            _PROPS_PURPOSE,
            _PROPS_LABEL,
            (_b(ref.row.id),),
            json.dumps(props, separators=(",", ":")).encode(),
        )
        DeadProps.insert(node=ref.row.id, props_ct=ct).on_conflict(
            conflict_target=[DeadProps.node], update={DeadProps.props_ct: ct}
        ).execute()

    def _copy_props(self, src: _Ref, dst: _Ref) -> None:
        props = self._props(src)
        if props:
            self._store_props(dst, props)

    def set_props(self, path: str, changes: dict[str, str | None]) -> None:
        """Set (value) or remove (None) dead properties, all in one transaction."""
        with self._db(), self._txn():
            ref = self._walk(split_path(path))
            props = self._props(ref)
            for k, v in changes.items():
                if v is None:
                    props.pop(k, None)
                else:
                    props[k] = v
            self._store_props(ref, props)

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
