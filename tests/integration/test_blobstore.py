"""The blob-store conformance suite: one set of tests, run on every backend.

Each test takes the ``store`` fixture, parametrized over ``local`` (a directory under
``tmp_path``) and ``s3`` (a real MinIO from ``tests/harness/minio.py``, or the service named by
``DAVSERVER_TEST_S3_ENDPOINT``). The S3 store uses the smallest part size we allow in
production (8 MiB), so a ~20 MiB body exercises the multipart path. Backend-specific checks
(file layout, incomplete multipart uploads, dead endpoints) follow the shared ones.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import secrets
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio import Minio

from davserver.blobs import BlobStore, check_blob_id, read_all
from davserver.blobs.local import LocalBlobStore
from davserver.blobs.s3 import S3BlobStore
from davserver.errors import (
    BlobNotFound,
    ConfigError,
    DiskFull,
    StorageError,
    StoreUnavailable,
)
from tests.harness.minio import MinioServer, make_minio_client, make_s3_store

MiB = 1 << 20
PART = 8 * MiB  # S3 part size used by these tests (DESIGN.md 5: parts >= 8 MiB)


def new_id() -> str:
    return secrets.token_hex(16)


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible pseudo-random bytes: no period, so an offset error cannot hide."""
    return random.Random(seed).randbytes(n)


def chunked(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """Yield ``data`` in pieces whose sizes cycle through ``sizes``."""
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        yield data[pos : pos + step]
        pos += step
        i += 1


class ClientGoneError(Exception):
    """Raised by a caller's iterator in the middle of an upload."""


def failing(data: bytes, chunk: int = MiB) -> Iterator[bytes]:
    yield from chunked(data, [chunk])
    raise ClientGoneError("client went away")


# The S3 implementations (tests/harness/versitygw.py): server and bucket fixtures per id.
_S3_FIXTURES = {
    "s3": ("minio_server", "s3_bucket"),
    "versitygw": ("versitygw_server", "versitygw_bucket"),
}


@pytest.fixture(
    params=["local", *(pytest.param(name, marks=pytest.mark.s3) for name in _S3_FIXTURES)]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    s: BlobStore
    if request.param == "local":
        s = LocalBlobStore(tmp_path / "blobs")
    else:
        server_fixture, bucket_fixture = _S3_FIXTURES[request.param]
        server = request.getfixturevalue(server_fixture)
        bucket = request.getfixturevalue(bucket_fixture)
        s = make_s3_store(server, bucket, part_size=PART, prefix=f"t-{secrets.token_hex(6)}/")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def s3_client(s3_service: MinioServer) -> Minio:
    return make_minio_client(s3_service)


def sdk_client(store: BlobStore) -> Minio | None:
    """The SDK client an S3 store talks through (to inspect its bucket), else ``None``."""
    return store._client if isinstance(store, S3BlobStore) else None


def assert_absent(store: BlobStore, blob_id: str) -> None:
    with pytest.raises(BlobNotFound):
        store.stat(blob_id)
    with pytest.raises(BlobNotFound):
        store.open(blob_id)
    assert blob_id not in set(store.iter_ids())


def assert_no_leftovers(store: BlobStore, blob_id: str, client: Minio | None = None) -> None:
    """No temporary file (local) or incomplete multipart upload (S3) remains for ``blob_id``."""
    if isinstance(store, LocalBlobStore):
        assert os.listdir(os.path.join(store.root, "tmp")) == []
    elif isinstance(store, S3BlobStore):
        assert client is not None
        # MinIO lists uploads only for an exact object name, which is what we have.
        uploads = client._list_multipart_uploads(store.bucket, prefix=store.prefix + blob_id)
        assert [u.object_name for u in uploads.uploads] == []


# -- round trips --------------------------------------------------------------------------------


def test_put_stat_open(store: BlobStore) -> None:
    data = pattern(100_000, 1)
    blob_id = new_id()
    assert store.put(blob_id, [data]) == len(data)
    assert store.stat(blob_id).size == len(data)
    assert store.stat(blob_id).blob_id == blob_id
    with store.open(blob_id) as r:
        assert r.total_size == len(data)
        assert read_all(r, 7000) == data
        assert r.read() == b""


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),  # first byte
        (99_999, 99_999),  # last byte
        (12_345, 54_320),  # middle
        (99_000, 10**9),  # end past the object: clipped
        (99_999, None),  # open-ended from the last byte
        (50_000, None),  # open-ended from the middle
        (0, 99_999),  # the whole object, as a range
    ],
)
def test_ranged_open(store: BlobStore, start: int, end: int | None) -> None:
    data = pattern(100_000, 2)
    blob_id = new_id()
    store.put(blob_id, [data])
    with store.open(blob_id, start, end) as r:
        assert r.total_size == len(data)  # the object's size, not the range's
        got = read_all(r, 4096)
    assert got == data[start : None if end is None else end + 1]


