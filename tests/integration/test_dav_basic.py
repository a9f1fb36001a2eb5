"""The WebDAV verbs through a real cheroot server, with raw HTTP: OPTIONS, PROPFIND, MKCOL,
PUT/GET, DELETE, COPY, MOVE, conditional requests, quota properties, the browser listing."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from tests.harness.davserver import DavClient, DavServer

D = "{DAV:}"


def hrefs(body: bytes) -> list[str]:
    return [el.text or "" for el in ET.fromstring(body).iter(D + "href")]


def prop(body: bytes, href_suffix: str, name: str) -> str | None:
    """Text of property ``name`` in the 200 propstat of the response whose href ends so."""
    for resp in ET.fromstring(body).iter(D + "response"):
        href = resp.findtext(D + "href") or ""
        if not href.rstrip("/").endswith(href_suffix.rstrip("/")):
            continue
        for ps in resp.iter(D + "propstat"):
            if "200" in (ps.findtext(D + "status") or ""):
                el = ps.find(f"{D}prop/{name}")
                if el is not None:
                    return el.text or ""
    return None


def test_options_advertises_class_2(alice: DavClient) -> None:
    r = alice.request("OPTIONS", "/")
    assert r.status == 200
    assert r.header("DAV") == "1, 2"
    assert "LOCK" in (r.header("Allow") or "")


def test_put_get_head_delete(alice: DavClient) -> None:
    assert alice.put("/a.txt", b"hello").status == 201
    r = alice.get("/a.txt")
    assert (r.status, r.body) == (200, b"hello")
    assert r.header("Content-Length") == "5"
    etag = r.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert r.header("Last-Modified")
    h = alice.request("HEAD", "/a.txt")
    assert (h.status, h.body, h.header("ETag")) == (200, b"", etag)
    assert h.header("Content-Length") == "5"
    assert alice.put("/a.txt", b"second").status == 204
    assert alice.get("/a.txt").body == b"second"
    assert alice.delete("/a.txt").status == 204
    assert alice.get("/a.txt").status == 404
    assert alice.delete("/a.txt").status == 404


def test_zero_length_put(alice: DavClient) -> None:
    assert alice.put("/empty", b"").status == 201
    r = alice.get("/empty")
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")


def test_put_missing_parent_is_409(alice: DavClient) -> None:
    assert alice.put("/no/such/dir/f", b"x").status == 409
    assert alice.mkcol("/no/such").status == 409


def test_put_onto_collection_is_405(alice: DavClient) -> None:
    alice.mkcol("/d")
    assert alice.put("/d", b"x").status == 405


def test_mkcol(alice: DavClient) -> None:
    assert alice.mkcol("/d").status == 201
    assert alice.mkcol("/d").status == 405
    assert alice.mkcol("/d/e/").status == 201
    assert alice.request("MKCOL", "/d/f", b"<x/>", {"Content-Type": "text/xml"}).status == 415
    r = alice.propfind("/d/", "1")
    assert r.status == 207
    assert any(h.rstrip("/").endswith("/d/e") for h in hrefs(r.body))


def test_propfind_depths_and_bodies(alice: DavClient) -> None:
    alice.mkcol("/dir")
    for i in range(5):
        alice.put(f"/dir/f{i}", b"x" * i)
    r0 = alice.propfind("/dir", "0")
    assert r0.status == 207 and len(hrefs(r0.body)) == 1
    r1 = alice.propfind("/dir", "1")
    assert r1.status == 207 and len(hrefs(r1.body)) == 6
    assert prop(r1.body, "/dir/f3", D + "getcontentlength") == "3"
    named = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:getcontentlength/><D:getetag/><D:nosuch/></D:prop></D:propfind>"
    )
    r = alice.propfind("/dir", "1", named)
    assert r.status == 207
    assert prop(r.body, "/dir/f4", D + "getcontentlength") == "4"
    etag = prop(r.body, "/dir/f4", D + "getetag")
    assert etag == alice.get("/dir/f4").header("ETag")
    names = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    assert alice.propfind("/dir", "1", names).status == 207
    allprop = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    assert alice.propfind("/dir", "1", allprop).status == 207
    assert alice.propfind("/dir", "1", "<not xml").status == 400


def test_propfind_200_propstat_comes_first(alice: DavClient) -> None:
    # rclone reads only the first <propstat> of each response.
    alice.mkcol("/d")
    body = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:getcontentlength/><D:resourcetype/></D:prop></D:propfind>"
    )
    r = alice.propfind("/d", "0", body)
    first = next(ET.fromstring(r.body).iter(D + "propstat"))
    assert "200" in (first.findtext(D + "status") or "")


@pytest.mark.parametrize("depth", ["infinity", "Infinity"])
def test_propfind_infinity_is_refused(alice: DavClient, depth: str) -> None:
    r = alice.propfind("/", depth)
    assert r.status == 403
    assert b"propfind-finite-depth" in r.body


def test_propfind_without_depth_is_depth_1(alice: DavClient) -> None:
    """No Depth header is answered as Depth 1, as sabre/dav does with infinity disabled
    (webdav4 sends none): the collection and its members, not the grandchildren."""
    alice.mkcol("/d")
    alice.mkcol("/d/e")
    alice.put("/d/e/deep.txt", b"x")
    alice.put("/d/f.txt", b"y")
    r = alice.propfind("/d", None)
    assert r.status == 207
    assert sorted(h.rstrip("/") for h in hrefs(r.body)) == ["/d", "/d/e", "/d/f.txt"]
    r = alice.propfind("/d/f.txt", None)
    assert r.status == 207 and hrefs(r.body) == ["/d/f.txt"]


def test_propfind_missing_is_404(alice: DavClient) -> None:
    assert alice.propfind("/nope", "0").status == 404


def test_etag_changes_with_content_not_with_move(alice: DavClient) -> None:
    alice.put("/f", b"one")
    e1 = alice.get("/f").header("ETag")
    alice.put("/f", b"two")
    e2 = alice.get("/f").header("ETag")
    assert e1 != e2
    assert alice.move("/f", "/g").status == 201
    assert alice.get("/g").header("ETag") == e2


def test_conditional_get_and_put(alice: DavClient) -> None:
    alice.put("/f", b"data")
    r = alice.get("/f")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    assert etag and lm
    assert alice.get("/f", {"If-None-Match": etag}).status == 304
    assert alice.get("/f", {"If-None-Match": '"other"'}).status == 200
    assert alice.get("/f", {"If-Modified-Since": lm}).status == 304
    assert alice.get("/f", {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status == 200
    assert alice.get("/f", {"If-Match": '"other"'}).status == 412
    assert alice.get("/f", {"If-Match": etag}).status == 200
    # Lost-update protection: PUT with a stale ETag fails and changes nothing.
    assert alice.put("/f", b"new", {"If-Match": '"stale"'}).status == 412
    assert alice.get("/f").body == b"data"
    assert alice.put("/f", b"new", {"If-Match": etag}).status == 204
    assert alice.put("/f", b"x", {"If-None-Match": "*"}).status == 412
    assert alice.put("/g", b"x", {"If-None-Match": "*"}).status == 201
    assert alice.put("/h", b"x", {"If-Match": "*"}).status == 412


def test_last_modified_follows_x_oc_mtime(alice: DavClient) -> None:
    r = alice.put("/f", b"x", {"X-OC-Mtime": "1500000000"})
    assert r.header("X-OC-Mtime") == "accepted"
    assert alice.get("/f").header("Last-Modified") == "Fri, 14 Jul 2017 02:40:00 GMT"


def test_delete_collection(alice: DavClient) -> None:
    alice.mkcol("/d")
    alice.mkcol("/d/e")
    alice.put("/d/e/f", b"x")
    assert alice.delete("/d").status == 204
    assert alice.propfind("/d", "0").status == 404
    assert alice.delete("/").status in (403, 405)


def test_copy_depths_and_overwrite(alice: DavClient) -> None:
    alice.mkcol("/src")
    alice.put("/src/a", b"A")
    alice.mkcol("/src/sub")
    alice.put("/src/sub/b", b"B")
    assert alice.copy("/src", "/dst").status == 201
    assert alice.get("/dst/sub/b").body == b"B"
    assert alice.copy("/src", "/dst", overwrite=False).status == 412
    alice.put("/dst/extra", b"E")
    assert alice.copy("/src", "/dst", overwrite=True).status == 204
    assert alice.get("/dst/extra").status == 404  # replaced, not merged (RFC 4918 §9.8.4)
    assert alice.copy("/src", "/shallow", depth="0").status == 201
    r = alice.propfind("/shallow", "1")
    assert len(hrefs(r.body)) == 1
    assert alice.copy("/src/a", "/a2").status == 201
    assert alice.get("/a2").body == b"A"
    assert alice.copy("/src/a", "/nodir/a").status == 409
    assert alice.copy("/src", "/src/sub/inside").status in (403, 409)
    assert alice.copy("/missing", "/x").status == 404


def test_move_status_and_overwrite(alice: DavClient) -> None:
    alice.put("/a", b"A")
    alice.put("/b", b"B")
    assert alice.move("/a", "/c").status == 201
    assert alice.get("/a").status == 404
    assert alice.move("/c", "/b", overwrite=False).status == 412
    assert alice.get("/b").body == b"B"
    assert alice.move("/c", "/b", overwrite=True).status == 204
    assert alice.get("/b").body == b"A"
    assert alice.get("/c").status == 404
    alice.mkcol("/d")
    assert alice.move("/b", "/d/b").status == 201
    assert alice.move("/d", "/e").status == 201
    assert alice.get("/e/b").body == b"A"
    assert alice.move("/e", "/e/inner").status in (403, 409)
    assert alice.move("/e/b", "/nodir/b").status == 409


@pytest.mark.slow
def test_move_of_a_1000_file_tree(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    session = dav_server.vault.login("alice", dav_server.users["alice"])
    session.mkdir("/big")
    for d in range(10):
        session.mkdir(f"/big/d{d}")
        for f in range(100):
            session.write_file(f"/big/d{d}/f{f}", [b"%d-%d" % (d, f)])
    started = time.monotonic()
    r = alice.move("/big", "/moved")
    elapsed = time.monotonic() - started
    assert r.status == 201
    assert elapsed < 10, elapsed
    assert alice.propfind("/big", "0").status == 404
    assert alice.get("/moved/d7/f42").body == b"7-42"
    r = alice.propfind("/moved/d3", "1")
    assert len(hrefs(r.body)) == 101


def test_quota_properties_unlimited(alice: DavClient) -> None:
    alice.put("/f", b"12345")
    body = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>"
    )
    r = alice.propfind("/", "0", body)
    assert prop(r.body, "/", D + "quota-used-bytes") == "5"
    assert int(prop(r.body, "/", D + "quota-available-bytes") or 0) > 1 << 40


def test_browser_gets_html_listing(dav_server: DavServer, alice: DavClient) -> None:
    alice.mkcol("/photos")
    alice.put("/photos/cat.jpg", b"meow")
    anon = dav_server.client()
    assert anon.get("/photos/").status == 401
    r = alice.get("/photos/", {"Accept": "text/html"})
    assert r.status == 200
    assert "text/html" in (r.header("Content-Type") or "")
    assert "cat.jpg" in r.text
    assert alice.get("/photos").status in (301, 302)


def test_copy_and_move_accept_x_oc_mtime(alice: DavClient) -> None:
    alice.put("/f", b"x")
    r = alice.request(
        "COPY", "/f", headers={"Destination": alice.url("/g"), "X-OC-Mtime": "1400000000"}
    )
    assert r.status == 201 and r.header("X-OC-Mtime") == "accepted"
    assert alice.get("/g").header("Last-Modified") == "Tue, 13 May 2014 16:53:20 GMT"
    r = alice.request(
        "MOVE", "/g", headers={"Destination": alice.url("/h"), "X-OC-Mtime": "1300000000"}
    )
    assert r.status == 201 and r.header("X-OC-Mtime") == "accepted"
    assert alice.get("/h").header("Last-Modified") == "Sun, 13 Mar 2011 07:06:40 GMT"
