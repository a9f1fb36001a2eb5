"""The outermost WSGI middleware: request metrics (``davserver.metrics``).

Counts every request by method and status class, its duration (until the last byte of the
response was handed to the server, or the response was closed), the requests in flight,
request and response body bytes, and PUTs by result. Only ``metrics.method_label`` and
``metrics.status_class`` values become labels: never a path, user or address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from davserver import metrics


class _CountingInput:
    """``wsgi.input``, counting the bytes the application read."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.readline(size if size is not None and size >= 0 else None)
        self.count += len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def upload_result(status: str | None) -> str:
    """The ``davserver_uploads`` result of a PUT answered with ``status``."""
    cls = metrics.status_class(status)
    if cls in ("2xx", "3xx", "1xx"):
        return "ok"
    if cls == "none":
        return "aborted"
    if str(status).startswith("507"):
        return "no_space"
    return "rejected" if cls == "4xx" else "failed"


class RequestMetrics:
    """Wraps a WSGI application (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.m = metrics.get()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        return self._run(environ, start_response)

    def _run(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        m = self.m
        started = time.monotonic()
        method = metrics.method_label(str(environ.get("REQUEST_METHOD", "")))
        body = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = body
        state: dict[str, Any] = {"status": None, "sent": 0}

        def counting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state["status"] = status
            return start_response(status, headers, exc_info)

        m.http_in_flight.inc()
        try:
            app_iter = self.app(environ, counting)
            try:
                for chunk in app_iter:
                    state["sent"] += len(chunk)
                    yield chunk
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        finally:
            m.http_in_flight.dec()
            status = state["status"]
            m.http_requests.labels(method, metrics.status_class(status)).inc()
            m.http_duration.labels(method).observe(time.monotonic() - started)
            m.http_received_bytes.inc(body.count)
            m.http_sent_bytes.inc(state["sent"])
            if method == "PUT":
                m.uploads.labels(upload_result(status)).inc()
