"""Python WebDAV clients against a live davserver, on both backends: webdav4 (httpx, with its
fsspec filesystem) and webdavclient3. What they wrote is checked with raw HTTP.

Their quirks: webdav4 sends PROPFIND *without* a Depth header for
``exists``/``isdir``/``open`` (answered as Depth 1, as sabre/dav does; an explicit infinity is
still refused); webdavclient3 sends HEAD before nearly every call, PROPPATCH with
``Depth: 1``, COPY without ``Overwrite`` (so T: RFC 4918 §10.6) and, for a collection, COPY
with ``Depth: 1`` (taken as infinity, as sabre/dav does).
"""

from __future__ import annotations

import io
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.harness.davserver import DavClient, DavServer

BIG = secrets.token_bytes(1_200_000)  # spans several blob segments


def names(client: DavClient, path: str) -> list[str]:
    """Member names of a collection (directories with a trailing slash), by raw PROPFIND."""
    r = client.propfind(path, "1")
    assert r.status == 207, r.status
    own = path.rstrip("/") + "/"
    hrefs = [unquote(h.text or "") for h in ET.fromstring(r.body).iter("{DAV:}href")]
    return sorted(h[len(own) :] for h in hrefs if h.startswith(own) and h != own)


# -- webdav4 --------------------------------------------------------------------------------


