"""Strict HTTP/1.1 framing (RFC 9112 §6) against a real server on raw sockets (issue 9,
point 6), and the outermost guard: no request goes without an answer because of an
exception."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests.harness.davserver import DavServer, basic

ORIGINAL = b"the original bytes of an existing file\n" * 50


@pytest.fixture
def dav(dav_server: DavServer) -> DavServer:
    assert dav_server.client("alice").put("/existing.txt", ORIGINAL).status == 201
    return dav_server


def _auth(dav: DavServer) -> str:
    return basic("alice", dav.users["alice"])


def _exchange(dav: DavServer, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; everything until the server closes (bounded)."""
    s = socket.create_connection((dav.host, dav.port), timeout=15)
    try:
        with contextlib.suppress(OSError):
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
        return out
    finally:
        s.close()


def _responses(raw: bytes) -> list[bytes]:
    return [b"HTTP/1.1 " + part for part in raw.split(b"HTTP/1.1 ")[1:]]


def _unchanged(dav: DavServer) -> None:
    got = dav.client("alice").get("/existing.txt")
    assert got.status == 200
    assert got.body == ORIGINAL  # byte for byte


def test_content_length_with_transfer_encoding_is_400_and_the_smuggled_request_dies(
    dav: DavServer,
) -> None:
    auth = _auth(dav)
    smuggled = f"DELETE /existing.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    raw = _exchange(
        dav,
        (
            f"PUT /new.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ).encode(),
    )
    answers = _responses(raw)
    assert len(answers) == 1, raw  # the connection was closed: no second answer
    assert answers[0].startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answers[0]
    _unchanged(dav)  # the smuggled DELETE never ran
    assert dav.client("alice").get("/new.txt").status == 404


@pytest.mark.parametrize(
    "lengths",
    [
        ["Content-Length: 3", "Content-Length: 5"],
        ["Content-Length: 3, 5"],
        ["Content-Length: +5"],
        ["Content-Length: 0x5"],
    ],
    ids=["two-fields", "list", "sign", "hex"],
)
def test_conflicting_or_malformed_content_length_is_400(dav: DavServer, lengths: list[str]) -> None:
    fields = "".join(f"{f}\r\n" for f in lengths)
    raw = _exchange(
        dav,
        (
            f"PUT /existing.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth(dav)}\r\n"
            f"{fields}\r\nabcde"
        ).encode(),
    )
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    _unchanged(dav)


