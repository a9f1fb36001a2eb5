"""The selector thread: connections wait here until a request is there to be worked on.

cheroot 11.1.2 hands every newly accepted connection to a worker thread before a byte has
arrived, and its socket timeout counts per ``recv``: with 8 threads, 20 silent sockets
blocked the next client, and a client sending its head a byte a second held a thread
forever. Only its kept-alive connections waited in its selector. Here every connection
waits in the selector — new, kept alive, in its TLS handshake, or with part of a request
head received — and the selector thread, reading without blocking, buffers the head until
its blank line (:func:`~davserver.http.head.scan_head`: sizes and framing, answered there
with 400/408/414/431/501 before any authentication work), then the first
``min(Content-Length, 64 KiB)`` bytes of the body (a chunked body: 64 KiB or its end), and
only then hands the connection to a worker, the bytes preloaded into its reader (pipelined
requests behind it included). A request with ``Expect: 100-continue`` (HTTP/1.1) is answered
``100 Continue`` by the selector once its head has passed those checks, and its body is then
buffered like any other (a client that sends its body without waiting for the 100 is fine
too); the worker's request is told (``SocketReader.expect_handled``) not to send a second one.

Deadlines (:class:`Deadlines`, from ``server.*``) are totals, not per ``recv``: the TLS
handshake and first head within ``head_timeout`` of the accept; the next head on a
kept-alive connection within ``idle_timeout`` of the previous answer (silently closed) and
``head_timeout`` of its first byte (408); a body within ``body_timeout`` plus one second per
``body_min_rate`` bytes received, in the selector and then in the worker's reader
(``davserver.httpio.SocketReader``). No idle or slow connection holds a worker thread;
only a body that started fast and then slowed does, until that deadline.

An error answer is sent without blocking, then the connection lingers (its input read and
dropped for up to 2 s) so that the client sees the answer rather than a reset.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cheroot import connections as cheroot_connections
from cheroot import wsgi

from davserver.errors import BadFraming, DavServerError, Overloaded, RequestTimeout
from davserver.http.head import Head, chunked_body_scan, error_response, scan_head
from davserver.http.request import where
from davserver.httpio import make_socket_file

log = logging.getLogger(__name__)

#: Body bytes the selector waits for before a worker takes the request.
BODY_PREBUFFER = 64 << 10
RECV_SIZE = 64 << 10
ACCEPT_BATCH = 64
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 << 10
#: What all waiting connections together may hold in their buffers (each may hold a head of
#: up to 72 KiB and 64 KiB of body); past it, a connection holding more than BIG_BUFFER is
#: answered 503 (Retry-After) as it grows, while small heads still pass.
BUFFER_BUDGET = 256 << 20
BIG_BUFFER = 16 << 10
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_HANDSHAKE, _HEAD, _LINGER = 0, 1, 2
_WAIT, _DISPATCH, _EOF = "wait", "dispatch", "eof"
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(frozen=True)
class Deadlines:
    """Seconds (and bytes per second) a connection may take; see the module docstring."""

    head_timeout: float = 20.0
    idle_timeout: float = 60.0
    body_timeout: float = 300.0
    body_min_rate: float = 1024.0


class _Waiting:
    """A connection in the selector and what it has sent so far."""

    __slots__ = (
        "accounted",
        "addr",
        "body_pos",
        "buf",
        "closed",
        "conn",
        "continued",
        "deadline",
        "events",
        "fd",
        "head",
        "idle",
        "phase",
        "scanned",
        "sock",
        "tls",
    )

    def __init__(
        self, sock: Any, conn: Any, addr: Any, deadline: float, phase: int, tls: bool
    ) -> None:
        self.sock = sock
        self.conn = conn  # None until the TLS handshake is done
        self.addr = addr
        self.deadline = deadline
        self.phase = phase
        self.tls = tls
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.head: Head | None = None
        self.idle = False  # kept alive, waiting for the first byte of its next request
        self.scanned = 0  # buffer length at the last incomplete head scan
        self.body_pos = 0  # where the chunked body scan resumes
        self.events = selectors.EVENT_READ
        self.closed = False
        self.accounted = 0  # bytes of buf counted in the manager's budget
        self.continued = False  # 100 Continue sent for the current head

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            if self.conn is not None:
                self.conn.close()
            else:
                self.sock.close()


class SelectorConnections(cheroot_connections.ConnectionManager):  # type: ignore[misc]
    """cheroot's connection manager with the behaviour of the module docstring."""

    # cheroot's (untyped) attributes used here
    _selector: Any
    _stop_requested: bool
    _remove_invalid_sockets: Callable[[], None]
    _num_connections: int

    def __init__(self, server: Any, deadlines: Deadlines) -> None:
        super().__init__(server)
        self.deadlines = deadlines
        self._tls = server.ssl_adapter
        self._warned = 0.0
        self._budget_lock = threading.Lock()  # the budget changes in workers' put() too
        self.buffered = 0
        server.socket.settimeout(0)  # accept without blocking, several per wakeup
        # Waiting connections must leave descriptors for the workers (index, blobs, S3):
        # with none left, every request got 503 "cannot connect to the index database".
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        soft = 1 << 20 if soft == resource.RLIM_INFINITY else soft
        threads = int(getattr(server, "numthreads", 32) or 32)
        self.max_waiting = max(16, soft - min(soft // 2, 64 + 8 * threads))

    # -- the selector thread --------------------------------------------------------------

    def _run(self, expiration_interval: float) -> None:
        next_check = time.monotonic() + expiration_interval
        while not self._stop_requested:
            try:
                ready = list(self._selector.select(timeout=expiration_interval))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, waiting in ready:
                if waiting is self.server:
                    self._accept()
                    continue
                if waiting.closed:  # dropped earlier in this round (its fd may be reused)
                    continue
                try:
                    self._on_ready(fd, waiting)
                except Exception as exc:  # one connection's trouble must not stop the loop
                    self._failed(waiting, exc, registered=True)
            now = time.monotonic()
            if now >= next_check:
                self._expire(now)
                next_check = now + expiration_interval

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.server.socket.accept()
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._shed(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if self._num_connections >= self.max_waiting and not self._shed_one():
                sock.close()  # every waiting connection is mid-request: refuse the newest
                continue
            sock.settimeout(0)
            deadline = time.monotonic() + self.deadlines.head_timeout
            if self._tls is not None:
                try:
                    tls = self._tls.context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (OSError, ValueError):
                    sock.close()
                    continue
                waiting = _Waiting(tls, None, addr, deadline, _HANDSHAKE, True)
            else:
                conn = self._make_conn(sock, addr, {})
                waiting = _Waiting(sock, conn, addr, deadline, _HEAD, False)
            self._selector.register(waiting.fd, selectors.EVENT_READ, data=waiting)

    def _make_conn(self, sock: Any, addr: Any, ssl_env: dict[str, Any]) -> Any:
        conn = self.server.ConnectionClass(self.server, sock, make_socket_file)
        if not isinstance(self.server.bind_addr, str | bytes):
            conn.remote_addr, conn.remote_port = (addr or ("0.0.0.0", 0))[:2]  # noqa: S104
        conn.ssl_env = ssl_env
        return conn

    def _on_ready(self, fd: int, waiting: _Waiting) -> None:
        if waiting.phase == _HANDSHAKE:
            self._handshake(waiting)
        elif waiting.phase == _LINGER:
            self._linger(waiting)
        else:
            self._settle(waiting, self._feed(waiting), registered=True)

    def _settle(self, waiting: _Waiting, state: Any, *, registered: bool) -> None:
        """Act on what :meth:`_feed` found."""
        if state is _WAIT:
            if not registered:
                self._selector.register(waiting.fd, selectors.EVENT_READ, data=waiting)
        elif state is _DISPATCH:
            if registered:
                self._selector.unregister(waiting.fd)
            self._dispatch(waiting)
        elif state is _EOF:
            self._drop(waiting)
        else:
            self._reject(waiting, state, registered=registered)

    def _handshake(self, waiting: _Waiting) -> None:
        sock = waiting.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(waiting, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(waiting, selectors.EVENT_WRITE)
            return
        except ssl.SSLError as exc:
            if "http request" in str(exc).lower():  # plain HTTP on the HTTPS port
                msg = error_response(400, "this port speaks HTTPS only")
                with contextlib.suppress(OSError):
                    socket.socket.send(sock, msg)
            self._drop(waiting)
            return
        except OSError:
            self._drop(waiting)
            return
        self._want(waiting, selectors.EVENT_READ)
        waiting.conn = self._make_conn(sock, waiting.addr, self._tls.get_environ(sock))
        waiting.phase = _HEAD
        self._settle(waiting, self._feed(waiting), registered=True)  # data may be decrypted

    def _want(self, waiting: _Waiting, events: int) -> None:
        if waiting.events != events:
            self._selector.unregister(waiting.fd)
            self._selector.register(waiting.fd, events, data=waiting)
            waiting.events = events

    def _feed(self, waiting: _Waiting, read: bool = True) -> Any:
        """Read what is there without blocking; ``_WAIT``, ``_DISPATCH``, ``_EOF`` or the
        :class:`BadFraming` to answer."""
        sock = waiting.sock
        while True:
            try:
                if self._complete(waiting):
                    return _DISPATCH
            except BadFraming as exc:
                return exc
            head = waiting.head
            if head is not None and head.expect_continue and not waiting.continued:
                if not self._send_continue(waiting):
                    return _EOF
            if not read:
                return _WAIT
            try:
                chunk = sock.recv(RECV_SIZE)
            except _WOULD_BLOCK:
                return _WAIT
            except OSError:
                return _EOF
            if not chunk:  # half-closed after a whole head: the worker answers that body
                return _EOF if waiting.head is None else _DISPATCH
            now = time.monotonic()
            if waiting.idle:  # the next request starts: its head has head_timeout
                waiting.idle = False
                waiting.deadline = now + self.deadlines.head_timeout
            elif waiting.head is not None:
                waiting.deadline += len(chunk) / self.deadlines.body_min_rate
            self._grow(waiting, chunk)
            if self.buffered > BUFFER_BUDGET and len(waiting.buf) > BIG_BUFFER:
                return Overloaded("too many partly received requests; retry later")
            # A short read drained the socket; TLS may hold decrypted bytes select misses.
            read = waiting.tls or len(chunk) == RECV_SIZE

    def _complete(self, waiting: _Waiting) -> bool:
        """True once the head and the start of the body are buffered."""
        buf = waiting.buf
        head = waiting.head
        if head is None:
            if not buf:
                return False
            head = scan_head(buf, waiting.scanned)
            if head is None:
                waiting.scanned = len(buf)
                return False
            waiting.head = head
            waiting.body_pos = head.size
            if head.chunked or head.content_length:
                body = len(buf) - head.size
                d = self.deadlines
                waiting.deadline = time.monotonic() + d.body_timeout + body / d.body_min_rate
        if not (head.chunked or head.content_length):
            return True
        body = len(buf) - head.size
        if body >= BODY_PREBUFFER:
            return True
        if head.chunked:
            done, waiting.body_pos = chunked_body_scan(buf, waiting.body_pos)
            return done
        return body >= head.content_length

    def _send_continue(self, waiting: _Waiting) -> bool:
        """Send ``100 Continue`` without blocking; False (the connection is dropped) if the
        socket would not take these 25 bytes at once: a client that does not read."""
        waiting.continued = True
        try:
            sent: int = waiting.sock.send(CONTINUE)
        except (*_WOULD_BLOCK, OSError):
            return False
        return sent == len(CONTINUE)

    def _dispatch(self, waiting: _Waiting) -> None:
        """Hand the connection, its bytes preloaded, to a worker thread."""
        conn = waiting.conn
        head = waiting.head
        waiting.sock.settimeout(self.server.timeout)
        rfile = conn.rfile
        rfile.preload(bytes(waiting.buf))
        self._release(waiting)
        rfile.failure = None
        rfile.expect_handled = True  # the selector sent 100 Continue if one was due
        rfile.recv_timeout = float(self.server.timeout)
        rfile.min_rate = self.deadlines.body_min_rate
        has_body = head is not None and (head.chunked or head.content_length > 0)
        rfile.deadline = waiting.deadline if has_body else None
        conn.last_used = time.time()
        self.server.process_conn(conn)

    def _failed(self, waiting: _Waiting, exc: Exception, *, registered: bool) -> None:
        """A bug met on one connection: a 500 if a request had started, then close."""
        log.error("selector error on a connection: %s", where(exc))
        if waiting.closed:
            return
        try:
            if waiting.phase == _HEAD and waiting.buf and not waiting.closed:
                error = DavServerError("internal server error")
                self._reject(waiting, error, registered=registered)
                return
        except Exception:  # noqa: S110 - the connection is closed below either way
            pass
        self._drop(waiting)

    def _reject(self, waiting: _Waiting, exc: DavServerError, *, registered: bool) -> None:
        """Answer ``exc`` without blocking, then linger."""
        log.info("request refused: %d %s", exc.status, exc.reason)
        sock = waiting.sock
        with contextlib.suppress(OSError):
            sock.send(error_response(exc.status, exc.reason, getattr(exc, "retry_after", None)))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        waiting.phase = _LINGER
        self._release(waiting)
        waiting.buf = bytearray()
        waiting.scanned = 0  # counts the bytes dropped while lingering
        waiting.deadline = time.monotonic() + LINGER_SECONDS
        if not registered:
            self._selector.register(waiting.fd, selectors.EVENT_READ, data=waiting)
        elif waiting.events != selectors.EVENT_READ:
            self._want(waiting, selectors.EVENT_READ)

    def _linger(self, waiting: _Waiting) -> None:
        try:
            got = len(waiting.sock.recv(RECV_SIZE))
        except _WOULD_BLOCK:
            return
        except OSError:
            got = 0
        waiting.scanned += got
        if not got or waiting.scanned > LINGER_BYTES:
            self._drop(waiting)

    def _drop(self, waiting: _Waiting) -> None:
        """Unregister if registered (before the descriptor can be reused) and close."""
        if not waiting.closed:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(waiting.fd)
        self._release(waiting)
        waiting.close()

    def _grow(self, waiting: _Waiting, data: bytes) -> None:
        waiting.buf += data
        waiting.accounted += len(data)
        with self._budget_lock:
            self.buffered += len(data)

    def _release(self, waiting: _Waiting) -> None:
        if waiting.accounted:
            with self._budget_lock:
                self.buffered -= waiting.accounted
            waiting.accounted = 0

    def _expire(self, now: float) -> None:  # type: ignore[override]
        expired = [
            w for _, w in self._selector.connections if w is not self.server and w.deadline <= now
        ]
        for waiting in expired:
            if waiting.phase == _HEAD and waiting.buf and not waiting.idle:
                self._reject(
                    waiting, RequestTimeout("the request did not arrive in time"), registered=True
                )
            else:  # silent so far, lingering, or stuck in the TLS handshake
                self._drop(waiting)

    def _shed(self, exc: OSError) -> None:
        """Out of descriptors: make room for the next client."""
        now = time.monotonic()
        if now - self._warned > 10:
            self._warned = now
            log.warning("out of file descriptors (%s): closing idle connections", exc.strerror)
        if not self._shed_one():
            time.sleep(0.05)  # nothing to shed: do not spin on the listening socket

    def _shed_one(self) -> bool:
        """Close the connection that has waited longest without sending a byte (False if
        there is none)."""
        idle = [
            w
            for _, w in self._selector.connections
            if w is not self.server and not w.buf and w.phase != _LINGER
        ]
        if not idle:
            return False
        self._drop(min(idle, key=lambda w: w.deadline))
        return True

    # -- worker threads -------------------------------------------------------------------

    def put(self, conn: Any) -> None:
        """A worker is done with a kept-alive connection: look at what it has buffered (a
        pipelined request goes straight back to a worker), else wait for the next one.
        Never raises: it runs in the worker's ``finally``, where cheroot takes an exception
        for a fatal one and stops the server."""
        try:
            self._put(conn)
        except Exception as exc:
            log.error("could not keep a connection alive: %s", where(exc))
            with contextlib.suppress(Exception):
                conn.close()

    def _put(self, conn: Any) -> None:
        conn.last_used = time.time()
        now = time.monotonic()
        sock = conn.socket
        tls = isinstance(sock, ssl.SSLSocket)
        waiting = _Waiting(sock, conn, None, now + self.deadlines.idle_timeout, _HEAD, tls)
        rfile = conn.rfile
        rfile.deadline = None
        leftover = rfile.take_buffered()
        pending = tls and sock.pending() > 0
        sock.settimeout(0)
        if leftover:
            self._grow(waiting, leftover)
            waiting.deadline = now + self.deadlines.head_timeout
        else:
            waiting.idle = True
        if not (leftover or pending):
            self._selector.register(waiting.fd, selectors.EVENT_READ, data=waiting)
            return
        self._settle(waiting, self._feed(waiting, read=pending), registered=False)


class SelectingServer(wsgi.Server):  # type: ignore[misc]
    """cheroot's WSGI server with :class:`SelectorConnections` in place of its manager."""

    deadlines = Deadlines()
    keep_alive_conn_limit = None  # type: ignore[assignment]  # a descriptor, not a thread
    _connections: Any

    def prepare(self) -> None:
        super().prepare()
        self._connections._selector.close()  # cheroot's own manager, never run
        self._connections = SelectorConnections(self, self.deadlines)


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (1,250 waiting
    connections exceed the usual 1,024); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
