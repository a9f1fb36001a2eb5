"""Blob stores: where ciphertext objects live.

A blob store sees only opaque blob ids (32 lowercase hex characters, 128 random bits) and
ciphertext bytes. It never sees plaintext, keys, names or paths, and attaches no metadata to
objects. Implementations:

- ``local.LocalBlobStore`` — a directory on disk (the embedded default);
- ``s3.S3BlobStore`` — any S3-compatible service through the ``minio`` SDK.

Every backend error surfaces as a ``davserver.errors`` exception at the backend's edge:
``BlobNotFound`` for a missing object, ``DiskFull`` for a full disk (``InsufficientStorage``
for a provider's quota), ``StorageError`` for everything else (unreachable, refused, timed out).

A crashed process can leave *partial uploads* behind — a local temporary file, an incomplete S3
multipart upload — that hold bytes but are no object. ``partial_uploads`` lists them with the
time since each last grew, so the maintenance loop can remove those idle for longer than
``gc.upload_grace`` (``discard_partial``) while uploads still in flight are left alone.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from davserver.errors import BlobNotFound

#: Bytes of an object digest: BLAKE2b-256 of the whole ciphertext object, keyless, so that
#: ``davserver scrub`` can find bit rot without any user's key.
DIGEST_LEN = 32

_BLOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: A well-formed blob id that is never stored (ids are random): what ``probe`` asks for.
PROBE_ID = "0" * 32


def check_blob_id(blob_id: str) -> str:
    """Return ``blob_id`` if it is 32 lowercase hex characters, else raise ``ValueError``."""
    if not _BLOB_ID.match(blob_id):
        raise ValueError("invalid blob id")
    return blob_id


@dataclass(frozen=True)
class BlobStat:
    blob_id: str
    size: int
    #: When the object was stored (Unix time, the backend's clock), if the backend says.
    mtime: float | None = None


@dataclass(frozen=True)
class PartialUpload:
    """An upload that never completed: bytes in the store that are no object.

    ``blob_id`` is the blob it was meant to become (``None`` if the store cannot tell),
    ``handle`` what ``discard_partial`` needs to find it again (a file name, an upload id),
    ``size`` the bytes it holds and ``idle`` the seconds since it last grew (a temp file's last
    write, a multipart upload's newest part or, without parts, its start).
    """

    blob_id: str | None
    handle: str
    size: int
    idle: float


class BlobReader(abc.ABC):
    """A stream of ciphertext bytes from one (possibly ranged) read.

    ``total_size`` is the size of the whole object (not of the range), so that a reader can
    check it against the index before trusting any byte.
    """

    total_size: int

    @abc.abstractmethod
    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all remaining if ``n < 0``); ``b""`` at the end of the range.

        Raises ``StorageError`` if the backend fails mid-stream (connection lost, object
        shorter than announced) and ``ValueError`` after ``close``.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the underlying file or connection. Safe to call twice."""

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore(abc.ABC):
    """The contract every backend MUST honour (checked by ``tests/integration/test_blobstore.py``).

    - ``put`` MUST make the object visible only once it is complete: a failed or interrupted
      put leaves no object under ``blob_id`` (partial uploads are aborted or removed).
    - ``put`` MUST keep memory bounded (by one part size) whatever the length of ``chunks``.
    - Objects are immutable: ``put`` of an existing id MAY overwrite, callers never do it.
    - ``open`` with ``start``/``end`` (inclusive) MUST return exactly those bytes with one
      request; ``end`` past the object end is clipped; ``start`` past the end raises
      ``StorageError``.
    - ``delete`` of a missing id MUST succeed silently (garbage collection is idempotent).
    - Every method MUST reject an id that ``check_blob_id`` refuses with ``ValueError``, before
      any I/O, and MUST raise only ``davserver.errors`` exceptions for backend failures; errors
      raised by the caller's ``chunks`` iterator MUST propagate unchanged.
    - A store MUST be safe to share between threads.
    """

    @abc.abstractmethod
    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of ``chunks`` under ``blob_id``; return the byte count."""

    @abc.abstractmethod
    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open bytes ``start..end`` (inclusive; ``None`` = to the end) of a blob for reading."""

    @abc.abstractmethod
    def stat(self, blob_id: str) -> BlobStat:
        """Return the size of a blob; ``BlobNotFound`` if it does not exist."""

    @abc.abstractmethod
    def delete(self, blob_id: str) -> None:
        """Remove a blob; succeed if it does not exist."""

    @abc.abstractmethod
    def iter_ids(self) -> Iterator[str]:
        """Yield the id of every stored blob (order unspecified)."""

    def partial_uploads(self) -> Iterator[PartialUpload]:
        """Yield every partial upload the store holds (order unspecified).

        A store whose ``put`` can leave nothing behind, even when its process is killed, MAY
        keep this default (none). Raises only ``davserver.errors`` exceptions.
        """
        return iter(())

    def discard_partial(self, partial: PartialUpload) -> None:  # noqa: B027 - optional
        """Remove one partial upload returned by ``partial_uploads``; succeed if it is gone.

        MUST NOT touch a completed object. Callers discard only partials idle for longer than
        a grace period: one still growing would fail its ``put``.
        """

    def probe(self) -> None:
        """Check that the store answers (health checks): return if it does, else raise a
        ``davserver.errors`` exception. The default asks for an object that never exists
        (``PROBE_ID``): ``BlobNotFound`` is an answer."""
        try:
            self.stat(PROBE_ID)
        except BlobNotFound:
            pass

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and pools."""


def read_all(reader: BinaryIO | BlobReader, block: int = 1 << 20) -> bytes:
    """Read a reader to its end (tests and small objects only)."""
    parts: list[bytes] = []
    while True:
        b = reader.read(block)
        if not b:
            return b"".join(parts)
        parts.append(b)


def object_digest() -> hashlib.blake2b:
    """A fresh hash for an object digest (see ``DIGEST_LEN``)."""
    return hashlib.blake2b(digest_size=DIGEST_LEN)


class DigestingChunks:
    """Passes ciphertext chunks through to a store's ``put`` while hashing them: the object
    digest of an upload, computed as it streams, one chunk in memory at a time. ``digest``
    is valid once the iteration has ended."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._hash = object_digest()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._hash.update(chunk)  # hashlib releases the GIL on large buffers
            yield chunk

    def digest(self) -> bytes:
        return self._hash.digest()
