"""Chunked uploads: chunks stored encrypted as they arrive, assembled into one version later.

This is the engine side of Nextcloud-style chunking (``/uploads/USER/<upload-id>/<chunk>``
then MOVE of ``.file``): a client uploads numbered chunks, possibly over hours and with
retries, and finally asks for the file to be assembled at its destination. Each chunk is its
own encrypted blob (same segment format, own content key); assembly streams every chunk
through decryption into ``Session.write_file``, so memory stays bounded whatever the sizes and
the result is one ordinary version. Chunks count against the user's quota while they wait.
Abandoned uploads expire (``Vault.expire_uploads``) and their blobs are collected.
``Uploads(session)`` builds on a ``Session``; the session does not know it (no import back).

Keys (not normative; rows are bound to their ids so they cannot be swapped):
``UK = subkey(MK, "wdv-upload-v1")`` (a scoped session: ``subkey(DK_S, "wdv-upload-v1", S)``,
``_SessionCore._upload_key``; its uploads are its own); the client's upload id is stored only
as a MAC under UK;
chunk names are MAC'd and sealed under ``subkey(UK, "wdv-upload-dir", upload_row_id)``; each
chunk's content key is sealed under UK with AD binding upload, chunk, blob, size and header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import peewee as pw

from davserver import crypto
from davserver.crypto import blobfmt, names
from davserver.errors import (
    AlreadyExists,
    BadRequest,
    InsufficientStorage,
    IntegrityError,
    LengthMismatch,
    NotFound,
)
from davserver.index.models import BlobGC, Upload, UploadChunk, User
from davserver.vault import perms as _perms
from davserver.vault.nodes import Entry
from davserver.vault.reader import FileReader
from davserver.vault.writes import _Counter

if TYPE_CHECKING:
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

_CK_PURPOSE, _CK_LABEL = b"wdv-chunk-ck-v1", b"wdv/chunk/v1"
MAX_HANDLE = 255


def _b(id_hex: str) -> bytes:
    return bytes.fromhex(id_hex)


def _check_handle(text: str, what: str) -> str:
    if not text or len(text) > MAX_HANDLE or "/" in text or "\x00" in text:
        raise BadRequest(f"invalid {what}")
    return names.normalize_name(text)


def _sort_key(name: str) -> tuple[int, int, str]:
    # Nextcloud v2 numbers chunks 1..10000; v1 names them "<start>-<end>" zero-padded.
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class Uploads:
    """Chunked uploads of one logged-in user."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._uk = session._upload_key()

    def _dir_key(self, upload_id: str) -> bytes:
        return crypto.subkey(self._uk, b"wdv-upload-dir", _b(upload_id))

    def _find(self, handle: str) -> Upload:
        row = Upload.get_or_none(
            Upload.owner == self._s.user_id,
            Upload.handle_mac == names.name_mac(self._uk, _check_handle(handle, "upload id")),
        )
        if row is None:
            raise NotFound("no such upload")
        return row

    def exists(self, handle: str) -> bool:
        with self._s.vault.index.connection():
            try:
                self._find(handle)
            except NotFound:
                return False
            return True

    def create(self, handle: str) -> None:
        """Start an upload; ``AlreadyExists`` if this user already has one with that id."""
        self._s._may(_perms.CREATE)
        handle = _check_handle(handle, "upload id")
        now = time.time()
        mac = names.name_mac(self._uk, handle)

        def once() -> None:
            with self._s._db(), self._s._txn():
                # Checked inside the transaction, behind the user's row: a concurrent
                # create of the same id is then seen here, not as a unique violation.
                if Upload.get_or_none(Upload.owner == self._s.user_id, Upload.handle_mac == mac):
                    raise AlreadyExists("upload already exists")
                Upload.create(
                    id=crypto.random_id().hex(),
                    owner=self._s.user_id,
                    handle_mac=mac,
                    created=now,
                    touched=now,
                )

        self._s._retried(once)

    def put_chunk(
        self, handle: str, chunk_name: str, chunks: Iterable[bytes], expected_length: int | None
    ) -> int:
        """Store one chunk (replacing a chunk of the same name); return its size."""
        self._s._may(_perms.CREATE)
        vault = self._s.vault
        chunk_name = _check_handle(chunk_name, "chunk name")
        with vault.index.connection():
            up = self._find(handle)
            user = User.get_by_id(self._s.user_id)
            quota = self._s._quota(user)
            ceiling = None
            if quota is not None:
                pending = self._pending_bytes()
                ceiling = quota - user.usage_bytes - pending
                if expected_length is not None and expected_length > ceiling:
                    raise InsufficientStorage("quota exceeded")
            blob_id = crypto.random_id().hex()
            # Committed before the upload starts, so a crash leaves a trace for the collector.
            BlobGC.insert(blob_id=blob_id, state="uploading", since=time.time()).execute()
        ck = crypto.random_key()
        counter = _Counter(chunks, ceiling)  # no checksums: the assembled file gets them
        enc = blobfmt.SegmentEncryptor(ck, vault.settings.seg_log2)
        try:
            vault.blobs.put(blob_id, blobfmt.encrypt_with(enc, counter))
            if expected_length is not None and counter.count != expected_length:
                raise LengthMismatch(f"received {counter.count} bytes, expected {expected_length}")
            self._commit_chunk(up.id, chunk_name, blob_id, ck, enc.header[:24], counter.count)
        except BaseException:
            self._s._discard_blob(blob_id)
            raise
        self._s._collect()
        return counter.count

    def check_room(
        self, total_length: int, destination: str | None = None, handle: str | None = None
    ) -> None:
        """``InsufficientStorage`` if a file of ``total_length`` bytes cannot fit under the
        quota: what chunking v2 announces (``OC-Total-Length``) is checked before the first
        chunk, so that a client does not send gigabytes to learn at assembly that they do
        not fit. Room is what the quota leaves after usage and the chunks already waiting,
        plus what the trash and old versions could give up, plus (when versions are not
        kept) the size of the file being replaced. The chunks of ``handle`` (the upload the
        total is announced for) are part of that total, not extra."""
        s = self._s
        with s.vault.index.connection():
            user = User.get_by_id(s.user_id)
            quota = s._quota(user)
            if quota is None:
                return
            room = quota - user.usage_bytes - self._pending_bytes()
            if handle is not None:
                room += self._pending_bytes(self._find(handle).id)
            if total_length <= room:
                return
            if destination is not None and not s._keeps_versions():
                try:
                    existing = s.stat(destination)
                except (NotFound, BadRequest):
                    existing = None
                if existing is not None and not existing.is_dir:
                    room += existing.size
            room += s._evictable_bytes()
        if total_length > room:
            raise InsufficientStorage("quota exceeded")

    def _pending_bytes(self, upload_id: str | None = None) -> int:
        """Bytes of this user's waiting chunks (of one upload, if given)."""
        query = (
            UploadChunk.select(pw.fn.COALESCE(pw.fn.SUM(UploadChunk.plain_size), 0))
            .join(Upload)
            .where(Upload.owner == self._s.user_id)
        )
        if upload_id is not None:
            query = query.where(Upload.id == upload_id)
        total = query.scalar()
        return int(total or 0)

    def _commit_chunk(
        self, upload_id: str, chunk_name: str, blob_id: str, ck: bytes, header24: bytes, size: int
    ) -> None:
        self._s._retried(
            lambda: self._commit_chunk_once(upload_id, chunk_name, blob_id, ck, header24, size)
        )

    def _commit_chunk_once(
        self, upload_id: str, chunk_name: str, blob_id: str, ck: bytes, header24: bytes, size: int
    ) -> None:
        vault = self._s.vault
        dir_key = self._dir_key(upload_id)
        mac = names.name_mac(dir_key, chunk_name)
        chunk_id = crypto.random_id().hex()
        now = time.time()
        with self._s._db(), self._s._txn():
            if Upload.get_or_none(Upload.id == upload_id) is None:
                raise NotFound("the upload was cancelled or expired")
            old = list(
                UploadChunk.select(UploadChunk.id, UploadChunk.blob_id).where(
                    UploadChunk.upload == upload_id, UploadChunk.name_mac == mac
                )
            )
            if old:
                UploadChunk.delete().where(UploadChunk.id.in_([c.id for c in old])).execute()
            UploadChunk.create(
                id=chunk_id,
                upload=upload_id,
                name_mac=mac,
                name_ct=names.encrypt_name(dir_key, chunk_name, _b(chunk_id), _b(upload_id)),
                blob_id=blob_id,
                plain_size=size,
                header24=header24,
                ck_env=crypto.seal(
                    self._uk,
                    _CK_PURPOSE,
                    _CK_LABEL,
                    (_b(upload_id), _b(chunk_id), _b(blob_id), size, header24),
                    ck,
                ),
                created=now,
            )
            Upload.update(touched=now).where(Upload.id == upload_id).execute()
            BlobGC.delete().where(BlobGC.blob_id == blob_id).execute()
            if old:
                vault.mark_blobs_dead([c.blob_id for c in old])

    def has_chunk(self, handle: str, chunk_name: str) -> bool:
        """Whether the upload holds a chunk of that name (one indexed lookup)."""
        chunk_name = _check_handle(chunk_name, "chunk name")
        with self._s.vault.index.connection():
            up = self._find(handle)
            mac = names.name_mac(self._dir_key(up.id), chunk_name)
            return bool(
                UploadChunk.select()
                .where(UploadChunk.upload == up.id, UploadChunk.name_mac == mac)
                .exists()
            )

    def list(self, handle: str) -> list[tuple[str, int, float]]:
        """(chunk name, size, time) of every chunk, in assembly order."""
        with self._s.vault.index.connection():
            up = self._find(handle)
            dir_key = self._dir_key(up.id)
            out = []
            for c in UploadChunk.select().where(UploadChunk.upload == up.id):
                try:
                    name = names.decrypt_name(dir_key, bytes(c.name_ct), _b(c.id), _b(up.id))
                except crypto.AuthenticationFailed as exc:
                    log.error("integrity failure: chunk %s of upload %s", c.id, up.id)
                    raise IntegrityError("chunk name failed authentication") from exc
                out.append((name, int(c.plain_size), float(c.created)))
        out.sort(key=lambda t: _sort_key(t[0]))
        return out

    def _chunk_stream(self, upload_id: str) -> Iterator[bytes]:
        vault = self._s.vault
        dir_key = self._dir_key(upload_id)
        with vault.index.connection():
            rows = list(UploadChunk.select().where(UploadChunk.upload == upload_id))
        ordered = []
        for c in rows:
            try:
                name = names.decrypt_name(dir_key, bytes(c.name_ct), _b(c.id), _b(upload_id))
                header24 = bytes(c.header24)
                ck = crypto.open_sealed(
                    self._uk,
                    _CK_PURPOSE,
                    _CK_LABEL,
                    (_b(upload_id), _b(c.id), _b(c.blob_id), int(c.plain_size), header24),
                    bytes(c.ck_env),
                )
            except crypto.AuthenticationFailed as exc:
                log.error("integrity failure: chunk %s of upload %s", c.id, upload_id)
                raise IntegrityError("chunk failed authentication") from exc
            ordered.append((_sort_key(name), c, ck, header24))
        ordered.sort(key=lambda t: t[0])
        for _, c, ck, header24 in ordered:
            reader = FileReader(vault.blobs, c.blob_id, ck, header24, int(c.plain_size), c.id)
            yield from reader.iter_range()

    def assemble(
        self,
        handle: str,
        dst_path: str,
        expected_length: int | None = None,
        mtime: float | None = None,
        sha1: str | None = None,
        md5: str | None = None,
    ) -> tuple[Entry, bool]:
        """Write the concatenated chunks as the new version of ``dst_path`` and end the
        upload. Returns (entry, whether the destination existed). On failure the upload
        stays, so the client can retry. An upload-only session may only create (its
        destination must not exist: ``write_file`` checks)."""
        self._s._may(_perms.CREATE)
        vault = self._s.vault
        with vault.index.connection():
            up = self._find(handle)
        existed = self._s.lookup(dst_path) is not None  # wo: Forbidden if it is a file
        entry = self._s.write_file(
            dst_path, self._chunk_stream(up.id), expected_length, mtime, sha1, md5
        )
        self._drop(up.id)
        return entry, existed

    def delete(self, handle: str) -> None:
        self._s._may(_perms.CREATE)  # cancelling one's own upload: not for ro
        with self._s.vault.index.connection():
            up = self._find(handle)
        self._drop(up.id)

    def _drop(self, upload_id: str) -> None:
        vault = self._s.vault

        def once() -> None:
            with self._s._db(), self._s._txn():
                blob_ids = [
                    c.blob_id
                    for c in UploadChunk.select(UploadChunk.blob_id).where(
                        UploadChunk.upload == upload_id
                    )
                ]
                UploadChunk.delete().where(UploadChunk.upload == upload_id).execute()
                Upload.delete().where(Upload.id == upload_id).execute()
                vault.mark_blobs_dead(blob_ids)

        self._s._retried(once)
        self._s._collect()
