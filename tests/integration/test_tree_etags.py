"""Directory ETags and sizes over real servers, on SQLite and on PostgreSQL: the contract a
Nextcloud sync client relies on (a collection's ETag changes whenever anything below it
does, and only then; ``oc:size`` is the bytes below it), and the headers of writes."""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from davserver.index import dirtree
from tests.harness.davserver import DavClient, DavServer, start_dav_server

D = "{DAV:}"
OC = "{http://owncloud.org/ns}"
FILES = "/remote.php/dav/files/alice"
PROPS = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:prop><d:getetag/><oc:size/><d:getcontentlength/><oc:id/><oc:fileid/>"
    "<oc:permissions/><oc:data-fingerprint/></d:prop></d:propfind>"
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dav(request: Any, tmp_path: Path) -> Iterator[DavServer]:
    env: dict[str, str] = {}
    if request.param == "postgres":
        env["DAVSERVER_INDEX_URL"] = request.getfixturevalue("postgres_db_url")
    server = start_dav_server(tmp_path / "data", env)
    try:
        yield server
        # Whatever the test did, the counters kept by each write equal a full recount.
        with server.vault.index.connection():
            assert not dirtree.drift(server.vault.index.db)
    finally:
        server.stop()


@pytest.fixture
def alice(dav: DavServer) -> DavClient:
    return dav.client("alice")


def props(client: DavClient, path: str) -> dict[str, str]:
    r = client.propfind(path, "0", PROPS)
    assert r.status == 207, r.text
    assert r.header("Content-Type") == "application/xml; charset=utf-8"
    (resp,) = ET.fromstring(r.text).iter(D + "response")
    out = {}
    for stat in resp.iter(D + "propstat"):
        if "200" not in (stat.findtext(D + "status") or ""):
            continue
        for el in stat.find(D + "prop") or []:
            out[el.tag.split("}", 1)[1]] = el.text or ""
    return out


def etags(client: DavClient, *paths: str) -> dict[str, str]:
    return {p: props(client, p)["getetag"] for p in paths}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {p for p in before if before[p] != after[p]}


def tree(client: DavClient) -> None:
    for d in ("/a", "/a/b", "/a/b/c", "/s", "/a/sib"):
        assert client.mkcol(d).status == 201


ALL = ("/", "/a", "/a/b", "/a/b/c", "/s", "/a/sib")


def test_every_collection_has_an_etag_and_the_root_a_fingerprint(alice: DavClient) -> None:
    root = props(alice, "/")
    assert re.fullmatch(r'"[0-9a-f]{32}-\d+"', root["getetag"])
    assert root["data-fingerprint"]
    assert root["permissions"] == "RGCK"
    assert alice.mkcol("/d").status == 201
    d = props(alice, "/d")
    assert re.fullmatch(r'"[0-9a-f]{32}-\d+"', d["getetag"])
    assert d["permissions"] == "RGDNVCK"
    assert "data-fingerprint" not in d
    assert d["id"] == f"{int(d['fileid']):08d}" + d["id"][-12:]
    assert re.fullmatch(r"oc[a-z0-9]{10}", d["id"][-12:])
    # The instance id is the index's: the same in every oc:id.
    assert props(alice, "/")["id"][-12:] == d["id"][-12:]
    # Depth 1 lists them too (what a sync client's discovery reads).
    r = alice.propfind("/", "1", PROPS)
    assert r.text.count("<D:getetag>") == 2


def test_a_put_deep_below_changes_every_ancestor_and_no_sibling(alice: DavClient) -> None:
    tree(alice)
    before = etags(alice, *ALL)
    assert alice.put("/a/b/c/f", b"12345").status == 201
    after = etags(alice, *ALL)
    assert changed(before, after) == {"/", "/a", "/a/b", "/a/b/c"}
    # A rewrite changes them again; a GET does not.
    assert alice.put("/a/b/c/f", b"123").status == 204
    again = etags(alice, *ALL)
    assert changed(after, again) == {"/", "/a", "/a/b", "/a/b/c"}
    assert alice.get("/a/b/c/f").status == 200
    assert etags(alice, *ALL) == again


