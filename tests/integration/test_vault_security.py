"""What the untrusted parties see: no plaintext anywhere, and tampering is detected."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from davserver.blobs.local import LocalBlobStore
from davserver.errors import AuthError, IntegrityError
from davserver.index.models import InlineBlob, Node, Version
from davserver.vault import Vault, VaultSettings
from tests.harness.vaults import make_vault, stored_blob_ids

MARK_CONTENT = b"PLAINTEXT-CONTENT-MARKER-7f3a"
MARK_NAME = "PlainNameMarker"
MARK_PROP = "PlainPropertyMarker"
MARK_LABEL = "PlainLabelMarker"
MARK_TRASHED = "PlainTrashedMarker"  # only in names of what went to the trash


def _fill(vault: Vault) -> None:
    vault.create_user("alice", "correct horse")
    s = vault.login("alice", "correct horse")
    s.mkdir("/" + MARK_NAME + "-dir")
    for i in range(3):
        body = (MARK_CONTENT + b"\n") * (5000 * (i + 1))
        s.write_file(f"/{MARK_NAME}-dir/{MARK_NAME}-{i}.txt", [body])
    s.write_file(f"/{MARK_NAME}-small", [MARK_CONTENT])
    inline = MARK_CONTENT * 10  # a known small length: kept in the index (storage.inline_max)
    s.write_file(f"/{MARK_NAME}-inline", [inline], len(inline))
    with vault.index.connection():
        assert InlineBlob.select().count() == 1
    s.set_props(f"/{MARK_NAME}-small", {"{urn:x}" + MARK_PROP: MARK_PROP})
    s.copy(f"/{MARK_NAME}-dir", f"/{MARK_NAME}-copy")
    s.move(f"/{MARK_NAME}-copy", f"/{MARK_NAME}-moved")
    _fill_history(s)


def _fill_history(s) -> None:  # type: ignore[no-untyped-def]
    """Old versions (one restored: two rows share a blob), labels on them, and the trash:
    a folder with a nested folder and files, a lone file, an inline file, a file from deep
    down. Names of what is trashed and their original paths exist only in the trash."""
    path = f"/{MARK_NAME}-dir/{MARK_NAME}-0.txt"
    fileid = s.stat(path).fileid
    s.write_file(path, [(MARK_CONTENT + b" v2\n") * 4000])
    oldest = s.versions(fileid)[1][-1]
    # Labelled: kept whatever the thinning does to versions seconds apart.
    s.set_version_label(fileid, oldest.version_no, f"{MARK_LABEL} oldest")
    s.write_file(path, [(MARK_CONTENT + b" v3\n") * 4000])
    s.restore_version(fileid, oldest.version_no)
    newest = s.versions(fileid)[1][0]
    assert newest.current and newest.id != oldest.id
    with s.vault.index.connection():
        blob = Version.get_by_id(oldest.id).blob_id
        # Shared, not copied: the version, its COPY in the moved folder, the restored one.
        assert Version.select().where(Version.blob_id == blob).count() == 3
    s.set_version_label(fileid, newest.version_no, f"{MARK_LABEL} newest")
    top = f"/{MARK_TRASHED}-folder"
    s.mkdir(top)
    s.mkdir(f"{top}/{MARK_TRASHED}-nested")
    s.write_file(f"{top}/{MARK_TRASHED}-nested/{MARK_TRASHED}-deep.txt", [MARK_CONTENT * 900])
    s.write_file(f"{top}/{MARK_TRASHED}-top.txt", [MARK_CONTENT * 700])
    s.write_file(f"/{MARK_NAME}-dir/{MARK_TRASHED}-lone.txt", [MARK_CONTENT * 600])
    tiny = MARK_CONTENT * 3
    s.write_file(f"/{MARK_TRASHED}-inline", [tiny], len(tiny))
    s.delete(top)
    s.delete(f"/{MARK_NAME}-dir/{MARK_TRASHED}-lone.txt")
    s.delete(f"/{MARK_TRASHED}-inline")
    s.delete(f"/{MARK_NAME}-moved/{MARK_NAME}-2.txt")
    # What the vault gives back with the key: all of it is stored, sealed.
    items = {i.original_location for i in s.trash_items()}
    assert items == {
        f"{MARK_TRASHED}-folder",
        f"{MARK_NAME}-dir/{MARK_TRASHED}-lone.txt",
        f"{MARK_TRASHED}-inline",
        f"{MARK_NAME}-moved/{MARK_NAME}-2.txt",
    }
    listed = {e.name for e in s.trash_list_dir(_trash_name(s, f"{MARK_TRASHED}-folder"))}
    assert listed == {f"{MARK_TRASHED}-nested", f"{MARK_TRASHED}-top.txt"}
    labels = {v.label for v in s.versions(fileid)[1]}
    assert labels >= {f"{MARK_LABEL} oldest", f"{MARK_LABEL} newest"}


def _trash_name(s, original: str) -> str:  # type: ignore[no-untyped-def]
    (item,) = [i for i in s.trash_items() if i.original_location == original]
    return str(item.name)


def _needles() -> list[bytes]:
    out = [MARK_CONTENT, MARK_CONTENT[:12], b"correct horse"]
    for text in (MARK_NAME, MARK_PROP, MARK_LABEL, MARK_TRASHED):
        out += [text.encode("utf-8"), text.encode("utf-16-le"), text.encode("utf-16-be")]
    return out


def _assert_clean(blob: bytes, where: str) -> None:
    for needle in _needles():
        assert needle not in blob, f"{needle!r} found in {where}"


def _scan_index_files(workdir: Path) -> None:
    files = [p for p in workdir.glob("index.db*") if p.is_file()]
    assert files
    for p in files:
        _assert_clean(p.read_bytes(), str(p))
    # And every column value, decoded as the database sees it.
    con = sqlite3.connect(workdir / "index.db")
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for t in tables:
            for row in con.execute(f"select * from {t}"):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    _assert_clean(raw, f"table {t}")
    finally:
        con.close()


def _scan_wal(workdir: Path) -> None:
    """While the vault is open, the index's write-ahead log holds the latest pages."""
    wal = workdir / "index.db-wal"
    assert wal.is_file() and wal.stat().st_size > 0
    _assert_clean(wal.read_bytes(), "the index WAL")


