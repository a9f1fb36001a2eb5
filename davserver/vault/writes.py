"""Writing files: the body counted and hashed as it streams (``_Counter``), then one commit.

Writes stream: the body is encrypted segment by segment into the blob store, and only when the
byte count (and checksum, if given) checks out does one transaction insert the version and
point the node at it. On any failure the previous version stays current and the partial blob
is removed (or left queued for the collector). A body of known length up to
``storage.inline_max`` is encrypted in memory instead and committed together with its blob,
kept in the index, in a single transaction (``_write_small``). ``_Counter`` also serves
chunked uploads (``davserver.vault.uploads``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import peewee as pw

from davserver import crypto
from davserver.blobs import DIGEST_LEN, DigestingChunks
from davserver.crypto import blobfmt, envelopes
from davserver.errors import (
    ChecksumMismatch,
    Conflict,
    DavServerError,
    InsufficientStorage,
    LengthMismatch,
)
from davserver.index import fast
from davserver.index.models import BlobGC
from davserver.vault import perms as _perms
from davserver.vault.nodes import (
    _VMETA_LABEL,
    _VMETA_PURPOSE,
    DIR,
    FILE,
    Entry,
    _b,
    _Ref,
    _SessionCore,
    split_path,
)

log = logging.getLogger(__name__)

# Entered around a write's commit transaction (see ``write_file``).
CommitGuard = Callable[[], contextlib.AbstractContextManager[None]]


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


class _WriteOps(_SessionCore):
    """``write_file`` and the steps it takes (``Session`` inherits these)."""

    def write_file(
        self,
        path: str,
        chunks: Iterable[bytes],
        expected_length: int | None = None,
        mtime: float | None = None,
        sha1: str | None = None,
        md5: str | None = None,
        commit_guard: CommitGuard | None = None,
    ) -> Entry:
        """Store ``chunks`` as the new current version of the file at ``path``.

        The file is created if missing (``Conflict`` if the parent is missing or the name is a
        directory). ``expected_length`` (Content-Length / X-Expected-Entity-Length) and the
        optional hex ``sha1``/``md5`` are checked before anything is committed
        (``LengthMismatch``, ``ChecksumMismatch``); a quota overrun is ``InsufficientStorage``.
        ``commit_guard`` (the DAV layer's lock check) is entered around the commit
        transaction: what it raises aborts the write, and the commit joins its transaction.
        """
        self._may(_perms.CREATE)  # ro: refused; wo: a new name only (checked below)
        parts = split_path(path)
        vault = self.vault
        if expected_length is not None and expected_length <= vault.settings.inline_max:
            return self._write_small(parts, chunks, expected_length, mtime, sha1, md5, commit_guard)
        with self._db():
            _, existing = self._parent_and_child(parts)
            if existing is not None:
                self._may(_perms.CREATE, exists=True)
            if existing is not None and existing.row.kind == DIR:
                raise Conflict("a directory has that name")
            old_size = existing.row.size if existing is not None else 0
            usage, own_quota = fast.user_quota(self.user_id)
            quota = self._quota_value(own_quota)
            ceiling = None
            if quota is not None:
                # Kept versions stay counted; a replaced one is freed only without them.
                ceiling = quota - usage + (0 if self._keeps_versions() else old_size)
                if expected_length is None or expected_length > ceiling:
                    ceiling += self._evictable_bytes()  # trash and old versions can make room
            if ceiling is not None and expected_length is not None and expected_length > ceiling:
                raise InsufficientStorage("quota exceeded")
            blob_id = crypto.random_id().hex()
            # Committed before the upload starts, so a crash leaves a trace for the collector.
            fast.execute("gc_insert", (blob_id, "uploading", time.time()))

        ck = crypto.random_key()
        counter = _Counter(chunks, ceiling, self._algorithms(sha1, md5))
        enc = blobfmt.SegmentEncryptor(ck, vault.settings.seg_log2)
        try:
            stream = DigestingChunks(blobfmt.encrypt_with(enc, counter))
            vault.blobs.put(blob_id, stream)
            hashes = self._check_body(counter, expected_length, sha1, md5)
            entry, retired_any = self._commit_version(
                parts,
                blob_id,
                ck,
                enc.header[: blobfmt.HEADER_AD_LEN],
                counter.count,
                hashes,
                mtime,
                digest=stream.digest(),
                commit_guard=commit_guard,
            )
        except BaseException:
            self._discard_blob(blob_id)
            raise
        if retired_any:
            self._collect()
        return entry

    def _write_small(
        self,
        parts: list[str],
        chunks: Iterable[bytes],
        length: int,
        mtime: float | None,
        sha1: str | None,
        md5: str | None,
        commit_guard: CommitGuard | None = None,
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
            digest=hashlib.blake2b(blob, digest_size=DIGEST_LEN).digest(),
            commit_guard=commit_guard,
        )
        if retired_any:
            self._collect()
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
        digest: bytes | None = None,
        commit_guard: CommitGuard | None = None,
    ) -> tuple[Entry, bool]:
        """One transaction: insert the version and make it current (creating the node if
        the name is new). Two PUTs of one name both succeed, in commit order: they queue on
        the user's row, and the later one re-resolves the name and finds the earlier one's
        node and version number (the last commit wins). ``commit_guard`` (the DAV layer's
        lock re-check) is entered around the transaction, on every attempt."""
        return self._retried(
            lambda: self._commit_version_once(
                parts, blob_id, ck, header24, size, hashes, mtime, inline, digest, commit_guard
            )
        )

    def _commit_version_once(
        self,
        parts: list[str],
        blob_id: str,
        ck: bytes,
        header24: bytes,
        size: int,
        hashes: dict[str, str],
        mtime: float | None,
        inline: bytes | None,
        digest: bytes | None,
        commit_guard: CommitGuard | None,
    ) -> tuple[Entry, bool]:
        now = time.time()
        guard = commit_guard() if commit_guard is not None else contextlib.nullcontext()
        with self._db(), guard, self._txn() as locked:
            # Re-resolve inside the transaction: the tree may have changed during the upload.
            parent, ref = self._parent_and_child(parts)
            name = parts[-1]
            if ref is not None:
                self._may(_perms.CREATE, exists=True)  # wo: created meanwhile is taken
            if ref is not None and ref.row.kind == DIR:
                raise Conflict("a directory has that name")
            # The writes go in one batch at the end (one round trip on PostgreSQL).
            batch: list[tuple[str, tuple[object, ...]]] = []
            if ref is None:
                key = crypto.random_key()
                row = self._insert_node(
                    parent, name, FILE, key, mtime or now, now, batch, propagate=False
                )
                ref = _Ref(row, self._keys[row.id], parent.key, name)
                version_no = 1
                old: list[Any] = []
            else:
                # The versions kept so far (newest first), and the next number.
                old = fast.execute("history_of", (ref.row.id,)).fetchall()
                version_no = max((int(v[2]) for v in old), default=0) + 1
            # With versions kept, the replaced version joins the old ones, and those the
            # schedule no longer keeps go now; without, every old version goes.
            stamp = self.vault.clock()
            going = self._expired_on_write(old, stamp) if self._keeps_versions() else old
            freed = sum(int(v[5]) for v in going)
            usage, own_quota = locked or fast.user_quota(self.user_id)
            quota = self._quota_value(own_quota)
            growth = size - freed
            evicted = 0
            if quota is not None and usage + growth > quota:
                # Trash items, then old versions, make room (taken off the usage at once);
                # 507, and the transaction with them undone, only if that is not enough.
                skip = {str(v[0]) for v in going}
                evicted = self._make_room(usage + growth - quota, stamp, skip)
                if usage + growth - evicted > quota:
                    raise InsufficientStorage("quota exceeded")
            node_id = ref.row.id
            version_id = crypto.random_id().hex()
            retired = self._retire_versions(going, now, batch) or evicted > 0
            # Hand-written SQL on this path: it runs for every PUT, and building peewee
            # queries cost more than the statements (cProfile of a 4 KiB PUT).
            batch.append(
                (
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
                        stamp,
                        digest,
                    ),
                )
            )
            meta = self._meta(ref.row, parent.key)
            if mtime is not None or version_no > 1:
                meta["m"] = mtime if mtime is not None else now
                meta_ct = self._seal_meta(parent.key, node_id, parent.row.id, meta)
                batch.append(("node_set_version_meta", (version_id, size, meta_ct, node_id)))
            else:
                batch.append(("node_set_version", (version_id, size, node_id)))
            # Every ancestor's ETag and byte total: one statement (a new node's too).
            batch.append(self._propagation_of(parent, size - int(ref.row.size or 0)))
            if growth:
                batch.append(("usage_add", (growth, self.user_id)))
            if inline is None:
                batch.append(("gc_delete", (blob_id,)))  # the upload's crash-cleanup row
            else:
                batch.append(("inline_insert", (blob_id, inline, digest)))
            fast.batch(batch)
            return Entry(
                id=node_id,
                parent_id=parent.row.id,
                name=name,
                kind=FILE,
                size=size,
                mtime=float(meta.get("m", now)),
                ctime=float(meta.get("c", now)),
                version_id=version_id,
                fileid=int(ref.row.fileid or 0),
            ), retired

    @staticmethod
    def _retire_versions(
        old: list[Any], now: float, batch: list[tuple[str, tuple[object, ...]]]
    ) -> bool:
        """Add to ``batch`` the removal of these versions (rows of ``versions_of``) and the
        queueing of their blobs for the collector. Returns whether there were any.

        The blobs are queued without asking whether another version still uses them (COPY
        shares blobs): the collector asks that itself, in its own transaction, before it
        deletes anything, and drops the queue row of a blob still in use."""
        for v in old:
            batch.append(("version_delete", (v[0],)))
            batch.append(("gc_dead", (v[1], now)))
        return bool(old)

    # -- versions kept and the room they take (implemented by ``history``) -------------------
    def _keeps_versions(self) -> bool:
        return self.vault.settings.versions_policy.enabled

    def _expired_on_write(self, old: list[Any], now: float) -> list[Any]:
        """Of a file's versions (rows of ``history_of``, newest first), those to remove
        when a new version is written now (the newest one stays: it becomes the version
        just before the current one)."""
        return []

    def _evictable_bytes(self) -> int:
        """Bytes that ``_make_room`` could free for this user (trash, old versions)."""
        return 0

    def _make_room(self, need: int, now: float, skip: set[str]) -> int:
        """Within the write transaction: free at least ``need`` bytes if possible (taken off
        the user's usage here), never touching the versions in ``skip``; returns the bytes
        freed."""
        return 0