def test_read_sizes(store: BlobStore) -> None:
    data = pattern(10_000, 3)
    blob_id = new_id()
    store.put(blob_id, [data])
    with store.open(blob_id, 100, 199) as r:
        assert r.read(0) == b""
        assert r.read(10) == data[100:110]
        assert r.read(-1) == data[110:200]
        assert r.read(10) == b""
    r = store.open(blob_id)
    r.close()
    r.close()  # safe twice
    with pytest.raises(ValueError):
        r.read(1)


def test_range_errors(store: BlobStore) -> None:
    blob_id = new_id()
    store.put(blob_id, [b"0123456789"])
    with pytest.raises(StorageError) as exc_info:
        store.open(blob_id, 10, 20)  # starts past the end
    assert not isinstance(exc_info.value, BlobNotFound)
    with pytest.raises(ValueError):
        store.open(blob_id, 5, 4)
    with pytest.raises(ValueError):
        store.open(blob_id, -1, 4)
    with store.open(blob_id, 9, 9) as r:  # still fine: the last byte
        assert read_all(r) == b"9"


def test_many_small_chunks(store: BlobStore) -> None:
    data = pattern(300_000, 4)
    blob_id = new_id()
    assert store.put(blob_id, chunked(data, [1, 7, 64, 333, 0, 4096])) == len(data)
    with store.open(blob_id) as r:
        assert read_all(r) == data


def test_few_large_chunks(store: BlobStore) -> None:
    data = pattern(7 * MiB + 3, 5)  # just under one part: one PUT on S3
    blob_id = new_id()
    assert store.put(blob_id, chunked(data, [3 * MiB])) == len(data)
    assert store.stat(blob_id).size == len(data)
    with store.open(blob_id, 3 * MiB - 5, 3 * MiB + 5) as r:
        assert read_all(r) == data[3 * MiB - 5 : 3 * MiB + 6]


def test_empty_object(store: BlobStore) -> None:
    for chunks in ([], [b"", b""]):
        blob_id = new_id()
        assert store.put(blob_id, chunks) == 0
        assert store.stat(blob_id).size == 0
        with store.open(blob_id) as r:
            assert r.total_size == 0
            assert r.read() == b""
        with pytest.raises(StorageError):
            store.open(blob_id, 0, 0)  # no byte 0 to start at


def test_multipart_body(store: BlobStore, request: pytest.FixtureRequest) -> None:
    """A body of 2.5 parts, in chunks that straddle part boundaries."""
    data = pattern(20 * MiB + 12_345, 6)
    blob_id = new_id()
    assert store.put(blob_id, chunked(data, [MiB + 17, 3 * MiB - 1, 511])) == len(data)
    assert store.stat(blob_id).size == len(data)
    with store.open(blob_id) as r:
        assert r.total_size == len(data)
        assert read_all(r) == data
    with store.open(blob_id, PART - 10, PART + 10) as r:  # across a part boundary
        assert read_all(r) == data[PART - 10 : PART + 11]
    with store.open(blob_id, len(data) - 3) as r:
        assert read_all(r) == data[-3:]
    if isinstance(store, S3BlobStore):
        # A multipart object's ETag ends in "-<number of parts>": 8 + 8 + 4 MiB.
        client = store._client
        etag = client.stat_object(store.bucket, store.prefix + blob_id).etag
        assert etag is not None and etag.endswith("-3")


