"""cheroot's request and WSGI gateway, made strict about bodies and safe against exceptions.

- :class:`ChunkedReader` replaces cheroot's ``ChunkedRFile``: it streams chunks (cheroot read
  a whole chunk into memory, and a chunk size of 2**60 raised OverflowError) and refuses a
  chunk size that is not 1 to 15 hex digits (cheroot's ``int(size, 16)`` took ``-3`` as the
  last chunk: the PUT committed an empty file). Its errors, like the body deadline of
  ``davserver.httpio.SocketReader``, are recorded on the connection's reader, so that
  whatever the application made of the exception, the request is answered with that
  4xx and the connection closed: nothing after a broken frame can be trusted.
- :class:`DavRequest` answers 400 for a path whose percent-decoding is not UTF-8 (WsgiDAV
  raised ``UnicodeDecodeError`` and cheroot then failed to answer at all), and is the
  outermost guard: an exception before the response started is answered with 500 (logged
  once, with the stack but not the message, which may hold a name; nothing of it reaches the
  client); one after it started closes the connection without the final chunk, so the
  client sees a cut-off answer, not a complete-looking one. A request target that starts
  with ``//`` is taken as the path it is (RFC 9112 §3.2.1: an origin-form path may have
  empty segments), its leading slashes collapsed to one: cheroot read ``//remote.php/dav/…``
  as an authority and answered 400, and the Nextcloud desktop client sends exactly that
  (its base URL ends in ``/``, and it appends ``/remote.php/dav/files/USER/``). It does
  not send cheroot's ``100 Continue`` for a request whose expectation the selector thread
  already answered (it sends the 100 itself, then buffers the start of the body before a
  worker is taken).
- :class:`GuardedGateway` fixes cheroot's ``Gateway.respond``, which on an exception in the
  body iterator still sent the headers of the failed answer from its ``finally``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi

from davserver.errors import BadFraming, BadRequest, DavServerError
from davserver.http.head import (
    MAX_CHUNK_SIZE_DIGITS,
    MAX_HEADER_BYTES,
    error_response,
    parse_chunk_size,
)

log = logging.getLogger(__name__)

#: A chunk-size line: the size, and extensions we ignore but must not buffer without limit.
MAX_CHUNK_LINE = MAX_CHUNK_SIZE_DIGITS + 4096


class ChunkedReader:
    """``wsgi.input`` for a chunked request body (RFC 9112 §7.1), read chunk by chunk."""

    def __init__(self, rfile: Any, maxlen: int = 0) -> None:
        self.rfile = rfile  # davserver.httpio.SocketReader
        self.maxlen = maxlen  # unused: davserver caps bodies in the provider
        self.bytes_read = 0
        self._left = 0  # bytes of the current chunk still on the wire
        self._started = False
        self._done = False

    @property
    def done(self) -> bool:
        """True once the last chunk and the trailers were read."""
        return self._done

    def _fail(self, message: str) -> BadFraming:
        exc = BadFraming(message)
        self.rfile.failure = exc
        return exc

    def _next_chunk(self) -> bool:
        """Read up to the next chunk's data; False at the end of the body."""
        if self._done:
            return False
        failure = self.rfile.failure
        if failure is not None:
            raise failure
        if self._started and self.rfile.read(2) != b"\r\n":
            raise self._fail("chunk data not followed by CRLF")
        self._started = True
        line = self.rfile.readline(MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            raise self._fail("chunked body ended early" if not line else "invalid chunk size")
        try:
            size = parse_chunk_size(line)
        except BadFraming as exc:
            self.rfile.failure = exc
            raise
        if size == 0:
            self._read_trailers()
            self._done = True
            return False
        self._left = size
        return True

    def _read_trailers(self) -> None:
        budget = MAX_HEADER_BYTES
        while True:
            line = self.rfile.readline(min(budget, MAX_CHUNK_LINE) + 1)
            budget -= len(line)
            if line == b"\r\n":
                return
            if not line.endswith(b"\r\n") or budget < 0:
                raise self._fail("malformed trailer section of a chunked body")

    def _take(self, size: int) -> bytes:
        data: bytes = self.rfile.read(size)
        if len(data) < size:
            raise self._fail("chunked body ended early")
        self._left -= size
        self.bytes_read += size
        return data

    def read(self, size: int | None = None) -> bytes:
        want = -1 if size is None or size < 0 else size
        parts: list[bytes] = []
        got = 0
        while want < 0 or got < want:
            if self._left == 0 and not self._next_chunk():
                break
            n = self._left if want < 0 else min(self._left, want - got)
            parts.append(self._take(n))
            got += n
        return b"".join(parts)

    def readline(self, size: int | None = None) -> bytes:
        limit = -1 if size is None or size < 0 else size
        out = bytearray()
        while limit < 0 or len(out) < limit:
            if self._left == 0 and not self._next_chunk():
                break
            n = self._left if limit < 0 else min(self._left, limit - len(out))
            line: bytes = self.rfile.readline(n)
            if not line:
                raise self._fail("chunked body ended early")
            self._left -= len(line)
            self.bytes_read += len(line)
            out += line
            if line.endswith(b"\n"):
                break
        return bytes(out)

    def readlines(self, sizehint: int = 0) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def close(self) -> None:
        """The socket stays open for the next request."""


def where(exc: BaseException) -> str:
    """An exception's class and frames, innermost first, without its message or source
    lines (a message may hold a name or a header value; logs must not)."""
    frames = traceback.extract_tb(exc.__traceback__)
    stack = " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in reversed(frames))
    return f"{type(exc).__name__} at {stack}"


#: The client went away or stopped reading: nobody to answer.
_CLIENT_GONE = (
    ConnectionError,
    TimeoutError,
    cheroot_errors.FatalSSLAlert,
    cheroot_errors.NoSSLError,
)
_WRITE_FAILED = (OSError, cheroot_errors.FatalSSLAlert, cheroot_errors.NoSSLError)


class _OriginFormLine:
    """The connection's reader for one request line, with the target's leading run of
    slashes collapsed to one (see ``DavRequest``); everything else goes to ``rfile``."""

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile

    def readline(self, *args: Any) -> bytes:
        line: bytes = self._rfile.readline(*args)
        method, space, rest = line.partition(b" ")
        if space and rest.startswith(b"//"):
            return method + b" /" + rest.lstrip(b"/")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


def _headers_without_continue(rfile: Any, hdict: Any = None) -> Any:
    """cheroot's header reader, less an ``Expect: 100-continue`` already answered (cheroot
    sends ``100 Continue`` when it sees one)."""
    hdict = cheroot_server.HTTPRequest.header_reader(rfile, hdict)
    if hdict.get(b"Expect", b"").lower() == b"100-continue":
        del hdict[b"Expect"]
    return hdict


class DavRequest(cheroot_server.HTTPRequest):  # type: ignore[misc]
    """See the module docstring."""

    def read_request_line(self) -> bool:
        rfile = self.rfile
        self.rfile = _OriginFormLine(rfile)
        try:
            if not super().read_request_line():  # type: ignore[no-untyped-call]
                return False
        finally:
            self.rfile = rfile
        try:
            self.path.decode("utf-8")
        except UnicodeDecodeError:
            self._send_error(BadRequest("the request path is not valid UTF-8"))
            return False
        return True

    def read_request_headers(self) -> bool:
        if getattr(self.conn.rfile, "expect_handled", False):
            self.header_reader = _headers_without_continue
        ok: bool = super().read_request_headers()  # type: ignore[no-untyped-call]
        return ok

    def respond(self) -> None:
        if self.chunked_read:
            self.rfile = ChunkedReader(self.conn.rfile, self.server.max_request_body_size)
        else:
            length = int(self.inheaders.get(b"Content-Length", 0))
            self.rfile = cheroot_server.KnownLengthRFile(self.conn.rfile, length)
        try:
            self.server.gateway(self).respond()
            failure = self.conn.rfile.failure
            if failure is not None:  # the application swallowed a broken body
                raise failure
            if self.ready:
                self.ensure_headers_sent()
            if self.chunked_write:
                self.conn.wfile.write(b"0\r\n\r\n")
            if isinstance(self.rfile, ChunkedReader) and not self.rfile.done:
                self.close_connection = True  # the rest of the body is not a next request
        except Exception as exc:  # the outermost guard: every request gets an answer
            self._abort(exc)

    def ensure_headers_sent(self) -> None:
        """Like cheroot's, but a recorded body error replaces the answer, and the headers
        count as sent only once they are (cheroot's ``send_headers`` reads the rest of the
        body first, which may fail)."""
        if self.sent_headers:
            return
        failure = self.conn.rfile.failure
        if failure is not None:
            raise failure
        self.send_headers()
        self.sent_headers = True

    def _abort(self, exc: Exception) -> None:
        self.close_connection = True
        if isinstance(exc, DavServerError) and exc.status < 500:
            log.info("request refused: %d %s", exc.status, exc.reason)
            error: DavServerError = exc
        elif isinstance(exc, _CLIENT_GONE):
            log.info("connection lost while answering a request (%s)", type(exc).__name__)
            return
        elif self.sent_headers:
            log.warning("response aborted mid-body (%s); connection closed", type(exc).__name__)
            return
        else:
            log.error("unhandled %s answered with 500", where(exc))
            error = DavServerError("internal server error")
        if self.sent_headers:
            log.info("response cut off after its headers; connection closed")
            return
        self._send_error(error)

    def _send_error(self, error: DavServerError) -> None:
        self.sent_headers = True
        self.close_connection = True
        try:
            self.conn.wfile.write(error_response(error.status, error.reason))
        except _WRITE_FAILED:
            pass


class GuardedGateway(wsgi.Gateway_10):  # type: ignore[misc]
    """cheroot's WSGI 1.0 gateway without the headers-from-``finally`` of a failed answer."""

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        try:
            for chunk in response:
                if not chunk:
                    continue
                if not isinstance(chunk, bytes):
                    raise TypeError("WSGI applications must yield bytes")
                self.write(chunk)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        if not self.started_response:
            raise RuntimeError("the application returned without calling start_response")
        self.req.ensure_headers_sent()
