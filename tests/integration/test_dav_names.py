"""Every legal name round-trips: PUT, MKCOL, COPY, MOVE, PROPFIND hrefs and LOCK of names with
``?``, ``;``, ``#``, ``%``, ``+``, ``&``, spaces, quotes, leading dashes and non-ASCII
characters (also sent in NFD), on the local backend and on MinIO, under every URL prefix of
the tree (``/``, ``/remote.php/dav/files/USER/``, ``/remote.php/webdav/``) and through the
chunked-upload MOVE of ``.file``; and ``Destination`` is parsed as a URI (RFC 3986 §3 split
first, the path decoded once): a Destination on another server is 502, one with a query or
fragment 400, never a silent mis-parse. rclone copies, moves and lists such names too."""

from __future__ import annotations

import http.client
import shutil
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from tests.harness.davserver import DavClient, DavServer, basic
from tests.harness.rclone import Rclone

D = "{DAV:}"
FILES = "/remote.php/dav/files/alice"
WEBDAV = "/remote.php/webdav"
ROUTES = {"plain": "", "files": FILES, "webdav": WEBDAV}

# (name as sent, name as stored: NFC)
NAMES: list[tuple[str, str]] = [
    (n, n)
    for n in (
        "a?b.txt",
        "semi;colon.txt",
        "a;b=c;d",
        "hash#tag.txt",
        "100%.txt",
        "%41%2541.txt",  # percent signs that look like escapes
        "plus+sign.txt",
        "a&b=c&d.txt",
        "with space.txt",
        " leading and trailing space ",
        'double"quote.txt',
        "single'quote.txt",
        "-leading-dash.txt",
        "--double-dash",
        "ünïcödé.txt",
        "日本語のファイル.txt",
        "emoji 😀.txt",
        "a:b,c(d)[e]{f}~g!h$i*j@k=l",
        "<angle>|pipe\\back",
    )
] + [(unicodedata.normalize("NFD", "Café déjà vu.txt"), "Café déjà vu.txt")]
IDS = [quote(sent, safe="") for sent, _ in NAMES]
LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>names</D:owner></D:lockinfo>"
)


def listing(client: DavClient, path: str) -> dict[str, str]:
    """{decoded href: displayname} of a Depth 1 PROPFIND."""
    r = client.propfind(path, "1")
    assert r.status == 207, r.text
    out = {}
    for resp in ET.fromstring(r.body).iter(D + "response"):
        href = resp.findtext(D + "href") or ""
        assert href == quote(unquote(href), safe="/!*'(),$-_|.~"), href  # hrefs are encoded
        out[unquote(href)] = resp.findtext(f".//{D}displayname") or ""
    return out


def cut_points(name: str) -> list[str]:
    """What a parser that splits the decoded name at ``?``, ``;`` or ``#`` would keep."""
    return sorted({name.split(ch)[0] for ch in "?;#" if ch in name and name.split(ch)[0]})


@pytest.mark.parametrize("route", list(ROUTES))
def test_names_round_trip(dav_any: DavServer, route: str) -> None:
    alice = dav_any.client("alice")
    base = ROUTES[route] + "/t"
    assert alice.mkcol(base).status == 201
    decoys: dict[str, bytes] = {}
    for _, stored in NAMES:
        for cut in cut_points(stored):
            # A mis-parsed Destination would overwrite these: they must survive.
            decoys[cut] = f"decoy {cut}".encode()
            assert alice.put(f"{base}/{cut}", decoys[cut]).status in (201, 204)
    expected: dict[str, str] = {}
    for sent, stored in NAMES:
        body = f"content of {stored}".encode()
        # PUT, GET (by the name as sent and as stored)
        assert alice.put(f"{base}/{sent}", body).status == 201, sent
        assert alice.get(f"{base}/{sent}").body == body
        assert alice.get(f"{base}/{stored}").body == body
        # COPY and MOVE with the name in the Destination
        assert alice.copy(f"{base}/{sent}", f"{base}/{sent}.copy").status == 201
        assert alice.put(f"{base}/src", b"moved " + body).status in (201, 204)
        assert alice.move(f"{base}/src", f"{base}/{sent}.moved").status == 201
        assert alice.get(f"{base}/{stored}.moved").body == b"moved " + body
        assert alice.get(f"{base}/src").status == 404
        # MOVE onto an existing name: 204, the other file is replaced, nothing else.
        assert alice.put(f"{base}/src", b"again").status == 201
        assert alice.move(f"{base}/src", f"{base}/{sent}.moved").status == 204
        assert alice.get(f"{base}/{stored}.moved").body == b"again"
        # MKCOL, a member inside, MOVE of the collection
        assert alice.mkcol(f"{base}/{sent}.d").status == 201
        assert alice.put(f"{base}/{sent}.d/{sent}", body).status == 201
        assert alice.move(f"{base}/{sent}.d", f"{base}/{sent}.dir").status == 201
        assert alice.get(f"{base}/{stored}.dir/{stored}").body == body
        # The requested collection's href is the request path as sent; members are NFC.
        assert alice.propfind(f"{base}/{sent}.dir/", "0").status == 207
        assert listing(alice, f"{base}/{stored}.dir/") == {
            f"{base}/{stored}.dir/": f"{stored}.dir",
            f"{base}/{stored}.dir/{stored}": stored,
        }
        # LOCK: the lock root is the name's href; a write needs the token.
        r = alice.request("LOCK", f"{base}/{sent}", LOCKINFO, {"Timeout": "Second-60"})
        assert r.status == 200, r.text
        token = (r.header("Lock-Token") or "").strip("<> ")
        root = ET.fromstring(r.body).findtext(f".//{D}lockroot/{D}href") or ""
        assert unquote(root) == f"{base}/{stored}"
        assert alice.put(f"{base}/{sent}", b"locked out").status == 423
        assert alice.put(f"{base}/{sent}", body, {"If": f"(<{token}>)"}).status == 204
        unlock = {"Lock-Token": f"<{token}>"}
        assert alice.request("UNLOCK", f"{base}/{sent}", None, unlock).status == 204
        # LOCK of an unmapped URL creates an empty file of that name (RFC 4918 §7.3).
        r = alice.request("LOCK", f"{base}/{sent}.new", LOCKINFO, {"Timeout": "Second-60"})
        assert r.status == 201, r.text
        token = (r.header("Lock-Token") or "").strip("<> ")
        assert alice.get(f"{base}/{stored}.new").body == b""
        unlock = {"Lock-Token": f"<{token}>"}
        assert alice.request("UNLOCK", f"{base}/{stored}.new", None, unlock).status == 204
        expected |= {
            f"{base}/{stored}": stored,
            f"{base}/{stored}.copy": f"{stored}.copy",
            f"{base}/{stored}.moved": f"{stored}.moved",
            f"{base}/{stored}.dir/": f"{stored}.dir",
            f"{base}/{stored}.new": f"{stored}.new",
        }
    expected[f"{base}/"] = "t"
    expected |= {f"{base}/{cut}": cut for cut in decoys}
    assert listing(alice, f"{base}/") == expected
    for cut, data in decoys.items():
        assert alice.get(f"{base}/{cut}").body == data, cut


