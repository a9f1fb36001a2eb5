"""macOS Finder (WebDAVFS) replayed with raw HTTP, on both backends.

Finder cannot run here, so its requests are sent as it sends them: its
User-Agent; at mount it reads OPTIONS (without class 2 in ``DAV:`` the volume is read-only) and
probes ``._.``, ``.DS_Store``, ``mach_kernel`` and friends, which must be 404 when absent; a
copy is LOCK Depth 0 ``Timeout: Second-600`` on the new URL, then PUT with
``Transfer-Encoding: chunked``, no Content-Length, ``X-Expected-Entity-Length`` and
``If: (<token>)``, then UNLOCK; beside each file it writes a 4096-byte AppleDouble ``._name``
and ``.DS_Store`` files, which are stored as ordinary files. Names arrive in NFD (decomposed)
and must be found under their NFC spelling and listed once.
"""

from __future__ import annotations

import http.client
import secrets
import socket
import struct
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit

from tests.harness.davserver import DavClient, DavServer, Response, basic

D = "{DAV:}"
UA = "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)"
FINDER = {"User-Agent": UA}
PROBES = (
    "._.",
    ".DS_Store",
    "mach_kernel",
    ".hidden",
    ".Spotlight-V100",
    ".metadata_never_index",
    ".ql_disablethumbnails",
    "Backups.backupdb",
    "._mach_kernel",
)
PROPS = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:">\n<D:prop>\n'
    "<D:getlastmodified/>\n<D:getcontentlength/>\n<D:creationdate/>\n<D:resourcetype/>\n"
    "</D:prop>\n</D:propfind>\n"
)
LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:lockinfo xmlns:D="DAV:">\n'
    "<D:lockscope><D:exclusive/></D:lockscope>\n<D:locktype><D:write/></D:locktype>\n"
    "<D:owner>\n<D:href>http://www.apple.com/webdav_fs/</D:href>\n</D:owner>\n</D:lockinfo>\n"
)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def finder(client: DavClient, method: str, path: str, body: object = None, **hdrs: str) -> Response:
    headers = {**FINDER, **hdrs}
    if method in ("PROPFIND", "LOCK") and body:
        headers.setdefault("Content-Type", 'text/xml; charset="utf-8"')
    return client.request(method, path, body, headers)


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def chunked_put(client: DavClient, path: str, data: bytes, **hdrs: str) -> Response:
    """PUT as Finder sends it: ``Transfer-Encoding: chunked``, no Content-Length, the size in
    ``X-Expected-Entity-Length``. Written on a raw socket so the framing is exactly that, and
    so an early answer (423: the server then closes rather than read the body) is still read
    when the rest of the body can no longer be sent."""
    u = urlsplit(client.base_url)
    headers = {
        "Host": f"{u.hostname}:{u.port}",
        **FINDER,
        "Authorization": basic(client.user or "", client.password or ""),
        "Content-Type": "application/octet-stream",
        "X-Expected-Entity-Length": str(len(data)),
        **hdrs,
        "Transfer-Encoding": "chunked",
    }
    head = f"PUT {quote(path)} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    framed = (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks(data))
    with socket.create_connection((u.hostname, u.port), timeout=60) as sock:
        try:
            sock.sendall(head.encode("utf-8"))
            for piece in framed:
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered before the body was read; the answer is waiting
        resp = http.client.HTTPResponse(sock, method="PUT")
        resp.begin()
        return Response(resp.status, resp.reason, resp.headers, resp.read())


def lock(client: DavClient, path: str) -> str:
    r = finder(client, "LOCK", path, LOCK_BODY, Depth="0", Timeout="Second-600")
    assert r.status in (200, 201), (r.status, r.text)
    token = (r.header("Lock-Token") or "").strip()
    assert token.startswith("<opaquelocktoken:"), token
    return token


def listing(client: DavClient, path: str) -> list[str]:
    """Decoded member hrefs of a Depth 1 PROPFIND (the collection itself left out)."""
    r = finder(client, "PROPFIND", path, PROPS, Depth="1")
    assert r.status == 207, r.status
    own = path.rstrip("/") + "/"
    hrefs = [unquote(h.text or "") for h in ET.fromstring(r.body).iter(D + "href")]
    return sorted(h for h in hrefs if h != own and h.rstrip("/") != path.rstrip("/"))


