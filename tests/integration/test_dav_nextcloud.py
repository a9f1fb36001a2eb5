"""Nextcloud-style paths over raw HTTP: the files alias, chunked uploads (MKCOL, chunk PUTs,
MOVE of ``.file``), cancel and expiry, PATCH ``X-Recalculate-Hash``, and the rule that a user
can address only their own tree and uploads."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from davserver.index.models import LoginFailure, UploadChunk, Version
from davserver.server import _maintenance
from davserver.vault import Vault
from davserver.vault.throttle import LoginThrottle
from tests.harness.davserver import DavClient, DavServer, basic, start_dav_server
from tests.harness.vaults import stored_blob_ids

FILES = "/remote.php/dav/files/alice"
UPLOADS = "/remote.php/dav/uploads/alice"
OC = "{http://owncloud.org/ns}"
D = "{DAV:}"


def referenced(vault: Vault) -> set[str]:
    with vault.index.connection():
        return {v.blob_id for v in Version.select(Version.blob_id)} | {
            c.blob_id for c in UploadChunk.select(UploadChunk.blob_id)
        }


def no_orphans(vault: Vault) -> None:
    vault.collect_garbage(grace=0)
    assert stored_blob_ids(vault) == referenced(vault)


def hrefs(text: str) -> list[str]:
    return [h.text or "" for h in ET.fromstring(text).iter(D + "href")]


def sizes(text: str) -> dict[str, int]:
    out = {}
    for resp in ET.fromstring(text).iter(D + "response"):
        length = resp.find(f".//{D}getcontentlength")
        if length is not None and length.text:  # collections: an empty 404 element
            out[(resp.findtext(D + "href") or "").rsplit("/", 1)[-1]] = int(length.text or 0)
    return out


def truncated_put(dav: DavServer, path: str, announced: int, sent: bytes) -> None:
    """A chunk PUT whose client goes away mid-body."""
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {dav.host}:{dav.port}\r\n"
        f"Authorization: {basic('alice', dav.users['alice'])}\r\n"
        f"Content-Length: {announced}\r\n\r\n"
    )
    with socket.create_connection((dav.host, dav.port), timeout=30) as s:
        s.sendall(head.encode() + sent)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            pass


def test_files_alias_is_the_users_tree(alice: DavClient) -> None:
    assert alice.mkcol(FILES + "/d").status == 201
    assert alice.put(FILES + "/d/f.txt", b"via alias", {"X-OC-Mtime": "1500000000"}).status == 201
    assert alice.get("/d/f.txt").body == b"via alias"
    r = alice.propfind(FILES + "/d/", "1")
    assert r.status == 207
    assert sorted(hrefs(r.text)) == [FILES + "/d/", FILES + "/d/f.txt"]
    assert alice.propfind(FILES, "0").status == 207
    # Plain paths keep plain hrefs.
    assert hrefs(alice.propfind("/d/", "0").text) == ["/d/"]
    # Destination through the alias, from either kind of source path.
    r = alice.request("MOVE", FILES + "/d/f.txt", headers={"Destination": alice.url(FILES + "/g")})
    assert r.status == 201
    r = alice.request("COPY", "/g", headers={"Destination": alice.url(FILES + "/d/h")})
    assert r.status == 201
    assert alice.get("/g").body == alice.get(FILES + "/d/h").body == b"via alias"
    assert alice.delete(FILES + "/d").status == 204
    assert alice.get("/d/h").status == 404


def test_other_users_paths_are_not_found(dav_server: DavServer, alice: DavClient) -> None:
    bob = dav_server.add_user("bob")
    assert bob.put("/secret", b"bob's").status == 201
    assert alice.put("/mine", b"alice's").status == 201
    for method, path in [
        ("PROPFIND", "/remote.php/dav/files/bob/"),
        ("GET", "/remote.php/dav/files/bob/secret"),
        ("DELETE", "/remote.php/dav/files/bob/secret"),
        ("PROPFIND", "/remote.php/dav/files/nobody/"),
        ("PROPFIND", "/remote.php/dav/files/"),
        ("MKCOL", "/remote.php/dav/uploads/bob/u1"),
        ("PROPFIND", "/remote.php/dav/uploads/bob/"),
    ]:
        headers = {"Depth": "0"} if method == "PROPFIND" else {}
        assert alice.request(method, path, headers=headers).status == 404, (method, path)
    # A Destination in someone else's tree, or in the uploads space, is refused too.
    r = alice.request(
        "MOVE", "/mine", headers={"Destination": alice.url("/remote.php/dav/files/bob/x")}
    )
    assert r.status == 404
    r = alice.request("COPY", "/mine", headers={"Destination": alice.url(UPLOADS + "/x")})
    assert r.status == 403
    assert alice.get("/mine").body == b"alice's"
    assert bob.get("/secret").body == b"bob's"
    assert alice.get("/secret").status == 404
    # Uploads are per user: bob cannot touch alice's upload id, nor assemble it.
    assert alice.mkcol(UPLOADS + "/u1").status == 201
    assert alice.put(UPLOADS + "/u1/1", b"alice chunk").status == 201
    assert bob.put("/remote.php/dav/uploads/bob/u1/1", b"x").status == 409
    r = bob.request(
        "MOVE",
        "/remote.php/dav/uploads/bob/u1/.file",
        headers={"Destination": bob.url("/remote.php/dav/files/bob/stolen")},
    )
    assert r.status == 404
    r = alice.request(
        "MOVE",
        UPLOADS + "/u1/.file",
        headers={"Destination": alice.url("/remote.php/dav/files/bob/planted")},
    )
    assert r.status == 404
    assert bob.get("/planted").status == 404 and alice.get("/planted").status == 404


def test_chunked_upload_resumes_after_interruption(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    parts = [os.urandom(200_000), os.urandom(200_000), os.urandom(50_001)]
    whole = b"".join(parts)
    assert alice.mkcol(FILES + "/dst").status == 201
    r = alice.mkcol(UPLOADS + "/web-file-upload-1")
    assert r.status == 201
    assert alice.put(UPLOADS + "/web-file-upload-1/1", parts[0]).status == 201
    # The connection drops in the middle of chunk 2: nothing of it is kept.
    truncated_put(dav_any, UPLOADS + "/web-file-upload-1/2", len(parts[1]), parts[1][:70_000])
    # The client asks what arrived, and resumes from there.
    r = alice.propfind(UPLOADS + "/web-file-upload-1/", "1")
    assert r.status == 207
    assert sizes(r.text) == {"1": len(parts[0])}
    assert hrefs(r.text)[0] == UPLOADS + "/web-file-upload-1/"
    assert alice.put(UPLOADS + "/web-file-upload-1/2", parts[1]).status == 201
    assert alice.put(UPLOADS + "/web-file-upload-1/3", parts[2]).status == 201
    assert alice.put(UPLOADS + "/web-file-upload-1/3", parts[2]).status == 204  # a retry
    r = alice.propfind(UPLOADS + "/web-file-upload-1/3", "0")
    assert sizes(r.text) == {"3": len(parts[2])}
    sha1 = hashlib.sha1(whole).hexdigest()
    r = alice.request(
        "MOVE",
        UPLOADS + "/web-file-upload-1/.file",
        headers={
            "Destination": alice.url(FILES + "/dst/file.bin"),
            "OC-Total-Length": str(len(whole)),
            "X-OC-Mtime": "1500000000",
            "OC-Checksum": f"SHA1:{sha1}",
        },
    )
    assert r.status == 201, r.text
    assert r.header("X-OC-Mtime") == "accepted"
    assert r.header("OC-FileId") and r.header("ETag")
    got = alice.get("/dst/file.bin")
    assert got.body == whole
    assert got.header("Last-Modified") == "Fri, 14 Jul 2017 02:40:00 GMT"
    body = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:checksums/><oc:fileid/></d:prop></d:propfind>"
    )
    r = alice.propfind(FILES + "/dst/file.bin", "0", body)
    assert f"SHA1:{sha1}" in r.text and hashlib.md5(whole).hexdigest() in r.text
    # The upload is gone, and so are its chunks' blobs: one version, one blob.
    assert alice.propfind(UPLOADS + "/web-file-upload-1/", "0").status == 404
    no_orphans(dav_any.vault)
    assert len(referenced(dav_any.vault)) == 1


def test_assembly_checks_commit_nothing(dav_server: DavServer, alice: DavClient) -> None:
    assert alice.put("/f", b"old content").status == 201
    etag = alice.get("/f").header("ETag")
    assert alice.mkcol(UPLOADS + "/u").status == 201
    for i, part in enumerate([b"new ", b"content"], 1):
        assert alice.put(f"{UPLOADS}/u/{i}", part).status == 201
    move = {"Destination": alice.url(FILES + "/f")}
    bad_sum = {**move, "OC-Checksum": "SHA1:" + "0" * 40}
    bad_len = {**move, "OC-Total-Length": "12"}
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=bad_sum).status == 400
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=bad_len).status == 400
    no_overwrite = {**move, "Overwrite": "F"}
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=no_overwrite).status == 412
    into_dir = {"Destination": alice.url(FILES + "/")}
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=into_dir).status == 409
    no_parent = {"Destination": alice.url(FILES + "/missing/f")}
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=no_parent).status == 409
    r = alice.get("/f")
    assert r.body == b"old content" and r.header("ETag") == etag
    # The upload survived the failures: a correct retry succeeds and replaces the file.
    good = {
        **move,
        "OC-Total-Length": "11",
        "OC-Checksum": "MD5:" + hashlib.md5(b"new content").hexdigest(),
    }
    r = alice.request("MOVE", UPLOADS + "/u/.file", headers=good)
    assert r.status == 204 and r.header("X-OC-Mtime") is None
    assert alice.get("/f").body == b"new content"
    no_orphans(dav_server.vault)


def test_total_length_is_checked_against_the_quota_up_front(
    dav_server: DavServer, alice: DavClient
) -> None:
    """Chunking v2 announces the file's size (``OC-Total-Length``) on MKCOL and on each
    chunk: a file that cannot fit is refused with 507 before any chunk is stored."""
    dav_server.vault.set_quota("alice", 100_000)
    assert alice.put("/kept", os.urandom(30_000)).status == 201
    dest = {"Destination": alice.url(FILES + "/big")}
    too_big = {**dest, "OC-Total-Length": "80000"}
    r = alice.request("MKCOL", UPLOADS + "/u", headers=too_big)
    assert r.status == 507 and b"quota-not-exceeded" in r.body
    r = alice.request("MKCOL", UPLOADS + "/u", headers={**dest, "OC-Total-Length": "60000"})
    assert r.status == 201, r.body
    assert alice.request("PROPFIND", UPLOADS + "/u", headers={"Depth": "0"}).status == 207
    # A chunk that says the whole will not fit is refused before its body is stored.
    r = alice.put(UPLOADS + "/u/1", b"x" * 1000, headers=too_big)
    assert r.status == 507
    with dav_server.vault.index.connection():
        assert UploadChunk.select().count() == 0
    fits = {**dest, "OC-Total-Length": "60000"}
    assert alice.put(UPLOADS + "/u/1", os.urandom(30_000), headers=fits).status == 201
    # What waits in chunks counts: 30 000 stored + 30 000 waiting leave 40 000.
    r = alice.request("MKCOL", UPLOADS + "/v", headers={**dest, "OC-Total-Length": "50000"})
    assert r.status == 507
    fills = {"OC-Total-Length": "40000"}
    assert alice.request("MKCOL", UPLOADS + "/v", headers=fills).status == 201
    assert alice.put(UPLOADS + "/u/2", os.urandom(30_000), headers=fits).status == 201
    move = {**fits, "Destination": alice.url(FILES + "/big")}
    assert alice.request("MOVE", UPLOADS + "/u/.file", headers=move).status == 201
    assert alice.request("MKCOL", UPLOADS + "/w", headers={"OC-Total-Length": "x"}).status == 400


def test_uploads_namespace_answers(alice: DavClient) -> None:
    r = alice.propfind(UPLOADS + "/", "1")
    assert r.status == 207 and hrefs(r.text) == [UPLOADS + "/"]
    assert alice.propfind(UPLOADS + "/", "infinity").status == 403
    assert alice.request("OPTIONS", UPLOADS + "/x").header("Allow")
    assert alice.mkcol(UPLOADS).status == 405
    assert alice.mkcol(UPLOADS + "/u").status == 201
    assert alice.mkcol(UPLOADS + "/u").status == 405
    assert alice.mkcol(UPLOADS + "/u/sub").status == 403
    assert alice.put(UPLOADS + "/u/.file", b"x").status == 403
    assert alice.put(UPLOADS + "/u", b"x").status == 405
    assert alice.put(UPLOADS + "/nope/1", b"x").status == 409
    assert alice.put(UPLOADS + "/u/1", b"x").status == 201
    assert alice.get(UPLOADS + "/u/1").status == 405
    assert alice.delete(UPLOADS + "/u/1").status == 403
    assert alice.propfind(UPLOADS + "/u/2", "0").status == 404
    r = alice.request("MOVE", UPLOADS + "/u/1", headers={"Destination": alice.url("/x")})
    assert r.status == 403
    # Chunking v2 names the destination on MKCOL and PUT: it must be the user's own.
    other = {"Destination": alice.url("/remote.php/dav/files/bob/f")}
    assert alice.request("MKCOL", UPLOADS + "/v2", headers=other).status == 404
    mine = {"Destination": alice.url(FILES + "/f"), "OC-Total-Length": "1"}
    assert alice.request("MKCOL", UPLOADS + "/v2", headers=mine).status == 201
    assert alice.put(UPLOADS + "/v2/1", b"y", mine).status == 201
    assert alice.delete(UPLOADS + "/u").status == 204
    assert alice.delete(UPLOADS + "/u").status == 404
    assert alice.delete(UPLOADS).status == 403


def test_cancel_and_expiry_collect_chunks(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    vault = dav_any.vault
    before = stored_blob_ids(vault)
    assert alice.mkcol(UPLOADS + "/c").status == 201
    assert alice.put(UPLOADS + "/c/1", os.urandom(100_000)).status == 201
    assert len(stored_blob_ids(vault) - before) == 1
    assert alice.delete(UPLOADS + "/c/").status == 204
    assert stored_blob_ids(vault) == before
    # Abandoned: expired by age, chunks collected, further chunks refused.
    assert alice.mkcol(UPLOADS + "/a").status == 201
    assert alice.put(UPLOADS + "/a/1", os.urandom(100_000)).status == 201
    assert vault.expire_uploads(max_age=3600) == 0
    assert vault.expire_uploads(max_age=0) == 1
    assert stored_blob_ids(vault) == before
    assert alice.put(UPLOADS + "/a/2", b"late").status == 409


def test_maintenance_loop_expires_uploads_and_old_login_failures(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_GC_UPLOAD_EXPIRY": "1"})
    stop = threading.Event()
    throttle = LoginThrottle(dav.vault, limit=5, window=1)
    janitor = threading.Thread(
        target=_maintenance, args=(dav.vault, 0.2, stop, throttle), daemon=True
    )
    try:
        throttle.failed(["a:192.0.2.1"])
        alice = dav.client("alice")
        assert alice.mkcol(UPLOADS + "/old").status == 201
        assert alice.put(UPLOADS + "/old/1", os.urandom(10_000)).status == 201
        janitor.start()
        deadline = time.monotonic() + 10
        while alice.propfind(UPLOADS + "/old/", "0").status != 404:
            assert time.monotonic() < deadline, "the upload did not expire"
            time.sleep(0.2)
        # The rows go first, then the collector removes the chunk's blob: wait for both.
        while stored_blob_ids(dav.vault) != set():
            assert time.monotonic() < deadline, "the expired upload's chunk was not collected"
            time.sleep(0.2)
        with dav.vault.index.connection():
            assert LoginFailure.select().count() == 0  # older than its window: purged
    finally:
        stop.set()
        janitor.join(5)
        dav.stop()


def test_patch_recalculate_hash(alice: DavClient) -> None:
    data = b"hash me"
    assert alice.put("/d/f", data).status == 409
    assert alice.mkcol("/d").status == 201
    assert alice.put("/d/f", data).status == 201
    for path in (FILES + "/d/f", "/d/f"):
        r = alice.request("PATCH", path, headers={"X-Recalculate-Hash": "sha1"})
        assert (
            r.status == 204 and r.header("OC-Checksum") == "SHA1:" + hashlib.sha1(data).hexdigest()
        )
    r = alice.request("PATCH", "/d/f", headers={"X-Recalculate-Hash": "MD5"})
    assert r.header("OC-Checksum") == "MD5:" + hashlib.md5(data).hexdigest()
    assert alice.request("PATCH", "/d/f", headers={"X-Recalculate-Hash": "crc32"}).status == 400
    assert alice.request("PATCH", "/d/f").status == 400
    assert alice.request("PATCH", "/d", headers={"X-Recalculate-Hash": "sha1"}).status == 400
    assert alice.request("PATCH", "/d/g", headers={"X-Recalculate-Hash": "sha1"}).status == 404
    r = alice.request(
        "PATCH", "/remote.php/dav/files/bob/d/f", headers={"X-Recalculate-Hash": "sha1"}
    )
    assert r.status == 404


@pytest.mark.parametrize("path", [FILES + "/", "/"])
def test_oc_properties_through_alias(alice: DavClient, path: str) -> None:
    assert alice.put("/f", b"x").status == 201
    body = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:fileid/><oc:id/><oc:permissions/></d:prop></d:propfind>"
    )
    r = alice.propfind(path, "1", body)
    perms = {
        (resp.findtext(D + "href") or "").rstrip("/").rsplit("/", 1)[-1]: resp.findtext(
            f".//{OC}permissions"
        )
        for resp in ET.fromstring(r.text).iter(D + "response")
    }
    assert perms["f"] == "RGDNVW"
    assert "RGCK" in perms.values()


def test_failed_downloads_have_empty_bodies_under_the_nextcloud_paths(alice: DavClient) -> None:
    """As Nextcloud's: the status says it; no page a client could take for the file."""
    assert alice.put("/f", b"hello").status == 201
    for prefix in (FILES, "/remote.php/webdav"):
        r = alice.get(prefix + "/missing")
        assert r.status == 404 and r.body == b"" and r.header("Content-Length") == "0"
        r = alice.get(prefix + "/f", headers={"Range": "bytes=10-20"})
        assert r.status == 416 and r.body == b""
        assert alice.get(prefix + "/f").body == b"hello"
    # The plain tree keeps its short page for browsers.
    r = alice.get("/missing")
    assert r.status == 404 and b"404 Not Found" in r.body
