"""davserver.http.head: request heads and chunk sizes checked on buffered bytes."""

from __future__ import annotations

import pytest

from davserver.errors import BadFraming, HeadersTooLarge, UnsupportedCoding, UriTooLong
from davserver.http.head import (
    Head,
    chunked_body_scan,
    error_response,
    parse_chunk_size,
    scan_head,
)


def test_complete_head_and_its_framing() -> None:
    head = b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    assert scan_head(head + b"body") == Head(len(head), 12, False, False)
    chunked = b"PUT /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n"
    assert scan_head(chunked) == Head(len(chunked), 0, True, True)
    assert scan_head(b"\r\nGET / HTTP/1.1\r\n\r\n") == Head(20, 0, False, False)  # one CRLF


def test_expect_continue_only_for_http_1_1() -> None:
    for version, expected in ((b"1.1", True), (b"1.0", False)):
        head = b"PUT /a HTTP/" + version + b"\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n"
        assert scan_head(head) == Head(len(head), 3, False, expected)


@pytest.mark.parametrize(
    "partial", [b"", b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n", b"GET / HTTP/1.1\r\nA: b\r\n\r"]
)
def test_incomplete_heads_wait(partial: bytes) -> None:
    assert scan_head(partial) is None


def test_resumed_scan_finds_an_end_split_across_reads() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for cut in range(1, len(head)):
        assert scan_head(head[:cut]) is None
        assert scan_head(head, resume=cut) == Head(len(head), 0, False, False)


def test_size_limits() -> None:
    with pytest.raises(UriTooLong):
        scan_head(b"GET /" + b"a" * 8200)  # no line end yet: refused already
    with pytest.raises(UriTooLong):
        scan_head(b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n")
    assert scan_head(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n") is not None
    with pytest.raises(HeadersTooLarge):
        scan_head(b"GET / HTTP/1.1\r\nX: " + b"v" * (65 << 10))  # unfinished, too big
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    with pytest.raises(HeadersTooLarge):
        scan_head(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    hundred = b"".join(b"X-%d: v\r\n" % i for i in range(100))
    assert scan_head(b"GET / HTTP/1.1\r\n" + hundred + b"\r\n") is not None


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 3\r\nContent-Length: 4\r\n",
        b"Content-Length: 3, 4\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 1 2\r\n",
        b"Content-Length: 1234567890123456789\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"X: a\rb\r\n",
        b"X: a\r\n folded\r\n",
        b"X : a\r\n",
        b"X\x01: a\r\n",
        b"X: a\x7f\r\n",
        b"no colon\r\n",
        b"X: a\nY: b\r\n",
    ],
)
def test_framing_errors(fields: bytes) -> None:
    with pytest.raises(BadFraming) as info:
        scan_head(b"PUT / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert info.value.status == 400


def test_te_on_http10_and_unknown_codings() -> None:
    with pytest.raises(BadFraming):
        scan_head(b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(UnsupportedCoding) as info:
        scan_head(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert info.value.status == 501


def test_repeated_identical_lengths_and_tabs_in_values_pass() -> None:
    got = scan_head(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\nX: a\tb\r\n\r\n")
    assert got is not None and got.content_length == 5


@pytest.mark.parametrize(
    ("line", "size"),
    [(b"0\r\n", 0), (b"1a\r\n", 26), (b"FF;ext=1\r\n", 255), (b"10 ;x\r\n", 16)],
)
def test_chunk_sizes(line: bytes, size: int) -> None:
    assert parse_chunk_size(line) == size


@pytest.mark.parametrize(
    "line",
    [b"-3\r\n", b"+3\r\n", b"zz\r\n", b"\r\n", b"3\n", b"3", b"0x3\r\n", b"f" * 16 + b"\r\n"],
)
def test_bad_chunk_sizes(line: bytes) -> None:
    with pytest.raises(BadFraming):
        parse_chunk_size(line)


def test_chunked_body_scan_resumes() -> None:
    body = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
    pos = 0
    for cut in range(len(body)):
        done, pos = chunked_body_scan(body[:cut], pos)
        assert not done or cut >= body.index(b"0\r\n") + 3
    assert chunked_body_scan(body, 0) == (True, body.index(b"0\r\n"))
    assert chunked_body_scan(b"-3\r\nabc", 0)[0]  # malformed: the reader answers it


def test_error_response_closes() -> None:
    raw = error_response(431, "too large")
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close\r\n" in raw and raw.endswith(b"\r\n\r\ntoo large\n")