def apple_double(name: str) -> bytes:
    """A 4096-byte AppleDouble header (magic 0x00051607, version 2) as Finder writes it."""
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 2)
    entries = struct.pack(">III", 9, 50, 3698) + struct.pack(">III", 2, 3748, 348)
    body = (header + entries + b"\0" * 4096)[:4096]
    return body[:80] + name.encode("utf-8")[:16].ljust(16, b"\0") + body[96:]


def test_mount_sees_class_2_and_probes_are_404(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    alice.mkcol("/Photos")
    r = finder(alice, "OPTIONS", "/")
    assert r.status == 200
    # Without class 2 Finder mounts the volume read-only.
    assert "2" in [c.strip() for c in (r.header("DAV") or "").split(",")]
    assert "LOCK" in (r.header("Allow") or "")
    r = finder(alice, "PROPFIND", "/", PROPS, Depth="0")
    assert r.status == 207
    for folder in ("/", "/Photos/"):
        for name in PROBES:
            path = folder + name
            assert finder(alice, "PROPFIND", path, PROPS, Depth="0").status == 404, path
            assert finder(alice, "GET", path).status == 404, path
    # Quota for the Finder's "available" figure (RFC 4331).
    quota = (
        '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"
    )
    r = finder(alice, "PROPFIND", "/", quota, Depth="0")
    assert r.status == 207
    assert ET.fromstring(r.body).findtext(f".//{D}quota-available-bytes")


def test_copy_in_with_lock_and_chunked_put(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    alice.mkcol("/Docs")
    data = secrets.token_bytes(1_500_000)  # many chunks, several blob segments
    path = "/Docs/archive.zip"
    assert finder(alice, "PROPFIND", path, PROPS, Depth="0").status == 404
    token = lock(alice, path)  # creates an empty file (RFC 4918 §7.3)
    r = finder(alice, "PROPFIND", path, PROPS, Depth="0")
    assert r.status == 207
    assert ET.fromstring(r.body).findtext(f".//{D}getcontentlength") == "0"
    # The lock is honoured.
    assert chunked_put(alice, path, b"intruder").status == 423
    r = chunked_put(alice, path, data, If=f"({token})", **{"Content-Type": "application/zip"})
    assert r.status in (201, 204), (r.status, r.text)
    # Its AppleDouble sidecar, locked and written the same way.
    sidecar = "/Docs/._archive.zip"
    side_token = lock(alice, sidecar)
    ad = apple_double("archive.zip")
    assert chunked_put(alice, sidecar, ad, If=f"({side_token})").status in (201, 204)
    # Lock refresh (Finder refreshes every few minutes while a file is open).
    r = finder(alice, "LOCK", path, None, If=f"({token})", Timeout="Second-600")
    assert r.status == 200
    for p, t in ((path, token), (sidecar, side_token)):
        assert finder(alice, "UNLOCK", p, None, **{"Lock-Token": t}).status == 204
    got = finder(alice, "GET", path)
    assert got.status == 200 and got.body == data
    assert got.header("Content-Length") == str(len(data))
    assert finder(alice, "GET", sidecar).body == ad
    assert listing(alice, "/Docs") == ["/Docs/._archive.zip", "/Docs/archive.zip"]


def test_chunked_put_shorter_than_announced_is_not_committed(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    assert chunked_put(alice, "/keep.txt", b"original").status == 201
    r = chunked_put(alice, "/keep.txt", b"cut", **{"X-Expected-Entity-Length": "1000"})
    assert r.status == 400
    assert finder(alice, "GET", "/keep.txt").body == b"original"
    r = chunked_put(alice, "/new.txt", b"cut", **{"X-Expected-Entity-Length": "9"})
    assert r.status == 400
    assert finder(alice, "GET", "/new.txt").status == 404
    # An empty chunked body announcing 0 bytes is a valid empty file.
    assert chunked_put(alice, "/empty", b"").status == 201
    assert finder(alice, "GET", "/empty").body == b""


def test_nfd_names_are_found_under_nfc_and_listed_once(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    folder, name = "Résumés", "Café crème.txt"
    assert nfd(name) != name
    assert finder(alice, "MKCOL", nfd(f"/{folder}")).status == 201
    token = lock(alice, nfd(f"/{folder}/{name}"))
    r = chunked_put(alice, nfd(f"/{folder}/{name}"), b"decomposed", If=f"({token})")
    assert r.status in (201, 204)
    # The lock taken on the NFD spelling guards the NFC spelling too.
    assert chunked_put(alice, f"/{folder}/{name}", b"composed").status == 423
    assert (
        finder(alice, "UNLOCK", nfd(f"/{folder}/{name}"), None, **{"Lock-Token": token}).status
        == 204
    )
    # Found under either spelling; one member, listed once and in NFC.
    assert alice.get(f"/{folder}/{name}").body == b"decomposed"
    assert alice.get(nfd(f"/{folder}/{name}")).body == b"decomposed"
    assert chunked_put(alice, f"/{folder}/{name}", b"composed").status == 204
    assert alice.get(nfd(f"/{folder}/{name}")).body == b"composed"
    assert listing(alice, "/") == [f"/{folder}/"]
    assert listing(alice, f"/{folder}") == [f"/{folder}/{name}"]
    # Asked by its NFD spelling, the collection's hrefs echo the request (Finder matches the
    # self entry against the URL it sent); the member's name is the stored NFC one.
    [member] = listing(alice, nfd(f"/{folder}"))
    assert nfc(member) == f"/{folder}/{name}" and member.endswith("/" + name)
    # Creating the NFC twin of an NFD name is the same name: no second entry.
    assert finder(alice, "MKCOL", f"/{folder}").status == 405
    # Rename and delete by the other spelling.
    dest = alice.url(nfd(f"/{folder}/Crème brûlée.txt"))
    r = finder(alice, "MOVE", f"/{folder}/{name}", None, Destination=dest, Overwrite="F")
    assert r.status == 201
    assert listing(alice, f"/{folder}") == [f"/{folder}/Crème brûlée.txt"]
    assert finder(alice, "DELETE", f"/{folder}/Crème brûlée.txt").status == 204
    assert finder(alice, "DELETE", nfd(f"/{folder}")).status == 204
    assert listing(alice, "/") == []


def test_appledouble_and_ds_store_are_ordinary_files(dav_any: DavServer) -> None:
    alice = dav_any.client("alice")
    alice.mkcol("/Trip")
    alice.put("/Trip/IMG_0001.jpg", b"\xff\xd8 jpeg")
    ad = apple_double("IMG_0001.jpg")
    ds = b"\0\0\0\1Bud1" + secrets.token_bytes(6140)
    assert chunked_put(alice, "/Trip/._IMG_0001.jpg", ad).status == 201
    assert chunked_put(alice, "/Trip/.DS_Store", ds).status == 201
    assert chunked_put(alice, "/.DS_Store", ds).status == 201
    assert listing(alice, "/Trip") == [
        "/Trip/.DS_Store",
        "/Trip/._IMG_0001.jpg",
        "/Trip/IMG_0001.jpg",
    ]
    assert finder(alice, "GET", "/Trip/._IMG_0001.jpg").body == ad
    assert finder(alice, "GET", "/Trip/.DS_Store").body == ds
    assert finder(alice, "GET", "/.DS_Store").body == ds
    r = finder(alice, "PROPFIND", "/Trip/._IMG_0001.jpg", PROPS, Depth="0")
    assert ET.fromstring(r.body).findtext(f".//{D}getcontentlength") == "4096"
    # ._. is still absent: only names Finder actually wrote exist.
    assert finder(alice, "PROPFIND", "/Trip/._.", PROPS, Depth="0").status == 404
    # Finder moves a file with its sidecar and deletes both.
    for src, dst in (("IMG_0001.jpg", "beach.jpg"), ("._IMG_0001.jpg", "._beach.jpg")):
        dest = alice.url(f"/Trip/{dst}")
        r = finder(alice, "MOVE", f"/Trip/{src}", None, Destination=dest, Overwrite="F")
        assert r.status == 201
    assert finder(alice, "GET", "/Trip/._beach.jpg").body == ad
    for name in ("beach.jpg", "._beach.jpg", ".DS_Store"):
        assert finder(alice, "DELETE", f"/Trip/{name}").status == 204
    assert listing(alice, "/Trip") == []
