"""A blob store in an S3-compatible service (MinIO, AWS S3, …) through the ``minio`` SDK.

This module owns the mapping of the ``BlobStore`` contract onto S3 requests and of every SDK,
HTTP and socket error onto ``davserver.errors``. It sends only ciphertext: the object key is
``prefix + blob_id``, there is no user metadata and the only content type is
``application/octet-stream``, so the service learns object ids, sizes and access patterns and
nothing else (DESIGN.md 2, 5).

Uploads (``put``) take an iterable of unknown total length:

- a body that fits in one part is sent as a single PUT;
- a longer one becomes a multipart upload. Parts are exactly ``part_size`` bytes (the last one
  shorter); after every 1,000 parts the part size doubles (capped at S3's 5 GiB), so the
  10,000-part limit refuses nothing below S3's 5 TiB object limit (DESIGN.md 8). The first
  1,000 parts (8 GiB at the default 8 MiB) all have the configured size.
- up to ``upload_concurrency`` parts (default 3) are sent at once while the next one fills, so
  encryption and the network overlap; memory holds at most that many parts plus one;
- on *any* failure — a refused part, a dead endpoint, the caller's iterator raising, even
  ``KeyboardInterrupt`` — the multipart upload is aborted, so no partial object ever becomes
  visible under the key. Should the abort itself fail (endpoint gone), the parts stay invisible
  but billable: give the bucket an ``AbortIncompleteMultipartUpload`` lifecycle rule as a
  backstop. Errors raised by the caller's iterator propagate unchanged.

Reads (``open``) are one GET, ranged when asked; the response is streamed, never loaded whole.

Error mapping: ``NoSuchKey`` → ``BlobNotFound``. A missing bucket is a ``StorageError``, not a
``BlobNotFound``: it means misconfiguration or an outage, and reporting every blob as missing
would let a garbage collector or an integrity check draw the wrong conclusion (a HEAD cannot
tell a missing bucket from a missing key, so ``stat`` checks the bucket on a miss). A full
drive or exceeded quota → ``InsufficientStorage``. A refused, lost or timed-out
connection → ``StoreUnavailable`` (the ``StorageError`` that ``blobs/guard.py`` counts towards
failing fast). Everything else (5xx, access denied) → ``StorageError``. Messages are short,
naming the operation and the endpoint, never credentials or request signatures.

Differences between S3 implementations, as tested (MinIO, and Versity's S3 gateway
``versitygw`` v1.8.0 on its posix backend; tests/harness/versitygw.py). The conformance suite,
the outage tests and litmus pass on both; where they differ, this module copes:

- versitygw closes the connection after every answer (``Connection: close``) unless started
  with ``--keep-alive``: each request opens a new connection, which urllib3 handles; a pooled
  connection a service dropped is retried once (``read=1`` below). Run it with
  ``--keep-alive`` in production.
- ListMultipartUploads: MinIO lists incomplete uploads with no prefix or with an exact
  object name, but none for a shorter prefix (such as ``prefix``); versitygw for any prefix.
  ``partial_uploads`` lists without a prefix and filters the keys itself.
- AbortMultipartUpload of an upload already gone: MinIO 204, versitygw ``NoSuchUpload``;
  both mean done (``_abort``).
- A Range header with end < start: MinIO ``InvalidRange``, versitygw a 200 with the whole
  object; a ranged read accepts only a 206 (``_response_size``).
- A hung (SIGSTOPped) or killed process behaves the same on both: the kernel still accepts
  connections of a stopped one, so only the read timeout ends a request.

The ``_create_multipart_upload`` / ``_upload_part`` / ``_complete_multipart_upload`` /
``_abort_multipart_upload`` / ``_put_object`` methods are the SDK's own building blocks of
``put_object`` (minio 7.2). ``put_object`` itself cannot be used: with an unknown length it
keeps one fixed part size (so it would refuse large bodies) and uploads parts in a thread pool
(three parts in memory at once) from a file-like object, not an iterable.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from davserver.blobs import BlobReader, BlobStat, BlobStore, PartialUpload, check_blob_id
from davserver.errors import (
    BlobNotFound,
    ConfigError,
    DavServerError,
    DiskFull,
    InsufficientStorage,
    StorageError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
#: S3's limits on multipart uploads.
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
#: DESIGN.md 5 asks for parts of at least 8 MiB (config.py enforces the same range).
MIN_PART_SIZE = 8 * MiB
#: 8 MiB: a 1 GiB PUT to MinIO runs as fast as with 16 MiB parts (212 against 213 MB/s,
#: bench/run.py) and peaks 34 MiB lower (116 against 150 MiB): four parts are in memory.
DEFAULT_PART_SIZE = 8 * MiB
#: Double the part size after this many parts (10 doublings fit in 10,000 parts).
GROW_EVERY = 1_000
#: Seconds to wait for a connection, and for each answer or block of one. A hung store must
#: give a 503 within 10 s (issue 9): one read timeout plus the answer, as timeouts are not
#: retried. The read timeout is per socket read, so a long transfer that progresses is fine.
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0
#: Retries of a refused or dropped connection and of 5xx answers (with jittered backoff).
DEFAULT_RETRIES = 2
#: The slowest assembly of parts we allow for when an upload completes.
COMPLETE_BYTES_PER_SECOND = 50 * MiB

# MinIO: drive full / bucket quota; AWS-compatible services: account or bucket quota.
_FULL_CODES = frozenset(
    {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "StorageFull"}
)
# Of those, the ones that mean a full disk rather than a quota (DiskFull).
_DISK_FULL_CODES = frozenset({"XMinioStorageFull", "StorageFull"})
# Errors the SDK lets through: its own, urllib3's (MaxRetryError, timeouts, protocol errors
# while streaming) and raw socket/TLS errors.
_SDK_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_BLOB_ID = re.compile(r"^[0-9a-f]{32}$")
# An unread rest of a response up to this size is drained so the connection can be reused;
# a longer one closes the connection (reading it would cost more than a new handshake).
_DRAIN_LIMIT = 64 * 1024


def _headers() -> dict[str, str | list[str] | tuple[str]]:
    # A fresh dict per request: the SDK adds Host, date and signature headers to it.
    return {"Content-Type": "application/octet-stream"}


def _is_timeout(err: BaseException) -> bool:
    """A connect or read timeout, or a request body the service stopped accepting."""
    if isinstance(err, urllib3.exceptions.NewConnectionError):
        return False  # refused, reset, no route: a subclass of ConnectTimeoutError
    if isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError):
        return True
    # urllib3 wraps a send that timed out as ProtocolError("Connection aborted.", TimeoutError)
    return isinstance(err, urllib3.exceptions.ProtocolError) and any(
        isinstance(a, TimeoutError) for a in err.args
    )


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (a mapped error) was caused by a timeout of the store."""
    if not isinstance(exc, StoreUnavailable):
        return False
    cause = exc.__cause__
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        cause = cause.reason
    return cause is not None and _is_timeout(cause)