def test_part_boundaries(store: BlobStore, request: pytest.FixtureRequest) -> None:
    """Exactly one part is one PUT; one byte more is a multipart upload of two parts."""
    exact, over = new_id(), new_id()
    data = pattern(PART + 1, 7)
    assert store.put(exact, chunked(data[:PART], [MiB])) == PART
    assert store.put(over, chunked(data, [MiB])) == PART + 1
    with store.open(over, PART - 1) as r:
        assert read_all(r) == data[PART - 1 :]
    with store.open(exact, PART - 1) as r:
        assert read_all(r) == data[PART - 1 : PART]
    if isinstance(store, S3BlobStore):
        client = store._client
        assert "-" not in (client.stat_object(store.bucket, store.prefix + exact).etag or "")
        assert (client.stat_object(store.bucket, store.prefix + over).etag or "").endswith("-2")


# -- failures leave nothing behind --------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MiB, 2 * PART + MiB], ids=["single-put", "multipart"])
def test_failing_iterator_leaves_nothing(
    store: BlobStore, request: pytest.FixtureRequest, size: int
) -> None:
    blob_id = new_id()
    with pytest.raises(ClientGoneError):  # the caller's own exception, unchanged
        store.put(blob_id, failing(pattern(size, 8)))
    assert_absent(store, blob_id)
    client = sdk_client(store)
    assert_no_leftovers(store, blob_id, client)
    # The id is still usable afterwards.
    assert store.put(blob_id, [b"second try"]) == 10
    with store.open(blob_id) as r:
        assert read_all(r) == b"second try"


def test_interrupt_aborts_multipart(store: BlobStore, request: pytest.FixtureRequest) -> None:
    """Even a BaseException (Ctrl-C, a killed worker) from the iterator aborts the upload."""

    def interrupted() -> Iterator[bytes]:
        yield pattern(PART + MiB, 9)
        raise KeyboardInterrupt

    blob_id = new_id()
    with pytest.raises(KeyboardInterrupt):
        store.put(blob_id, interrupted())
    assert_absent(store, blob_id)
    client = sdk_client(store)
    assert_no_leftovers(store, blob_id, client)


