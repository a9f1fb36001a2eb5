"""davserver.httpio: cheroot's socket files with the bulk paths on recv/sendall."""

from __future__ import annotations

import array
import os
import socket
import threading
from collections.abc import Iterator

import pytest

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
