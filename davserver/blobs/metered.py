"""``MeteredBlobStore``: counts and times every call of a wrapped ``BlobStore``.

``runtime.open_vault`` wraps whatever store it made (the S3 store, the local one, or a guard
around them) so that ``davserver_blobstore_requests_total`` and
``davserver_blobstore_request_duration_seconds`` (``davserver.metrics``) cover every backend
the same way. Labels are the operation and the result only, never a blob id:

- ``ok``; ``not_found`` (``BlobNotFound``); ``no_space`` (``InsufficientStorage``, a full
  disk or a provider quota); ``unavailable`` (a ``StorageError`` answered 503: unreachable,
  timed out, the circuit open); ``error`` (any other failure of the store);
- ``aborted``: a ``put`` stopped by the caller's own iterator (the client's body was short,
  its checksum wrong, the connection lost), not by the store.

Anything else (``root``, ``inner``…) is delegated to the wrapped store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from davserver import metrics
from davserver.blobs import BlobReader, BlobStat, BlobStore, PartialUpload
from davserver.errors import BlobNotFound, InsufficientStorage, StorageError

T = TypeVar("T")


def _result(exc: BaseException) -> str:
    if isinstance(exc, BlobNotFound):
        return "not_found"
    if isinstance(exc, InsufficientStorage):
        return "no_space"
    if isinstance(exc, StorageError) and exc.status == 503:
        return "unavailable"
    return "error"


class _FromCaller(Exception):
    """Carries an exception raised by the caller's chunks iterator through ``put``."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


class MeteredBlobStore(BlobStore):
    """See the module docstring."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self._m = metrics.get()

    def __getattr__(self, name: str) -> Any:  # only called for names not found here
        return getattr(self.inner, name)

    def _observe(self, operation: str, result: str, started: float) -> None:
        self._m.blob_requests.labels(operation, result).inc()
        self._m.blob_duration.labels(operation, result).observe(time.monotonic() - started)

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            value = fn()
        except ValueError:
            raise  # an invalid id: refused before any I/O, not a store request
        except Exception as exc:
            self._observe(operation, _result(exc), started)
            raise
        self._observe(operation, "ok", started)
        return value

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        def guarded() -> Iterator[bytes]:
            it = iter(chunks)
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                except BaseException as exc:
                    raise _FromCaller(exc) from exc
                yield chunk

        started = time.monotonic()
        try:
            n = self.inner.put(blob_id, guarded())
        except _FromCaller as wrapped:
            self._observe("put", "aborted", started)
            raise wrapped.exc from None
        except ValueError:
            raise
        except Exception as exc:
            self._observe("put", _result(exc), started)
            raise
        self._observe("put", "ok", started)
        return n

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        return self._call("open", lambda: self.inner.open(blob_id, start, end))

    def stat(self, blob_id: str) -> BlobStat:
        return self._call("stat", lambda: self.inner.stat(blob_id))

    def delete(self, blob_id: str) -> None:
        self._call("delete", lambda: self.inner.delete(blob_id))

    def iter_ids(self) -> Iterator[str]:
        # Timed until the listing ends (or fails); counted once per listing.
        started = time.monotonic()
        try:
            yield from self.inner.iter_ids()
        except Exception as exc:
            self._observe("list", _result(exc), started)
            raise
        self._observe("list", "ok", started)

    def partial_uploads(self) -> Iterator[PartialUpload]:
        started = time.monotonic()
        try:
            yield from self.inner.partial_uploads()
        except Exception as exc:
            self._observe("list_partial", _result(exc), started)
            raise
        self._observe("list_partial", "ok", started)

    def discard_partial(self, partial: PartialUpload) -> None:
        self._call("discard_partial", lambda: self.inner.discard_partial(partial))

    def probe(self) -> None:
        self._call("probe", self.inner.probe)

    def close(self) -> None:
        self.inner.close()