@pytest.mark.s3
def test_s3_part_failure_aborts(
    s3_service: MinioServer,
    s3_service_bucket: str,
    s3_client: Minio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A part the service never receives: StorageError, upload aborted, nothing visible."""
    store = make_s3_store(s3_service, s3_service_bucket, part_size=PART, prefix="fail/")
    real_upload_part = store._client._upload_part
    calls = []

    def flaky(*args: Any) -> str:
        calls.append(args[-1])
        if args[-1] == 2:
            raise urllib3.exceptions.ProtocolError("Connection aborted.")
        return real_upload_part(*args)

    monkeypatch.setattr(store._client, "_upload_part", flaky)
    blob_id = new_id()
    with pytest.raises(StorageError) as exc_info:
        store.put(blob_id, chunked(pattern(6 * PART, 10), [MiB]))
    assert not isinstance(exc_info.value, BlobNotFound)
    # Parts go out concurrently: part 2's failure stops the upload before the body ends.
    assert 1 in calls and 2 in calls
    assert max(calls) < 7
    assert_absent(store, blob_id)
    assert_no_leftovers(store, blob_id, s3_client)


@pytest.mark.s3
def test_leftover_check_is_not_vacuous(s3_client: Minio, s3_service_bucket: str) -> None:
    """The listing used by ``assert_no_leftovers`` does show an incomplete upload."""
    key = "probe/" + new_id()
    upload_id = s3_client._create_multipart_upload(s3_service_bucket, key, {})
    try:
        listed = s3_client._list_multipart_uploads(s3_service_bucket, prefix=key).uploads
        assert [u.upload_id for u in listed] == [upload_id]
    finally:
        s3_client._abort_multipart_upload(s3_service_bucket, key, upload_id)


# -- delete, list, missing, invalid -------------------------------------------------------------


def test_delete_is_idempotent(store: BlobStore) -> None:
    blob_id = new_id()
    store.put(blob_id, [b"x" * 100])
    store.delete(blob_id)
    assert_absent(store, blob_id)
    store.delete(blob_id)  # again
    store.delete(new_id())  # never existed


def test_iter_ids(store: BlobStore) -> None:
    assert list(store.iter_ids()) == []
    ids = {new_id() for _ in range(12)}
    ids.add("0000" + new_id()[4:])  # two ids in one fan-out directory
    ids.add("0000" + new_id()[4:])
    for blob_id in ids:
        store.put(blob_id, [blob_id.encode()])
    listed = list(store.iter_ids())
    assert sorted(listed) == sorted(ids)
    victim = sorted(ids)[0]
    store.delete(victim)
    assert set(store.iter_ids()) == ids - {victim}


def test_missing_blob(store: BlobStore) -> None:
    blob_id = new_id()
    with pytest.raises(BlobNotFound):
        store.stat(blob_id)
    with pytest.raises(BlobNotFound):
        store.open(blob_id)
    with pytest.raises(BlobNotFound):
        store.open(blob_id, 10, 20)


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "../../etc/passwd", "A" * 32, "0" * 31, "0" * 33, "0" * 30 + "/x", "g" * 32],
)
def test_invalid_blob_id(store: BlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        check_blob_id(bad)
    with pytest.raises(ValueError):
        store.put(bad, [b"x"])
    with pytest.raises(ValueError):
        store.open(bad)
    with pytest.raises(ValueError):
        store.stat(bad)
    with pytest.raises(ValueError):
        store.delete(bad)


def test_concurrent_use(store: BlobStore) -> None:
    """One store shared by request threads (as under cheroot)."""
    errors: list[BaseException] = []
    ids = [new_id() for _ in range(8)]

    def worker(blob_id: str) -> None:
        try:
            body = pattern(200_000, int(blob_id[:2], 16))
            store.put(blob_id, chunked(body, [10_000]))
            with store.open(blob_id, 1000, 1999) as r:
                assert read_all(r) == body[1000:2000]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(store.iter_ids()) == set(ids)


def test_partial_reads_do_not_poison_connections(store: BlobStore) -> None:
    """Closing a reader early (a client that stops a download) keeps later reads correct."""
    data = pattern(3 * MiB, 11)
    blob_id = new_id()
    store.put(blob_id, [data])
    for i in range(20):
        with store.open(blob_id, i) as r:
            assert r.read(10) == data[i : i + 10]
        with store.open(blob_id, len(data) - 1000 - i) as r:  # small rest: drained on close
            assert r.read(1) == data[len(data) - 1000 - i : len(data) - 999 - i]
    with store.open(blob_id) as r:
        assert read_all(r) == data


# -- memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunk", "count"), [(MiB, 256), (64 * MiB, 4)], ids=["1MiB", "64MiB"])
def test_put_memory_is_bounded(store: BlobStore, chunk: int, count: int) -> None:
    """256 MiB from a generator: memory the store allocates stays bounded by a few parts.

    The generator yields one preallocated block again and again, so what tracemalloc sees is
    the store's own buffering (with 64 MiB chunks: parts must be cut out of a chunk, not made
    by copying it whole).
    """
    block = pattern(chunk, 12)

    def body() -> Iterator[bytes]:
        for _ in range(count):
            yield block

    blob_id = new_id()
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        assert store.put(blob_id, body()) == 256 * MiB
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert store.stat(blob_id).size == 256 * MiB
    with store.open(blob_id, 256 * MiB - chunk - 1, 256 * MiB - chunk) as r:
        assert read_all(r) == block[-1:] + block[:1]
    store.delete(blob_id)
    # The part being filled, the parts in flight, and slack for the one being cut.
    limit = (getattr(store, "upload_concurrency", 1) + 2) * PART
    assert peak < limit, f"put peaked at {peak / MiB:.1f} MiB"


# -- backend specifics: local -------------------------------------------------------------------


def test_local_layout(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    blob_id = "abcd" + new_id()[4:]
    store.put(blob_id, [b"ciphertext"])
    path = tmp_path / "blobs" / "ab" / "cd" / blob_id
    assert path.read_bytes() == b"ciphertext"
    assert os.listdir(tmp_path / "blobs" / "tmp") == []
    # Strays are not blobs: a temp file, a foreign file, a misplaced id.
    (tmp_path / "blobs" / "tmp" / (new_id() + ".xyz")).write_bytes(b"partial")
    (tmp_path / "blobs" / "ab" / "cd" / "README").write_bytes(b"")
    (tmp_path / "blobs" / "ab" / "cd" / ("ffff" + new_id()[4:])).write_bytes(b"")
    assert list(store.iter_ids()) == [blob_id]


def test_local_starts_writeback_while_a_large_blob_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITEBACK_EVERY bytes the written range is handed to sync_file_range, so the
    final fsync has little left; the blob is intact either way."""
    import davserver.blobs.local as local

    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        local,
        "_sync_file_range",
        lambda fd, start, length, flags: calls.append((start, length, flags)),
    )
    store = LocalBlobStore(tmp_path / "blobs")
    data = pattern(2 * local.WRITEBACK_EVERY + 3 * MiB + 7, 9)
    blob_id = new_id()
    assert store.put(blob_id, chunked(data, [MiB])) == len(data)
    step = local.WRITEBACK_EVERY
    assert [(s, n) for s, n, _ in calls] == [(0, step), (step, step)]
    assert all(flags == 2 for _, _, flags in calls)  # SYNC_FILE_RANGE_WRITE: never waits
    with store.open(blob_id) as r:
        assert read_all(r) == data


