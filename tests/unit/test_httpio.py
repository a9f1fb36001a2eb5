"""davserver.httpio: cheroot's socket files with the bulk paths on recv/sendall, the
selector's preloaded bytes and the body deadline."""

from __future__ import annotations

import array
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from davserver.errors import RequestTimeout
from davserver.httpio import SocketReader, SocketWriter, make_socket_file


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def _send_then_close(sock: socket.socket, data: bytes) -> threading.Thread:
    def run() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_factory_picks_the_class_by_mode(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    assert isinstance(make_socket_file(a, "rb"), SocketReader)
    assert isinstance(make_socket_file(a, "wb"), SocketWriter)


def test_large_read_after_buffered_headers_returns_every_byte_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    body = os.urandom(3 * 1024 * 1024 + 17)
    head = b"PUT /x HTTP/1.1\r\nHost: h\r\n\r\n"
    t = _send_then_close(b, head + body)
    r = SocketReader(a, "rb", 8192)
    assert r.readline() == b"PUT /x HTTP/1.1\r\n"
    assert r.readline() == b"Host: h\r\n"
    assert r.readline() == b"\r\n"
    got = r.read(1024 * 1024)  # starts with what readline had buffered ahead
    got += r.read(2 * 1024 * 1024)
    got += r.read(17)  # small reads go through cheroot's buffered path
    assert got == body
    assert r.bytes_read == len(head) + len(body)  # readline counts too, as in cheroot
    assert r.read(8192) == b""  # end of stream
    t.join()


def test_short_body_gives_a_short_read_not_an_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    t = _send_then_close(b, b"x" * 100_000)
    r = SocketReader(a, "rb", 8192)
    assert len(r.read(1_000_000)) == 100_000
    assert r.bytes_read == 100_000
    t.join()


def test_has_data_sees_read_ahead(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.sendall(b"GET / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    r = SocketReader(a, "rb", 8192)
    assert r.readline() == b"GET / HTTP/1.1\r\n"
    assert r.has_data()  # the pipelined second request is in the buffer


def test_writer_sends_any_buffer_and_counts_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    w = SocketWriter(a, "wb", 8192)
    words = array.array("I", [1, 2, 3])
    payload = os.urandom(2 * 1024 * 1024)
    received = bytearray()

    def drain() -> None:
        while chunk := b.recv(1 << 20):
            received.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    assert w.write(b"head") == 4
    assert w.write(memoryview(payload)) == len(payload)
    assert w.write(words) == words.itemsize * 3  # bytes, not items
    w.flush()
    a.shutdown(socket.SHUT_WR)
    t.join()
    assert bytes(received) == b"head" + payload + words.tobytes()
    assert w.bytes_written == 4 + len(payload) + words.itemsize * 3
    with pytest.raises(TypeError):
        w.write("text")


def test_readline_across_buffers_with_limits_and_eof(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    long_line = b"X-Long: " + b"v" * 100 + b"\r\n"
    t = _send_then_close(b, b"GET / HTTP/1.1\r\n" + long_line + b"\r\nbody-bytes, no newline")
    r = SocketReader(a, "rb", 16)  # lines span several 16-byte reads
    assert r.readline() == b"GET / HTTP/1.1\r\n"
    assert r.readline(10) == long_line[:10]  # a limit stops mid-line...
    assert r.readline() == long_line[10:]  # ...and the rest follows
    assert r.readline() == b"\r\n"
    assert r.read(5) == b"body-"  # reads continue from the same buffer
    assert r.readline() == b"bytes, no newline"  # end of stream ends the line
    assert r.readline() == b""
    assert r.bytes_read == len(b"GET / HTTP/1.1\r\n" + long_line + b"\r\nbody-bytes, no newline")
    t.join()


def test_preload_and_take_buffered_keep_the_byte_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.sendall(b"from the socket")
    r = SocketReader(a, "rb", 8192)
    r.preload(b"GET / HTTP/1.1\r\n\r\nPIPE")  # what the selector thread had read
    assert r.readline() == b"GET / HTTP/1.1\r\n"
    assert r.readline() == b"\r\n"
    assert r.has_data()
    assert r.take_buffered() == b"PIPE"
    assert not r.has_data()
    r.preload(b"head ")
    assert r.read(20) == b"head from the socket"[:20]


def test_small_reads_are_served_from_the_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    t = _send_then_close(b, b"0123456789" * 3)
    r = SocketReader(a, "rb", 8192)
    assert r.read(2) == b"01"
    assert r.read(3) == b"234"
    assert r.read(100) == b"56789" + b"0123456789" * 2  # short at the end of the stream
    assert r.read(5) == b""
    assert r.bytes_read == 30
    t.join()


def test_a_huge_read_does_not_allocate_its_size(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A chunk size of 2**60 reached ``recv(2**60)``: OverflowError."""
    a, b = pair
    t = _send_then_close(b, b"abc")
    r = SocketReader(a, "rb", 8192)
    assert r.read(1 << 60) == b"abc"
    t.join()


def test_body_deadline_is_total_and_grows_with_the_bytes_received(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    r = SocketReader(a, "rb", 8192)
    r.recv_timeout = 10.0
    r.min_rate = 1000.0  # each byte earns 1 ms
    r.deadline = time.monotonic() + 0.3
    b.sendall(b"x" * 1000)
    before = r.deadline
    assert r.read(1000) == b"x" * 1000
    assert r.deadline == pytest.approx(before + 1.0)
    r.deadline = time.monotonic() + 0.2  # nothing more comes
    with pytest.raises(RequestTimeout):
        r.read(10)
    assert isinstance(r.failure, RequestTimeout)
    with pytest.raises(RequestTimeout):  # sticky: the body is broken for good
        r.readline()


def test_past_deadline_raises_without_waiting(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    r = SocketReader(a, "rb", 8192)
    r.deadline = time.monotonic() - 1
    with pytest.raises(RequestTimeout):
        r.read(8192)
