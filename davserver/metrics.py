"""Every Prometheus metric of davserver, defined once (``prometheus_client``, the official one).

Any layer may import this module: it imports nothing of ours. The metrics are made on first
use (``get()``), not at import, so that ``server.workers`` mode can switch
``prometheus_client`` to its multiprocess mode (``enable_multiprocess``, before the workers
fork) whatever imported this module first.

**No user name, path, node id, blob id or address ever becomes a label.** Every label here has
a small fixed set of values, set by the helpers below: ``method_label`` (known HTTP methods,
others ``other``), ``status_class`` (``2xx``…), ``integrity_kind``, and the results named at
each metric. Gauges that need a query (users, stored bytes, active locks, index and blob store
up, blobs awaiting collection) are computed on scrape by ``davserver.monitoring``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

#: Methods that get their own label value; any other is ``other`` (a client cannot grow
#: the number of series by inventing methods).
KNOWN_METHODS = frozenset(
    "GET HEAD PUT POST DELETE OPTIONS PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK PATCH "
    "REPORT SEARCH".split()
)

#: Integrity failure kinds (``integrity_kind``), by what failed authentication.
INTEGRITY_KINDS = ("content", "key", "name", "metadata", "lock", "tree", "other")

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_ARGON2_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def status_class(status: str | int | None) -> str:
    """``2xx`` for ``"201 Created"`` or 201; ``none`` when no response was started."""
    text = str(status or "").strip()
    if len(text) < 3 or not text[:3].isdigit() or text[0] not in "12345":
        return "none"
    return f"{text[0]}xx"


def integrity_kind(reason: str) -> str:
    """The kind of an ``IntegrityError`` from its (fixed, name-free) message."""
    text = reason.lower()
    for words, kind in (
        (("lock",), "lock"),
        (("key", "envelope"), "key"),
        (("name",), "name"),
        (("metadata", "propert"), "metadata"),
        (("stored", "chunk", "header", "object"), "content"),
        (("parent", "root", "version", "member"), "tree"),
    ):
        if any(w in text for w in words):
            return kind
    return "other"


@dataclass(frozen=True)
class Metrics:
    """The metric objects (see the module docstring for the label rules)."""

    http_requests: Counter  # method, status_class
    http_duration: Histogram  # method
    http_in_flight: Gauge
    http_received_bytes: Counter
    http_sent_bytes: Counter
    uploads: Counter  # result: ok | rejected | no_space | failed | aborted
    # kind: password | token | recovery; result: success | failure | throttled | malformed | error
    logins: Counter
    login_cache: Counter  # result: hit | miss
    argon2_duration: Histogram
    argon2_queue: Gauge
    blob_requests: Counter  # operation, result
    blob_duration: Histogram  # operation, result
    integrity_failures: Counter  # kind
    gc_collected_blobs: Counter
    gc_reclaimed_bytes: Counter
    audit_write_failures: Counter


_lock = threading.Lock()
_metrics: Metrics | None = None


def _make() -> Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    return Metrics(
        http_requests=Counter(
            "davserver_http_requests",
            "HTTP requests answered, by method and status class.",
            ["method", "status_class"],
        ),
        http_duration=Histogram(
            "davserver_http_request_duration_seconds",
            "Time from receiving a request to the end of its response, by method.",
            ["method"],
            buckets=_DURATION_BUCKETS,
        ),
        http_in_flight=Gauge(
            "davserver_http_requests_in_flight",
            "Requests being handled now.",
            multiprocess_mode="livesum",
        ),
        http_received_bytes=Counter(
            "davserver_http_received_bytes", "Request body bytes read from clients."
        ),
        http_sent_bytes=Counter(
            "davserver_http_sent_bytes", "Response body bytes sent to clients."
        ),
        uploads=Counter(
            "davserver_uploads",
            "PUT requests by result: ok (2xx), rejected (4xx but 507), no_space (507), "
            "failed (5xx), aborted (no response).",
            ["result"],
        ),
        logins=Counter(
            "davserver_logins",
            "Login checks (Argon2id) and refusals before any check, by credential kind and "
            "result (success, failure, throttled, malformed, error).",
            ["kind", "result"],
        ),
        login_cache=Counter(
            "davserver_login_cache_lookups",
            "Logins served from the login cache (hit) or that needed Argon2id or a token's "
            "envelope (miss).",
            ["result"],
        ),
        argon2_duration=Histogram(
            "davserver_argon2id_duration_seconds",
            "Time one Argon2id computation held its slot.",
            buckets=_ARGON2_BUCKETS,
        ),
        argon2_queue=Gauge(
            "davserver_argon2id_queue_depth",
            "Argon2id computations waiting for a slot (security.argon2_concurrency).",
            multiprocess_mode="livesum",
        ),
        blob_requests=Counter(
            "davserver_blobstore_requests",
            "Blob store calls by operation and result (ok, not_found, no_space, "
            "unavailable, error, aborted).",
            ["operation", "result"],
        ),
        blob_duration=Histogram(
            "davserver_blobstore_request_duration_seconds",
            "Blob store call duration (open: until the stream is ready; put: the whole "
            "upload), by operation and result.",
            ["operation", "result"],
            buckets=_DURATION_BUCKETS,
        ),
        integrity_failures=Counter(
            "davserver_integrity_failures",
            "Stored data that failed authentication, by kind.",
            ["kind"],
        ),
        gc_collected_blobs=Counter(
            "davserver_gc_collected_blobs",
            "Unreferenced blobs (objects and inline blobs) deleted by garbage collection.",
        ),
        gc_reclaimed_bytes=Counter(
            "davserver_gc_reclaimed_bytes",
            "Bytes of partial uploads left by crashes that the maintenance loop removed.",
        ),
        audit_write_failures=Counter(
            "davserver_audit_write_failures", "Audit events that could not be written."
        ),
    )


def get() -> Metrics:
    """The metrics, made on first use (thread-safe)."""
    global _metrics
    m = _metrics
    if m is None:
        with _lock:
            if _metrics is None:
                _metrics = _make()
            m = _metrics
    return m


def enable_multiprocess(directory: str) -> None:
    """Switch to ``prometheus_client``'s multiprocess mode, keeping values in files under
    ``directory`` (the supervisor's private temporary directory), before forking workers.
    Raises ``RuntimeError`` if metrics were already made in this process."""
    if _metrics is not None:
        raise RuntimeError("metrics were made before multiprocess mode was enabled")
    os.environ[MULTIPROC_ENV] = directory
    from prometheus_client import values

    # The value class is chosen when prometheus_client is imported, from this variable;
    # it may have been imported before the variable was set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a worker that exited (multiprocess mode; else nothing)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
