"""The engine's tree operations, on the local store and on the real MinIO."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from davserver.errors import (
    AlreadyExists,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    InsufficientStorage,
    LengthMismatch,
    NotFound,
)
from davserver.index.models import Node, User, Version
from davserver.vault import Vault
from davserver.vault.tree import Session
from davserver.vault.uploads import Uploads
from tests.harness.vaults import stored_blob_ids


def login(vault: Vault, name: str = "alice") -> Session:
    vault.create_user(name, "pw-" + name)
    return vault.login(name, "pw-" + name)


def put(s: Session, path: str, data: bytes, chunk: int = 7000) -> None:
    s.write_file(path, (data[i : i + chunk] for i in range(0, len(data), chunk)), len(data))


def read(s: Session, path: str) -> bytes:
    with s.open_file(path) as r:
        return r.read_all()


def stored_blobs(vault: Vault) -> set[str]:
    return stored_blob_ids(vault)


def referenced_blobs(vault: Vault) -> set[str]:
    with vault.index.connection():
        return {v.blob_id for v in Version.select(Version.blob_id)}


def test_write_read_list_sizes(vault: Vault) -> None:
    s = login(vault)
    s.mkdir("/docs")
    rng = random.Random(1)
    seg = 1 << vault.settings.seg_log2
    sizes = [0, 1, seg - 1, seg, seg + 1, 2 * seg, 3 * seg + 123]
    for n in sizes:
        data = rng.randbytes(n)
        put(s, f"/docs/f{n}", data)
        assert read(s, f"/docs/f{n}") == data
        assert s.stat(f"/docs/f{n}").size == n
        assert s.hashes(f"/docs/f{n}") == {
            "sha1": hashlib.sha1(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest(),
        }
    listing = s.list_dir("/docs")
    assert sorted(e.name for e in listing) == sorted(f"f{n}" for n in sizes)
    assert all(not e.is_dir for e in listing)
    assert s.usage() == (sum(sizes), None)
    assert stored_blobs(vault) == referenced_blobs(vault)


def test_ranges_and_seek(vault: Vault) -> None:
    s = login(vault)
    data = random.Random(2).randbytes(5 * (1 << 16) + 777)
    put(s, "/big", data, chunk=100_000)
    rng = random.Random(3)
    with s.open_file("/big") as r:
        for _ in range(60):
            a = rng.randrange(len(data))
            b = rng.randrange(a, len(data))
            assert b"".join(r.iter_range(a, b)) == data[a : b + 1]
            r.seek(a)
            assert r.read(b - a + 1) == data[a : b + 1]
        r.seek(-10, os.SEEK_END)
        assert r.read() == data[-10:]


def test_overwrite_keeps_one_version_and_collects_old_blob(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    put(s, "/f", b"one")
    first = s.stat("/f")
    put(s, "/f", b"two!")
    second = s.stat("/f")
    assert read(s, "/f") == b"two!"
    assert first.id == second.id and first.etag != second.etag
    assert s.usage()[0] == 4
    assert stored_blobs(vault) == referenced_blobs(vault)
    assert len(referenced_blobs(vault)) == 1


def _failing(data: bytes, at: int):  # type: ignore[no-untyped-def]
    yield data[:at]
    raise ConnectionResetError("client went away")


def test_failed_writes_keep_previous_version(vault: Vault) -> None:
    s = login(vault)
    put(s, "/f", b"original")
    before = stored_blobs(vault)
    with pytest.raises(ConnectionResetError):
        s.write_file("/f", _failing(b"x" * 300_000, 200_000))
    with pytest.raises(LengthMismatch):
        s.write_file("/f", [b"short"], expected_length=100)
    with pytest.raises(LengthMismatch):
        s.write_file("/f", [b"too long body"], expected_length=3)
    with pytest.raises(ChecksumMismatch):
        s.write_file("/f", [b"abc"], sha1=hashlib.sha1(b"abd").hexdigest())
    with pytest.raises(ChecksumMismatch):
        s.write_file("/f", [b"abc"], md5=hashlib.md5(b"abd").hexdigest())
    # A new file that fails is not created at all.
    with pytest.raises(LengthMismatch):
        s.write_file("/new", [b"abc"], expected_length=4)
    assert s.lookup("/new") is None
    assert read(s, "/f") == b"original"
    assert stored_blobs(vault) == before == referenced_blobs(vault)
    s.write_file("/ok", [b"abc"], sha1=hashlib.sha1(b"abc").hexdigest())
    assert read(s, "/ok") == b"abc"


def test_quota(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    vault.set_quota("alice", 1000)
    put(s, "/a", b"x" * 600)
    with pytest.raises(InsufficientStorage):
        put(s, "/b", b"y" * 500)
    with pytest.raises(InsufficientStorage):  # unknown length: caught while streaming
        s.write_file("/b", (b"y" * 100 for _ in range(5)))
    assert s.lookup("/b") is None
    put(s, "/a", b"z" * 1000)  # replacing counts the old size out
    assert s.usage() == (1000, 1000)
    with pytest.raises(InsufficientStorage):
        s.copy("/a", "/a2")
    assert s.lookup("/a2") is None
    assert stored_blobs(vault) == referenced_blobs(vault)


def test_errors_on_paths(vault: Vault) -> None:
    s = login(vault)
    s.mkdir("/d")
    put(s, "/d/f", b"1")
    with pytest.raises(Conflict):
        put(s, "/missing/f", b"1")
    with pytest.raises(Conflict):
        put(s, "/d/f/g", b"1")
    with pytest.raises(Conflict):
        put(s, "/d", b"1")
    with pytest.raises(AlreadyExists):
        s.mkdir("/d")
    with pytest.raises(Conflict):
        s.mkdir("/x/y")
    with pytest.raises(NotFound):
        s.stat("/nope")
    with pytest.raises(BadRequest):
        s.stat("/d/../etc")
    with pytest.raises(Forbidden):
        s.delete("/")
    with pytest.raises(Forbidden):
        s.move("/d", "/d/sub")
    with pytest.raises(Forbidden):
        s.copy("/d", "/d/sub")
    with pytest.raises(AlreadyExists):
        s.move("/d/f", "/d", overwrite=False)
    with pytest.raises(Forbidden):
        s.move("/d/f", "/d", overwrite=True)
    with pytest.raises(Forbidden):
        s.copy("/d/f", "/d", overwrite=True)
    assert read(s, "/d/f") == b"1"


def test_move_rename_overwrite(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    s.mkdir("/a")
    s.mkdir("/a/b")
    put(s, "/a/b/f", b"data")
    s.set_props("/a/b/f", {"{urn:x}p": "v"})
    etag = s.stat("/a/b/f").etag
    assert s.move("/a", "/z") is False
    assert read(s, "/z/b/f") == b"data"
    assert s.get_props("/z/b/f") == {"{urn:x}p": "v"}
    assert s.stat("/z/b/f").etag == etag  # MOVE does not change the ETag
    assert s.lookup("/a") is None
    put(s, "/other", b"other")
    assert s.move("/other", "/z/b/f", overwrite=True) is True
    assert read(s, "/z/b/f") == b"other"
    assert s.usage()[0] == 5
    assert stored_blobs(vault) == referenced_blobs(vault)


def test_copy_shares_blobs_under_new_keys(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    s.mkdir("/src")
    s.mkdir("/src/sub")
    put(s, "/src/sub/f", b"payload")
    s.set_props("/src/sub/f", {"{urn:x}p": "v"})
    assert s.copy("/src", "/dst") is False
    assert read(s, "/dst/sub/f") == b"payload"
    assert s.get_props("/dst/sub/f") == {"{urn:x}p": "v"}
    with vault.index.connection():
        a = Node.get_by_id(s.stat("/src/sub/f").id)
        b = Node.get_by_id(s.stat("/dst/sub/f").id)
        assert bytes(a.key_env) != bytes(b.key_env)
    assert s.usage()[0] == 14
    # Depth 0: the directory alone.
    s.copy("/src", "/shallow", depth_infinity=False)
    assert s.list_dir("/shallow") == []
    s.delete("/src")
    assert read(s, "/dst/sub/f") == b"payload"
    assert len(stored_blobs(vault)) == 1
    s.delete("/dst")
    assert stored_blobs(vault) == set()
    assert s.usage()[0] == 0


def test_delete_tree_collects_blobs_and_usage(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    s.mkdir("/t")
    for i in range(5):
        s.mkdir(f"/t/d{i}")
        for j in range(4):
            put(s, f"/t/d{i}/f{j}", b"x" * (i + j))
    assert len(stored_blobs(vault)) == 20
    s.delete("/t")
    assert s.list_dir("/") == []
    assert stored_blobs(vault) == set()
    assert s.usage()[0] == 0


def test_names_nfc_nfd_and_unicode(vault: Vault) -> None:
    s = login(vault)
    nfd = "Cafe\u0301 \U0001f600.txt"
    nfc = "Caf\u00e9 \U0001f600.txt"
    put(s, "/" + nfd, b"1")
    assert s.stat("/" + nfc).name == nfc
    assert [e.name for e in s.list_dir("/")] == [nfc]
    put(s, "/" + nfc, b"2")
    assert len(s.list_dir("/")) == 1


def test_users_are_isolated(vault: Vault) -> None:
    a = login(vault, "alice")
    b = login(vault, "bob")
    a.mkdir("/secret")
    put(a, "/secret/f", b"alice's")
    assert b.lookup("/secret") is None
    assert b.list_dir("/") == []
    b.mkdir("/secret")  # the same name in another tree is a different node
    put(b, "/secret/f", b"bob's")
    assert read(a, "/secret/f") == b"alice's"
    assert read(b, "/secret/f") == b"bob's"
    with vault.index.connection():
        macs = [bytes(n.name_mac) for n in Node.select() if n.parent_id is not None]
    assert len(set(macs)) == len(macs)


def test_dead_props_set_remove(vault: Vault) -> None:
    s = login(vault)
    put(s, "/f", b"")
    s.set_props("/f", {"{DAV:}x": "<a/>", "{urn:y}z": "1"})
    s.set_props("/f", {"{DAV:}x": None})
    assert s.get_props("/f") == {"{urn:y}z": "1"}
    s.set_mtime("/f", 1_000_000.0)
    assert s.stat("/f").mtime == 1_000_000.0


def test_walk_lists_tree(vault: Vault) -> None:
    s = login(vault)
    s.mkdir("/a")
    put(s, "/a/1", b"1")
    s.mkdir("/a/b")
    put(s, "/a/b/2", b"2")
    assert sorted(p for p, _ in s.walk("/a")) == ["/a", "/a/1", "/a/b", "/a/b/2"]


def test_user_usage_rows(vault: Vault) -> None:
    s = login(vault)
    put(s, "/f", b"12345")
    with vault.index.connection():
        assert User.get_by_id(s.user_id).usage_bytes == 5


def test_batched_member_props_and_hashes(vault: Vault) -> None:
    s = login(vault)
    s.mkdir("/d")
    put(s, "/d/a", b"aaa")
    put(s, "/d/b", b"bbbb")
    s.mkdir("/d/sub")
    s.set_props("/d/a", {"{urn:x}p": "1"})
    s.set_props("/d/sub", {"{urn:x}q": "2"})
    assert s.list_dir_props("/d") == {"a": {"{urn:x}p": "1"}, "sub": {"{urn:x}q": "2"}}
    hashes = s.list_dir_hashes("/d")
    assert set(hashes) == {"a", "b"}
    assert hashes["b"] == {
        "sha1": hashlib.sha1(b"bbbb").hexdigest(),
        "md5": hashlib.md5(b"bbbb").hexdigest(),
    }
    assert hashes["a"] == s.hashes("/d/a")
    with pytest.raises(Conflict):
        s.list_dir_props("/d/a")


def test_large_chunks_hash_on_a_helper_thread(vault: Vault) -> None:
    """Bodies in large chunks are hashed beside the encryption; digests stay exact."""
    import threading

    s = login(vault)
    data = random.Random(7).randbytes(5 * 1024 * 1024 + 3)
    put(s, "/big", data, chunk=1024 * 1024)
    assert s.hashes("/big") == {
        "sha1": hashlib.sha1(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
    before = threading.active_count()
    with pytest.raises(ConnectionResetError):
        s.write_file("/big", _failing(data, 3 * 1024 * 1024))
    assert threading.active_count() <= before  # the hashing thread did not leak
    assert read(s, "/big") == data


def test_listing_cache_follows_every_change(vault: Vault, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Listings are cached per session and revalidated by the directory's version, which
    every change bumps, including changes made through another vault (another process)."""
    from davserver.vault import Vault as VaultClass

    s = login(vault)
    s.mkdir("/d")
    put(s, "/d/a", b"1")
    assert [e.name for e in s.list_dir("/d")] == ["a"]
    # Another process on the same index: a second vault object with its own sessions.
    other = VaultClass(vault.index, vault.blobs, vault._pepper, vault.settings)
    o = other.login("alice", "pw-alice")
    assert o is not s

    def names(path: str = "/d") -> list[str]:
        return [e.name for e in s.list_dir(path)]

    o.write_file("/d/b", [b"22"])
    assert names() == ["a", "b"]
    o.write_file("/d/b", [b"333"])
    assert {e.name: e.size for e in s.list_dir("/d")} == {"a": 1, "b": 3}
    o.set_mtime("/d/a", 1_000.0)
    assert {e.name: e.mtime for e in s.list_dir("/d")}["a"] == 1_000.0
    o.mkdir("/d/sub")
    assert names() == ["a", "b", "sub"]
    o.move("/d/a", "/d/sub/a")
    assert names() == ["b", "sub"] and names("/d/sub") == ["a"]
    o.copy("/d/sub", "/d/sub2")
    assert names() == ["b", "sub", "sub2"]
    o.move("/d/b", "/d/sub2/a", overwrite=True)
    assert names() == ["sub", "sub2"] and {e.size for e in s.list_dir("/d/sub2")} == {3}
    o.delete("/d/sub")
    assert names() == ["sub2"]
    Uploads(o).create("u")
    Uploads(o).put_chunk("u", "1", [b"up"], 2)
    Uploads(o).assemble("u", "/d/up")
    assert names() == ["sub2", "up"]


def test_lookup_with_parent(vault: Vault) -> None:
    s = login(vault)
    s.mkdir("/d")
    put(s, "/d/f", b"x")
    parent, entry = s.lookup_with_parent("/d/f")
    assert parent is not None and parent.name == "d" and parent.is_dir
    assert entry is not None and entry.name == "f" and entry.size == 1
    assert entry == s.stat("/d/f") and parent == s.stat("/d")
    parent, entry = s.lookup_with_parent("/d/missing")
    assert parent == s.stat("/d") and entry is None
    assert s.lookup_with_parent("/nope/f") == (None, None)
    parent, entry = s.lookup_with_parent("/d/f/below")  # the "parent" is a file
    assert parent is not None and not parent.is_dir and entry is None
    parent, entry = s.lookup_with_parent("/d")
    assert parent == s.stat("/") and entry == s.stat("/d")
    parent, entry = s.lookup_with_parent("/")
    assert parent is None and entry == s.stat("/")
