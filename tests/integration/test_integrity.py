"""Integrity is checked everywhere: real stored bytes are damaged (files in the local blob
directory, objects in MinIO through the minio SDK, index rows through SQL) and the server
must notice. A GET of a damaged object is a 500 (or, for a segment past the first, a response
that breaks off) carrying nothing of the file; the blob header — magic, version, algorithm,
segment size, flags, nonce and the commitment under CK — is checked on whole-file and ranged
reads. A damaged member of a listing (its name, metadata, dead properties, key envelope or
checksums) is logged as an integrity failure and answered for alone; the rest lists."""

from __future__ import annotations

import http.client
import io
import logging
import os
import secrets
import shutil
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest
from minio import Minio

from davserver import crypto
from davserver.blobs import BlobReader
from davserver.crypto import blobfmt
from davserver.errors import IntegrityError
from davserver.index.models import DeadProps, InlineBlob, Node, Version
from davserver.vault.nodes import DAMAGED_PREFIX
from davserver.vault.reader import FileReader
from davserver.vault.reader import InlineBlob as InlineBlob_
from tests.harness.davserver import DavServer, basic
from tests.harness.rclone import Rclone

D = "{DAV:}"
OC = "{http://owncloud.org/ns}"
SEG = 1 << 16
TAG = 16
HEADER = 56
# Five whole segments and a part: the marker makes any leaked plaintext easy to spot.
PLAIN = b"".join(b"PLAINTEXT-%07d\n" % i for i in range((5 * SEG + 1000) // 18 + 1))


class Stored:
    """Read and overwrite the object of a blob where the server keeps it."""

    def __init__(self, dav: DavServer) -> None:
        self.dav = dav
        cfg = dav.config.storage
        self.s3: Minio | None = None
        if cfg.backend == "s3":
            s3 = cfg.s3
            self.s3 = Minio(
                s3.endpoint,
                access_key=s3.access_key,
                secret_key=s3.secret_key.get(),
                secure=s3.secure,
                region=s3.region or None,
            )
            self.bucket, self.prefix = s3.bucket, s3.prefix

    def _path(self, blob_id: str) -> Path:
        root = Path(self.dav.vault.blobs.root)  # type: ignore[attr-defined]
        return root / blob_id[0:2] / blob_id[2:4] / blob_id

    def read(self, blob_id: str) -> bytes:
        if self.s3 is None:
            return self._path(blob_id).read_bytes()
        resp = self.s3.get_object(self.bucket, self.prefix + blob_id)
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def write(self, blob_id: str, data: bytes) -> None:
        if self.s3 is None:
            path = self._path(blob_id)
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            path.write_bytes(data)
            return
        self.s3.put_object(self.bucket, self.prefix + blob_id, io.BytesIO(data), len(data))


def version_row(dav: DavServer, path: str) -> tuple[str, str, str]:
    """(node id, version id, blob id) of the file at ``path``."""
    session = dav.vault.login("alice", dav.users["alice"])
    entry = session.stat(path)
    assert entry.version_id is not None
    with dav.vault.index.connection():
        v = Version.get_by_id(entry.version_id)
        return entry.id, entry.version_id, v.blob_id


def flip(data: bytes, offset: int, value: int | None = None) -> bytes:
    out = bytearray(data)
    out[offset] = (out[offset] ^ 0x01) if value is None else value
    return bytes(out)


def sql_flip(dav: DavServer, model: type, column: str, key_column: str, key: str) -> None:
    """Flip one byte in the middle of a BLOB column of one index row, with plain SQL."""
    db = dav.vault.index.db
    table = model._meta.table_name  # type: ignore[attr-defined]
    p = db.param
    with dav.vault.index.connection():
        row = db.execute_sql(f"SELECT {column} FROM {table} WHERE {key_column} = {p}", (key,))
        (value,) = row.fetchone()
        value = bytes(value)
        changed = flip(value, len(value) // 2)
        db.execute_sql(
            f"UPDATE {table} SET {column} = {p} WHERE {key_column} = {p}", (changed, key)
        )


def fresh_sessions(dav: DavServer) -> None:
    """Forget cached logins, so no decrypted key or listing outlives the damage."""
    dav.vault._cache.clear()


def integrity_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "integrity failure" in r.getMessage()]


# -- the blob header and segments --------------------------------------------------------------

STORE_DAMAGE = {
    "magic zeroed": lambda d: bytes(4) + d[4:],
    "version": lambda d: flip(d, 4, 2),
    "algorithm": lambda d: flip(d, 5, 2),
    "segment size": lambda d: flip(d, 6, 15),
    "flags": lambda d: flip(d, 7, 1),
    "nonce": lambda d: flip(d, 12),
    "commitment": lambda d: flip(d, 24 + 5),
    "segment 0": lambda d: flip(d, HEADER + 100),
    "truncated": lambda d: d[:-1],
    "appended": lambda d: d + b"\x00",
}

RANGES = {
    "whole": None,
    "from the start": "bytes=0-99",
    "segment 3": f"bytes={3 * SEG + 5}-{3 * SEG + 99}",
    "suffix": "bytes=-10",
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_damaged_object_is_a_500_with_nothing_of_the_file(
    dav_any: DavServer, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice = dav_any.client("alice")
    store = Stored(dav_any)
    good: dict[str, bytes] = {}
    for name in RANGES:
        assert alice.put(f"/{name}.bin", PLAIN).status == 201
        _, _, blob_id = version_row(dav_any, f"/{name}.bin")
        good[name] = store.read(blob_id)
        store.write(blob_id, STORE_DAMAGE[damage](good[name]))
    caplog.set_level(logging.ERROR)
    failing = 0
    for name, wanted in RANGES.items():
        headers = {} if wanted is None else {"Range": wanted}
        r = alice.get(f"/{name}.bin", headers)
        if damage == "segment 0" and name in ("segment 3", "suffix"):
            # Segments other than the damaged one are authentic, and so are served.
            assert r.status == 206, (damage, name, r.status)
            assert r.body in PLAIN
            continue
        failing += 1
        assert r.status == 500, (damage, name, r.status)
        assert b"PLAINTEXT" not in r.body
    assert len(integrity_logged(caplog)) >= failing
    assert not any("PLAINTEXT" in m or ".bin" in m for m in integrity_logged(caplog))
    # The same files, their bytes put back, read again: the checks judged the bytes.
    for name in RANGES:
        _, _, blob_id = version_row(dav_any, f"/{name}.bin")
        store.write(blob_id, good[name])
        assert alice.get(f"/{name}.bin").body == PLAIN


def raw_get(dav: DavServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and whatever body arrives before the server closes or ends the response."""
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=60)
    try:
        conn.request(
            "GET",
            path,
            headers={"Authorization": basic("alice", dav.users["alice"]), **(headers or {})},
        )
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return resp.status, body
    finally:
        conn.close()


def test_damage_in_a_later_segment_breaks_the_response_off_before_it(
    dav_any: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole-file GET has sent its status by the time it reaches segment 36: the response
    then ends before that segment's bytes, never with them; a range of it alone is a clean
    500. (A damaged segment within the first read block, 1 MiB, is still a clean 500.)"""
    alice = dav_any.client("alice")
    store = Stored(dav_any)
    plain = PLAIN * 8  # 40 segments: more than one read block (1 MiB)
    bad = 36
    assert alice.put("/f.bin", plain).status == 201
    _, _, blob_id = version_row(dav_any, "/f.bin")
    data = store.read(blob_id)
    store.write(blob_id, flip(data, HEADER + bad * (SEG + TAG) + 7))
    caplog.set_level(logging.ERROR)
    status, body = raw_get(dav_any, "/f.bin")
    assert status == 200
    assert len(body) <= bad * SEG and body == plain[: len(body)]
    r = alice.get("/f.bin", {"Range": f"bytes={bad * SEG}-{bad * SEG + 10}"})
    assert r.status == 500 and b"PLAINTEXT" not in r.body
    assert integrity_logged(caplog)


@pytest.mark.parametrize("column", ["header24", "ck_env", "plain_size", "inline", "empty"])
def test_damaged_version_row_is_a_500(
    dav_server: DavServer, column: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice = dav_server.client("alice")
    small = b"small file, kept inline in the index\n" * 10
    body = {"inline": small, "empty": b""}.get(column, PLAIN)
    assert alice.put("/v.bin", body).status == 201
    _, version_id, blob_id = version_row(dav_server, "/v.bin")
    if column == "empty":
        # An empty file is its header and one empty final segment: zero its magic.
        db = dav_server.vault.index.db
        with dav_server.vault.index.connection():
            (data,) = db.execute_sql(
                f"SELECT data FROM inline_blob WHERE blob_id = {db.param}", (blob_id,)
            ).fetchone()
            assert len(data) == HEADER + TAG
            db.execute_sql(
                f"UPDATE inline_blob SET data = {db.param} WHERE blob_id = {db.param}",
                (bytes(4) + bytes(data)[4:], blob_id),
            )
    elif column == "inline":
        sql_flip(dav_server, InlineBlob, "data", "blob_id", blob_id)
    elif column == "plain_size":
        db = dav_server.vault.index.db
        with dav_server.vault.index.connection():
            db.execute_sql(
                f"UPDATE version SET plain_size = plain_size - 1 WHERE id = {db.param}",
                (version_id,),
            )
    else:
        sql_flip(dav_server, Version, column, "id", version_id)
    fresh_sessions(dav_server)
    caplog.set_level(logging.ERROR)
    r = alice.get("/v.bin")
    assert r.status == 500 and b"small file" not in r.body and b"PLAINTEXT" not in r.body
    assert integrity_logged(caplog)


# -- listings ----------------------------------------------------------------------------------

PROPPATCH = (
    '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
    "<D:set><D:prop><Z:colour>{value}</Z:colour></D:prop></D:set></D:propertyupdate>"
)
NAMED = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z" '
    'xmlns:oc="http://owncloud.org/ns"><D:prop><D:getcontentlength/><D:displayname/>'
    "<Z:colour/><oc:checksums/></D:prop></D:propfind>"
)
# member name -> (what is damaged, the SQL that damages it)
MEMBERS = ["good1", "good2", "bad-name", "bad-meta", "bad-props", "bad-key", "bad-dir/"]


def responses(text: str) -> dict[str, dict[str, list[str]]]:
    """{decoded href: {status: [property tags]}} of a multistatus."""
    out: dict[str, dict[str, list[str]]] = {}
    for resp in ET.fromstring(text).iter(D + "response"):
        href = unquote(resp.findtext(D + "href") or "")
        by_status: dict[str, list[str]] = {}
        for ps in resp.iter(D + "propstat"):
            status = (ps.findtext(D + "status") or "").split(" ")[1]
            prop = ps.find(D + "prop")
            by_status[status] = [el.tag for el in (prop if prop is not None else [])]
        out[href] = by_status
    return out


@pytest.fixture
def damaged_dir(dav_server: DavServer) -> dict[str, str]:
    """/d with healthy and damaged members; returns {member: node id}."""
    alice = dav_server.client("alice")
    assert alice.mkcol("/d").status == 201
    ids = {}
    for member in MEMBERS:
        if member.endswith("/"):
            assert alice.mkcol("/d/" + member).status == 201
            assert alice.put(f"/d/{member}inner", b"inner").status == 201
        else:
            assert alice.put("/d/" + member, f"content of {member}".encode()).status == 201
            r = alice.request("PROPPATCH", "/d/" + member, PROPPATCH.format(value=member))
            assert r.status == 207
        session = dav_server.vault.login("alice", dav_server.users["alice"])
        ids[member] = session.stat("/d/" + member).id
    sql_flip(dav_server, Node, "name_ct", "id", ids["bad-name"])
    sql_flip(dav_server, Node, "name_ct", "id", ids["bad-dir/"])
    sql_flip(dav_server, Node, "meta_ct", "id", ids["bad-meta"])
    sql_flip(dav_server, DeadProps, "props_ct", "node_id", ids["bad-props"])
    sql_flip(dav_server, Node, "key_env", "id", ids["bad-key"])
    fresh_sessions(dav_server)
    return ids


def test_propfind_lists_the_healthy_members_and_a_500_for_each_damaged_one(
    dav_server: DavServer, damaged_dir: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    alice = dav_server.client("alice")
    caplog.set_level(logging.ERROR)
    ids = damaged_dir
    for body in (None, NAMED):
        r = alice.propfind("/d/", "1", body)
        assert r.status == 207, r.text
        got = responses(r.text)
        placeholder = {m: f"/d/{DAMAGED_PREFIX}{ids[m]}" for m in ("bad-name", "bad-meta")}
        placeholder["bad-dir/"] = f"/d/{DAMAGED_PREFIX}{ids['bad-dir/']}/"
        assert set(got) == {
            "/d/",
            "/d/good1",
            "/d/good2",
            "/d/bad-props",
            "/d/bad-key",
            *placeholder.values(),
        }
        for member in ("good1", "good2"):
            assert set(got["/d/" + member]) == {"200"}, member
            assert "{urn:z}colour" in got["/d/" + member]["200"]
        for href in placeholder.values():
            assert set(got[href]) == {"500"}, href  # the member alone, as a whole
        # Damaged dead properties (or the key that opens them): a 500 propstat for them,
        # the live properties as usual.
        for member in ("bad-props", "bad-key"):
            assert "{DAV:}getcontentlength" in got["/d/" + member]["200"]
            assert "500" in got["/d/" + member]
            assert "{urn:z}colour" not in got["/d/" + member]["200"]
        if body is not None:
            assert got["/d/bad-key"]["500"] == ["{urn:z}colour", OC + "checksums"]
            assert got["/d/bad-props"]["500"] == ["{urn:z}colour"]
            assert OC + "checksums" in got["/d/good1"]["200"]
        assert "PLAINTEXT" not in r.text
    logged = integrity_logged(caplog)
    for member in ("bad-name", "bad-meta", "bad-props", "bad-key", "bad-dir/"):
        assert any(ids[member] in m for m in logged), member
    assert not any("good" in m or "bad-" in m for m in logged)  # ids, never names
    # Each damaged member alone fails; the healthy ones work.
    assert alice.get("/d/good1").body == b"content of good1"
    assert alice.get("/d/bad-key").status == 500
    assert alice.get("/d/bad-name").status == 500
    assert alice.propfind("/d/bad-props", "0").status == 207
    # The HTML listing leaves the damaged members out.
    html = alice.get("/d/", {"Accept": "text/html"})
    assert html.status == 200 and "good1" in html.text and DAMAGED_PREFIX not in html.text


def test_rclone_lists_a_directory_with_damaged_members(
    dav_server: DavServer, damaged_dir: dict[str, str], tmp_path: Path
) -> None:
    if shutil.which("rclone") is None:
        pytest.skip("rclone not installed")
    rc = Rclone(dav_server.url, "owncloud", "alice", dav_server.users["alice"], tmp_path / "h")
    listed = set(rc.run("lsf", ":webdav:d").stdout.splitlines())
    assert {"good1", "good2", "bad-props", "bad-key"} <= listed
    assert not any(n.startswith(DAMAGED_PREFIX) for n in listed)


# -- the reader's header checks, counted -------------------------------------------------------


class CountingSource(InlineBlob_):
    """An in-memory blob that records every ranged read made of it."""

    def __init__(self, blob_id: str, data: bytes) -> None:
        super().__init__(blob_id, data)
        self.reads: list[tuple[int, int | None]] = []

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        self.reads.append((start, end))
        return super().open(blob_id, start, end)


def test_reads_fetch_the_header_with_segment_0_or_once_per_blob() -> None:
    ck = crypto.random_key()
    blob = b"".join(blobfmt.encrypt_chunks(ck, [PLAIN]))
    total = len(blob)
    blob_id = secrets.token_hex(16)
    src = CountingSource(blob_id, blob)
    reader = FileReader(src, blob_id, ck, blob[:24], len(PLAIN), "v1")
    assert reader.read_all() == PLAIN
    assert src.reads == [(0, total - 1)]  # one read, from byte 0: the header came along
    src.reads.clear()
    other = secrets.token_hex(16)
    src = CountingSource(other, blob)
    reader = FileReader(src, other, ck, blob[:24], len(PLAIN), "v1")
    start = 3 * SEG + 5
    assert b"".join(reader.iter_range(start, start + 9)) == PLAIN[start : start + 10]
    stride = SEG + TAG
    assert src.reads == [(0, HEADER - 1), (HEADER + 3 * stride, HEADER + 4 * stride - 1)]
    src.reads.clear()
    assert b"".join(reader.iter_range(start, start + 9)) == PLAIN[start : start + 10]
    assert src.reads == [(HEADER + 3 * stride, HEADER + 4 * stride - 1)]  # checked already
    # A damaged commitment: a range past segment 0 of a blob not yet checked is refused.
    damaged = secrets.token_hex(16)
    src = CountingSource(damaged, flip(blob, 40))
    reader = FileReader(src, damaged, ck, blob[:24], len(PLAIN), "v1")
    with pytest.raises(IntegrityError):
        b"".join(reader.iter_range(start, start + 9))
    with pytest.raises(IntegrityError):
        reader.read_all()
