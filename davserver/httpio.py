"""Socket files for cheroot that do not copy every byte three times.

cheroot reads and writes its sockets through classes built on ``_pyio`` (the pure-Python io
module). Measured on a 1 GiB PUT and GET: a large ``read(n)`` asks the raw socket for
``max(8 KiB, n)`` bytes, which ``_pyio`` serves by allocating and zero-filling an ``n``-byte
bytearray for every ``recv`` (however little it returns) and copying the result out again; a
``write(b)`` appends ``b`` to a bytearray, copies that into a new ``bytes`` for ``send``, then
shifts whatever the kernel did not take. These subclasses keep cheroot's behaviour (the
buffer its header parsing uses, ``has_data()``, the byte counters) and change only the two
bulk paths: a read of at least one buffer's worth goes straight to ``recv`` (the kernel copies
into the ``bytes`` that is returned), and a write goes straight to ``sendall``.

``DavConnection`` makes cheroot use them for every connection, plain or TLS (cheroot's
built-in TLS adapter wraps the socket and builds the same classes on it). The reader also
takes the bytes the selector thread received before the hand-over (``preload``) and holds
the body deadline (``deadline``, ``failure``): see ``davserver.http.connections``.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any

from cheroot import makefile as cheroot_makefile
from cheroot import server as cheroot_server

from davserver.errors import BadFraming, RequestTimeout
from davserver.http.request import DavRequest

#: The most one ``recv`` asks for: a body read of ``size`` bytes must not allocate ``size``
#: bytes up front (a chunk size of 2**60 raised OverflowError here).
MAX_RECV = 4 << 20


class SocketReader(cheroot_makefile.StreamReader):
    """cheroot's reader, with reads of ``buffer_size`` bytes or more served by ``recv``.

    The selector thread hands a connection over with the request head (and the start of its
    body) already received: :meth:`preload` puts those bytes in front of the buffer.
    While ``deadline`` (``time.monotonic()``) is set, every ``recv`` waits at most until
    then, and each byte received moves it on by ``1 / min_rate`` seconds (a slow body may
    take ``body_timeout`` plus one second per ``body_min_rate`` bytes); past it, or when a
    ``recv`` times out, reads raise :class:`RequestTimeout` — recorded in ``failure``, like
    any framing error a body reader records there, so that the request is answered with it
    and the connection closed.
    """

    deadline: float | None = None
    min_rate: float = 1024.0
    recv_timeout: float | None = None  # the socket's own timeout, per recv (server.timeout)
    failure: BadFraming | None = None
    #: Set by the selector: it sent ``100 Continue`` if the request asked for one, so
    #: cheroot must not (see ``DavRequest.read_request_headers``).
    expect_handled: bool = False

    def preload(self, data: bytes) -> None:
        """Put ``data`` in front of whatever is buffered (bytes read by the selector)."""
        this: Any = self
        with this._read_lock:
            rest = this._read_buf[this._read_pos :]
            this._read_buf, this._read_pos = (data + rest if rest else data), 0

    def take_buffered(self) -> bytes:
        """Remove and return the buffered bytes (a pipelined next request, or part of it)."""
        this: Any = self
        with this._read_lock:
            data: bytes = this._read_buf[this._read_pos :]
            this._read_buf, this._read_pos = b"", 0
        return data

    def _recv(self, size: int) -> bytes:
        this: Any = self
        sock: socket.socket = this.raw._sock
        if self.failure is not None:
            raise self.failure
        deadline = self.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(RequestTimeout("the request body did not arrive in time"))
            wait = left if self.recv_timeout is None else min(self.recv_timeout, left)
            if sock.gettimeout() != wait:  # a syscall: only in the last stretch
                sock.settimeout(wait)
        try:
            data = sock.recv(min(size, MAX_RECV))
        except TimeoutError:
            raise self._fail(RequestTimeout("the request body did not arrive in time")) from None
        if deadline is not None and self.deadline is not None:
            self.deadline += len(data) / self.min_rate
        return data

    def _fail(self, exc: BadFraming) -> BadFraming:
        self.failure = exc
        return exc

    def read(self, size: int | None = -1) -> bytes:
        this: Any = self  # the _pyio attributes below are not in the C io stubs
        with this._read_lock:
            buf, pos = this._read_buf, this._read_pos
            if size is not None and 0 <= size <= len(buf) - pos:  # served from the buffer
                data: bytes = buf[pos : pos + size]
                this._read_pos = pos + size
                self.bytes_read += size
                return data
            head = buf[pos:]  # what was read ahead
            this._read_buf, this._read_pos = b"", 0
            parts = [head] if head else []
            got = len(head)
            want = -1 if size is None or size < 0 else size
            if 0 <= want < this.buffer_size:  # small: fill the buffer, keep the rest
                while got < want:
                    chunk = self._recv(this.buffer_size)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                data = b"".join(parts)
                this._read_buf = data[want:] if got > want else b""
                data = data[:want] if got > want else data
            else:  # large (or all): straight into the returned bytes
                while want < 0 or got < want:
                    chunk = self._recv(this.buffer_size if want < 0 else want - got)
                    if not chunk:  # the peer closed: a short read, as from BufferedReader
                        break
                    parts.append(chunk)
                    got += len(chunk)
                data = b"".join(parts)  # one part is returned as it is, not copied
        self.bytes_read += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """A line, up to ``size`` bytes: found in the buffer with ``bytes.find`` rather than
        ``_pyio``'s peek-and-read per call (a third of a small request's parsing time)."""
        this: Any = self
        limit = -1 if size is None else size
        out = bytearray()
        with this._read_lock:
            buf, pos = this._read_buf, this._read_pos
            while limit < 0 or len(out) < limit:
                nl = buf.find(b"\n", pos)
                take = (nl + 1 if nl >= 0 else len(buf)) - pos
                if limit >= 0:
                    take = min(take, limit - len(out))
                out += buf[pos : pos + take]
                pos += take
                if out.endswith(b"\n"):
                    break
                if pos < len(buf):  # stopped by the limit
                    break
                this._read_buf, this._read_pos = b"", 0  # consumed, even if recv raises
                buf, pos = self._recv(this.buffer_size), 0
                if not buf:  # end of stream
                    break
            this._read_buf, this._read_pos = buf, pos
        self.bytes_read += len(out)
        return bytes(out)


class SocketWriter(cheroot_makefile.StreamWriter):
    """cheroot's writer, sending each write with ``sendall`` instead of via a bytearray."""

    def write(self, val: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        this: Any = self  # the _pyio attributes below are not in the C io stubs
        this._checkClosed()
        if isinstance(val, str):
            raise TypeError("can't write str to binary stream")
        n = memoryview(val).nbytes
        with this._write_lock:
            if this._write_buf:  # never left over by this class, but keep the order if so
                this._flush_unlocked()
            this.raw._sock.sendall(val)
        self.bytes_written += n
        return n


def make_socket_file(
    sock: socket.socket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE
) -> SocketReader | SocketWriter:
    """cheroot's ``MakeFile`` signature, returning the classes above."""
    if "r" in mode:
        return SocketReader(sock, mode, bufsize)
    return SocketWriter(sock, mode, bufsize)


class DavConnection(cheroot_server.HTTPConnection):  # type: ignore[misc]
    """A cheroot connection on ``SocketReader``/``SocketWriter``, for plain and TLS sockets,
    parsing requests with the strict :class:`~davserver.http.request.DavRequest`."""

    RequestHandlerClass = DavRequest
    rfile: SocketReader

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None) -> None:
        super().__init__(server, sock, make_socket_file)
