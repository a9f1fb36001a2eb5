"""Chunked uploads in the engine: chunks stored encrypted, assembled with bounded memory."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from davserver.errors import AlreadyExists, InsufficientStorage, LengthMismatch, NotFound
from davserver.index.models import Upload, Version
from davserver.vault import Vault
from davserver.vault.uploads import Uploads
from tests.harness.vaults import stored_blob_ids


def _session(vault: Vault):  # type: ignore[no-untyped-def]
    vault.create_user("alice", "pw")
    return vault.login("alice", "pw")


def _referenced(vault: Vault) -> set[str]:
    from davserver.index.models import UploadChunk

    with vault.index.connection():
        return {v.blob_id for v in Version.select(Version.blob_id)} | {
            c.blob_id for c in UploadChunk.select(UploadChunk.blob_id)
        }


def test_chunks_assemble_in_numeric_order(vault: Vault) -> None:
    s = _session(vault)
    up = Uploads(s)
    up.create("web-file-upload-123")
    with pytest.raises(AlreadyExists):
        up.create("web-file-upload-123")
    parts = [os.urandom(n) for n in (70_000, 65_536, 1, 33_333)]
    # Out of order, and 10 after 9 (numeric, not lexicographic).
    names = ["1", "2", "9", "10"]
    for i in (3, 0, 2, 1):
        up.put_chunk("web-file-upload-123", names[i], [parts[i]], len(parts[i]))
    assert [n for n, _, _ in up.list("web-file-upload-123")] == names
    whole = b"".join(parts)
    s.mkdir("/dst")
    entry, existed = up.assemble(
        "web-file-upload-123",
        "/dst/file.bin",
        len(whole),
        mtime=1_500_000_000.0,
        sha1=hashlib.sha1(whole).hexdigest(),
    )
    assert not existed
    assert entry.size == len(whole) and entry.mtime == 1_500_000_000.0
    with s.open_file("/dst/file.bin") as r:
        assert r.read_all() == whole
    assert not up.exists("web-file-upload-123")
    assert stored_blob_ids(vault) == _referenced(vault)
    assert len(_referenced(vault)) == 1


def test_retried_chunk_replaces_and_failed_assemble_keeps_upload(vault: Vault) -> None:
    s = _session(vault)
    up = Uploads(s)
    up.create("u1")
    up.put_chunk("u1", "00001", [b"bad"], 3)
    up.put_chunk("u1", "00001", [b"good"], 4)  # a retry of the same chunk
    with pytest.raises(LengthMismatch):
        up.put_chunk("u1", "00002", [b"short"], 10)  # client went away mid-chunk
    assert up.list("u1") == [("00001", 4, pytest.approx(time.time(), abs=60))]
    with pytest.raises(LengthMismatch):
        up.assemble("u1", "/f", expected_length=999)
    assert s.lookup("/f") is None and up.exists("u1")  # the client can resume
    up.put_chunk("u1", "00002", [b"-more"], 5)
    up.assemble("u1", "/f", expected_length=9)
    with s.open_file("/f") as r:
        assert r.read_all() == b"good-more"
    assert stored_blob_ids(vault) == _referenced(vault)


def test_uploads_are_per_user_and_expire(vault: Vault) -> None:
    s = _session(vault)
    vault.create_user("bob", "pw")
    b = vault.login("bob", "pw")
    Uploads(s).create("same-id")
    Uploads(s).put_chunk("same-id", "1", [b"alice"], 5)
    with pytest.raises(NotFound):
        Uploads(b).put_chunk("same-id", "1", [b"bob"], 3)
    Uploads(b).create("same-id")  # bob's own, unrelated
    assert Uploads(b).list("same-id") == []
    assert vault.expire_uploads(max_age=3600) == 0
    with vault.index.connection():
        Upload.update(touched=time.time() - 7200).execute()
    assert vault.expire_uploads(max_age=3600) == 2
    assert not Uploads(s).exists("same-id")
    assert stored_blob_ids(vault) == set()


def test_chunks_count_against_quota(vault: Vault) -> None:
    s = _session(vault)
    vault.set_quota("alice", 100)
    Uploads(s).create("q")
    Uploads(s).put_chunk("q", "1", [b"x" * 60], 60)
    with pytest.raises(InsufficientStorage):
        Uploads(s).put_chunk("q", "2", [b"x" * 60], 60)
    with pytest.raises(InsufficientStorage):
        Uploads(s).put_chunk("q", "2", iter([b"x" * 30, b"x" * 30]), None)
    Uploads(s).delete("q")
    assert stored_blob_ids(vault) == set()


def test_delete_user_removes_uploads(vault: Vault) -> None:
    s = _session(vault)
    Uploads(s).create("x")
    Uploads(s).put_chunk("x", "1", [b"data"], 4)
    vault.delete_user("alice")
    assert stored_blob_ids(vault) == set()
