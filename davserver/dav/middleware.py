"""The outermost WSGI layer: request-body accounting, early close, body caps, access log.

- A request answered before its body was read (401, 403, 409, 412, 423, 507…): a rest of at
  most ``DRAIN_LIMIT`` bytes is read and dropped; a larger one gets ``Connection: close`` and
  the server (see ``davserver.server``) closes the connection instead of reading the rest of
  the body — cheroot would read it *into memory* (DESIGN §10).
- WsgiDAV parses XML bodies (PROPFIND, PROPPATCH, LOCK) in memory: bodies of other methods
  than PUT larger than ``max_xml_body`` are refused with 413 before anything reads them.
- Every response gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
  and a ``Content-Security-Policy`` with ``frame-ancestors 'none'`` (no framing, so no
  clickjacking). Directory listings (marked ``LISTING_KEY`` by ``davserver.dav.pages``) may
  load their stylesheet and icon from the server and nothing else (``LISTING_POLICY``).
  Every other response of a type a browser runs script in (HTML, XHTML, SVG, XML, or no
  type) gets ``ACTIVE_POLICY``: nothing loads, no script runs, and the document is
  sandboxed into an origin of its own — a user's files are served as what they are, and an
  uploaded HTML or SVG file opened in a browser must not run with the server's origin and
  the user's credentials. Other types (images, PDFs, media) get ``frame-ancestors`` only:
  a sandbox would stop browsers' PDF viewers, and nosniff keeps them from being read as HTML.
- One access-log line per request: client address, method, status, bytes in and out,
  duration and the user id — never credentials, user names or paths (paths only at debug).
  Requests marked ``QUIET_KEY`` (health probes, ``davserver.web``) are logged at debug; a
  path holding a secret (``LOG_PATH_KEY``: the login flow's page) is logged as its prefix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

access_log = logging.getLogger("davserver.access")

#: Set in the environ by the directory browser: the response is a listing page.
LISTING_KEY = "davserver.listing"
#: Set in the environ by the router for routes polled by machines: access log at debug only.
QUIET_KEY = "davserver.quiet"
#: Set in the environ by an application whose path holds a secret (the login flow's page:
#: the login token): the path the access log shows at debug instead of the real one.
LOG_PATH_KEY = "davserver.log_path"
ACTIVE_POLICY = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
)
LISTING_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
PASSIVE_POLICY = "frame-ancestors 'none'"
_ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/xsl",
)


def _policy(headers: list[tuple[str, str]], environ: dict[str, Any]) -> str:
    if environ.get(LISTING_KEY):
        return LISTING_POLICY
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
    media = ctype.split(";", 1)[0].strip().lower()
    if not media or media in _ACTIVE_TYPES or media.endswith("+xml"):
        return ACTIVE_POLICY
    return PASSIVE_POLICY


def security_headers(
    headers: list[tuple[str, str]], environ: dict[str, Any]
) -> list[tuple[str, str]]:
    """``headers`` plus those of the module docstring (any the app set itself are kept)."""
    have = {k.lower() for k, _ in headers}
    policy = _policy(headers, environ)
    extra = [
        (k, v)
        for k, v in (
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        )
        if k.lower() not in have
    ]
    return [*headers, *extra]


DEFAULT_MAX_XML_BODY = 8 << 20
#: Rejected bodies up to this size are read and dropped, keeping the connection alive.
DRAIN_LIMIT = 256 << 10


class BodyReader:
    """Wraps ``wsgi.input``, counting what the application read and noticing the end."""

    def __init__(self, stream: Any, length: int | None) -> None:
        self._stream = stream
        self.length = length  # None: chunked, unknown until the end
        self.count = 0
        self.at_end = length == 0

    def read(self, size: int | None = -1) -> bytes:
        if self.at_end:
            return b""
        if size is None or size < 0:
            data: bytes = self._stream.read()
        else:
            data = self._stream.read(size)
        self.count += len(data)
        if (not data and size != 0) or (self.length is not None and self.count >= self.length):
            self.at_end = True
        return data

    def readline(self, size: int | None = -1) -> bytes:
        if self.at_end:
            return b""
        data: bytes = self._stream.readline(size if size is not None and size >= 0 else None)
        self.count += len(data)
        if not data or (self.length is not None and self.count >= self.length):
            self.at_end = True
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    @property
    def unread(self) -> bool:
        """True if part of the body may still be on the wire."""
        return not self.at_end

    def drain(self, limit: int) -> bool:
        """Read and discard the rest of the body if it is at most ``limit`` bytes (a known
        length) or ends within ``limit`` bytes (chunked); True if the body is now consumed."""
        if self.at_end:
            return True
        if self.length is not None and self.length - self.count > limit:
            return False
        budget = limit
        while not self.at_end and budget > 0:
            got = self.read(min(65536, budget))
            if not got:
                break
            budget -= len(got)
        return self.at_end


def _plain(status: str, body: bytes, start_response: Any, environ: dict[str, Any]) -> list[bytes]:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    start_response(status, security_headers(headers, environ))
    return [body]


def escapes_root(path: str) -> bool:
    """Whether a request path's ``..`` segments climb above ``/`` (``/../x``, ``/a/../..``)."""
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


