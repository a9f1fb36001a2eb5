"""A guard around any ``BlobStore``: a bulkhead and a circuit breaker for outages and hangs.

Timeouts alone bound how long *one* request waits on a hung object store; they do not stop
forty such requests from occupying every request thread, so that a PROPFIND, which never
touches the store, waits behind them. ``GuardedBlobStore`` wraps a store (``runtime`` wraps
the S3 store in it) and adds two things, both failing fast with ``StoreUnavailable`` (503 with
``Retry-After``):

- **Bulkhead.** At most ``max_waiting`` request threads may be *waiting on the store* at once:
  inside ``open`` (until the response headers arrive), ``stat``, ``delete``, ``iter_ids`` or
  ``put``. A new call beyond that waits for a place only while places are being freed (a
  busy but working store); when none was freed for ``QUEUE_IDLE`` (a hung store) it is
  refused. Measured on a healthy MinIO with 32 clients doing PUT+GET of up to 9 MiB, a
  bulkhead that refused at once answered 2 of 384 requests 503; this one none. Time a ``put``
  spends in the caller's iterator (reading the client's body) is not waiting, and neither is
  reading an opened stream: a long download that is progressing is bounded by the store's
  read timeout per read, not counted here. A ``put`` already admitted is never refused
  half-way; its waits still count against new calls.
- **Circuit breaker.** ``failure_threshold`` consecutive ``StoreUnavailable`` failures of the
  wrapped store (timeouts, refused or lost connections, from any call or stream read) open
  the circuit: for ``reset_after`` seconds every call fails at once. Then one caller probes the
  store with a ``stat`` of a random id (any answer, ``BlobNotFound`` included, means the store
  is back) while the others still fail fast; success closes the circuit, failure opens it
  again. A slow ``put`` therefore never holds the circuit half-open.

A ``delete`` of a blob whose ``put`` just failed with ``StoreUnavailable`` fails at once
too: it is the caller's best-effort cleanup (the vault keeps its GC row when it fails), and
waiting another timeout for it would only delay the client's 503.

Other errors (``BlobNotFound``, ``InsufficientStorage``, access denied, a bad range) are
answers from a working store: they reset the failure count. The guard holds no data and makes
no request of its own except the probe. It is thread-safe; its state is per process.

Hand-written because the libraries do not fit: pybreaker 1.4.1 holds one ``RLock`` across
every guarded call (so it would serialise all blob I/O of the process), and circuitbreaker
2.1.3 keeps its state without any lock; neither has a bulkhead.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from davserver.blobs import BlobReader, BlobStat, BlobStore, PartialUpload
from davserver.errors import DavServerError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RESET_AFTER = 5.0
_FAILED_PUTS_KEPT = 1024
#: A newcomer to a full bulkhead is refused once no place was freed for this long (a working
#: store frees one every few ms under load; a hung one none), or after QUEUE_MAX in all.
QUEUE_IDLE = 0.1
QUEUE_MAX = 2.0


class CircuitBreaker:
    """Consecutive-failure circuit breaker (closed → open → one probe → closed or open)."""

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after: float = DEFAULT_RESET_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        self._probing = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def admit(self) -> bool:
        """Return True if the call may go ahead, False if the caller must probe first.

        Raises ``StoreUnavailable`` while the circuit is open (or another caller probes).
        """
        with self._lock:
            if self._opened_at is None:
                return True
            left = self._opened_at + self.reset_after - self._clock()
            if left > 0 or self._probing:
                raise StoreUnavailable(
                    "blob store unavailable (failing fast after repeated timeouts or refusals)",
                    retry_after=max(1, math.ceil(left)),
                )
            self._probing = True
            return False

    def probe_done(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self._close_locked()
            else:
                self._opened_at = self._clock()

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def failure(self, exc: StoreUnavailable) -> None:
        with self._lock:
            self._failures += 1
            if self._opened_at is None and self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                log.warning(
                    "blob store unavailable (%s); failing fast for %.0f s",
                    exc.reason,
                    self.reset_after,
                )

    def _close_locked(self) -> None:
        if self._opened_at is not None:
            log.warning("blob store answers again; circuit closed")
        self._opened_at = None
        self._failures = 0


class Bulkhead:
    """Counts threads waiting on the store; new ones beyond ``limit`` queue only briefly.

    A full bulkhead is normal under load on a working store: calls finish every few
    milliseconds, and a newcomer waits for a free place as long as places keep being freed
    (up to ``max_queue``). On a hung store nothing finishes: a newcomer that sees no place
    freed for ``idle`` seconds is refused at once, so it holds its thread only that long.
    """

    def __init__(self, limit: int, idle: float = QUEUE_IDLE, max_queue: float = QUEUE_MAX) -> None:
        if limit < 1:
            raise ValueError("bulkhead limit must be at least 1")
        self.limit = limit
        self.idle = idle
        self.max_queue = max_queue
        self._cond = threading.Condition(threading.Lock())
        self.waiting = 0
        self._freed = 0  # places freed so far: progress, as seen by a queued newcomer

    def enter(self, force: bool = False) -> None:
        with self._cond:
            if force or self.waiting < self.limit:
                self.waiting += 1
                return
            deadline = time.monotonic() + self.max_queue
            while self.waiting >= self.limit:
                freed = self._freed
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(min(self.idle, left))
                if left <= 0 or (self._freed == freed and self.waiting >= self.limit):
                    raise StoreUnavailable(
                        f"blob store busy ({self.limit} requests already waiting on it)",
                        retry_after=2,
                    )
            self.waiting += 1

    def leave(self) -> None:
        with self._cond:
            self.waiting -= 1
            self._freed += 1
            self._cond.notify()


class _GuardedReader(BlobReader):
    """Stream reads are not counted as waiting; their timeouts still feed the breaker."""

    def __init__(self, guard: GuardedBlobStore, inner: BlobReader) -> None:
        self._guard = guard
        self._inner = inner
        self.total_size = inner.total_size

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._inner.read(n)
        except StoreUnavailable as exc:
            self._guard.breaker.failure(exc)
            raise
        return data

    def close(self) -> None:
        self._inner.close()


class GuardedBlobStore(BlobStore):
    """``inner`` behind a bulkhead of ``max_waiting`` threads and a circuit breaker."""

    def __init__(
        self,
        inner: BlobStore,
        max_waiting: int,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after: float = DEFAULT_RESET_AFTER,
    ) -> None:
        self.inner = inner
        self.bulkhead = Bulkhead(max_waiting)
        self.breaker = CircuitBreaker(failure_threshold, reset_after)
        self._lock = threading.Lock()
        self._failed_puts: dict[str, None] = {}  # ids whose put just failed, oldest first

    # -- the guard ----------------------------------------------------------------------------

    def _admit(self) -> None:
        """Pass the breaker (probing the store if it is due) and enter the bulkhead."""
        if not self.breaker.admit():
            self._probe()
        self.bulkhead.enter()

    def _probe(self) -> None:
        """One cheap request decides whether the circuit closes (see the module docstring)."""
        ok = False
        try:
            try:
                self.inner.stat(secrets.token_hex(16))
            except StoreUnavailable:
                raise
            except Exception:  # noqa: S110 - BlobNotFound (expected) or another answer: up
                pass
            ok = True
        finally:
            self.breaker.probe_done(ok)

    def _call(self, fn: Callable[[], T]) -> T:
        self._admit()
        try:
            result = fn()
        except StoreUnavailable as exc:
            self.breaker.failure(exc)
            raise
        except DavServerError:
            self.breaker.success()  # an answer from a working store (BlobNotFound, 507, …)
            raise
        finally:
            self.bulkhead.leave()
        self.breaker.success()
        return result

    # -- BlobStore ----------------------------------------------------------------------------

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        try:
            return self._call(lambda: self.inner.put(blob_id, self._not_waiting(chunks)))
        except StoreUnavailable:
            with self._lock:
                self._failed_puts[blob_id] = None
                while len(self._failed_puts) > _FAILED_PUTS_KEPT:
                    del self._failed_puts[next(iter(self._failed_puts))]
            raise

    def _not_waiting(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The caller's chunks, with the bulkhead left while the caller produces each one."""
        it = iter(chunks)
        while True:
            self.bulkhead.leave()
            try:
                chunk = next(it, None)  # chunks are bytes: None is the end
            finally:
                self.bulkhead.enter(force=True)  # admitted once: never refused half-way
            if chunk is None:
                return
            yield chunk

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        return _GuardedReader(self, self._call(lambda: self.inner.open(blob_id, start, end)))

    def stat(self, blob_id: str) -> BlobStat:
        return self._call(lambda: self.inner.stat(blob_id))

    def delete(self, blob_id: str) -> None:
        with self._lock:
            failed_put = self._failed_puts.pop(blob_id, False) is None
        if failed_put:
            # The caller cleans up after a put the store just failed to answer: waiting for
            # another timeout helps nobody. The caller keeps its record of the blob (the
            # vault's GC row), so the collector removes it once the store is back.
            raise StoreUnavailable("blob store unavailable; removal left to the collector")
        self._call(lambda: self.inner.delete(blob_id))

    def iter_ids(self) -> Iterator[str]:
        it = iter(self.inner.iter_ids())
        while True:  # each step of the listing is a call (S3 lists 1,000 keys per request)
            blob_id = self._call(lambda: next(it, None))
            if blob_id is None:
                return
            yield blob_id

    def partial_uploads(self) -> Iterator[PartialUpload]:
        # Explicit, not through __getattr__: BlobStore's default (none) would hide the
        # wrapped store's, and the maintenance loop would never reclaim a partial upload.
        it = iter(self.inner.partial_uploads())
        while True:
            partial = self._call(lambda: next(it, None))
            if partial is None:
                return
            yield partial

    def discard_partial(self, partial: PartialUpload) -> None:
        self._call(lambda: self.inner.discard_partial(partial))

    def probe(self) -> None:
        # The wrapped store's own probe (the local one checks its directory is writable),
        # asked directly: readiness wants the store's state, not the breaker's.
        self.inner.probe()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Optional capabilities of the wrapped store beyond BlobStore (e.g. maintenance
        # methods of one backend) and its attributes pass through, unguarded.
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
