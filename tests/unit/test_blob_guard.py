"""The blob-store guard's logic (bulkhead, circuit breaker) on a small in-memory store.

The real thing — a SIGSTOPped or killed MinIO and versitygw behind a real server — is
``tests/integration/test_s3_faults.py``; these pin down the rules themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from davserver.blobs import (
    BlobReader,
    BlobStat,
    BlobStore,
    PartialUpload,
    check_blob_id,
    read_all,
)
from davserver.blobs.guard import Bulkhead, GuardedBlobStore
from davserver.errors import BlobNotFound, StoreUnavailable
from davserver.vault.reader import InlineBlob

ID = "ab" * 16


class MemoryStore(BlobStore):
    """Dict-backed; ``gate`` (when set) makes every call wait; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gate: threading.Event | None = None
        self.down = False
        self.calls = 0

    def _enter(self) -> None:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.down:
            raise StoreUnavailable("memory store down")

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        check_blob_id(blob_id)
        self._enter()
        data = b"".join(chunks)
        self.blobs[blob_id] = data
        return len(data)

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        self._enter()
        if blob_id not in self.blobs:
            raise BlobNotFound(blob_id)
        return InlineBlob(blob_id, self.blobs[blob_id]).open(blob_id, start, end)

    def stat(self, blob_id: str) -> BlobStat:
        self._enter()
        if blob_id not in self.blobs:
            raise BlobNotFound(blob_id)
        return BlobStat(blob_id, len(self.blobs[blob_id]))

    def delete(self, blob_id: str) -> None:
        self._enter()
        self.blobs.pop(blob_id, None)

    def iter_ids(self) -> Iterator[str]:
        self._enter()
        yield from list(self.blobs)


def test_bulkhead_refuses_beyond_its_limit_at_once() -> None:
    inner = MemoryStore()
    inner.blobs[ID] = b"x"
    guard = GuardedBlobStore(inner, max_waiting=2)
    inner.gate = threading.Event()
    waiting = [threading.Thread(target=guard.stat, args=(ID,)) for _ in range(2)]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 5
    while guard.bulkhead.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(StoreUnavailable) as exc_info:
        guard.stat(ID)
    assert exc_info.value.retry_after >= 1
    assert inner.calls == 2  # the refused call never reached the store
    inner.gate.set()
    for t in waiting:
        t.join()
    assert guard.bulkhead.waiting == 0
    assert guard.stat(ID).size == 1


def test_time_in_the_callers_body_and_in_stream_reads_is_not_waiting() -> None:
    inner = MemoryStore()
    guard = GuardedBlobStore(inner, max_waiting=1)
    seen: list[int] = []

    def body() -> Iterator[bytes]:
        seen.append(guard.bulkhead.waiting)  # producing a chunk: not waiting on the store
        yield b"abc"
        seen.append(guard.bulkhead.waiting)
        yield b"def"

    assert guard.put(ID, body()) == 6
    assert seen == [0, 0]
    reader = guard.open(ID)
    assert guard.bulkhead.waiting == 0  # an open stream holds no place
    assert guard.stat(ID).size == 6  # so another call still gets in (limit 1)
    assert read_all(reader) == b"abcdef"
    reader.close()


def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    inner = MemoryStore()
    inner.blobs[ID] = b"data"
    guard = GuardedBlobStore(inner, max_waiting=4, failure_threshold=3, reset_after=0.3)
    inner.down = True
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            guard.stat(ID)
    assert guard.breaker.is_open
    calls = inner.calls
    with pytest.raises(StoreUnavailable, match="failing fast"):
        guard.open(ID)
    assert inner.calls == calls  # failed without asking the store
    time.sleep(0.35)
    with pytest.raises(StoreUnavailable):  # the probe fails: open again
        guard.stat(ID)
    assert guard.breaker.is_open and inner.calls == calls + 1
    inner.down = False
    time.sleep(0.35)
    with guard.open(ID) as r:  # probe (a stat of a random id: BlobNotFound = up), then the call
        assert read_all(r) == b"data"
    assert not guard.breaker.is_open
    assert inner.calls == calls + 3


def test_other_errors_are_answers_and_reset_the_count() -> None:
    inner = MemoryStore()
    guard = GuardedBlobStore(inner, max_waiting=4, failure_threshold=2)
    inner.down = True
    with pytest.raises(StoreUnavailable):
        guard.stat(ID)
    inner.down = False
    with pytest.raises(BlobNotFound):
        guard.stat(ID)
    inner.down = True
    with pytest.raises(StoreUnavailable):
        guard.stat(ID)
    assert not guard.breaker.is_open  # never two in a row
    with pytest.raises(ValueError):
        guard.put("not-an-id", [b"x"])


def test_cleanup_after_a_failed_put_does_not_wait_again() -> None:
    inner = MemoryStore()
    guard = GuardedBlobStore(inner, max_waiting=4, failure_threshold=10)
    inner.down = True
    with pytest.raises(StoreUnavailable):
        guard.put(ID, [b"x"])
    calls = inner.calls
    with pytest.raises(StoreUnavailable):
        guard.delete(ID)  # the vault keeps its GC row: the collector retries later
    assert inner.calls == calls
    inner.down = False
    guard.delete(ID)  # later deletes go to the store
    assert inner.calls == calls + 1


def test_a_full_bulkhead_queues_while_places_are_freed() -> None:
    """A working store frees places: a newcomer waits for one. A hung one frees none."""
    busy = Bulkhead(1, idle=5.0)
    busy.enter()
    got_in = threading.Event()

    def newcomer() -> None:
        busy.enter()
        got_in.set()

    t = threading.Thread(target=newcomer)
    t.start()
    time.sleep(0.05)
    assert not got_in.is_set()  # queued, not refused
    busy.leave()
    t.join(5)
    assert got_in.is_set() and busy.waiting == 1

    hung = Bulkhead(1, idle=0.05)
    hung.enter()
    with pytest.raises(StoreUnavailable, match="busy"):
        hung.enter()
    hung.enter(force=True)  # an admitted put coming back from its caller's body
    assert hung.waiting == 2


def test_backend_specific_attributes_pass_through() -> None:
    inner = MemoryStore()
    guard = GuardedBlobStore(inner, max_waiting=1)
    assert guard.blobs is inner.blobs  # e.g. S3BlobStore.bucket, or a maintenance method
    with pytest.raises(AttributeError):
        _ = guard.no_such_thing


def test_partial_uploads_of_the_wrapped_store_are_seen_and_discarded() -> None:
    """Not BlobStore's default (none): the maintenance loop must reclaim them through it."""

    class WithPartials(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.partials = [PartialUpload(ID, "h1", 10, 99.0)]

        def partial_uploads(self) -> Iterator[PartialUpload]:
            self._enter()
            yield from list(self.partials)

        def discard_partial(self, partial: PartialUpload) -> None:
            self._enter()
            self.partials.remove(partial)

    inner = WithPartials()
    guard = GuardedBlobStore(inner, max_waiting=1)
    (found,) = list(guard.partial_uploads())
    guard.discard_partial(found)
    assert inner.partials == [] and list(guard.partial_uploads()) == []
