"""A blob store in a local directory: the embedded default.

Layout: ``root/ab/cd/<id>`` (two levels of fan-out by the id's first four hex characters, so no
directory holds more than a few thousand entries even with tens of millions of blobs) and
``root/tmp/`` for uploads in progress. This module owns that layout and nothing else; it sees
only blob ids and ciphertext bytes.

Durability: ``put`` writes to a temporary file in ``root/tmp``, fsyncs it, renames it into
place (atomic on POSIX, and ``tmp`` is on the same file system) and fsyncs the directory, so
after ``put`` returns the blob survives a power loss, and a crash at any point leaves either no
blob or the complete one. Leftover temporary files of crashed processes are partial uploads
(``partial_uploads``, named ``<blob id>.<random>``): the server's maintenance loop removes those
idle for longer than ``gc.upload_grace``, and opening a store sweeps those older than a day.

A full disk (``ENOSPC``, ``EDQUOT``) is ``DiskFull``; the temporary file is removed at once, so
a refused upload gives its space back.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from davserver.blobs import BlobReader, BlobStat, BlobStore, PartialUpload, check_blob_id
from davserver.errors import BlobNotFound, DavServerError, DiskFull, StorageError

log = logging.getLogger(__name__)

_FANOUT = re.compile(r"^[0-9a-f]{2}$")
_BLOB_NAME = re.compile(r"^[0-9a-f]{32}$")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_TMP_MAX_AGE = 24 * 3600.0


def _os_error(op: str, exc: OSError) -> DavServerError:
    """Map an ``OSError`` to our tree. The message names the operation and errno, no path."""
    if exc.errno in _FULL:
        log.warning("local blob store: disk full (%s)", op)
        return DiskFull(f"no space left for the blob store ({op}: {errno.errorcode[exc.errno]})")
    code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StorageError(f"local blob store {op} failed: {code}")


#: Start writing a large blob back to disk every this many bytes, while the rest arrives, so
#: the fsync at the end finds little left to flush (Linux ``sync_file_range``).
WRITEBACK_EVERY = 16 << 20


def _writeback_starter() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _writeback_starter()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages in the range; do not wait


def _start_writeback(fd: int, start: int, length: int) -> None:
    """Ask the kernel to begin writing ``length`` bytes from ``start`` (a hint: durability
    still comes from the fsync after the last byte; a failure here is ignored)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, start, length, _SYNC_FILE_RANGE_WRITE)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalFileReader(BlobReader):
    """Bytes ``start..start+length-1`` of an open blob file."""

    def __init__(self, f: BinaryIO, total_size: int, start: int, length: int) -> None:
        self._f: BinaryIO | None = f
        self.total_size = total_size
        self._remaining = length
        if start:
            f.seek(start)

    def read(self, n: int = -1) -> bytes:
        if self._f is None:
            raise ValueError("read from a closed blob reader")
        if self._remaining <= 0 or n == 0:
            return b""
        n = self._remaining if n < 0 else min(n, self._remaining)
        try:
            data = self._f.read(n)
        except OSError as exc:
            raise _os_error("read", exc) from exc
        if not data:
            # The file shrank under us: objects are immutable, so this is a storage fault.
            raise StorageError("local blob store read failed: object truncated")
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root`` (created, mode 0700, if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._tmp = os.path.join(self.root, "tmp")
        try:
            os.makedirs(self._tmp, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _os_error("init", exc) from exc
        self._sweep_tmp()

    def probe(self) -> None:
        """The blob directory and its ``tmp`` are there and writable (a missing or
        read-only mount is an error; a missing object would not be)."""
        for path in (self.root, self._tmp):
            if not os.path.isdir(path):
                raise StorageError("local blob store: directory missing")
            if not os.access(path, os.W_OK | os.X_OK):
                raise StorageError("local blob store: directory not writable")

    def _sweep_tmp(self) -> None:
        cutoff = time.time() - _TMP_MAX_AGE
        try:
            with os.scandir(self._tmp) as it:
                for entry in it:
                    try:
                        if entry.is_file() and entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                    except OSError:
                        pass
        except OSError as exc:  # not fatal: the next put reports a real problem
            log.warning("cannot sweep the blob store's tmp directory: %s", exc.strerror)

    def _path(self, blob_id: str) -> str:
        check_blob_id(blob_id)
        return os.path.join(self.root, blob_id[0:2], blob_id[2:4], blob_id)

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        path = self._path(blob_id)
        try:
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix=blob_id + ".")
        except OSError as exc:
            raise _os_error("put", exc) from exc
        done = False
        try:
            total = flushed = 0
            with os.fdopen(fd, "wb", buffering=0) as f:
                # Errors of the caller's iterator (e.g. a short body) propagate unchanged.
                for chunk in chunks:
                    if chunk:
                        try:
                            f.write(chunk)  # FileIO.write on a regular file writes it all
                        except OSError as exc:
                            raise _os_error("write", exc) from exc
                        total += len(chunk)
                        if total - flushed >= WRITEBACK_EVERY:
                            _start_writeback(fd, flushed, total - flushed)
                            flushed = total
                try:
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise _os_error("fsync", exc) from exc
            parent = os.path.dirname(path)
            try:
                created = self._makedirs(parent)
                os.replace(tmp, path)
                done = True
                _fsync_dir(parent)
                for d in created:  # new fan-out directories: make their entries durable too
                    _fsync_dir(os.path.dirname(d))
            except OSError as exc:
                raise _os_error("rename", exc) from exc
            return total
        finally:
            if not done:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _makedirs(self, parent: str) -> list[str]:
        """Create the fan-out directories of ``parent``; return those this call created."""
        created = []
        for d in (os.path.dirname(parent), parent):
            try:
                os.mkdir(d, 0o700)
                created.append(d)
            except FileExistsError:
                pass
        return created

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError("invalid byte range")
        path = self._path(blob_id)
        try:
            f = open(path, "rb")  # closed by the returned reader
        except FileNotFoundError:
            raise BlobNotFound(f"blob {blob_id} not found") from None
        except OSError as exc:
            raise _os_error("open", exc) from exc
        try:
            size = os.fstat(f.fileno()).st_size
            ranged = start > 0 or end is not None
            if ranged and start >= size:
                raise StorageError("range starts past the end of the blob")
            last = size - 1 if end is None else min(end, size - 1)
            return LocalFileReader(f, size, start, last - start + 1)
        except BaseException as exc:
            f.close()
            if isinstance(exc, OSError):
                raise _os_error("open", exc) from exc
            raise

    def stat(self, blob_id: str) -> BlobStat:
        path = self._path(blob_id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {blob_id} not found") from None
        except OSError as exc:
            raise _os_error("stat", exc) from exc
        return BlobStat(blob_id, st.st_size, st.st_mtime)

    def delete(self, blob_id: str) -> None:
        path = self._path(blob_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error("delete", exc) from exc

    def partial_uploads(self) -> Iterator[PartialUpload]:
        now = time.time()
        try:
            with os.scandir(self._tmp) as it:
                entries = list(it)
        except OSError as exc:
            raise _os_error("list", exc) from exc
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # its put finished (renamed) or failed (removed) meanwhile
            except OSError as exc:
                raise _os_error("list", exc) from exc
            head = entry.name.split(".", 1)[0]
            yield PartialUpload(
                blob_id=head if _BLOB_NAME.match(head) else None,
                handle=entry.name,
                size=st.st_size,
                idle=max(0.0, now - st.st_mtime),
            )

    def discard_partial(self, partial: PartialUpload) -> None:
        name = partial.handle
        if not name or "/" in name or name in (".", ".."):
            raise ValueError("invalid partial upload handle")
        try:
            os.unlink(os.path.join(self._tmp, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error("delete", exc) from exc

    def iter_ids(self) -> Iterator[str]:
        try:
            for d1 in self._entries(self.root, _FANOUT, dirs=True):
                for d2 in self._entries(os.path.join(self.root, d1), _FANOUT, dirs=True):
                    leaf = os.path.join(self.root, d1, d2)
                    for name in self._entries(leaf, _BLOB_NAME, dirs=False):
                        if name.startswith(d1 + d2):
                            yield name
        except OSError as exc:
            raise _os_error("list", exc) from exc

    @staticmethod
    def _entries(path: str, pattern: re.Pattern[str], dirs: bool) -> list[str]:
        # A list, not a generator: no directory handle stays open across the caller's yields.
        with os.scandir(path) as it:
            return sorted(
                e.name
                for e in it
                if pattern.match(e.name) and (e.is_dir() if dirs else e.is_file())
            )
