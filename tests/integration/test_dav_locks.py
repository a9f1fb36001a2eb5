"""LOCK/UNLOCK (class 2): tokens enforced on PUT, PROPPATCH, MOVE and DELETE; shared and
exclusive scopes; locks on unmapped URLs; lock rows that name nothing; and one lock table
shared by two server processes on the same index."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from davserver.index.models import Lock, LockScope
from tests.harness.davserver import DavClient, DavServer, env_without_davserver, start_dav_server


def lockinfo(scope: str = "exclusive", owner: str = "tests") -> str:
    return (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
        f"<D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype>"
        f"<D:owner>{owner}</D:owner></D:lockinfo>"
    )


def lock(
    client: DavClient, path: str, scope: str = "exclusive", depth: str = "0", **headers: str
) -> tuple[int, str | None]:
    r = client.request(
        "LOCK", path, lockinfo(scope), {"Depth": depth, "Timeout": "Second-600", **headers}
    )
    token = r.header("Lock-Token")
    return r.status, token.strip("<>") if token else None


def if_header(token: str) -> dict[str, str]:
    return {"If": f"(<{token}>)"}


PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:">'
    "<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)


def test_exclusive_lock_enforced_on_every_write(alice: DavClient) -> None:
    alice.put("/f", b"v1")
    status, token = lock(alice, "/f")
    assert status == 200 and token and token.startswith("opaquelocktoken:")
    # Without the token: 423 on PUT, PROPPATCH, MOVE, DELETE; nothing changes.
    assert alice.put("/f", b"v2").status == 423
    assert alice.request("PROPPATCH", "/f", PROPPATCH).status == 423
    assert alice.move("/f", "/g").status == 423
    assert alice.delete("/f").status == 423
    assert alice.get("/f").body == b"v1"
    # A second exclusive or shared lock conflicts.
    assert lock(alice, "/f")[0] == 423
    assert lock(alice, "/f", "shared")[0] == 423
    # With the token every write works.
    assert alice.put("/f", b"v2", if_header(token)).status == 204
    assert alice.request("PROPPATCH", "/f", PROPPATCH, if_header(token)).status == 207
    assert alice.get("/f").body == b"v2"
    # The lock shows up in lockdiscovery.
    r = alice.propfind(
        "/f",
        "0",
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:lockdiscovery/></D:prop></D:propfind>",
    )
    assert token in r.text and "<D:href>/f</D:href>" in r.text
    # UNLOCK with a wrong token fails; with the right one the resource is free again.
    assert (
        alice.request("UNLOCK", "/f", headers={"Lock-Token": "<opaquelocktoken:nope>"}).status
        == 409
    )
    assert alice.request("UNLOCK", "/f", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert alice.put("/f", b"v3").status == 204


def test_move_and_delete_with_token(alice: DavClient) -> None:
    alice.put("/f", b"x")
    _, token = lock(alice, "/f")
    assert token
    assert alice.move("/f", "/g", **if_header(token)).status == 201
    # RFC 4918 §9.9.4: the lock does not move with the resource, and the source is gone.
    assert alice.put("/f", b"new").status == 201
    assert alice.put("/g", b"y").status == 204
    alice.put("/h", b"x")
    _, token = lock(alice, "/h")
    assert token
    assert alice.delete("/h", if_header(token)).status == 204
    assert alice.put("/h", b"again").status == 201  # the lock was removed with the file


def test_shared_locks(alice: DavClient) -> None:
    alice.put("/s", b"x")
    s1, t1 = lock(alice, "/s", "shared")
    s2, t2 = lock(alice, "/s", "shared")
    assert (s1, s2) == (200, 200) and t1 != t2
    assert lock(alice, "/s", "exclusive")[0] == 423
    assert alice.put("/s", b"y").status == 423
    assert t1 and alice.put("/s", b"y", if_header(t1)).status == 204


def test_depth_infinity_collection_lock(alice: DavClient) -> None:
    alice.mkcol("/c")
    alice.put("/c/a", b"a")
    status, token = lock(alice, "/c", depth="infinity")
    assert status == 200 and token
    assert alice.put("/c/new", b"x").status == 423  # adding a member modifies the collection
    assert alice.put("/c/a", b"x").status == 423
    assert alice.mkcol("/c/sub").status == 423
    assert alice.put("/c/new", b"x", if_header(token)).status == 201
    assert alice.delete("/c/a").status == 423
    assert alice.delete("/c", if_header(token)).status == 204
    assert alice.mkcol("/c").status == 201


def test_locked_member_blocks_deleting_its_collection(alice: DavClient) -> None:
    alice.mkcol("/c")
    alice.put("/c/a", b"a")
    _, token = lock(alice, "/c/a")
    assert token
    assert alice.delete("/c").status == 423
    assert alice.move("/c", "/d").status == 423
    assert alice.get("/c/a").body == b"a"
    # RFC 4918 §10.4.1: the member's token is submitted in a list tagged with its URL.
    tagged = {"If": f"<{alice.url('/c/a')}> (<{token}>)"}
    assert alice.delete("/c", tagged).status == 204


def test_lock_on_unmapped_url_creates_empty_file(alice: DavClient) -> None:
    status, token = lock(alice, "/newfile")
    assert status == 201 and token
    r = alice.get("/newfile")
    assert (r.status, r.body) == (200, b"")
    assert alice.put("/newfile", b"content", if_header(token)).status == 204
    assert lock(alice, "/missing/parent")[0] == 409


def test_lock_refresh_and_timeout_header(alice: DavClient) -> None:
    alice.put("/f", b"x")
    _, token = lock(alice, "/f")
    assert token
    r = alice.request("LOCK", "/f", None, {"If": f"(<{token}>)", "Timeout": "Second-100"})
    assert r.status == 200
    assert "Second-" in r.text
    assert "Second-9" in r.text or "Second-100" in r.text


def test_windows_explorer_sequence(alice: DavClient) -> None:
    """Windows Explorer's sequence: LOCK without Depth, PROPPATCH of Win32 times with If."""
    assert alice.request("PROPFIND", "/", None, {"Depth": "0"}).status == 207  # empty body
    assert alice.put("/doc.txt", b"").status == 201
    r = alice.request("LOCK", "/doc.txt", lockinfo(), {"Timeout": "Second-3600"})
    assert r.status == 200
    token = (r.header("Lock-Token") or "").strip("<>")
    win = (
        '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
        'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
        "<Z:Win32CreationTime>Thu, 26 Nov 2026 06:00:00 GMT</Z:Win32CreationTime>"
        "<Z:Win32LastAccessTime>Thu, 26 Nov 2026 06:00:00 GMT</Z:Win32LastAccessTime>"
        "<Z:Win32LastModifiedTime>Wed, 25 Nov 2026 06:00:00 GMT</Z:Win32LastModifiedTime>"
        "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>"
        "</D:prop></D:set></D:propertyupdate>"
    )
    r = alice.request("PROPPATCH", "/doc.txt", win, {"If": f"(<{token}>)"})
    assert r.status == 207
    first = next(ET.fromstring(r.body).iter("{DAV:}propstat"))
    assert "200" in (first.findtext("{DAV:}status") or "")
    assert alice.request("HEAD", "/doc.txt").status == 200
    assert alice.put("/doc.txt", b"hello", {"If": f"(<{token}>)"}).status == 204
    assert alice.request("UNLOCK", "/doc.txt", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert alice.move("/doc.txt", "/renamed.txt", overwrite=False).status == 201
    r = alice.get("/renamed.txt")
    assert r.body == b"hello"


def test_lock_rows_hold_no_paths(dav_server: DavServer, alice: DavClient) -> None:
    alice.mkcol("/VerySecretDir")
    alice.put("/VerySecretDir/PlainName.txt", b"x")
    lock(alice, "/VerySecretDir/PlainName.txt")
    lock(alice, "/VerySecretDir", "shared", "0")
    with dav_server.vault.index.connection():
        rows = list(Lock.select())
        scopes = list(LockScope.select())
    assert len(rows) == 2 and len(scopes) >= 3
    for row in rows:
        blob = bytes(row.path_mac) + bytes(row.data_ct) + row.token.encode()
        for secret in (b"VerySecretDir", b"PlainName", b"tests", b"alice"):
            assert secret not in blob
    db = (dav_server.data_dir / "index.db").read_bytes()
    assert b"PlainName" not in db and b"VerySecretDir" not in db


@pytest.mark.slow
def test_locks_are_shared_between_server_processes(tmp_path: Path) -> None:
    """Two processes on one index: a lock taken through one is enforced by the other."""
    dav = start_dav_server(tmp_path / "data")
    proc = None
    try:
        alice = dav.client("alice")
        alice.put("/shared.txt", b"x")
        env = {
            **env_without_davserver(),
            "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
            "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": str(8 << 20),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "davserver.cli",
                "serve",
                "--data-dir",
                str(dav.data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" at ", 1)[1].strip()
        other = DavClient(url, "alice", dav.users["alice"])
        status, token = lock(alice, "/shared.txt")
        assert status == 200 and token
        assert lock(other, "/shared.txt")[0] == 423
        assert other.put("/shared.txt", b"y").status == 423
        assert other.put("/shared.txt", b"y", if_header(token)).status == 204
        assert (
            other.request("UNLOCK", "/shared.txt", headers={"Lock-Token": f"<{token}>"}).status
            == 204
        )
        assert alice.put("/shared.txt", b"z").status == 204
        # Race: both processes try to take an exclusive lock at once; exactly one wins.
        alice.put("/race.txt", b"")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda c: lock(c, "/race.txt")[0], [alice, other] * 4))
        assert results.count(200) == 1 and results.count(423) == 7
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        dav.stop()