def test_webdav4_fsspec_roundtrip(dav_any: DavServer, tmp_path: Path) -> None:
    from webdav4.fsspec import WebdavFileSystem  # needs webdav4[fsspec] (the test extra)

    password = "pw" + secrets.token_hex(8)
    raw = dav_any.add_user("w4", password)
    fs = WebdavFileSystem(dav_any.url, auth=("w4", password))

    fs.makedirs("proj/sub", exist_ok=True)
    fs.pipe("proj/sub/a.txt", b"hello webdav4")
    # exists/isdir/isfile/cat send PROPFIND without a Depth header.
    assert fs.exists("proj/sub/a.txt") and fs.exists("proj") and not fs.exists("proj/nope")
    assert fs.isdir("proj/sub") and fs.isfile("proj/sub/a.txt")
    assert fs.cat("proj/sub/a.txt") == b"hello webdav4"
    with fs.open("proj/big.bin", "wb") as f:
        f.write(BIG)
    with fs.open("proj/big.bin", "rb") as f:  # ranged reads
        f.seek(700_000)
        assert f.read(5000) == BIG[700_000:705_000]
    info = fs.info("proj/big.bin")
    assert (info["type"], info["size"]) == ("file", len(BIG))
    assert sorted(fs.ls("proj", detail=False)) == ["proj/big.bin", "proj/sub"]
    assert fs.find("proj") == ["proj/big.bin", "proj/sub/a.txt"]

    local = tmp_path / "local.txt"
    local.write_bytes(b"from disk\n")
    fs.put_file(str(local), "proj/local.txt")
    fs.get_file("proj/local.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == b"from disk\n"

    fs.mv("proj/sub/a.txt", "proj/b.txt")
    fs.cp("proj/b.txt", "proj/c.txt")
    fs.copy("proj/sub", "proj/sub-copy", recursive=True)
    fs.mv("proj/sub-copy", "proj/moved", recursive=True)
    fs.rm("proj/c.txt")
    assert names(raw, "/proj") == ["b.txt", "big.bin", "local.txt", "moved/", "sub/"]
    assert raw.get("/proj/b.txt").body == b"hello webdav4"
    assert raw.get("/proj/big.bin").body == BIG
    fs.rm("proj", recursive=True)
    assert not fs.exists("proj")
    assert raw.propfind("/proj", "0").status == 404


def test_webdav4_client(dav_any: DavServer) -> None:
    from webdav4.client import Client, ResourceAlreadyExists

    password = "pw" + secrets.token_hex(8)
    raw = dav_any.add_user("w4c", password)
    client = Client(dav_any.url, auth=("w4c", password))

    client.mkdir("docs")
    client.upload_fileobj(io.BytesIO(b"version one"), "docs/a.txt")
    client.upload_fileobj(io.BytesIO(b"version two"), "docs/a.txt", overwrite=True)
    assert client.content_length("docs/a.txt") == len(b"version two")
    assert client.etag("docs/a.txt") == raw.get("/docs/a.txt").header("ETag")
    out = io.BytesIO()
    client.download_fileobj("docs/a.txt", out)
    assert out.getvalue() == b"version two"
    assert [item["name"] for item in client.ls("docs", detail=True)] == ["docs/a.txt"]
    client.copy("docs/a.txt", "docs/b.txt")
    with pytest.raises(ResourceAlreadyExists):
        client.move("docs/a.txt", "docs/b.txt")  # Overwrite: F onto an existing file
    client.upload_fileobj(io.BytesIO(b"newer"), "docs/c.txt")
    client.copy("docs/c.txt", "docs/b.txt", overwrite=True)
    client.move("docs", "archive")
    assert names(raw, "/archive") == ["a.txt", "b.txt", "c.txt"]
    assert raw.get("/archive/b.txt").body == b"newer"
    assert client.exists("archive") and not client.exists("docs")
    client.remove("archive")
    assert raw.propfind("/archive", "0").status == 404


# -- webdavclient3 --------------------------------------------------------------------------


def test_webdavclient3_roundtrip(dav_any: DavServer, tmp_path: Path) -> None:
    from webdav3.client import Client

    password = "pw" + secrets.token_hex(8)
    raw = dav_any.add_user("wc3", password)
    client = Client(
        {"webdav_hostname": dav_any.url, "webdav_login": "wc3", "webdav_password": password}
    )

    assert client.mkdir("wc")
    assert client.mkdir("wc/sub/")
    src = tmp_path / "up"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "big.bin").write_bytes(BIG)
    (src / "top.txt").write_bytes(b"top\n")
    client.upload_sync(remote_path="wc/a.txt", local_path=str(src / "top.txt"))
    client.upload_to(b"from a buffer", "wc/b.txt")
    client.upload_sync(remote_path="wc/tree", local_path=str(src))
    assert sorted(client.list("wc")) == ["a.txt", "b.txt", "sub/", "tree/"]
    info = {item["name"]: item for item in client.list("wc", get_info=True)}
    assert info["b.txt"]["size"] == str(len(b"from a buffer")) and info["sub"]["isdir"]
    assert client.check("wc/a.txt") and not client.check("wc/nope")
    assert client.is_dir("wc/sub") and not client.is_dir("wc/a.txt")
    assert client.info("wc/tree/deep/big.bin")["size"] == str(len(BIG))
    buf = io.BytesIO()
    client.download_from(buf, "wc/b.txt")
    assert buf.getvalue() == b"from a buffer"

    # PROPPATCH with Depth: 1, read back by PROPFIND.
    colour = {"namespace": "urn:x-test:", "name": "colour", "value": "blue"}
    client.set_property("wc/a.txt", colour)
    assert client.get_property("wc/a.txt", {"namespace": "urn:x-test:", "name": "colour"}) == (
        "blue"
    )

    # COPY without Overwrite: onto a new name, then onto an existing one (Overwrite means T).
    client.copy("wc/a.txt", "wc/sub/copy.txt")
    client.copy("wc/b.txt", "wc/sub/copy.txt")
    assert raw.get("/wc/sub/copy.txt").body == b"from a buffer"
    # A collection: webdavclient3 sends Depth: 1; the whole tree is copied.
    client.copy("wc/tree", "wc/tree-copy")
    assert raw.get("/wc/tree-copy/deep/big.bin").body == BIG
    client.move("wc/b.txt", "wc/sub/moved.txt")
    client.move("wc/a.txt", "wc/sub/moved.txt", overwrite=True)
    client.download_sync(remote_path="wc", local_path=str(tmp_path / "down"))
    down = tmp_path / "down"
    assert (down / "sub" / "moved.txt").read_bytes() == b"top\n"
    assert (down / "tree-copy" / "deep" / "big.bin").read_bytes() == BIG
    assert names(raw, "/wc") == ["sub/", "tree-copy/", "tree/"]
    assert names(raw, "/wc/sub") == ["copy.txt", "moved.txt"]
    assert int(client.free()) > 0
    client.clean("wc/tree-copy")
    client.clean("wc")
    assert not client.check("wc")
    assert raw.propfind("/wc", "0").status == 404
