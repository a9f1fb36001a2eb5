"""PROPPATCH and dead properties: stored per node in the index, moved and copied with it,
all-or-nothing updates, protected live properties, rclone's modification-time fallback."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.harness.davserver import DavClient, DavServer

NS = "urn:x-test:"


def set_body(**props: str) -> str:
    inner = "".join(f"<Z:{k}>{v}</Z:{k}>" for k, v in props.items())
    return (
        f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{NS}">'
        f"<D:set><D:prop>{inner}</D:prop></D:set></D:propertyupdate>"
    )


def get_prop(client: DavClient, path: str, name: str) -> str | None:
    body = (
        f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="{NS}">'
        f"<D:prop><Z:{name}/></D:prop></D:propfind>"
    )
    r = client.propfind(path, "0", body)
    assert r.status == 207
    for ps in ET.fromstring(r.body).iter("{DAV:}propstat"):
        if "200" in (ps.findtext("{DAV:}status") or ""):
            el = ps.find(f"{{DAV:}}prop/{{{NS}}}{name}")
            if el is not None:
                return el.text or ""
    return None


def statuses(body: bytes) -> list[str]:
    return [s.text or "" for s in ET.fromstring(body).iter("{DAV:}status")]


def test_set_get_remove(alice: DavClient) -> None:
    alice.put("/f", b"x")
    r = alice.request("PROPPATCH", "/f", set_body(colour="blue", size="XL"))
    assert r.status == 207 and all("200" in s for s in statuses(r.body))
    assert get_prop(alice, "/f", "colour") == "blue"
    remove = (
        f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{NS}">'
        "<D:remove><D:prop><Z:colour/></D:prop></D:remove></D:propertyupdate>"
    )
    assert alice.request("PROPPATCH", "/f", remove).status == 207
    assert get_prop(alice, "/f", "colour") is None
    assert get_prop(alice, "/f", "size") == "XL"
    allprop = alice.propfind("/f", "0")
    assert "XL" in allprop.text


def test_props_move_and_copy_with_the_node(alice: DavClient) -> None:
    alice.mkcol("/d")
    alice.put("/d/f", b"x")
    alice.request("PROPPATCH", "/d/f", set_body(tag="moved-along"))
    alice.request("PROPPATCH", "/d", set_body(tag="dir-prop"))
    assert alice.move("/d", "/e").status == 201
    assert get_prop(alice, "/e/f", "tag") == "moved-along"
    assert get_prop(alice, "/e", "tag") == "dir-prop"
    assert alice.copy("/e", "/c").status == 201
    assert get_prop(alice, "/c/f", "tag") == "moved-along"
    alice.request("PROPPATCH", "/c/f", set_body(tag="changed"))
    assert get_prop(alice, "/e/f", "tag") == "moved-along"


def test_protected_property_fails_the_whole_update(alice: DavClient) -> None:
    alice.put("/f", b"x")
    body = (
        f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{NS}">'
        "<D:set><D:prop><Z:ok>1</Z:ok><D:getcontentlength>9</D:getcontentlength>"
        "</D:prop></D:set></D:propertyupdate>"
    )
    r = alice.request("PROPPATCH", "/f", body)
    assert r.status == 207
    found = statuses(r.body)
    assert any("403" in s for s in found) and any("424" in s for s in found)
    assert get_prop(alice, "/f", "ok") is None


def test_proppatch_errors(alice: DavClient) -> None:
    assert alice.request("PROPPATCH", "/missing", set_body(a="b")).status == 404
    alice.put("/f", b"x")
    assert alice.request("PROPPATCH", "/f", "<not-xml").status == 400
    assert alice.request("PROPPATCH", "/f", '<?xml version="1.0"?><x xmlns="DAV:"/>').status == 400
    # webdavclient3 sends Depth: 1 with PROPPATCH; the header means nothing there.
    assert alice.request("PROPPATCH", "/f", set_body(a="b"), {"Depth": "1"}).status == 207


def test_rclone_lastmodified_fallback(alice: DavClient) -> None:
    alice.put("/f", b"x")
    body = (
        '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:"><D:set>'
        '<D:prop><lastmodified xmlns="DAV:">1600000000</lastmodified></D:prop>'
        "</D:set></D:propertyupdate>"
    )
    r = alice.request("PROPPATCH", "/f", body)
    assert r.status == 207 and all("200" in s for s in statuses(r.body))
    assert alice.get("/f").header("Last-Modified") == "Sun, 13 Sep 2020 12:26:40 GMT"


def test_unicode_values_and_names(alice: DavClient, dav_server: DavServer) -> None:
    alice.put("/Grüße.txt", b"x")
    alice.request("PROPPATCH", "/Grüße.txt", set_body(note="ünïcödé ✓"))
    assert get_prop(alice, "/Grüße.txt", "note") == "ünïcödé ✓"
    # macOS sends names in NFD: the same file.
    nfd = "/Gru\u0308ße.txt"
    assert alice.get(nfd).body == b"x"