def test_no_plaintext_in_local_store_or_index(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    try:
        _fill(vault)
        _scan_wal(tmp_path)
    finally:
        vault.close()
    ids = []
    for p in (tmp_path / "blobs").rglob("*"):
        if p.is_file():
            _assert_clean(p.read_bytes(), f"blob file {p.name}")
            _assert_clean(str(p).encode(), "blob path")
            ids.append(p.name)
    assert len(ids) >= 4
    _scan_index_files(tmp_path)


@pytest.mark.s3
def test_no_plaintext_in_minio(tmp_path: Path, minio_server, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    from tests.harness.minio import make_minio_client, make_s3_store

    vault = make_vault(tmp_path, make_s3_store(minio_server, s3_bucket, prefix="leak/"))
    try:
        _fill(vault)
        _scan_wal(tmp_path)
    finally:
        vault.close()
    client = make_minio_client(minio_server)
    objects = list(client.list_objects(s3_bucket, prefix="leak/", recursive=True))
    assert len(objects) >= 4
    for obj in objects:
        name = obj.object_name or ""
        _assert_clean(name.encode(), "object key")
        st = client.stat_object(s3_bucket, name)
        _assert_clean(repr(st.metadata).encode(), "object metadata")
        resp = client.get_object(s3_bucket, name)
        try:
            _assert_clean(resp.read(), f"object {name}")
        finally:
            resp.close()
            resp.release_conn()
    _scan_index_files(tmp_path)


# -- tampering ------------------------------------------------------------------------------
@pytest.fixture
def populated(tmp_path: Path):  # type: ignore[no-untyped-def]
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    s.mkdir("/d")
    s.write_file("/d/a", [os.urandom(200_000)])
    s.write_file("/d/b", [os.urandom(200_000)])
    yield vault, s, tmp_path
    vault.close()


def _blob_path(root: Path, blob_id: str) -> Path:
    return next(p for p in (root / "blobs").rglob(blob_id) if p.is_file())


def _version(s, path):  # type: ignore[no-untyped-def]
    with s.vault.index.connection():
        return Version.get_by_id(s.stat(path).version_id)


def test_flipped_byte_in_blob_is_detected(populated) -> None:  # type: ignore[no-untyped-def]
    _vault, s, root = populated
    p = _blob_path(root, _version(s, "/d/a").blob_id)
    data = bytearray(p.read_bytes())
    data[100_000] ^= 0x01
    os.chmod(p, 0o600)
    p.write_bytes(bytes(data))
    with pytest.raises(IntegrityError), s.open_file("/d/a") as r:
        r.read_all()
    # A range that does not touch the damaged segment still reads.
    with s.open_file("/d/a") as r:
        assert len(b"".join(r.iter_range(0, 999))) == 1000


def test_truncated_blob_is_detected(populated) -> None:  # type: ignore[no-untyped-def]
    _vault, s, root = populated
    p = _blob_path(root, _version(s, "/d/a").blob_id)
    data = p.read_bytes()
    os.chmod(p, 0o600)
    p.write_bytes(data[:-5])
    with pytest.raises(IntegrityError), s.open_file("/d/a") as r:
        r.read_all()


def test_swapped_blob_ids_are_detected(populated) -> None:  # type: ignore[no-untyped-def]
    vault, s, _ = populated
    va, vb = _version(s, "/d/a"), _version(s, "/d/b")
    with vault.index.connection():
        Version.update(blob_id=vb.blob_id).where(Version.id == va.id).execute()
    with pytest.raises(IntegrityError):
        s.open_file("/d/a")


def test_swapped_blob_contents_are_detected(populated) -> None:  # type: ignore[no-untyped-def]
    _vault, s, root = populated
    pa = _blob_path(root, _version(s, "/d/a").blob_id)
    pb = _blob_path(root, _version(s, "/d/b").blob_id)
    os.chmod(pa, 0o600)
    pa.write_bytes(pb.read_bytes())
    with pytest.raises(IntegrityError), s.open_file("/d/a") as r:
        r.read_all()


def test_swapped_key_envelopes_are_detected(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    s.write_file("/a", [b"a"])
    s.write_file("/b", [b"b"])
    ida, idb = s.stat("/a").id, s.stat("/b").id
    with vault.index.connection():
        env_b = bytes(Node.get_by_id(idb).key_env)
        Node.update(key_env=env_b).where(Node.id == ida).execute()
    vault._cache.clear()
    s2 = vault.login("alice", "pw")
    with pytest.raises(IntegrityError):
        s2.open_file("/a")
    vault.close()


def test_swapped_names_are_detected(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    s.write_file("/a", [b"a"])
    s.write_file("/b", [b"b"])
    ida, idb = s.stat("/a").id, s.stat("/b").id
    with vault.index.connection():
        ct_b = bytes(Node.get_by_id(idb).name_ct)
        Node.update(name_ct=ct_b).where(Node.id == ida).execute()
    with pytest.raises(IntegrityError):
        s.list_dir("/")
    vault.close()


def test_swapped_name_macs_are_detected(tmp_path: Path) -> None:
    """Swapping the lookup MACs of two siblings must not serve one file under the other's name."""
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    s.write_file("/a", [b"a"])
    s.write_file("/b", [b"b"])
    ida, idb = s.stat("/a").id, s.stat("/b").id
    with vault.index.connection(), vault.index.atomic():
        mac_a = bytes(Node.get_by_id(ida).name_mac)
        mac_b = bytes(Node.get_by_id(idb).name_mac)
        Node.update(name_mac=b"tmp").where(Node.id == ida).execute()
        Node.update(name_mac=mac_a).where(Node.id == idb).execute()
        Node.update(name_mac=mac_b).where(Node.id == ida).execute()
    with pytest.raises(IntegrityError):
        s.open_file("/a")
    vault.close()


def test_wrong_pepper_cannot_log_in(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    vault.close()
    other = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=os.urandom(32))
    with pytest.raises(AuthError):
        other.login("alice", "pw")
    other.close()


# -- users and login ------------------------------------------------------------------------------
def test_login_cache_and_password_change(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "old")
    s = vault.login("alice", "old")
    s.write_file("/f", [b"kept"])
    assert vault.login("alice", "old") is s  # cached: no Argon2id
    with pytest.raises(AuthError):
        vault.login("alice", "wrong")
    with pytest.raises(AuthError):
        vault.login("nobody", "old")
    with pytest.raises(AuthError):
        vault.change_password("alice", "wrong", "new")
    vault.change_password("alice", "old", "new")
    with pytest.raises(AuthError):
        vault.login("alice", "old")
    s2 = vault.login("alice", "new")
    with s2.open_file("/f") as r:
        assert r.read_all() == b"kept"
    names = [u.name for u in vault.list_users()]
    assert names == ["alice"]
    vault.delete_user("alice")
    assert vault.list_users() == []
    assert stored_blob_ids(vault) == set()
    vault.close()


def test_login_cache_expires(tmp_path: Path) -> None:
    settings = VaultSettings(argon2_opslimit=1, argon2_memlimit=8 << 20, login_cache_ttl=0.05)
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), settings=settings)
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    time.sleep(0.1)
    assert vault.login("alice", "pw") is not s
    vault.close()


def test_production_argon2_parameters(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), settings=VaultSettings())
    vault.create_user("alice", "pw")
    vault._cache.clear()
    assert vault.login("alice", "pw").user_name == "alice"
    with vault.index.connection():
        from davserver.crypto import KdfParams
        from davserver.index.models import Envelope

        env = Envelope.get()
        params = KdfParams.decode(bytes(env.kdf_params))
    assert (params.opslimit, params.memlimit) == (3, 64 * 1024 * 1024)
    vault.close()