def test_identical_repeated_content_length_is_accepted(dav: DavServer) -> None:
    raw = _exchange(
        dav,
        (
            f"PUT /twice.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth(dav)}\r\n"
            "Content-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        ).encode(),
    )
    assert raw.startswith(b"HTTP/1.1 201 "), raw[:80]
    assert dav.client("alice").get("/twice.txt").body == b"abc"


@pytest.mark.parametrize(
    ("chunks", "half_close"),
    [
        (b"-3\r\nabc\r\n0\r\n\r\n", False),  # negative: cheroot took it for the last chunk
        (b"zz\r\nabc\r\n0\r\n\r\n", False),  # not hex
        (b"3 3\r\nabc\r\n0\r\n\r\n", False),  # junk after the size
        (b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", False),  # too long (OverflowError)
        (b"fffffffffffffff\r\nabc", True),  # huge, and the body ends early
        (b"3\r\nabcXY0\r\n\r\n", False),  # chunk data not followed by CRLF
        (b"3\nabc\r\n0\r\n\r\n", False),  # bare LF after the size
        (b"5\r\nabc", True),  # ends inside a chunk
        # 100 KiB of good chunks first: the worker, not the selector, meets the bad size
        (b"19000\r\n" + b"a" * 0x19000 + b"\r\n-3\r\nabc\r\n0\r\n\r\n", False),
    ],
    ids=[
        *("negative", "non-hex", "junk", "too-long", "huge", "no-crlf", "bare-lf", "short"),
        "negative-after-100KiB",
    ],
)
def test_invalid_chunked_body_is_400_and_nothing_is_committed(
    dav: DavServer, chunks: bytes, half_close: bool
) -> None:
    head = (
        f"PUT /existing.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth(dav)}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    raw = _exchange(dav, head + chunks, half_close=half_close)
    answers = _responses(raw)
    assert len(answers) == 1, raw
    assert answers[0].startswith(b"HTTP/1.1 400 "), raw[:120]
    assert b"Traceback" not in raw
    _unchanged(dav)


def test_valid_chunked_body_with_extensions_and_trailers_is_stored(dav: DavServer) -> None:
    head = (
        f"PUT /chunked.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth(dav)}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    body = b"5;name=value\r\nhello\r\nA \r\n, chunked!\r\n0\r\nX-Trailer: t\r\n\r\n"
    raw = _exchange(dav, head + body)
    assert raw.startswith(b"HTTP/1.1 201 "), raw[:80]
    assert dav.client("alice").get("/chunked.txt").body == b"hello, chunked!"


@pytest.mark.parametrize(
    "field",
    [
        b"X-A: a\rb",  # bare CR inside a value
        b"X-A: a\r\n b",  # obs-fold continuation line
        b"X-A: a\r\n\tb",  # obs-fold with a tab
        b"X-A : a",  # whitespace before the colon
        b"X-A: a\x00b",  # NUL
        b"X A: a",  # not a token
        b"X-A: a\nX-B: b",  # bare LF
    ],
    ids=["bare-cr", "obs-fold", "obs-fold-tab", "space-colon", "nul", "bad-name", "bare-lf"],
)
def test_malformed_header_fields_are_400(dav: DavServer, field: bytes) -> None:
    raw = _exchange(
        dav,
        b"GET /existing.txt HTTP/1.1\r\nHost: x\r\n"
        + field
        + b"\r\nAuthorization: "
        + _auth(dav).encode()
        + b"\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert len(_responses(raw)) == 1


def test_transfer_encoding_other_than_chunked(dav: DavServer) -> None:
    auth = _auth(dav)
    raw = _exchange(
        dav,
        f"PUT /x.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 501 "), raw[:80]
    raw = _exchange(
        dav,
        f"PUT /x.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    raw = _exchange(
        dav,
        f"PUT /x.txt HTTP/1.0\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]


def test_invalid_utf8_in_the_decoded_path_is_400_without_a_traceback(
    dav: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        raw = _exchange(
            dav,
            f"GET /%ff%fe.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth(dav)}\r\n\r\n".encode(),
        )
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert b"UTF-8" in raw and b"Traceback" not in raw
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # valid UTF-8, percent-encoded, still works
    assert dav.client("alice").put("/é.txt", b"e").status == 201
    assert dav.client("alice").get("/é.txt").body == b"e"


@pytest.mark.parametrize("path", ["/../x", "/a/../../x", "/%2e%2e/x", "/remote.php/../../x"])
def test_a_path_that_leaves_the_root_is_a_complete_400(dav: DavServer, path: str) -> None:
    """Answered in full on a kept-alive connection (WsgiDAV's own refusal had a
    Content-Length and no body: the client waited for it until its timeout)."""
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", path, headers={"Authorization": _auth(dav)})
            r = conn.getresponse()
            assert r.status == 400 and r.read() == b"the path leaves the root\n"
            conn.close()
        conn.request("GET", "/a/../x", headers={"Authorization": _auth(dav)})
        assert conn.getresponse().status == 404  # inside the root: an ordinary path
    finally:
        conn.close()


# -- the outermost guard --------------------------------------------------------------------


class _Boom(Exception):
    pass


@pytest.fixture
def faulty(dav: DavServer) -> Iterator[DavServer]:
    """The real server with its WSGI app wrapped by one that fails on /boom/… paths."""
    app = dav.server.wsgi_app

    def wrapper(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/boom/before":
            raise _Boom("secret-file-name.txt")
        if path == "/boom/oserror":  # not the client's socket: still answered
            raise FileNotFoundError("secret-file-name.txt")
        if path == "/boom/after-start":
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise _Boom("secret-file-name.txt")
        if path == "/boom/mid-body":

            def body() -> Iterator[bytes]:
                yield b"first part, "
                raise _Boom("secret-file-name.txt")

            start_response("200 OK", [("Content-Type", "text/plain")])
            return body()
        result: Iterable[bytes] = app(environ, start_response)
        return result

    dav.server.wsgi_app = wrapper
    try:
        yield dav
    finally:
        dav.server.wsgi_app = app


@pytest.mark.parametrize("path", ["/boom/before", "/boom/after-start", "/boom/oserror"])
def test_exception_before_the_answer_is_a_500_logged_once(
    faulty: DavServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.INFO):
        raw = _exchange(faulty, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 500 "), raw[:80]
    assert len(_responses(raw)) == 1
    assert b"Traceback" not in raw and b"secret" not in raw
    assert b"_Boom" not in raw and b"FileNotFound" not in raw
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert ("FileNotFoundError" if "oserror" in path else "_Boom") in errors[0].getMessage()
    assert "secret-file-name" not in caplog.text  # the message may hold a name: not logged
    # the server still answers
    assert faulty.client("alice").get("/existing.txt").status == 200


def test_exception_mid_body_closes_the_connection_without_a_complete_answer(
    faulty: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    conn = http.client.HTTPConnection(faulty.host, faulty.port, timeout=15)
    with caplog.at_level(logging.INFO):
        conn.request("GET", "/boom/mid-body")
        resp = conn.getresponse()
        assert resp.status == 200  # the answer had started
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()  # chunked, and the last chunk never comes: visibly cut off
    conn.close()
    assert info.value.partial == b"first part, "
    aborted = [r for r in caplog.records if "aborted mid-body" in r.getMessage()]
    assert len(aborted) == 1
    assert "secret-file-name" not in caplog.text