#: A timeout for the requests of this thread, when set (see ``_PoolManager``).
_timeout_override: contextvars.ContextVar[Timeout | None] = contextvars.ContextVar(
    "s3_timeout_override", default=None
)


class _PoolManager(urllib3.PoolManager):
    """A PoolManager whose timeout one call can stretch (the SDK passes none of its own)."""

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        override = _timeout_override.get()
        if override is not None:
            kw["timeout"] = override
        return super().urlopen(method, url, redirect, **kw)


class _Retry(Retry):
    """urllib3's ``Retry``, except that a timeout is never retried.

    A service that did not accept a connection within ``connect_timeout`` or answer within
    ``read_timeout`` is hung or overloaded: trying again would double the client's wait for
    its 503 (a hung MinIO made a GET wait 60 s and a PUT 120-150 s). Refused connections and
    keep-alive connections the service dropped are retried, with jittered backoff.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        retry = self.new(total=0) if error is not None and _is_timeout(error) else self
        # With total=0 the base class raises MaxRetryError(reason=error) at once.
        return Retry.increment(retry, method, url, response, error, _pool, _stacktrace)


class S3BlobReader(BlobReader):
    """A streamed GET response; ``close`` returns its connection to the pool."""

    def __init__(
        self, store: S3BlobStore, response: BaseHTTPResponse, total_size: int, length: int
    ) -> None:
        self._store = store
        self._response: BaseHTTPResponse | None = response
        self.total_size = total_size
        self._remaining = length

    def read(self, n: int = -1) -> bytes:
        response = self._response
        if response is None:
            raise ValueError("read from a closed blob reader")
        if self._remaining <= 0 or n == 0:
            return b""
        n = self._remaining if n < 0 else min(n, self._remaining)
        with self._store._errors("read"):
            # urllib3 2 returns exactly n bytes unless the body ends; a body shorter than its
            # Content-Length raises IncompleteRead (a ProtocolError), mapped to StorageError.
            # decode_content=False: objects are never content-encoded, and the decoding path
            # copies every block through a BytesIO queue once more.
            data = response.read(n, decode_content=False)
        if not data:
            raise StoreUnavailable("S3 read failed: response ended early")
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        try:
            if 0 < self._remaining <= _DRAIN_LIMIT:
                response.read(self._remaining)
                self._remaining = 0
            if self._remaining > 0:
                response.close()  # unread body: the connection cannot be reused
        except _SDK_ERRORS:
            response.close()
        finally:
            response.release_conn()


class S3BlobStore(BlobStore):
    """Blobs as objects ``prefix + blob_id`` in ``bucket``.

    ``endpoint`` is ``host[:port]`` (no scheme). ``region`` avoids one GetBucketLocation request
    per bucket when given. ``create_bucket`` creates a missing bucket at construction (the only
    network request the constructor makes). The timeouts bound each connection attempt, each
    send and each socket read, and are never retried (``_Retry``): a hung or blackholed
    endpoint fails within one timeout, a refused one after ``retries`` quick, jittered retries,
    instead of the SDK's default minutes. ``max_connections`` is the size of
    the connection pool shared by all threads (more are opened under load, then discarded).

    Raises ``ConfigError`` for an invalid endpoint, bucket name, prefix or part size.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = True,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        create_bucket: bool = False,
        prefix: str = "",
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        max_connections: int = 16,
        upload_concurrency: int = 3,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE:
            raise ConfigError("S3 part size must be between 8 MiB and 5 GiB")
        if prefix.startswith("/"):
            raise ConfigError("S3 key prefix must not start with '/'")
        try:
            check_bucket_name(bucket)
        except ValueError:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}") from None
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.upload_concurrency = upload_concurrency
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._http = _PoolManager(
            timeout=Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),  # as the SDK does
            retries=_Retry(
                # Few, fast retries of connection failures only (never of timeouts, see
                # _Retry): a dead or hung endpoint fails within one timeout. POST (create
                # and complete multipart) is not retried after the request was sent.
                total=2 * retries + 1,
                connect=retries,
                read=1,  # a dropped keep-alive connection (ProtocolError), once
                other=0,
                status=retries,
                backoff_factor=0.1,
                backoff_max=1.0,
                # Jitter spreads the retries of many request threads that failed together.
                backoff_jitter=0.3,
                status_forcelist=(500, 502, 503, 504),
                respect_retry_after_header=False,
                # Hand the final error response to the SDK, which parses the S3 error code.
                raise_on_status=False,
            ),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=self._http,
            )
        except ValueError as exc:
            self._http.clear()
            raise ConfigError(f"invalid S3 endpoint: {exc}") from None
        if create_bucket:
            self._create_bucket(region)

    # -- error mapping ------------------------------------------------------------------------

    def _map_error(self, op: str, exc: BaseException, blob_id: str | None) -> DavServerError:
        if isinstance(exc, S3Error):
            code = exc.code or "error"
            if code == "NoSuchKey":
                return BlobNotFound(f"blob {blob_id} not found")
            if code == "NoSuchBucket":
                return StorageError(f"S3 bucket {self.bucket!r} does not exist")
            if code == "InvalidRange":
                return StorageError("range starts past the end of the blob")
            if code in _DISK_FULL_CODES or (
                # MinIO (2026-02) answers a drive that filled mid-write with a bare 500
                # InternalError whose message carries the ENOSPC text.
                code == "InternalError" and "no space left on device" in (exc.message or "")
            ):
                return DiskFull(f"S3 storage full ({code})")
            if code in _FULL_CODES:
                return InsufficientStorage(f"S3 storage full ({code})")
            return StorageError(f"S3 {op} failed: {code}")
        if isinstance(exc, ServerError):
            return StorageError(f"S3 {op} failed: HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            return StorageError(f"S3 {op} failed: unexpected response from {self.endpoint}")
        # Timeouts and broken connections: the store is down or hung (the guard counts these).
        if isinstance(exc, urllib3.exceptions.MaxRetryError):
            reason = exc.reason if exc.reason is not None else exc
            if _is_timeout(reason):
                return StoreUnavailable(f"S3 {op} failed: {self.endpoint} timed out")
            return StoreUnavailable(
                f"S3 {op} failed: {self.endpoint} unreachable ({type(reason).__name__})"
            )
        if _is_timeout(exc):
            return StoreUnavailable(f"S3 {op} failed: {self.endpoint} timed out")
        if isinstance(exc, urllib3.exceptions.ProtocolError | OSError):
            return StoreUnavailable(f"S3 {op} failed: connection to {self.endpoint} lost")
        return StorageError(f"S3 {op} failed: {type(exc).__name__}")

    @contextmanager
    def _errors(self, op: str, blob_id: str | None = None) -> Iterator[None]:
        """Turn SDK, HTTP and socket errors raised inside the block into our tree."""
        try:
            yield
        except _SDK_ERRORS as exc:
            # The cause stays attached for the server log; it holds URLs and S3 request ids,
            # never the secret key or a signature.
            raise self._map_error(op, exc, blob_id) from exc

    def _create_bucket(self, region: str | None) -> None:
        with self._errors("create bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=region)
            except S3Error as exc:
                # Lost a race with another process creating it: fine.
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _key(self, blob_id: str) -> str:
        return self.prefix + check_blob_id(blob_id)

    # -- BlobStore ----------------------------------------------------------------------------

    def part_size_for(self, part_number: int) -> int:
        """Size of part ``part_number`` (1-based) of a multipart upload."""
        return min(self.part_size << ((part_number - 1) // GROW_EVERY), S3_MAX_PART_SIZE)

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        key = self._key(blob_id)
        buf = bytearray()  # the part being filled: never more than one part size
        in_flight: list[Future[Part]] = []  # parts being sent, in part-number order
        parts: list[Part] = []
        upload_id: str | None = None
        total = 0
        part_number = 0
        try:
            # The caller's iterator is consumed outside any error mapping: what it raises
            # (e.g. LengthMismatch from a short body) reaches the caller unchanged.
            for chunk in chunks:
                view = memoryview(chunk).cast("B")  # count bytes, whatever the buffer
                total += len(view)
                # Strictly greater: only once a byte beyond the current part exists do we know
                # the body needs another part (so a body of exactly one part is one PUT).
                while len(buf) + len(view) > (size := self.part_size_for(part_number + 1)):
                    take = size - len(buf)
                    data: bytes | bytearray
                    if buf:
                        buf += view[:take]
                        data, buf = buf, bytearray()  # hand the buffer over: no copy
                    else:  # a large chunk: cut the part straight out of it
                        data = view[:take].tobytes()
                    view = view[take:]
                    if upload_id is None:
                        with self._errors("put", blob_id):
                            upload_id = self._client._create_multipart_upload(
                                self.bucket, key, _headers()
                            )
                    part_number += 1
                    self._send_part(blob_id, key, upload_id, part_number, data, in_flight, parts)
                    del data
                buf += view
                view.release()
            if upload_id is None:
                with self._errors("put", blob_id):
                    self._client._put_object(self.bucket, key, bytes(buf), _headers())
                return total
            data = buf
            # data is not empty here: a part is only sent once a byte beyond it has arrived.
            part_number += 1
            self._send_part(blob_id, key, upload_id, part_number, data, in_flight, parts)
            del data
            while in_flight:
                parts.append(in_flight.pop(0).result())
            # Some gateways assemble the parts when the upload completes (versitygw's posix
            # backend copies them into one file: 1.4 s for 768 MiB on ext4 here), so the
            # answer may take longer than read_timeout: allow one more second per 50 MiB.
            token = _timeout_override.set(
                Timeout(
                    connect=self.connect_timeout,
                    read=self.read_timeout + total / COMPLETE_BYTES_PER_SECOND,
                )
            )
            try:
                with self._errors("put", blob_id):
                    self._client._complete_multipart_upload(self.bucket, key, upload_id, parts)
            finally:
                _timeout_override.reset(token)
            # If a timeout hid a completion that did succeed, the abort below fails with
            # NoSuchUpload and the object exists: the caller's cleanup (delete or GC) removes it.
            upload_id = None
            return total
        except BaseException as exc:
            for f in in_flight:  # let sends in progress end before aborting the upload
                f.cancel()
            if upload_id is not None and _timed_out(exc):
                # The store just let a request time out: aborting now would keep the client
                # waiting for its 503 another timeout or more. Abort in the background; the
                # parts stay invisible either way, and stale uploads are reclaimed later.
                self._pool().submit(self._abort, blob_id, key, upload_id, list(in_flight))
            else:
                wait(in_flight)
                if upload_id is not None:
                    self._abort(blob_id, key, upload_id)
            raise

    def _send_part(
        self,
        blob_id: str,
        key: str,
        upload_id: str,
        part_number: int,
        data: bytes | bytearray,
        in_flight: list[Future[Part]],
        parts: list[Part],
    ) -> None:
        """Queue one part; with ``upload_concurrency`` parts in flight, wait for the oldest.

        Sending parts while the next is encrypted overlaps the two; memory holds at most
        ``upload_concurrency`` parts plus the one being filled.
        """
        if part_number > S3_MAX_PARTS:
            raise StorageError("blob too large for S3 (more than 10,000 parts)")
        if self.upload_concurrency <= 1:
            parts.append(self._upload_part(blob_id, key, upload_id, part_number, data))
            return
        while len(in_flight) >= self.upload_concurrency:
            parts.append(in_flight.pop(0).result())
        in_flight.append(
            self._pool().submit(self._upload_part, blob_id, key, upload_id, part_number, data)
        )

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.upload_concurrency * 4, thread_name_prefix="s3-part"
                )
            return self._executor

    def _upload_part(
        self, blob_id: str, key: str, upload_id: str, part_number: int, data: bytes | bytearray
    ) -> Part:
        with self._errors("put", blob_id):
            # The SDK signs and sends any bytes-like body; its stub says bytes.
            etag = self._client._upload_part(
                self.bucket,
                key,
                data,  # type: ignore[arg-type]
                None,
                upload_id,
                part_number,
            )
        return Part(part_number, etag)

    def _abort(
        self, blob_id: str, key: str, upload_id: str, sending: list[Future[Part]] | None = None
    ) -> None:
        if sending:
            wait(sending)
        try:
            self._client._abort_multipart_upload(self.bucket, key, upload_id)
        except S3Error as exc:
            # versitygw answers NoSuchUpload for an upload already aborted or completed
            # (MinIO: 204): it is gone, which is what we asked for.
            if exc.code != "NoSuchUpload":
                self._abort_failed(blob_id, self._map_error("abort upload", exc, blob_id))
        except _SDK_ERRORS as exc:
            self._abort_failed(blob_id, self._map_error("abort upload", exc, blob_id))

    @staticmethod
    def _abort_failed(blob_id: str, exc: DavServerError) -> None:
        log.warning("incomplete multipart upload of blob %s left behind: %s", blob_id, exc)

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError("invalid byte range")
        key = self._key(blob_id)
        ranged = start > 0 or end is not None
        length = 0 if end is None else end - start + 1  # the SDK's "0 = to the end"
        with self._errors("get", blob_id):
            response = self._client.get_object(self.bucket, key, offset=start, length=length)
        try:
            total, count = self._response_size(response, blob_id, ranged)
            return S3BlobReader(self, response, total, count)
        except BaseException:
            response.close()
            response.release_conn()
            raise

    def _response_size(
        self, response: BaseHTTPResponse, blob_id: str, ranged: bool
    ) -> tuple[int, int]:
        """Return (object size, bytes in this response) from the response headers."""
        if response.status == 206:
            m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if m is None:
                raise StorageError("S3 get failed: bad Content-Range header")
            count = int(m.group(2)) - int(m.group(1)) + 1
            if m.group(3) != "*":
                return int(m.group(3)), count
            return self.stat(blob_id).size, count
        if ranged:
            # A server that ignores Range would hand us the wrong bytes. (versitygw answers
            # 200 with the whole object to a Range it finds invalid, e.g. end < start, where
            # MinIO says InvalidRange; we never send one, but a 200 is never taken for a 206.)
            raise StorageError("S3 get failed: server ignored the Range header")
        length = response.headers.get("Content-Length")
        size = int(length) if length is not None else self.stat(blob_id).size
        return size, size

    def stat(self, blob_id: str) -> BlobStat:
        key = self._key(blob_id)
        try:
            with self._errors("stat", blob_id):
                obj = self._client.stat_object(self.bucket, key)
        except BlobNotFound:
            # A HEAD answers a bare 404 for a missing bucket too: tell the two apart.
            with self._errors("stat", blob_id):
                bucket_exists = self._client.bucket_exists(self.bucket)
            if not bucket_exists:
                raise StorageError(f"S3 bucket {self.bucket!r} does not exist") from None
            raise
        mtime = obj.last_modified.timestamp() if obj.last_modified is not None else None
        return BlobStat(blob_id, int(obj.size or 0), mtime)

    def delete(self, blob_id: str) -> None:
        key = self._key(blob_id)
        try:
            with self._errors("delete", blob_id):
                self._client.remove_object(self.bucket, key)
        except BlobNotFound:
            pass  # S3 answers 204 for a missing key; some compatible services say NoSuchKey

    def iter_ids(self) -> Iterator[str]:
        n = len(self.prefix)
        with self._errors("list"):
            for obj in self._client.list_objects(
                self.bucket, prefix=self.prefix or None, recursive=True
            ):
                name = obj.object_name or ""
                if _BLOB_ID.match(name[n:]):
                    yield name[n:]

    def partial_uploads(self) -> Iterator[PartialUpload]:
        """Incomplete multipart uploads of blob keys under the prefix (ListMultipartUploads,
        then ListParts for each): what a killed ``put`` leaves behind, invisible but billed.
        Ages come from the service's clock (part and upload times)."""
        n = len(self.prefix)
        key_marker: str | None = None
        id_marker: str | None = None
        while True:
            with self._errors("list uploads"):
                # No prefix in the request: MinIO (2026-02) takes it as an exact key and
                # lists nothing for "dav/" while AWS S3 filters by it; ours is applied below.
                page = self._client._list_multipart_uploads(
                    self.bucket,
                    key_marker=key_marker,
                    upload_id_marker=id_marker,
                    max_uploads=1000,
                )
            for upload in page.uploads:
                name = upload.object_name
                blob_id = name[n:]
                # Only our own keys: a bucket shared with other software (an empty prefix)
                # may hold their uploads too, and those are none of our business.
                if not name.startswith(self.prefix) or not _BLOB_ID.match(blob_id):
                    continue
                if upload.upload_id is None:
                    continue
                size, newest = self._parts_of(name, upload.upload_id)
                if newest is None:
                    newest = upload.initiated_time.timestamp() if upload.initiated_time else 0.0
                yield PartialUpload(
                    blob_id=blob_id,
                    handle=f"{upload.upload_id} {name}",
                    size=size,
                    idle=max(0.0, time.time() - newest),
                )
            if not page.is_truncated or not page.uploads:
                return
            # The SDK drops NextUploadIdMarker (minio 7.2.20): the last upload is the marker.
            last = (page.uploads[-1].object_name, page.uploads[-1].upload_id)
            if last == (key_marker, id_marker):
                return  # a service that ignores the markers: no endless loop
            key_marker, id_marker = last

    def _parts_of(self, key: str, upload_id: str) -> tuple[int, float | None]:
        """(bytes held, time of the newest part or None) of one multipart upload."""
        size, newest, marker = 0, None, None
        while True:
            with self._errors("list parts"):
                try:
                    page = self._client._list_parts(
                        self.bucket, key, upload_id, max_parts=1000, part_number_marker=marker
                    )
                except S3Error as exc:
                    if exc.code == "NoSuchUpload":  # completed or aborted meanwhile
                        return size, newest
                    raise
            for part in page.parts:
                size += part.size or 0
                if part.last_modified is not None:
                    t = part.last_modified.timestamp()
                    newest = t if newest is None else max(newest, t)
            if not page.is_truncated or not page.parts:
                return size, newest
            marker = str(page.parts[-1].part_number)

    def discard_partial(self, partial: PartialUpload) -> None:
        upload_id, _, key = partial.handle.partition(" ")
        if (
            not upload_id
            or not key.startswith(self.prefix)
            or not _BLOB_ID.match(key[len(self.prefix) :])
        ):
            raise ValueError("invalid partial upload handle")
        with self._errors("abort upload"):
            try:
                self._client._abort_multipart_upload(self.bucket, key, upload_id)
            except S3Error as exc:
                if exc.code != "NoSuchUpload":  # gone already: fine
                    raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._http.clear()
