"""Windows Explorer (the WebDAV mini-redirector) replayed with raw HTTP, on both backends.

Explorer cannot run here, so its request sequences are sent as it sends them: its
User-Agent and ``translate: f``; PROPFIND with an empty body; a new file is a
0-byte PUT, then LOCK without a Depth header, PROPPATCH of the Win32 times and attributes with
``If: (<token>)`` (no tagged URL), HEAD, PUT of the content, PROPPATCH again, UNLOCK; rename
is MOVE with ``Overwrite: F``. The PROPPATCH must be answered 207 with a 200 propstat (a 403
makes Explorer report the copy as failed), and ``Win32LastModifiedTime`` must become the
file's modification time, which Explorer shows and compares.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.harness.davserver import DavClient, DavServer, Response

D = "{DAV:}"
MS = "urn:schemas-microsoft-com:"
Z = "{" + MS + "}"  # its Clark-notation prefix
UA = "Microsoft-WebDAV-MiniRedir/10.0.19045"
EXPLORER = {"User-Agent": UA, "translate": "f"}
WIN32_PROPS = ("Win32CreationTime", "Win32LastAccessTime", "Win32LastModifiedTime")

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner><D:href>DESKTOP-4711\\alice</D:href></D:owner></D:lockinfo>"
)


def win32_body(when: str, attributes: str = "00000020") -> str:
    times = "".join(f"<Z:{name}>{when}</Z:{name}>" for name in WIN32_PROPS)
    return (
        '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
        f'xmlns:Z="{MS}"><D:set><D:prop>{times}'
        f"<Z:Win32FileAttributes>{attributes}</Z:Win32FileAttributes>"
        "</D:prop></D:set></D:propertyupdate>"
    )


def explorer(
    client: DavClient, method: str, path: str, body: bytes | str = b"", **hdrs: str
) -> Response:
    headers = {**EXPLORER, **hdrs}
    if method in ("PROPFIND", "PROPPATCH", "LOCK") and body:
        headers.setdefault("Content-Type", 'text/xml; charset="utf-8"')
    return client.request(method, path, body, headers)


def propstats(r: Response) -> dict[str, str]:
    """{property (Clark notation): status code} over every propstat of every response."""
    out = {}
    for ps in ET.fromstring(r.body).iter(D + "propstat"):
        code = (ps.findtext(D + "status") or "").split(" ")[1]
        for el in ps.iterfind(D + "prop/*"):
            out[el.tag] = code
    return out


def props_of(r: Response) -> dict[str, str]:
    """{property: text} from the 200 propstat of a single-resource PROPFIND."""
    out = {}
    for ps in ET.fromstring(r.body).iter(D + "propstat"):
        if " 200 " in (ps.findtext(D + "status") or ""):
            for el in ps.iterfind(D + "prop/*"):
                out[el.tag] = el.text or ""
    return out


def assert_win32_accepted(r: Response) -> None:
    assert r.status == 207, (r.status, r.text)
    codes = propstats(r)
    assert set(codes) == {Z + n for n in (*WIN32_PROPS, "Win32FileAttributes")}
    assert set(codes.values()) == {"200"}, codes
    first = next(ET.fromstring(r.body).iter(D + "propstat"))
    assert " 200 " in (first.findtext(D + "status") or "")


def test_connect_and_browse(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    alice.mkcol("/Documents")
    alice.put("/Documents/notes.txt", b"hi")
    r = explorer(alice, "OPTIONS", "/")
    assert r.status == 200
    assert "2" in [c.strip() for c in (r.header("DAV") or "").split(",")]
    assert r.header("MS-Author-Via") == "DAV"
    # PROPFIND with an empty body means allprop (RFC 4918 §9.1).
    r = explorer(alice, "PROPFIND", "/", Depth="0")
    assert r.status == 207
    root = props_of(r)
    assert ET.fromstring(r.body).find(f".//{D}resourcetype/{D}collection") is not None
    assert root[D + "getlastmodified"]
    r = explorer(alice, "PROPFIND", "/Documents", Depth="1")
    assert r.status == 207
    hrefs = sorted(h.text or "" for h in ET.fromstring(r.body).iter(D + "href"))
    assert hrefs == ["/Documents/", "/Documents/notes.txt"]
    # Explorer looks for folder customisation files in every folder it opens.
    for probe in ("/Documents/desktop.ini", "/desktop.ini", "/Autorun.inf", "/folder.jpg"):
        assert explorer(alice, "PROPFIND", probe, Depth="0").status == 404, probe
    assert explorer(alice, "GET", "/Documents/notes.txt").body == b"hi"


def test_save_new_file_sequence(dav_any: DavServer) -> None:
    """Copying report.docx into a folder: the exact order Explorer uses."""
    alice = dav_any.client("alice")
    path = "/report.docx"
    assert explorer(alice, "PROPFIND", path, Depth="0").status == 404
    r = explorer(alice, "PUT", path, b"", **{"Content-Length": "0"})
    assert r.status == 201
    r = explorer(alice, "LOCK", path, LOCK_BODY, Timeout="Second-3600")  # no Depth header
    assert r.status == 200, r.text
    token = (r.header("Lock-Token") or "").strip()
    assert token.startswith("<opaquelocktoken:") and token.endswith(">")
    created = "Tue, 10 Mar 2026 08:00:00 GMT"
    assert_win32_accepted(explorer(alice, "PROPPATCH", path, win32_body(created), If=f"({token})"))
    head = explorer(alice, "HEAD", path)
    assert (head.status, head.header("Content-Length")) == (200, "0")

    content = b"PK\x03\x04 not really a docx " * 1000
    # The lock is honoured: without its token, or with someone else's, nothing changes.
    assert explorer(alice, "PUT", path, content).status == 423
    assert explorer(alice, "PROPPATCH", path, win32_body(created)).status == 423
    assert explorer(alice, "DELETE", path).status == 423
    other = "(<opaquelocktoken:00000000-0000-0000-0000-000000000000>)"
    assert explorer(alice, "PUT", path, content, If=other).status == 412
    assert explorer(alice, "PUT", path, content, If=f"({token})").status == 204

    modified = "Wed, 25 Nov 2026 10:00:00 GMT"
    r = explorer(alice, "PROPPATCH", path, win32_body(modified, "00000080"), If=f"({token})")
    assert_win32_accepted(r)
    props = props_of(explorer(alice, "PROPFIND", path, Depth="0"))
    assert props[D + "getlastmodified"] == modified
    assert props[D + "getcontentlength"] == str(len(content))
    assert props[Z + "Win32LastModifiedTime"] == modified
    assert props[Z + "Win32CreationTime"] == modified
    assert props[Z + "Win32FileAttributes"] == "00000080"
    get = explorer(alice, "GET", path)
    assert get.body == content and get.header("Last-Modified") == modified

    r = explorer(alice, "UNLOCK", path, **{"Lock-Token": token})
    assert r.status == 204
    assert explorer(alice, "PROPFIND", path, Depth="0").status == 207
    # Rename: MOVE with Overwrite: F; properties and times travel with the file.
    dest = alice.url("/Quarterly report.docx")
    r = explorer(alice, "MOVE", path, Destination=dest, Overwrite="F")
    assert r.status == 201
    assert explorer(alice, "GET", path).status == 404
    props = props_of(explorer(alice, "PROPFIND", "/Quarterly report.docx", Depth="0"))
    assert props[D + "getlastmodified"] == modified
    assert props[Z + "Win32FileAttributes"] == "00000080"
    assert explorer(alice, "GET", "/Quarterly report.docx").body == content
    # Unlocked now: a plain overwrite works.
    assert explorer(alice, "PUT", "/Quarterly report.docx", b"v2").status == 204


def test_new_folder_rename_delete(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    assert explorer(alice, "MKCOL", "/New folder").status == 201
    when = "Mon, 02 Feb 2026 12:34:56 GMT"
    assert_win32_accepted(explorer(alice, "PROPPATCH", "/New folder", win32_body(when, "00000010")))
    props = props_of(explorer(alice, "PROPFIND", "/New folder", Depth="0"))
    assert props[D + "getlastmodified"] == when
    dest = alice.url("/Projects")
    assert explorer(alice, "MOVE", "/New folder", Destination=dest, Overwrite="F").status == 201
    alice.put("/Projects/a.txt", b"a")
    alice.mkcol("/Taken")
    # Renaming onto an existing name is refused, never merged or replaced.
    taken = alice.url("/Taken")
    assert explorer(alice, "MOVE", "/Projects", Destination=taken, Overwrite="F").status == 412
    assert explorer(alice, "DELETE", "/Projects").status == 204
    assert explorer(alice, "PROPFIND", "/Projects", Depth="0").status == 404
    assert explorer(alice, "PROPFIND", "/Taken", Depth="0").status == 207


def test_lock_refresh_and_unlock_with_bare_if(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    alice.put("/doc.txt", b"x")
    r = explorer(alice, "LOCK", "/doc.txt", LOCK_BODY, Timeout="Second-3600")
    token = (r.header("Lock-Token") or "").strip()
    # Refresh: LOCK with no body and the token in a bare If list.
    r = explorer(alice, "LOCK", "/doc.txt", b"", If=f"({token})", Timeout="Second-3600")
    assert r.status == 200, r.text
    assert explorer(alice, "UNLOCK", "/doc.txt", **{"Lock-Token": token}).status == 204
    assert explorer(alice, "PUT", "/doc.txt", b"y").status == 204
