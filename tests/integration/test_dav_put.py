"""PUT: streaming bodies, chunked transfer, announced lengths, truncation, checksums, quota."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from tests.harness.davserver import DavClient, DavServer, basic, start_dav_server


def raw_request(
    dav: DavServer, head: str, body_parts: list[bytes], close_early: bool = False
) -> bytes:
    """Send a hand-written request; return what the server answered (b"" if nothing)."""
    with socket.create_connection((dav.host, dav.port), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        for part in body_parts:
            s.sendall(part)
        if close_early:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and not close_early:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def put_head(dav: DavServer, path: str, extra: str) -> str:
    auth = basic("alice", dav.users["alice"])
    return (
        f"PUT {path} HTTP/1.1\r\nHost: {dav.host}:{dav.port}\r\nAuthorization: {auth}\r\n"
        f"{extra}\r\n"
    )


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    parts = [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    ]
    return [*parts, b"0\r\n\r\n"]


def test_chunked_put(dav_server: DavServer, alice: DavClient) -> None:
    data = os.urandom(300_000)
    reply = raw_request(
        dav_server,
        put_head(dav_server, "/c.bin", "Transfer-Encoding: chunked\r\n"),
        chunked(data, 7000),
    )
    assert reply.startswith(b"HTTP/1.1 201")
    assert alice.get("/c.bin").body == data


def test_chunked_put_with_expected_entity_length(dav_server: DavServer, alice: DavClient) -> None:
    # macOS Finder: chunked, no Content-Length, X-Expected-Entity-Length.
    data = os.urandom(50_000)
    head = put_head(
        dav_server,
        "/finder",
        f"Transfer-Encoding: chunked\r\nX-Expected-Entity-Length: {len(data)}\r\n",
    )
    assert raw_request(dav_server, head, chunked(data)).startswith(b"HTTP/1.1 201")
    assert alice.get("/finder").body == data
    # A chunked body shorter than announced is refused and nothing changes.
    head = put_head(
        dav_server,
        "/finder",
        f"Transfer-Encoding: chunked\r\nX-Expected-Entity-Length: {len(data) + 10}\r\n",
    )
    reply = raw_request(dav_server, head, chunked(b"short"))
    assert reply.startswith(b"HTTP/1.1 400")
    assert alice.get("/finder").body == data


def test_truncated_put_keeps_the_old_content(dav_server: DavServer, alice: DavClient) -> None:
    old = b"old content " * 1000
    assert alice.put("/doc", old).status == 201
    etag = alice.get("/doc").header("ETag")
    # The client announces 1 MB, sends 100 kB and goes away.
    head = put_head(dav_server, "/doc", "Content-Length: 1000000\r\n")
    raw_request(dav_server, head, [os.urandom(100_000)], close_early=True)
    time.sleep(0.5)
    r = alice.get("/doc")
    assert (r.body, r.header("ETag")) == (old, etag)
    # Nor is a new file created by a truncated upload.
    raw_request(
        dav_server,
        put_head(dav_server, "/new", "Content-Length: 5000\r\n"),
        [b"x" * 10],
        close_early=True,
    )
    time.sleep(0.5)
    assert alice.get("/new").status == 404


def test_truncated_chunked_put_keeps_the_old_content(
    dav_server: DavServer, alice: DavClient
) -> None:
    alice.put("/doc", b"old")
    head = put_head(dav_server, "/doc", "Transfer-Encoding: chunked\r\n")
    raw_request(dav_server, head, [b"1000\r\n" + b"y" * 500], close_early=True)
    time.sleep(0.5)
    assert alice.get("/doc").body == b"old"


def test_large_put_streams(alice: DavClient) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    assert alice.put("/big", data).status == 201
    r = alice.get("/big")
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()


def test_owncloud_checksum_and_property(alice: DavClient) -> None:
    data = b"checked"
    sha1 = hashlib.sha1(data).hexdigest()
    assert alice.put("/ok", data, {"OC-Checksum": f"SHA1:{sha1}"}).status == 201
    assert alice.put("/bad", data, {"OC-Checksum": "SHA1:" + "0" * 40}).status == 400
    assert alice.get("/bad").status == 404
    body = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:checksums/></d:prop></d:propfind>"
    )
    r = alice.propfind("/ok", "0", body)
    assert f"SHA1:{sha1}" in r.text
    assert hashlib.md5(data).hexdigest() in r.text


def test_content_range_on_put_is_refused(alice: DavClient) -> None:
    assert alice.put("/f", b"x", {"Content-Range": "bytes 0-0/1"}).status == 400


@pytest.fixture
def quota_server(tmp_path: Path) -> DavServer:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_QUOTA_DEFAULT_BYTES": "100000"})
    yield dav  # type: ignore[misc]
    dav.stop()


def test_quota_put_over_quota_is_507_and_changes_nothing(quota_server: DavServer) -> None:
    alice = quota_server.client("alice")
    assert alice.put("/a", b"a" * 60_000).status == 201
    r = alice.put("/b", b"b" * 60_000)
    assert r.status == 507
    assert alice.get("/b").status == 404
    assert alice.put("/a", b"c" * 120_000).status == 507
    assert alice.get("/a").body == b"a" * 60_000
    # Chunked (length unknown up front): refused while streaming, nothing committed.
    head = put_head(quota_server, "/c", "Transfer-Encoding: chunked\r\n")
    reply = raw_request(quota_server, head, chunked(b"z" * 60_000))
    assert reply.startswith(b"HTTP/1.1 507")
    assert alice.get("/c").status == 404
    body = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>"
    )
    r = alice.propfind("/", "0", body)
    assert "<D:quota-used-bytes>60000<" in r.text
    assert "<D:quota-available-bytes>40000<" in r.text
    assert alice.copy("/a", "/a2").status == 507
    assert alice.get("/a2").status == 404
