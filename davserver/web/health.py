"""``/healthz`` and ``/readyz``: is the process alive, and can it serve requests now?

- ``GET /healthz`` answers 200 ``{"status": "ok"}`` as long as the process serves HTTP at
  all. It touches nothing else, so a load balancer or orchestrator that restarts on it never
  restarts the server because a dependency is down.
- ``GET /readyz`` runs two checks at once, each bounded by ``health.timeout``: an index query
  (the schema version, ``index``) and a blob-store probe (``blobs``, ``BlobStore.probe``).
  Both passing is 200; otherwise 503 with ``Retry-After``, naming the part that failed and
  how (``"failed"`` or ``"timeout"``):
  ``{"status": "unavailable", "checks": {"index": "ok", "blobs": "timeout"}}``.

Both are unauthenticated and say nothing else: no versions, host names, user names or error
texts (a failure is logged, once per change of state, with the exception's class only). Each
check runs in a thread of its own that the request waits for at most ``timeout`` seconds, and
at most one check per part runs at a time: while a hung store keeps one check waiting, later
requests wait for that same check instead of piling up threads and connections.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from davserver.vault import Vault

log = logging.getLogger(__name__)

OK, FAILED, TIMEOUT = "ok", "failed", "timeout"
RETRY_AFTER = "5"


def _json(
    status: str, payload: dict[str, Any], environ: dict[str, Any], start_response: Any
) -> list[bytes]:
    body = json.dumps(payload, separators=(",", ":")).encode("ascii") + b"\n"
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if not status.startswith("200"):
        headers.append(("Retry-After", RETRY_AFTER))
    start_response(status, headers)
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


class Check:
    """One named dependency check, run in a daemon thread, one at a time."""

    def __init__(self, name: str, run: Callable[[], None], cleanup: Callable[[], None]) -> None:
        self.name = name
        self._run = run
        self._cleanup = cleanup  # in the check's thread, after each run (its connection)
        self._lock = threading.Lock()
        self._current: Future[None] | None = None

    def start(self) -> Future[None]:
        """The check in flight, or a new one if none is."""
        with self._lock:
            if self._current is None or self._current.done():
                future: Future[None] = Future()
                thread = threading.Thread(
                    target=self._thread, args=(future,), name=f"readyz-{self.name}", daemon=True
                )
                self._current = future
                thread.start()
            return self._current

    def _thread(self, future: Future[None]) -> None:
        try:
            self._run()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        finally:
            try:
                self._cleanup()
            except Exception:
                log.debug("readyz %s: cleanup failed", self.name, exc_info=True)


class Health:
    """The two endpoints for one vault; ``timeout`` bounds each readiness check."""

    def __init__(self, vault: Vault, timeout: float) -> None:
        self.timeout = timeout
        index, blobs = vault.index, vault.blobs

        def query_index() -> None:
            with index.connection():
                index.schema_version()

        def close_connection() -> None:
            if not index.db.is_closed():
                index.db.close()  # the thread's own connection (back to the pool)

        self.checks = (
            Check("index", query_index, close_connection),
            Check("blobs", blobs.probe, lambda: None),
        )
        self._state: dict[str, str] = {}
        self._state_lock = threading.Lock()

    def live(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return _json("200 OK", {"status": "ok"}, environ, start_response)

    def ready(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        results = self.run()
        healthy = all(r == OK for r in results.values())
        payload = {"status": "ok" if healthy else "unavailable", "checks": results}
        status = "200 OK" if healthy else "503 Service Unavailable"
        return _json(status, payload, environ, start_response)

    def run(self) -> dict[str, str]:
        """Each check's result, ``ok``, ``failed`` or ``timeout``, within ``timeout``."""
        deadline = time.monotonic() + self.timeout
        futures = [(check.name, check.start()) for check in self.checks]
        results: dict[str, str] = {}
        for name, future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._note(name, TIMEOUT, None)
                results[name] = TIMEOUT
            except Exception as exc:
                self._note(name, FAILED, exc)
                results[name] = FAILED
            else:
                self._note(name, OK, None)
                results[name] = OK
        return results

    def _note(self, name: str, result: str, exc: BaseException | None) -> None:
        """Log a part's change of state (not every probe: they come every few seconds)."""
        with self._state_lock:
            before = self._state.get(name, OK)
            self._state[name] = result
        if before == result:
            return
        if result == OK:
            log.info("readiness: %s answers again", name)
        else:
            why = f" ({type(exc).__name__})" if exc is not None else ""
            log.warning("readiness: %s %s%s", name, result, why)
