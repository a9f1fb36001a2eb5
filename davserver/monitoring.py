"""The metrics endpoint: ``GET /metrics`` in the Prometheus text format on its own listener.

``start_metrics_listener(host, port, vault)`` serves what ``prometheus_client`` exposes (the
metrics of ``davserver.metrics``; in ``server.workers`` mode the merged values of every
worker, read from the multiprocess directory) plus the gauges computed on scrape by
``StoreCollector``: users, stored bytes, active locks, blobs awaiting collection, and whether
the index and the blob store answer.

The store gauges are bounded in cost: a few aggregate queries (``davserver.vault.stats``) on
one thread of their own, each scrape waiting at most ``PROBE_TIMEOUT`` seconds for them (a
hung index or store reads as down, and a probe still running is not started twice), and
results reused for ``CACHE_SECONDS`` when scrapes come more often. No label carries a user
name, path, node id or address.

The listener needs no login: keep ``metrics.host`` on loopback or a private network.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from davserver import metrics
from davserver.vault.stats import VaultStats, blob_store_up, index_stats

if TYPE_CHECKING:
    from davserver.vault import Vault

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
CACHE_SECONDS = 5.0


class StoreCollector:
    """A ``prometheus_client`` collector of the store gauges (see the module docstring)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "davserver-metrics-probe")
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[tuple[VaultStats, bool]] | None = None
        self._last: tuple[float, VaultStats, bool] | None = None

    def _probe(self) -> tuple[VaultStats, bool]:
        return index_stats(self.vault), blob_store_up(self.vault)

    def _current(self) -> tuple[VaultStats, bool]:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < CACHE_SECONDS:
                return self._last[1], self._last[2]
            if self._pending is None or self._pending.done():
                self._pending = self._pool.submit(self._probe)
            pending = self._pending
        try:
            stats, blobs_up = pending.result(timeout=PROBE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            return VaultStats(index_up=False), False
        except Exception:  # a probe never breaks the scrape
            log.exception("metrics probe failed")
            return VaultStats(index_up=False), False
        with self._lock:
            self._last = (time.monotonic(), stats, blobs_up)
        return stats, blobs_up

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        stats, blobs_up = self._current()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("davserver_index_up", "Whether the index database answered.", stats.index_up)
        yield gauge("davserver_blobstore_up", "Whether the blob store answered.", blobs_up)
        yield gauge("davserver_users", "Users.", stats.users)
        yield gauge(
            "davserver_stored_bytes",
            "Plaintext bytes of the current versions of all files (what quotas count).",
            stats.stored_bytes,
        )
        yield gauge("davserver_active_locks", "WebDAV locks not yet expired.", stats.active_locks)
        pending = GaugeMetricFamily(
            "davserver_gc_pending_blobs",
            "Blobs queued for garbage collection: dead (unreferenced, awaiting deletion) and "
            "uploading (uploads not committed yet, or left by a crash).",
            labels=["state"],
        )
        for state in ("dead", "uploading"):
            pending.add_metric([state], stats.gc_pending.get(state, 0))
        yield pending

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class _Exposed:
    """What the endpoint serves: the process's (or the workers' merged) metrics and the
    store gauges."""

    def __init__(self, vault: Vault) -> None:
        from prometheus_client import REGISTRY, CollectorRegistry

        metrics.get()  # made before the first scrape, so every family shows from the start
        directory = metrics.multiprocess_dir()
        if directory is not None:
            from prometheus_client import multiprocess

            self.base: Any = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.base, path=directory)  # type: ignore[no-untyped-call]
        else:
            self.base = REGISTRY
        self.store = StoreCollector(vault)

    def collect(self) -> Iterator[Any]:
        yield from self.base.collect()
        yield from self.store.collect()


class MetricsListener:
    """A running metrics listener; ``stop()`` it."""

    def __init__(self, host: str, port: int, vault: Vault) -> None:
        from prometheus_client import start_http_server

        self.exposed = _Exposed(vault)
        self.server, self.thread = start_http_server(port, addr=host, registry=self.exposed)
        self.port = int(self.server.server_port)
        self.host = host

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.exposed.store.close()


def start_metrics_listener(host: str, port: int, vault: Vault) -> MetricsListener:
    """Listen on ``host:port`` (``port`` 0 picks a free one) for Prometheus; raises
    ``OSError`` if the address cannot be bound."""
    return MetricsListener(host, port, vault)
