"""Nextcloud's versions and trash over raw HTTP (``davserver.dav.versions``,
``davserver.dav.trashbin``): the requests Nextcloud's web client and its Android app send,
replayed against a real server on local blobs + SQLite, on MinIO and on PostgreSQL.

The PROPFIND bodies are the property sets those clients ask for (Nextcloud's developer
documentation, "WebDAV: Trashbin" and "WebDAV: Versions"; the web client's files_versions
and files_trashbin apps; the Android library's trash and version property sets)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.harness.davserver import DavClient, DavServer, s3_env, start_dav_server

D = "{DAV:}"
OC = "{http://owncloud.org/ns}"
NC = "{http://nextcloud.org/ns}"
S = "{http://sabredav.org/ns}"
FILES = "/remote.php/dav/files/alice"
VERSIONS = "/remote.php/dav/versions/alice"
TRASH = "/remote.php/dav/trashbin/alice"

# The web client's versions tab (files_versions).
WEB_VERSIONS_PROPFIND = """<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"
  xmlns:nc="http://nextcloud.org/ns" xmlns:ocs="http://open-collaboration-services.org/ns">
  <d:prop>
    <d:getcontentlength /><d:getcontenttype /><d:getlastmodified /><d:getetag />
    <nc:version-label /><nc:version-author /><nc:has-preview />
  </d:prop>
</d:propfind>"""

# The web client's trash view (files_trashbin).
WEB_TRASH_PROPFIND = """<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">
  <d:prop>
    <nc:trashbin-filename /><nc:trashbin-deletion-time /><nc:trashbin-original-location />
    <nc:trashbin-title /><d:getlastmodified /><d:getetag /><d:getcontenttype />
    <d:resourcetype /><oc:fileid /><oc:permissions /><oc:size /><d:getcontentlength />
  </d:prop>
</d:propfind>"""

# The Android library's property sets (jackrabbit writes its own prefixes).
ANDROID_TRASH_PROPFIND = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<D:propfind xmlns:D="DAV:"><D:prop>
  <D:resourcetype/><D:getcontenttype/><D:getcontentlength/>
  <ns1:size xmlns:ns1="http://owncloud.org/ns"/><ns1:id xmlns:ns1="http://owncloud.org/ns"/>
  <ns2:trashbin-filename xmlns:ns2="http://nextcloud.org/ns"/>
  <ns2:trashbin-original-location xmlns:ns2="http://nextcloud.org/ns"/>
  <ns2:trashbin-deletion-time xmlns:ns2="http://nextcloud.org/ns"/>
</D:prop></D:propfind>"""

ANDROID_VERSIONS_PROPFIND = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<D:propfind xmlns:D="DAV:"><D:prop>
  <D:getcontenttype/><D:resourcetype/><D:getcontentlength/><D:getlastmodified/>
  <D:creationdate/><ns1:id xmlns:ns1="http://owncloud.org/ns"/>
  <ns1:size xmlns:ns1="http://owncloud.org/ns"/>
</D:prop></D:propfind>"""

FILEID_PROPFIND = """<?xml version="1.0"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
  <d:prop><oc:fileid /><oc:id /></d:prop>
</d:propfind>"""


def label_body(label: str, op: str = "set") -> str:
    inner = (
        f"<nc:version-label>{label}</nc:version-label>" if op == "set" else "<nc:version-label/>"
    )
    return f"""<?xml version="1.0"?>
<d:propertyupdate xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"
  xmlns:nc="http://nextcloud.org/ns" xmlns:ocs="http://open-collaboration-services.org/ns">
  <d:{op}><d:prop>{inner}</d:prop></d:{op}>
