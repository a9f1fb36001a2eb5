"""ownCloud extensions over raw HTTP: ``oc:fileid``/``oc:id``/``oc:permissions``/
``oc:checksums`` (read-only), PROPPATCH of ``lastmodified``/``getlastmodified``, and
``OC-Checksum`` on PUT (a mismatch commits nothing)."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.harness.davserver import DavClient, start_dav_server

OC = "{http://owncloud.org/ns}"
D = "{DAV:}"
OC_PROPS = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:prop><d:getlastmodified/><oc:fileid/><oc:id/><oc:permissions/><oc:checksums/>"
    "</d:prop></d:propfind>"
)


def oc_props(alice: DavClient, path: str) -> dict[str, str | None]:
    r = alice.propfind(path, "0", OC_PROPS)
    assert r.status == 207, r.text
    resp = ET.fromstring(r.text).find(D + "response")
    assert resp is not None
    # rclone reads only the first propstat: everything found must be in it.
    first = resp.find(D + "propstat")
    assert first is not None and "200" in (first.findtext(D + "status") or "")
    prop = first.find(D + "prop")
    assert prop is not None
    out: dict[str, str | None] = {}
    for el in prop:
        out[el.tag] = "".join(el.itertext()) or None
    return out


def proppatch(alice: DavClient, path: str, inner: str) -> ET.Element:
    body = (
        '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" '
        'xmlns:oc="http://owncloud.org/ns"><d:set><d:prop>'
        f"{inner}</d:prop></d:set></d:propertyupdate>"
    )
    r = alice.request("PROPPATCH", path, body, {"Content-Type": "application/xml"})
    assert r.status == 207, r.text
    return ET.fromstring(r.text)


def statuses(ms: ET.Element) -> dict[str, str]:
    out = {}
    for ps in ms.iter(D + "propstat"):
        code = (ps.findtext(D + "status") or "").split()[1]
        prop = ps.find(D + "prop")
        assert prop is not None
        for el in prop:
            out[el.tag] = code
    return out


def test_file_ids_are_stable_across_move(alice: DavClient) -> None:
    assert alice.mkcol("/d").status == 201
    assert alice.put("/d/f", b"content").status == 201
    before = oc_props(alice, "/d/f")
    assert before[OC + "fileid"] and str(before[OC + "fileid"]).isdigit()
    assert before[OC + "permissions"] == "RGDNVW"
    assert oc_props(alice, "/d")[OC + "permissions"] == "RGDNVCK"
    assert oc_props(alice, "/")[OC + "permissions"] == "RGCK"
    # oc:id: the file id zero-padded to eight digits, then the instance id ("oc" + 10).
    oc_id = str(before[OC + "id"])
    assert oc_id.startswith(f"{int(str(before[OC + 'fileid'])):08d}")
    assert re.fullmatch(r"oc[a-z0-9]{10}", oc_id[len(str(before[OC + "fileid"])) :])
    assert alice.move("/d/f", "/moved").status == 201
    assert alice.put("/moved", b"new content").status == 204
    after = oc_props(alice, "/moved")
    assert after[OC + "fileid"] == before[OC + "fileid"]
    assert after[OC + "id"] == before[OC + "id"]
    assert alice.copy("/moved", "/copy").status == 201
    assert oc_props(alice, "/copy")[OC + "fileid"] != before[OC + "fileid"]
    assert oc_props(alice, "/d")[OC + "fileid"] != before[OC + "fileid"]


def test_computed_properties_are_protected(alice: DavClient) -> None:
    data = b"protected"
    assert alice.put("/f", data).status == 201
    for inner in (
        "<oc:fileid>1</oc:fileid>",
        "<oc:id>x</oc:id>",
        "<oc:permissions>RDNVW</oc:permissions>",
        "<oc:checksums><oc:checksum>SHA1:" + "0" * 40 + "</oc:checksum></oc:checksums>",
    ):
        ms = proppatch(alice, "/f", inner + '<x:color xmlns:x="urn:x">red</x:color>')
        codes = statuses(ms)
        assert sorted(codes.values()) == ["403", "424"], codes
    assert oc_props(alice, "/f")[OC + "permissions"] == "RGDNVW"
    r = alice.propfind("/f", "0", '<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>')
    assert "urn:x" not in r.text  # nothing was applied
    # Re-sending the checksums we computed (rclone does, with every modtime) is a no-op.
    sha1 = hashlib.sha1(data).hexdigest()
    md5 = hashlib.md5(data).hexdigest()
    ms = proppatch(
        alice,
        "/f",
        '<lastmodified xmlns="DAV:">1500000000</lastmodified>'
        f"<oc:checksums><oc:checksum>SHA1:{sha1} MD5:{md5} ADLER32:0</oc:checksum>"
        "</oc:checksums>",
    )
    assert set(statuses(ms).values()) == {"200"}
    props = oc_props(alice, "/f")
    assert props[D + "getlastmodified"] == "Fri, 14 Jul 2017 02:40:00 GMT"
    assert props[OC + "checksums"] == f"SHA1:{sha1} MD5:{md5}"


def test_proppatch_getlastmodified(alice: DavClient) -> None:
    assert alice.put("/f", b"x").status == 201
    ms = proppatch(
        alice, "/f", "<d:getlastmodified>Wed, 01 Jan 2020 00:00:00 GMT</d:getlastmodified>"
    )
    assert set(statuses(ms).values()) == {"200"}
    assert alice.get("/f").header("Last-Modified") == "Wed, 01 Jan 2020 00:00:00 GMT"
    ms = proppatch(alice, "/f", "<d:getlastmodified>1600000000</d:getlastmodified>")
    assert alice.get("/f").header("Last-Modified") == "Sun, 13 Sep 2020 12:26:40 GMT"
    ms = proppatch(alice, "/f", "<d:getlastmodified>yesterday</d:getlastmodified>")
    assert set(statuses(ms).values()) == {"400"}


def test_oc_checksum_on_put(alice: DavClient) -> None:
    old, new = b"old version", b"new version"
    assert alice.put("/f", old).status == 201
    etag = alice.get("/f").header("ETag")
    wrong = {"OC-Checksum": "SHA1:" + hashlib.sha1(b"something else").hexdigest()}
    assert alice.put("/f", new, wrong).status == 400
    wrong_md5 = {"OC-Checksum": "MD5:" + hashlib.md5(b"something else").hexdigest()}
    assert alice.put("/f", new, wrong_md5).status == 400
    assert alice.put("/f", new, {"OC-Checksum": "SHA1:nothex"}).status == 400
    r = alice.get("/f")
    assert r.body == old and r.header("ETag") == etag
    assert alice.put("/g", new, wrong).status == 400
    assert alice.get("/g").status == 404
    both = f"SHA1:{hashlib.sha1(new).hexdigest()} MD5:{hashlib.md5(new).hexdigest()} ADLER32:1"
    r = alice.put("/f", new, {"OC-Checksum": both, "X-OC-Mtime": "1500000000"})
    assert r.status == 204 and r.header("X-OC-Mtime") == "accepted"
    assert oc_props(alice, "/f")[OC + "checksums"] == both.rsplit(" ", 1)[0]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("sha1", ("sha1",)), ("md5", ("md5",)), ("none", ())],
)
def test_storage_checksums_setting(tmp_path: Path, setting: str, expected: tuple[str, ...]) -> None:
    """storage.checksums picks what is computed and offered; an announced checksum is still
    verified and then kept."""
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_STORAGE_CHECKSUMS": setting})
    try:
        alice = dav.client("alice")
        data = b"some file body " * 2000  # beyond storage.inline_max: the streamed path too
        for path, body in (("/big", data), ("/small", b"tiny")):
            assert alice.put(path, body).status == 201
            digests = {"sha1": hashlib.sha1(body).hexdigest(), "md5": hashlib.md5(body).hexdigest()}
            want = " ".join(f"{a.upper()}:{digests[a]}" for a in expected)
            assert oc_props(alice, path).get(OC + "checksums") == (want or None)
        announced = {"OC-Checksum": "SHA1:" + "0" * 40}
        assert alice.put("/checked", b"body", announced).status == 400  # verified anyway
        sha1 = hashlib.sha1(b"body").hexdigest()
        assert alice.put("/checked", b"body", {"OC-Checksum": f"SHA1:{sha1}"}).status == 201
        assert f"SHA1:{sha1}" in (oc_props(alice, "/checked").get(OC + "checksums") or "")
    finally:
        dav.stop()
