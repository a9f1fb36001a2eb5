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
built-in TLS adapter wraps the socket and builds the same classes on it).
"""

from __future__ import annotations

import io
import socket
from typing import Any

from cheroot import makefile as cheroot_makefile
from cheroot import server as cheroot_server


class SocketReader(cheroot_makefile.StreamReader):
    """cheroot's reader, with reads of ``buffer_size`` bytes or more served by ``recv``."""

    def read(self, size: int | None = -1) -> bytes:
        this: Any = self  # the _pyio attributes below are not in the C io stubs
        if size is None or size < this.buffer_size:
            data: bytes = super().read(size)  # type: ignore[no-untyped-call]  # counts bytes_read
            return data
        with this._read_lock:
            pos = this._read_pos
            head = this._read_buf[pos:]  # what header parsing had read ahead
            this._read_buf, this._read_pos = b"", 0
            parts = [head] if head else []
            got = len(head)
            sock: socket.socket = this.raw._sock
            while got < size:
                chunk = sock.recv(size - got)
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
                buf, pos = this.raw._sock.recv(this.buffer_size), 0
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
    """A cheroot connection on ``SocketReader``/``SocketWriter``, for plain and TLS sockets."""

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None) -> None:
        super().__init__(server, sock, make_socket_file)
