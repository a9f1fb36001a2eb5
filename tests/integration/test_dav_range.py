"""GET with a single byte Range: every form, segment boundaries, If-Range, unsatisfiable."""

from __future__ import annotations

import os

import pytest

from tests.harness.davserver import DavClient, DavServer

SEG = 1 << 16  # the blob format's default segment size (64 KiB)
SIZE = 3 * SEG + 1000


@pytest.fixture
def data(alice: DavClient) -> bytes:
    payload = os.urandom(SIZE)
    assert alice.put("/r.bin", payload).status == 201
    return payload


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),  # first byte
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),  # last byte
        ("bytes=0-", 0, SIZE - 1),  # open-ended from the start
        ("bytes=100-", 100, SIZE - 1),  # open-ended
        ("bytes=-1", SIZE - 1, SIZE - 1),  # suffix of one byte
        ("bytes=-5000", SIZE - 5000, SIZE - 1),  # suffix
        (f"bytes=-{SIZE + 50}", 0, SIZE - 1),  # suffix longer than the file
        (f"bytes={SEG - 10}-{SEG + 10}", SEG - 10, SEG + 10),  # straddles a segment boundary
        (f"bytes={SEG}-{2 * SEG - 1}", SEG, 2 * SEG - 1),  # exactly one segment
        (f"bytes=10-{3 * SEG + 5}", 10, 3 * SEG + 5),  # spans several segments
        (f"bytes=5-{SIZE + 1000}", 5, SIZE - 1),  # last-byte-pos past the end is clipped
    ],
)
def test_single_range(alice: DavClient, data: bytes, header: str, start: int, end: int) -> None:
    r = alice.get("/r.bin", {"Range": header})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {start}-{end}/{SIZE}"
    assert r.header("Content-Length") == str(end - start + 1)
    assert r.body == data[start : end + 1]


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_unsatisfiable_range_is_416(alice: DavClient, data: bytes, header: str) -> None:
    r = alice.get("/r.bin", {"Range": header})
    assert r.status == 416
    assert r.header("Content-Range") == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=9-3", "items=0-1", "bytes=", "bytes=0-1,5-6", "garbage"])
def test_ignored_range_sends_everything(alice: DavClient, data: bytes, header: str) -> None:
    r = alice.get("/r.bin", {"Range": header})
    assert r.status == 200
    assert r.body == data


def test_range_on_empty_file(alice: DavClient) -> None:
    alice.put("/empty", b"")
    assert alice.get("/empty", {"Range": "bytes=0-0"}).status == 416
    assert alice.get("/empty", {"Range": "bytes=-1"}).status == 416


def test_if_range(alice: DavClient, data: bytes) -> None:
    etag = alice.get("/r.bin").header("ETag") or ""
    r = alice.get("/r.bin", {"Range": "bytes=0-9", "If-Range": etag})
    assert (r.status, r.body) == (206, data[:10])
    r = alice.get("/r.bin", {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (r.status, len(r.body)) == (200, SIZE)


def test_head_with_range(alice: DavClient, data: bytes) -> None:
    r = alice.request("HEAD", "/r.bin", None, {"Range": "bytes=1-2"})
    assert r.status == 206 and r.body == b""
    assert r.header("Content-Length") == "2"


def test_range_on_both_backends(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    payload = os.urandom(2 * SEG + 77)
    alice.put("/x", payload)
    for header, lo, hi in [
        ("bytes=0-0", 0, 0),
        ("bytes=-1", len(payload) - 1, len(payload) - 1),
        (f"bytes={SEG - 1}-{SEG}", SEG - 1, SEG),
    ]:
        r = alice.get("/x", {"Range": header})
        assert (r.status, r.body) == (206, payload[lo : hi + 1])