def test_move_to_an_encoded_question_mark_leaves_the_prefix_file_alone(
    alice: DavClient,
) -> None:
    """The reported case: MOVE src.txt to a%3Fb.txt overwrote an unrelated file ``a``."""
    assert alice.put("/a", b"unrelated").status == 201
    assert alice.put("/src.txt", b"source").status == 201
    dest = alice.base_url.rstrip("/") + "/a%3Fb.txt"
    r = alice.request("MOVE", "/src.txt", None, {"Destination": dest})
    assert r.status == 201
    assert alice.get("/a").body == b"unrelated"
    assert alice.get("/a?b.txt").body == b"source"
    dest = alice.base_url.rstrip("/") + "/c%3Bd.txt"
    assert alice.request("COPY", "/a", None, {"Destination": dest}).status == 201
    assert alice.get("/c;d.txt").body == b"unrelated"
    assert alice.get("/c").status == 404


@pytest.mark.parametrize(
    "dest",
    [
        "/dest%20name.txt",  # an absolute path, no authority
        "{base}/dest%20name.txt",
        "{base}/dest name.txt",  # unencoded space (DAV Explorer)
        "{base}/dest%20name.txt/",  # a trailing slash on a file's destination
        "{upper}/dest%20name.txt",  # host names are case-insensitive
        "{base}/./x/../dest%20name.txt",
        "{base}/remote.php/dav/files/alice/dest%20name.txt",
        "{base}/remote.php/webdav/dest%20name.txt",
    ],
)
def test_destination_forms_that_name_the_same_file(alice: DavClient, dest: str) -> None:
    base = alice.base_url.rstrip("/")
    upper = base.replace("127.0.0.1", "127.0.0.1".upper()).replace("http://", "HTTP://")
    assert alice.put("/src", b"x").status == 201
    r = alice.request("MOVE", "/src", None, {"Destination": dest.format(base=base, upper=upper)})
    assert r.status == 201, r.text
    assert alice.get("/dest name.txt").body == b"x"


def test_move_onto_itself_in_another_normal_form_is_403(alice: DavClient) -> None:
    nfc = "Café.txt"
    assert alice.put("/" + nfc, b"one").status == 201
    nfd = unicodedata.normalize("NFD", nfc)
    assert alice.move("/" + nfc, "/" + nfd).status == 403
    assert alice.mkcol("/Dé").status == 201
    below = unicodedata.normalize("NFD", "/Dé/sub")
    assert alice.move("/Dé", below).status == 403
    assert alice.get("/" + nfc).body == b"one"


def test_destination_with_raw_utf8(dav_server: DavServer, alice: DavClient) -> None:
    """A client that sends non-ASCII unencoded: the raw bytes are the name's UTF-8."""
    assert alice.put("/src", b"raw").status == 201
    conn = http.client.HTTPConnection(dav_server.host, dav_server.port, timeout=30)
    try:
        conn.putrequest("MOVE", "/src")
        conn.putheader("Authorization", basic(alice.user or "", alice.password or ""))
        conn.putheader("Destination", f"{dav_server.url}Grüße ü.txt".encode())
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        assert conn.getresponse().status == 201
    finally:
        conn.close()
    assert alice.get("/Grüße ü.txt").body == b"raw"