class RequestGuard:
    """See the module docstring."""

    def __init__(self, app: Any, *, max_xml_body: int = DEFAULT_MAX_XML_BODY) -> None:
        self.app = app
        self.max_xml_body = max_xml_body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.monotonic()
        method = str(environ.get("REQUEST_METHOD", ""))
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        state: dict[str, Any] = {"status": "-", "sent": 0}
        raw_length = str(environ.get("CONTENT_LENGTH", "") or "0").strip()
        if not raw_length.isdigit():
            environ["wsgi.input"] = body = BodyReader(environ["wsgi.input"], None)
            state["status"] = "400"
            self._log(environ, state, body, started)
            return _plain("400 Bad Request", b"invalid Content-Length\n", start_response, environ)
        body = BodyReader(environ["wsgi.input"], None if chunked else int(raw_length))
        environ["wsgi.input"] = body
        if escapes_root(str(environ.get("PATH_INFO") or "/")):
            # WsgiDAV refuses these itself, but from inside a generator: its 400 came out
            # with a Content-Length and no body, and the client waited for one forever.
            state["status"] = "400"
            self._log(environ, state, body, started)
            return _plain("400 Bad Request", b"the path leaves the root\n", start_response, environ)
        if method != "PUT" and not chunked and int(raw_length) > self.max_xml_body:
            state["status"] = "413"
            self._log(environ, state, body, started)
            return _plain(
                "413 Payload Too Large", b"request body too large\n", start_response, environ
            )
        return self._run(environ, start_response, body, state, started)

    def _run(
        self,
        environ: dict[str, Any],
        start_response: Any,
        body: BodyReader,
        state: dict[str, Any],
        started: float,
    ) -> Iterator[bytes]:
        def guarded(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # Answered before the body was read: a small rest is read and dropped (clients
            # such as Python's http.client only see the answer if their body went out),
            # anything larger closes the connection rather than being drained into memory.
            if body.unread and not body.drain(DRAIN_LIMIT):
                headers = [(k, v) for k, v in headers if k.lower() != "connection"]
                headers.append(("Connection", "close"))
            state["status"] = status.split(" ", 1)[0]
            return start_response(status, security_headers(headers, environ), exc_info)

        try:
            app_iter = self.app(environ, guarded)
            try:
                for chunk in app_iter:
                    state["sent"] += len(chunk)
                    yield chunk
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        finally:
            self._log(environ, state, body, started)

    @staticmethod
    def _log(
        environ: dict[str, Any], state: dict[str, Any], body: BodyReader, started: float
    ) -> None:
        level = logging.DEBUG if environ.get(QUIET_KEY) else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        user = str(environ.get("davserver.user_id") or "-")[:12]
        addr = environ.get("davserver.client_addr") or environ.get("REMOTE_ADDR", "-")
        line = (
            f"{addr} {environ.get('REQUEST_METHOD', '-')} {state['status']} "
            f"in={body.count} out={state['sent']} {time.monotonic() - started:.3f}s user={user}"
        )
        if access_log.isEnabledFor(logging.DEBUG):
            shown = environ.get(LOG_PATH_KEY) or environ.get("PATH_INFO", "")
            line += f" path={environ.get('SCRIPT_NAME', '')}{shown!r}"
        access_log.log(level, line)