</d:propertyupdate>"""


# -- fixtures: one server per backend ---------------------------------------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3), "postgres"])
def dav(request: Any, tmp_path: Path) -> Iterator[DavServer]:
    # Every version an object in the store, so that object counts say what a restore costs.
    env: dict[str, str] = {"DAVSERVER_STORAGE_INLINE_MAX": "0"}
    if request.param == "s3":
        env |= s3_env(request.getfixturevalue("minio_server"), request.getfixturevalue("s3_bucket"))
    if request.param == "postgres":
        env["DAVSERVER_INDEX_URL"] = request.getfixturevalue("postgres_db_url")
    server = start_dav_server(tmp_path / "data", env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def alice(dav: DavServer) -> DavClient:
    return dav.client("alice")


# -- helpers ----------------------------------------------------------------------------------


def responses(text: str) -> dict[str, dict[str, tuple[int, ET.Element]]]:
    """href (unquoted) -> {property tag: (status, element)} of a multistatus."""
    out: dict[str, dict[str, tuple[int, ET.Element]]] = {}
    for resp in ET.fromstring(text).iter(D + "response"):
        props: dict[str, tuple[int, ET.Element]] = {}
        for ps in resp.iter(D + "propstat"):
            status = int((ps.findtext(D + "status") or "HTTP/1.1 0").split()[1])
            for prop in ps.find(D + "prop") or []:
                props[prop.tag] = (status, prop)
        out[unquote(resp.findtext(D + "href") or "")] = props
    return out


def found(props: dict[str, tuple[int, ET.Element]], tag: str) -> str | None:
    """The text of a property found (200), None if it was not."""
    status, el = props.get(tag, (404, None))
    if status != 200 or el is None:
        return None
    return el.text or ""


def is_collection(props: dict[str, tuple[int, ET.Element]]) -> bool:
    status, el = props[D + "resourcetype"]
    return status == 200 and el.find(D + "collection") is not None


def propfind(client: DavClient, path: str, body: str, depth: str = "1") -> dict[str, Any]:
    r = client.propfind(path, depth, body)
    assert r.status == 207, (path, r.status, r.text)
    return responses(r.text)


def fileid_of(client: DavClient, path: str) -> str:
    [(_href, props)] = propfind(client, FILES + path, FILEID_PROPFIND, "0").items()
    value = found(props, OC + "fileid")
    assert value and value.isdigit() and 0 < int(value) < 2**63, value
    return value


def version_rows(client: DavClient, fileid: str, body: str = WEB_VERSIONS_PROPFIND) -> dict:
    rows = propfind(client, f"{VERSIONS}/versions/{fileid}", body)
    collection = f"{VERSIONS}/versions/{fileid}/"
    assert collection in rows
    return {href.rsplit("/", 1)[1]: props for href, props in rows.items() if href != collection}


def put_versions(dav: DavServer, client: DavClient, path: str, contents: list[bytes]) -> None:
    """One PUT per content, two hours apart on the vault's clock: Nextcloud's retention
    schedule keeps one version per hour for a day, so all of them are kept."""
    start = time.time() - 2 * 3600 * len(contents)
    try:
        for i, body in enumerate(contents):
            dav.vault.clock = lambda at=start + i * 2 * 3600: at
            assert client.put(FILES + path, body).status in (201, 204)
    finally:
        dav.vault.clock = time.time


def sabre_error(text: str) -> str:
    root = ET.fromstring(text)
    assert root.tag == D + "error", text
    return root.findtext(S + "exception") or ""


def stored_objects(dav: DavServer) -> set[str]:
    return set(dav.vault.blobs.iter_ids())


def trash_rows(client: DavClient, body: str = WEB_TRASH_PROPFIND) -> dict[str, Any]:
    rows = propfind(client, TRASH + "/trash", body)
    assert is_collection(rows.pop(TRASH + "/trash/"))
    return {href.removeprefix(TRASH + "/trash/").rstrip("/"): props for href, props in rows.items()}


def by_filename(rows: dict[str, Any], name: str) -> tuple[str, dict]:
    matches = [(k, p) for k, p in rows.items() if found(p, NC + "trashbin-filename") == name]
    assert len(matches) == 1, (name, list(rows))
    return matches[0]


# -- versions ---------------------------------------------------------------------------------


def test_versions_list_get_label_restore_delete(dav: DavServer, alice: DavClient) -> None:
    contents = [b"first version " * 100, b"second " * 300, b"third and current " * 50]
    assert alice.mkcol(FILES + "/Docs").status == 201
    put_versions(dav, alice, "/Docs/report.txt", contents)
    fileid = fileid_of(alice, "/Docs/report.txt")

    # The web client's versions tab: every version (the current one too), newest first.
    rows = version_rows(alice, fileid)
    assert len(rows) == 3, rows.keys()
    by_size = {int(found(p, D + "getcontentlength") or -1): n for n, p in rows.items()}
    assert sorted(by_size) == sorted(len(c) for c in contents)
    oldest, middle, current = (by_size[len(c)] for c in contents)
    assert all(n.isdigit() for n in rows)
    for props in rows.values():
        assert found(props, D + "getcontenttype") == "text/plain"
        assert (found(props, D + "getetag") or "").startswith('"')
        assert found(props, D + "getlastmodified")
        assert found(props, NC + "version-label") == ""
        assert found(props, NC + "has-preview") is None  # asked for, answered as 404
    # The collection has no content type: the web client filters it out by that.
    collection = propfind(alice, f"{VERSIONS}/versions/{fileid}", WEB_VERSIONS_PROPFIND, "0")
    assert found(collection[f"{VERSIONS}/versions/{fileid}/"], D + "getcontenttype") is None
    # The Android app's set, and allprop / propname.
    android = version_rows(alice, fileid, ANDROID_VERSIONS_PROPFIND)
    assert found(android[oldest], OC + "size") == str(len(contents[0]))
    assert found(android[oldest], D + "creationdate")
    allprop = version_rows(alice, fileid, '<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>')
    assert found(allprop[oldest], D + "getcontentlength") == str(len(contents[0]))
    names = version_rows(alice, fileid, '<d:propfind xmlns:d="DAV:"><d:propname/></d:propfind>')
    assert NC + "version-label" in names[oldest]

    # GET of an old version: byte for byte, as an attachment named like the file.
    url = f"{VERSIONS}/versions/{fileid}/{oldest}"
    r = alice.get(url)
    assert r.status == 200 and r.body == contents[0]
    disposition = r.header("Content-Disposition") or ""
    assert disposition.startswith("attachment; filename*=UTF-8''report.txt")
    assert 'filename="report.txt"' in disposition
    assert r.header("ETag") == found(rows[oldest], D + "getetag")
    r = alice.get(url, {"Range": "bytes=6-12"})
    assert r.status == 206 and r.body == contents[0][6:13]
    assert r.header("Content-Range") == f"bytes 6-12/{len(contents[0])}"
    r = alice.request("HEAD", url)
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == str(len(contents[0]))
    assert alice.get(url, {"Range": f"bytes={len(contents[0])}-"}).status == 416

    # Label it (PROPPATCH as the web client sends it), remove the label, label it again.
    r = alice.request("PROPPATCH", url, label_body("Before the review"))
    assert r.status == 207, r.text
    assert found(responses(r.text)[url], NC + "version-label") == ""
    assert found(version_rows(alice, fileid)[oldest], NC + "version-label") == "Before the review"
    r = alice.request("PROPPATCH", url, label_body("", op="remove"))
    assert r.status == 207
    assert found(version_rows(alice, fileid)[oldest], NC + "version-label") == ""
    assert alice.request("PROPPATCH", url, label_body("Kept")).status == 207
    # Another property cannot be set on a version: nothing changes (all or nothing).
    mixed = label_body("Other").replace("</d:prop>", "<oc:favorite>1</oc:favorite></d:prop>")
    r = alice.request("PROPPATCH", url, mixed)
    assert r.status == 207
    statuses = {tag: status for tag, (status, _) in responses(r.text)[url].items()}
    assert statuses == {NC + "version-label": 424, OC + "favorite": 403}
    assert found(version_rows(alice, fileid)[oldest], NC + "version-label") == "Kept"

    # Restore (the web client's MOVE into restore/target): the old content is current again,
    # sharing the old version's object.
    before = stored_objects(dav)
    r = alice.request("MOVE", url, headers={"Destination": alice.url(VERSIONS + "/restore/target")})
    assert r.status == 201, r.text
    assert alice.get(FILES + "/Docs/report.txt").body == contents[0]
    assert stored_objects(dav) - before == set()  # no new object
    rows = version_rows(alice, fileid)
    assert len(rows) == 4 and fileid_of(alice, "/Docs/report.txt") == fileid
    newest = max(rows, key=int)
    assert found(rows[newest], D + "getcontentlength") == str(len(contents[0]))

    # The Android app restores to restore/FILEID, with a path as Destination.
    r = alice.request(
        "MOVE",
        f"{VERSIONS}/versions/{fileid}/{current}",
        headers={"Destination": f"{VERSIONS}/restore/{fileid}", "Overwrite": "T"},
    )
    assert r.status == 201
    assert alice.get(FILES + "/Docs/report.txt").body == contents[2]

    # DELETE: an old version goes; the current one cannot.
    assert alice.delete(f"{VERSIONS}/versions/{fileid}/{middle}").status == 204
    rows = version_rows(alice, fileid)
    assert middle not in rows
    assert alice.get(f"{VERSIONS}/versions/{fileid}/{middle}").status == 404
    newest = max(rows, key=int)
    r = alice.delete(f"{VERSIONS}/versions/{fileid}/{newest}")
    assert r.status == 403 and "Forbidden" in sabre_error(r.text)
    assert alice.get(FILES + "/Docs/report.txt").body == contents[2]

    # Versions are read-only.
    r = alice.put(f"{VERSIONS}/versions/{fileid}/{oldest}", b"overwrite")
    assert r.status == 403
    assert alice.get(f"{VERSIONS}/versions/{fileid}/{oldest}").body == contents[0]


def test_versions_namespace_and_errors(dav: DavServer, alice: DavClient) -> None:
    put_versions(dav, alice, "/a.txt", [b"one", b"two"])
    fileid = fileid_of(alice, "/a.txt")
    rows = propfind(alice, VERSIONS, WEB_VERSIONS_PROPFIND)
    assert set(rows) == {VERSIONS + "/", VERSIONS + "/versions/", VERSIONS + "/restore/"}
    rows = propfind(alice, VERSIONS, '<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>')
    assert all(is_collection(p) for p in rows.values())
    assert set(propfind(alice, VERSIONS + "/versions/", WEB_VERSIONS_PROPFIND)) == {
        VERSIONS + "/versions/"
    }
    assert set(propfind(alice, VERSIONS + "/restore", WEB_VERSIONS_PROPFIND)) == {
        VERSIONS + "/restore/"
    }
    # Unknown ids and numbers are 404, with Sabre's error body (downloads: an empty one).
    unknown = str((int(fileid) + 1) % 2**63 or 1)
    for path in (
        f"{VERSIONS}/versions/{unknown}",
        f"{VERSIONS}/versions/{fileid}/999",
        f"{VERSIONS}/versions/notanumber",
        f"{VERSIONS}/versions/{fileid}/x",
        f"{VERSIONS}/elsewhere",
    ):
        r = alice.propfind(path, "1", WEB_VERSIONS_PROPFIND)
        assert r.status == 404, path
        assert sabre_error(r.text) == "Sabre\\DAV\\Exception\\NotFound"
    r = alice.get(f"{VERSIONS}/versions/{fileid}/999")
    assert r.status == 404 and r.body == b""
    # Bad XML, unknown methods, infinite depth.
    r = alice.propfind(f"{VERSIONS}/versions/{fileid}", "1", "<d:propfind xmlns:d='DAV:'>")
    assert r.status == 400 and sabre_error(r.text).endswith("BadRequest")
    rows = version_rows(alice, fileid)
    number = next(iter(rows))
    r = alice.request("POST", f"{VERSIONS}/versions/{fileid}/{number}")
    assert r.status == 405 and "PROPPATCH" in (r.header("Allow") or "")
    assert alice.propfind(f"{VERSIONS}/versions/{fileid}", "infinity").status == 403
    # A restore goes into restore/ and nowhere else; a version is not a tree Destination.
    r = alice.request(
        "MOVE",
        f"{VERSIONS}/versions/{fileid}/{number}",
        headers={"Destination": alice.url(FILES + "/copy.txt")},
    )
    assert r.status == 403
    r = alice.request("MOVE", FILES + "/a.txt", headers={"Destination": alice.url(VERSIONS + "/x")})
    assert r.status == 403
    assert alice.get(FILES + "/a.txt").body == b"two"
    # oc:fileid is the same number on every path of the tree.
    assert fileid_of(alice, "/a.txt") == fileid
    r = alice.propfind("/a.txt", "0", FILEID_PROPFIND)
    assert found(next(iter(responses(r.text).values())), OC + "fileid") == fileid


# -- trash ------------------------------------------------------------------------------------


def test_trash_list_browse_get_restore_purge_empty(dav: DavServer, alice: DavClient) -> None:
    photo = b"\xff\xd8 not really a jpeg " * 200
    for path in ("/Photos", "/Docs", "/Docs/sub"):
        assert alice.mkcol(FILES + path).status == 201
    assert alice.put(FILES + "/Photos/Ferien am Meer.jpg", photo).status == 201
    assert alice.put(FILES + "/Docs/top.txt", b"top").status == 201
    assert alice.put(FILES + "/Docs/sub/note.txt", b"a note below").status == 201
    photo_id = fileid_of(alice, "/Photos/Ferien am Meer.jpg")
    [(_, before)] = propfind(
        alice, FILES + "/Photos/Ferien am Meer.jpg", FILEID_PROPFIND, "0"
    ).items()
    docs_id = fileid_of(alice, "/Docs")
    deleted_at = time.time()
    assert alice.delete(FILES + "/Photos/Ferien am Meer.jpg").status == 204
    assert alice.delete(FILES + "/Docs").status == 204
    assert alice.get(FILES + "/Docs/top.txt").status == 404

    # The web client's trash view.
    rows = trash_rows(alice)
    assert len(rows) == 2
    photo_name, props = by_filename(rows, "Ferien am Meer.jpg")
    assert found(props, NC + "trashbin-original-location") == "Photos/Ferien am Meer.jpg"
    assert abs(int(found(props, NC + "trashbin-deletion-time") or 0) - deleted_at) < 60
    assert found(props, OC + "fileid") == photo_id
    # oc:id as in the tree (the file id and the instance id): a client knows the file again.
    [(_, trashed)] = propfind(alice, f"{TRASH}/trash/{photo_name}", FILEID_PROPFIND, "0").items()
    assert found(trashed, OC + "id") == found(before, OC + "id") != photo_id
    assert found(props, D + "getcontentlength") == found(props, OC + "size") == str(len(photo))
    assert found(props, D + "getcontenttype") == "image/jpeg"
    assert found(props, D + "getetag") and found(props, D + "getlastmodified")
    assert not is_collection(props)
    docs_name, props = by_filename(rows, "Docs")
    assert found(props, NC + "trashbin-original-location") == "Docs"
    assert found(props, OC + "fileid") == docs_id and is_collection(props)
    # The Android app's listing.
    android = trash_rows(alice, ANDROID_TRASH_PROPFIND)
    assert found(android[photo_name], NC + "trashbin-filename") == "Ferien am Meer.jpg"
    assert found(android[photo_name], OC + "size") == str(len(photo))

    # A trashed folder can be browsed, and its files downloaded.
    inside = propfind(alice, f"{TRASH}/trash/{docs_name}", WEB_TRASH_PROPFIND)
    assert set(inside) == {
        f"{TRASH}/trash/{docs_name}/",
        f"{TRASH}/trash/{docs_name}/top.txt",
        f"{TRASH}/trash/{docs_name}/sub/",
    }
    top = inside[f"{TRASH}/trash/{docs_name}/top.txt"]
    assert found(top, NC + "trashbin-original-location") == "Docs/top.txt"
    sub = propfind(alice, f"{TRASH}/trash/{docs_name}/sub/", WEB_TRASH_PROPFIND)
    note = sub[f"{TRASH}/trash/{docs_name}/sub/note.txt"]
    assert found(note, NC + "trashbin-original-location") == "Docs/sub/note.txt"
    assert found(note, NC + "trashbin-filename") == "note.txt"
    r = alice.get(f"{TRASH}/trash/{docs_name}/sub/note.txt")
    assert r.status == 200 and r.body == b"a note below"
    r = alice.get(f"{TRASH}/trash/{photo_name}")
    assert r.status == 200 and r.body == photo
    disposition = r.header("Content-Disposition") or ""
    assert "filename*=UTF-8''Ferien%20am%20Meer.jpg" in disposition
    r = alice.get(f"{TRASH}/trash/{photo_name}", {"Range": "bytes=-5"})
    assert r.status == 206 and r.body == photo[-5:]
    assert alice.request("HEAD", f"{TRASH}/trash/{docs_name}/top.txt").status == 200
    assert alice.get(f"{TRASH}/trash/{docs_name}/nothing").status == 404
    # A trashed file keeps its versions, reachable by its id.
    assert alice.propfind(f"{VERSIONS}/versions/{photo_id}", "1").status == 207

    # Restore both (MOVE into restore/NAME): back where they were, same ids.
    r = alice.request(
        "MOVE",
        f"{TRASH}/trash/{photo_name}",
        headers={"Destination": alice.url(f"{TRASH}/restore/{photo_name}")},
    )
    assert r.status == 201, r.text
    assert alice.get(FILES + "/Photos/Ferien am Meer.jpg").body == photo
    assert fileid_of(alice, "/Photos/Ferien am Meer.jpg") == photo_id
    r = alice.request(
        "MOVE",
        f"{TRASH}/trash/{docs_name}",
        headers={"Destination": f"{TRASH}/restore/{docs_name}", "Overwrite": "F"},
    )
    assert r.status == 201
    assert alice.get(FILES + "/Docs/sub/note.txt").body == b"a note below"
    assert trash_rows(alice) == {}
    assert set(propfind(alice, TRASH + "/restore", WEB_TRASH_PROPFIND)) == {TRASH + "/restore/"}

    # Purge one item, then empty the trash: their objects go.
    before = stored_objects(dav)
    assert alice.delete(FILES + "/Photos/Ferien am Meer.jpg").status == 204
    assert alice.delete(FILES + "/Docs").status == 204
    photo_name, _ = by_filename(trash_rows(alice), "Ferien am Meer.jpg")
    assert alice.delete(f"{TRASH}/trash/{photo_name}").status == 204
    assert list(trash_rows(alice)) != [] and len(trash_rows(alice)) == 1
    assert alice.delete(f"{TRASH}/trash/{photo_name}").status == 404
    assert alice.delete(TRASH + "/trash/").status == 204
    assert trash_rows(alice) == {}
    dav.vault.collect_garbage(grace=0)
    assert len(stored_objects(dav)) < len(before)
    assert alice.get(f"{TRASH}/trash/{photo_name}").status == 404


def test_delete_permanently_bypasses_the_trash(dav: DavServer, alice: DavClient) -> None:
    assert alice.put(FILES + "/gone.bin", b"x" * 5000).status == 201
    assert alice.mkcol(FILES + "/gone-dir").status == 201
    assert alice.put(FILES + "/gone-dir/f", b"y" * 5000).status == 201
    before = stored_objects(dav)
    headers = {"X-Delete-Permanently": "true"}
    assert alice.delete(FILES + "/gone.bin", headers).status == 204
    assert alice.delete("/gone-dir", headers).status == 204
    assert trash_rows(alice) == {}
    dav.vault.collect_garbage(grace=0)
    assert len(before - stored_objects(dav)) == 2
    # Without the header (or with another value) DELETE goes to the trash.
    assert alice.put(FILES + "/kept.bin", b"z").status == 201
    assert alice.delete(FILES + "/kept.bin", {"X-Delete-Permanently": "false"}).status == 204
    by_filename(trash_rows(alice), "kept.bin")


def test_trash_namespace_and_errors(dav: DavServer, alice: DavClient) -> None:
    rows = propfind(alice, TRASH, WEB_TRASH_PROPFIND)
    assert set(rows) == {TRASH + "/", TRASH + "/trash/", TRASH + "/restore/"}
    assert propfind(alice, TRASH + "/trash", WEB_TRASH_PROPFIND, "0").keys() == {TRASH + "/trash/"}
    assert alice.put(FILES + "/f.txt", b"f").status == 201
    assert alice.delete(FILES + "/f.txt").status == 204
    name, _ = by_filename(trash_rows(alice), "f.txt")
    r = alice.propfind(f"{TRASH}/trash/nothing-here", "0", WEB_TRASH_PROPFIND)
    assert r.status == 404 and sabre_error(r.text).endswith("NotFound")
    r = alice.propfind(f"{TRASH}/trash", "1", "not xml at all <")
    assert r.status == 400
    r = alice.request("POST", f"{TRASH}/trash/{name}")
    assert r.status == 405 and "MOVE" in (r.header("Allow") or "")
    assert alice.put(f"{TRASH}/trash/{name}", b"new").status == 403
    assert alice.mkcol(f"{TRASH}/trash/new").status == 403
    # A restore goes into restore/ only.
    r = alice.request(
        "MOVE", f"{TRASH}/trash/{name}", headers={"Destination": alice.url(FILES + "/back.txt")}
    )
    assert r.status == 403
    assert alice.get(FILES + "/back.txt").status == 404
    r = alice.request(
        "MOVE", f"{TRASH}/trash/nothing", headers={"Destination": f"{TRASH}/restore/nothing"}
    )
    assert r.status == 404
    by_filename(trash_rows(alice), "f.txt")


def test_another_users_versions_and_trash_are_not_found(dav: DavServer, alice: DavClient) -> None:
    bob = dav.add_user("bob")
    put_versions(dav, alice, "/mine.txt", [b"v1", b"v2"])
    fileid = fileid_of(alice, "/mine.txt")
    number = next(iter(version_rows(alice, fileid)))
    assert alice.put(FILES + "/deleted.txt", b"d").status == 201
    assert alice.delete(FILES + "/deleted.txt").status == 204
    name, _ = by_filename(trash_rows(alice), "deleted.txt")
    # Bob addressing alice's namespaces: 404, as for her files (whether she exists is not his
    # business); nothing changes.
    for method, path in [
        ("PROPFIND", TRASH + "/trash/"),
        ("PROPFIND", TRASH + "/"),
        ("DELETE", TRASH + "/trash/"),
        ("DELETE", f"{TRASH}/trash/{name}"),
        ("GET", f"{TRASH}/trash/{name}"),
        ("PROPFIND", f"{VERSIONS}/versions/{fileid}"),
        ("GET", f"{VERSIONS}/versions/{fileid}/{number}"),
        ("DELETE", f"{VERSIONS}/versions/{fileid}/{number}"),
        ("PROPFIND", "/remote.php/dav/files/alice/"),
    ]:
        headers = {"Depth": "1"} if method == "PROPFIND" else {}
        assert bob.request(method, path, headers=headers).status == 404, (method, path)
    # Her ids mean nothing in his own namespaces either.
    r = bob.propfind(f"/remote.php/dav/versions/bob/versions/{fileid}", "1")
    assert r.status == 404
    r = bob.request(
        "MOVE",
        f"/remote.php/dav/trashbin/bob/trash/{name}",
        headers={"Destination": f"/remote.php/dav/trashbin/bob/restore/{name}"},
    )
    assert r.status == 404
    # A restore into someone else's restore/ is refused too.
    r = alice.request(
        "MOVE",
        f"{TRASH}/trash/{name}",
        headers={"Destination": f"/remote.php/dav/trashbin/bob/restore/{name}"},
    )
    assert r.status == 404
    assert propfind(bob, "/remote.php/dav/trashbin/bob/trash", WEB_TRASH_PROPFIND).keys() == {
        "/remote.php/dav/trashbin/bob/trash/"
    }
    by_filename(trash_rows(alice), "deleted.txt")
    assert len(version_rows(alice, fileid)) == 2


def lock(client: DavClient, path: str, depth: str = "0") -> str:
    body = (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
        "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
        "<D:owner>tests</D:owner></D:lockinfo>"
    )
    r = client.request("LOCK", path, body, {"Depth": depth, "Timeout": "Second-600"})
    assert r.status == 200, r.status
    return (r.header("Lock-Token") or "").strip("<>")


def test_rollback_and_restore_respect_locks(dav: DavServer, alice: DavClient) -> None:
    """A rollback writes the file and a restore writes into a folder: a lock held by someone
    else (no token submitted) stops them with 423, and nothing changes."""
    put_versions(dav, alice, "/locked.txt", [b"old", b"new"])
    fileid = fileid_of(alice, "/locked.txt")
    oldest = min(version_rows(alice, fileid), key=int)
    token = lock(alice, "/locked.txt")
    move = {"Destination": f"{VERSIONS}/restore/target"}
    r = alice.request("MOVE", f"{VERSIONS}/versions/{fileid}/{oldest}", headers=move)
    assert r.status == 423
    assert alice.get("/locked.txt").body == b"new"
    r = alice.request(
        "MOVE",
        f"{VERSIONS}/versions/{fileid}/{oldest}",
        headers={**move, "If": f"(<{token}>)"},
    )
    assert r.status == 201
    assert alice.get("/locked.txt").body == b"old"

    assert alice.mkcol("/Folder").status == 201
    assert alice.put("/Folder/f.txt", b"f").status == 201
    assert alice.delete("/Folder/f.txt").status == 204
    name, _ = by_filename(trash_rows(alice), "f.txt")
    token = lock(alice, "/Folder", depth="infinity")
    restore = {"Destination": f"{TRASH}/restore/{name}"}
    assert alice.request("MOVE", f"{TRASH}/trash/{name}", headers=restore).status == 423
    assert alice.get("/Folder/f.txt").status == 404
    by_filename(trash_rows(alice), "f.txt")  # still in the trash
    r = alice.request("MOVE", f"{TRASH}/trash/{name}", headers={**restore, "If": f"(<{token}>)"})
    assert r.status == 201
    assert alice.get("/Folder/f.txt").body == b"f"


def test_restore_when_the_folder_is_gone(dav: DavServer, alice: DavClient) -> None:
    """A file whose folder was deleted after it comes back at the root (the vault's rule)."""
    assert alice.mkcol("/Gone").status == 201
    assert alice.put("/Gone/orphan.txt", b"orphan").status == 201
    assert alice.delete("/Gone/orphan.txt").status == 204
    assert alice.delete("/Gone", {"X-Delete-Permanently": "true"}).status == 204
    name, _ = by_filename(trash_rows(alice), "orphan.txt")
    r = alice.request(
        "MOVE", f"{TRASH}/trash/{name}", headers={"Destination": f"{TRASH}/restore/{name}"}
    )
    assert r.status == 201
    assert alice.get("/orphan.txt").body == b"orphan"