def test_local_sweeps_old_temp_files(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path)
    old, young = tmp_path / "tmp" / "old", tmp_path / "tmp" / "young"
    old.write_bytes(b"x")
    young.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    LocalBlobStore(tmp_path)
    assert sorted(os.listdir(tmp_path / "tmp")) == ["young"]


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (errno.ENOSPC, DiskFull),  # a full disk, not a quota: 507 sufficient-disk-space
        (errno.EDQUOT, DiskFull),
        (errno.EIO, StorageError),
    ],
)
def test_local_disk_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, expected: type[Exception]
) -> None:
    store = LocalBlobStore(tmp_path)

    def fail(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", fail)  # the store's fsync of the temp file
    blob_id = new_id()
    with pytest.raises(expected) as exc_info:
        store.put(blob_id, [b"x" * 1000])
    assert type(exc_info.value) is expected
    monkeypatch.undo()
    assert_absent(store, blob_id)
    assert_no_leftovers(store, blob_id)


# -- backend specifics: S3 ----------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("region", [None, "us-east-1"], ids=["region-lookup", "region-given"])
def test_s3_dead_endpoint(region: str | None) -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    store = S3BlobStore(
        f"127.0.0.1:{closed_port()}",
        "davtest-dead",
        "AKIDEXAMPLE",
        secret,
        secure=False,
        region=region,
    )
    blob_id = new_id()
    operations: dict[str, Callable[[], object]] = {
        "put": lambda: store.put(blob_id, [b"data"]),
        "put-multipart": lambda: store.put(blob_id, chunked(pattern(PART + 1), [MiB])),
        "stat": lambda: store.stat(blob_id),
        "open": lambda: store.open(blob_id),
        "open-ranged": lambda: store.open(blob_id, 1, 2),
        "delete": lambda: store.delete(blob_id),
        "iter_ids": lambda: list(store.iter_ids()),
    }
    for name, op in operations.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as exc_info:
            op()
        elapsed = time.monotonic() - started
        assert type(exc_info.value) is StoreUnavailable, name  # what the guard counts
        assert elapsed < 5, f"{name} took {elapsed:.1f} s"
        message = str(exc_info.value)
        assert "unreachable" in message and secret not in message, message


@pytest.mark.s3
def test_s3_missing_bucket_is_storage_error(s3_service: MinioServer) -> None:
    store = make_s3_store(s3_service, "davtest-missing-" + secrets.token_hex(4))
    blob_id = new_id()
    for op in (
        lambda: store.stat(blob_id),
        lambda: store.open(blob_id),
        lambda: store.put(blob_id, [b"x"]),
        lambda: store.delete(blob_id),
        lambda: list(store.iter_ids()),
    ):
        with pytest.raises(StorageError) as exc_info:
            op()
        assert type(exc_info.value) is StorageError
        assert "does not exist" in str(exc_info.value)


@pytest.mark.s3
def test_s3_wrong_credentials(s3_service: MinioServer, s3_service_bucket: str) -> None:
    secret = "wrong-" + secrets.token_hex(8)
    store = S3BlobStore(
        s3_service.endpoint,
        s3_service_bucket,
        s3_service.access_key,
        secret,
        secure=s3_service.secure,
    )
    with pytest.raises(StorageError) as exc_info:
        store.stat(new_id())
    assert type(exc_info.value) is StorageError
    assert secret not in str(exc_info.value) and s3_service.secret_key not in str(exc_info.value)


@pytest.mark.s3
def test_s3_create_bucket_and_object_shape(s3_service: MinioServer, s3_client: Minio) -> None:
    """``create_bucket`` works (twice); objects carry no metadata beyond the content type."""
    bucket = "davtest-create-" + secrets.token_hex(4)
    store = make_s3_store(s3_service, bucket, create_bucket=True, prefix="blobs/")
    try:
        make_s3_store(s3_service, bucket, create_bucket=True).close()  # exists: no error
        blob_id = new_id()
        store.put(blob_id, [b"ciphertext"])
        obj = s3_client.stat_object(bucket, "blobs/" + blob_id)
        assert obj.size == 10
        assert obj.content_type == "application/octet-stream"
        meta = {k.lower() for k in (obj.metadata or {})}
        assert not {k for k in meta if k.startswith("x-amz-meta-")}
        store.delete(blob_id)
    finally:
        store.close()
        s3_client.remove_bucket(bucket)


def test_s3_part_size_growth() -> None:
    """Part sizes double every 1,000 parts, so 10,000 parts cover S3's 5 TiB object limit."""
    store = S3BlobStore("127.0.0.1:9", "davtest-unused", "a", "b", secure=False, part_size=PART)
    sizes = [store.part_size_for(n) for n in range(1, 10_001)]
    assert sizes[0] == sizes[999] == PART
    assert sizes[1000] == 2 * PART
    assert max(sizes) <= 5 << 30
    assert sum(sizes) >= 5 << 40
    assert all(s >= PART for s in sizes)


@pytest.mark.parametrize(
    "kw",
    [
        {"part_size": 5 * MiB},  # below DESIGN.md's 8 MiB
        {"part_size": 6 << 30},  # above S3's 5 GiB
        {"bucket": "no/slash"},
        {"prefix": "/abs/"},
        {"endpoint": "http://127.0.0.1:9000/path"},
    ],
)
def test_s3_rejects_bad_configuration(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"endpoint": "127.0.0.1:9", "bucket": "davtest-x", **kw}
    with pytest.raises(ConfigError):
        S3BlobStore(access_key="a", secret_key="b", secure=False, **args)