def test_oc_size_is_the_sum_of_the_files_below(alice: DavClient) -> None:
    tree(alice)
    assert alice.put("/a/b/c/f", b"x" * 100).status == 201
    assert alice.put("/a/b/g", b"x" * 20).status == 201
    assert alice.put("/a/sib/h", b"x" * 3).status == 201
    assert alice.put("/top", b"x" * 7).status == 201

    def size(p: str) -> int:
        got = props(alice, p)
        assert got["size"] == got["getcontentlength"]
        return int(got["size"])

    assert [size(p) for p in ("/", "/a", "/a/b", "/a/b/c", "/a/sib", "/s")] == [
        130,
        123,
        120,
        100,
        3,
        0,
    ]
    assert props(alice, "/a/b/g")["size"] == "20"
    assert alice.put("/a/b/c/f", b"x" * 10).status == 204  # shrinks by 90
    assert [size(p) for p in ("/", "/a", "/a/b", "/a/b/c")] == [40, 33, 30, 10]
    assert alice.move("/a/b", "/s/b").status == 201
    assert [size(p) for p in ("/", "/a", "/s", "/s/b")] == [40, 3, 30, 30]
    assert alice.copy("/s/b", "/s/b2").status == 201
    assert [size(p) for p in ("/", "/s", "/s/b2", "/s/b2/c")] == [70, 60, 30, 10]
    assert alice.delete("/s/b").status == 204
    assert [size(p) for p in ("/", "/s")] == [40, 30]


def test_move_changes_both_chains_and_not_the_moved_entry(alice: DavClient) -> None:
    tree(alice)
    assert alice.put("/a/b/c/f", b"data").status == 201
    assert alice.mkcol("/s/t").status == 201
    before = etags(alice, *ALL, "/s/t", "/a/b/c/f")
    assert alice.move("/a/b/c", "/s/t/c").status == 201
    after = etags(alice, "/", "/a", "/a/b", "/s", "/s/t", "/a/sib", "/s/t/c", "/s/t/c/f")
    assert after["/s/t/c"] == before["/a/b/c"]  # a moved directory keeps its ETag
    assert after["/s/t/c/f"] == before["/a/b/c/f"]  # so does a moved file
    for p in ("/", "/a", "/a/b", "/s", "/s/t"):
        assert after[p] != before[p], p
    assert after["/a/sib"] == before["/a/sib"]
    # A file moved (renamed) keeps its ETag; its directory's changes.
    f_before = etags(alice, "/s/t/c/f", "/s/t/c")
    assert alice.move("/s/t/c/f", "/s/t/c/g").status == 201
    f_after = etags(alice, "/s/t/c/g", "/s/t/c")
    assert f_after["/s/t/c/g"] == f_before["/s/t/c/f"]
    assert f_after["/s/t/c"] != f_before["/s/t/c"]


def test_delete_restore_proppatch_copy_change_the_ancestors(alice: DavClient) -> None:
    tree(alice)
    assert alice.put("/a/b/c/f", b"data").status == 201
    chain = ("/", "/a", "/a/b", "/a/b/c")
    before = etags(alice, *ALL)
    body = (
        '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop>'
        '<x:color xmlns:x="urn:x">red</x:color></d:prop></d:set></d:propertyupdate>'
    )
    r = alice.request("PROPPATCH", "/a/b/c/f", body.encode())
    assert r.status == 207, r.text
    after = etags(alice, *ALL)
    assert changed(before, after) == set(chain)

    assert alice.copy("/a/b/c/f", "/a/b/c/f2").status == 201
    again = etags(alice, *ALL)
    assert changed(after, again) == set(chain)

    assert alice.delete("/a/b/c/f2").status == 204
    deleted = etags(alice, *ALL)
    assert changed(again, deleted) == set(chain)
    assert props(alice, "/a/b/c")["size"] == "4"

    # Restore from the trash (Nextcloud's trashbin: MOVE the item to restore/).
    trash = "/remote.php/dav/trashbin/alice"
    r = alice.propfind(trash + "/trash/", "1")
    assert r.status == 207, r.text
    hrefs = [unquote(h.text or "") for h in ET.fromstring(r.text).iter(D + "href")]
    name = next(h for h in hrefs if "f2" in h).rstrip("/").rsplit("/", 1)[-1]
    r = alice.request(
        "MOVE", f"{trash}/trash/{name}", headers={"Destination": f"{trash}/restore/{name}"}
    )
    assert r.status in (201, 204), r.text
    restored = etags(alice, *ALL)
    assert changed(deleted, restored) == set(chain)
    assert props(alice, "/a/b/c")["size"] == "8"