@pytest.mark.parametrize(
    ("dest", "status"),
    [
        ("http://other.example:{port}/x", 502),  # another host
        ("http://127.0.0.1:{other}/x", 502),  # another port
        ("https://127.0.0.1:{port}/x", 502),  # another scheme
        ("ftp://127.0.0.1:{port}/x", 502),
        ("//other.example/x", 502),  # a network-path reference to another host
        ("http://127.0.0.1/x", 502),  # the default port is not this one
        ("/x?y", 400),  # a literal ? is a query
        ("/x#y", 400),  # and # a fragment
        ("x", 400),  # relative
        ("/%FF%FE", 400),  # not UTF-8 once decoded
        ("/remote.php/dav/uploads/alice/u/x", 403),
        ("/remote.php/dav/files/bob/x", 404),
        ("/../x", 400),  # escapes the root
    ],
)
def test_bad_destinations_change_nothing(
    dav_server: DavServer, alice: DavClient, dest: str, status: int
) -> None:
    assert alice.put("/src", b"keep").status == 201
    assert alice.put("/x", b"other").status == 201
    header = dest.format(port=dav_server.port, other=dav_server.port + 1)
    for method in ("MOVE", "COPY"):
        r = alice.request(method, "/src", None, {"Destination": header})
        assert r.status == status, (method, r.status, r.text)
        assert "Traceback" not in r.text
    assert alice.get("/src").body == b"keep"
    assert alice.get("/x").body == b"other"
    assert alice.request("MOVE", "/src", None, {}).status == 400  # no Destination at all


@pytest.mark.parametrize(("sent", "stored"), NAMES, ids=IDS)
def test_chunked_upload_assembles_to_any_name(dav_any: DavServer, sent: str, stored: str) -> None:
    alice = dav_any.client("alice")
    uploads = "/remote.php/dav/uploads/alice/up1"
    assert alice.mkcol(uploads).status == 201
    assert alice.put(uploads + "/00000-00004", b"hello").status == 201
    assert alice.put(uploads + "/00005-00010", b" world").status == 201
    dest = {"Destination": alice.url(FILES + "/" + sent)}
    r = alice.request("MOVE", uploads + "/.file", None, dest)
    assert r.status == 201, r.text
    assert alice.get("/" + stored).body == b"hello world"
    assert listing(alice, "/") == {"/": "", f"/{stored}": stored}


# -- rclone --------------------------------------------------------------------------------

RCLONE_NAMES = [stored for sent, stored in NAMES if sent == stored]
NFD_SENT, NFC_STORED = next((sent, stored) for sent, stored in NAMES if sent != stored)


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")
@pytest.mark.parametrize("vendor", ["owncloud", "nextcloud", "other"])
def test_rclone_round_trips_every_name(dav_any: DavServer, tmp_path: Path, vendor: str) -> None:
    """rclone copy, lsf, moveto and copy back, with rclone's own name encoding off (only
    what no file system can hold is encoded), so the names reach the server as they are."""
    dav_any.add_user("rc")
    url = dav_any.url
    if vendor == "nextcloud":
        url = url.rstrip("/") + "/remote.php/dav/files/rc/"
    rc = Rclone(
        url,
        vendor,
        "rc",
        dav_any.users["rc"],
        tmp_path / "home",
        extra=("--webdav-encoding", "Slash,Ctl,InvalidUtf8,Dot"),
    )
    src, back = tmp_path / "src", tmp_path / "back"
    (src / "sub dir;x?").mkdir(parents=True)
    for i, name in enumerate(RCLONE_NAMES):
        (src / name).write_bytes(f"{i} {name}".encode() * (i + 1))
        (src / "sub dir;x?" / name).write_bytes(name.encode())
    (src / NFD_SENT).write_bytes(b"sent in NFD")  # as macOS names it
    rc.run("copy", str(src), ":webdav:names")
    listed = set(rc.run("lsf", "-R", ":webdav:names").stdout.splitlines())
    want = {*RCLONE_NAMES, NFC_STORED, "sub dir;x?/", *(f"sub dir;x?/{n}" for n in RCLONE_NAMES)}
    assert listed == want
    first = RCLONE_NAMES[0]
    rc.run("moveto", f":webdav:names/{first}", f":webdav:names/sub dir;x?/{first}.moved")
    rc.run("copy", ":webdav:names", str(back))
    for name in RCLONE_NAMES:
        if name != first:
            assert (back / name).read_bytes() == (src / name).read_bytes(), name
        assert (back / "sub dir;x?" / name).read_bytes() == name.encode()
    assert not (back / first).exists()
    assert (back / NFC_STORED).read_bytes() == b"sent in NFD"
    assert (back / "sub dir;x?" / f"{first}.moved").read_bytes() == (src / first).read_bytes()
    rc.run("check", str(back), ":webdav:names")