def test_chunked_assembly_changes_the_ancestors_and_answers_the_headers(
    alice: DavClient,
) -> None:
    tree(alice)
    before = etags(alice, *ALL)
    up = "/remote.php/dav/uploads/alice/up-1"
    assert alice.mkcol(up).status == 201
    assert alice.put(up + "/00001", b"a" * 10).status == 201
    assert alice.put(up + "/00002", b"b" * 5).status == 201
    r = alice.move(up + "/.file", FILES + "/a/b/big")
    assert r.status == 201, r.text
    after = etags(alice, *ALL)
    assert changed(before, after) == {"/", "/a", "/a/b"}
    got = props(alice, "/a/b/big")
    assert r.header("ETag") == r.header("OC-ETag") == got["getetag"]
    assert r.header("OC-FileId") == got["id"]
    assert props(alice, "/a/b")["size"] == "15"


def test_write_answers_carry_etag_and_file_id(alice: DavClient) -> None:
    r = alice.mkcol("/d")
    assert r.status == 201
    got = props(alice, "/d")
    assert r.header("ETag") == r.header("OC-ETag") == got["getetag"]
    assert r.header("OC-FileId") == got["id"]

    r = alice.put("/d/f", b"hello")
    assert r.status == 201
    got = props(alice, "/d/f")
    assert r.header("ETag") == r.header("OC-ETag") == got["getetag"]
    assert r.header("OC-FileId") == got["id"]

    r = alice.move("/d/f", "/d/g")
    assert r.status == 201
    got = props(alice, "/d/g")
    assert r.header("ETag") == r.header("OC-ETag") == got["getetag"]
    assert r.header("OC-FileId") == got["id"]

    r = alice.copy("/d", "/e")
    assert r.status == 201
    got = props(alice, "/e")
    assert r.header("ETag") == r.header("OC-ETag") == got["getetag"]
    assert r.header("OC-FileId") == got["id"]


def test_concurrent_puts_in_sibling_folders_all_reach_the_root(
    dav: DavServer, alice: DavClient
) -> None:
    assert alice.mkcol("/l").status == 201
    assert alice.mkcol("/r").status == 201
    session = dav.vault.login("alice", dav.users["alice"])
    root_before = session.stat("/").changes
    per_thread, errors = 15, []

    def writer(folder: str) -> None:
        client = dav.client("alice")
        try:
            for i in range(per_thread):
                r = client.put(f"/{folder}/f{i}", b"x" * 10)
                assert r.status == 201, r.text
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f,)) for f in ("l", "r")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    root = session.stat("/")
    assert root.changes - root_before == 2 * per_thread  # no lost update
    assert root.tree_bytes == 2 * per_thread * 10
    assert session.stat("/l").changes == per_thread
    assert session.stat("/r").tree_bytes == per_thread * 10


def test_version_restore_and_mtime_change_the_ancestors(dav: DavServer, alice: DavClient) -> None:
    tree(alice)
    assert alice.put("/a/b/c/f", b"first version").status == 201
    assert alice.put("/a/b/c/f", b"second").status == 204
    session = dav.vault.login("alice", dav.users["alice"])
    before = etags(alice, *ALL)
    fileid = session.stat("/a/b/c/f").fileid
    session.restore_version(fileid, 1)
    after = etags(alice, *ALL)
    assert changed(before, after) == {"/", "/a", "/a/b", "/a/b/c"}
    assert props(alice, "/a/b/c")["size"] == str(len(b"first version"))
    assert props(alice, "/")["size"] == str(len(b"first version"))
    session.set_mtime("/a/sib", 1_000_000.0)  # a member re-timed: its parent's listing changed
    timed = etags(alice, *ALL)
    assert changed(after, timed) == {"/", "/a"}


def test_writes_through_a_scoped_token_reach_the_root(dav: DavServer, alice: DavClient) -> None:
    """A token scoped to /a/b cannot name the directories above it, yet what it writes
    changes their ETags and byte totals up to the user's root (a full-account client syncing
    the whole tree must see the camera's uploads); its delete too."""
    tree(alice)
    _, token = dav.vault.create_token("alice", dav.users["alice"], "cam", scope="/a/b")
    cam = DavClient(dav.url, "alice", token)
    before = etags(alice, *ALL)
    assert cam.put("/c/photo.jpg", b"x" * 1000).status == 201
    after = etags(alice, *ALL)
    assert changed(before, after) == {"/", "/a", "/a/b", "/a/b/c"}
    assert props(alice, "/")["size"] == "1000" and props(alice, "/a")["size"] == "1000"
    assert cam.delete("/c/photo.jpg").status == 204
    again = etags(alice, *ALL)
    assert changed(after, again) == {"/", "/a", "/a/b", "/a/b/c"}
    assert props(alice, "/a")["size"] == "0"
