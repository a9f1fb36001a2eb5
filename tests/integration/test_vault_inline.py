"""Small files kept in the index (storage.inline_max), on the local store and on MinIO.

An inline blob is the same ciphertext a stored object would be, under the same content key:
these tests check where it lives, that every path that adds, replaces, copies or removes a
version keeps the stored and referenced blob sets equal, and that tampering with the row is
detected exactly as tampering with an object is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from davserver.blobs.local import LocalBlobStore
from davserver.crypto import blobfmt
from davserver.errors import ChecksumMismatch, InsufficientStorage, IntegrityError, LengthMismatch
from davserver.index.models import InlineBlob, Version
from davserver.vault import Vault, VaultSettings
from davserver.vault.tree import Session
from tests.harness.vaults import FAST, make_vault, stored_blob_ids

LIMIT = VaultSettings().inline_max


def login(vault: Vault) -> Session:
    vault.create_user("alice", "pw")
    return vault.login("alice", "pw")


def put(s: Session, path: str, data: bytes, known: bool = True) -> None:
    chunks = (data[i : i + 1000] for i in range(0, len(data), 1000))
    s.write_file(path, chunks, len(data) if known else None)


def read(s: Session, path: str) -> bytes:
    with s.open_file(path) as r:
        return r.read_all()


def inline_ids(vault: Vault) -> set[str]:
    with vault.index.connection():
        return {r.blob_id for r in InlineBlob.select(InlineBlob.blob_id)}


def referenced(vault: Vault) -> set[str]:
    with vault.index.connection():
        return {v.blob_id for v in Version.select(Version.blob_id)}


def blob_of(s: Session, path: str) -> str:
    with s.vault.index.connection():
        return str(Version.get_by_id(s.stat(path).version_id).blob_id)


def test_small_known_length_lives_in_the_index(vault: Vault) -> None:
    s = login(vault)
    data = os.urandom(LIMIT)
    put(s, "/small", data)
    bid = blob_of(s, "/small")
    assert inline_ids(vault) == {bid}
    assert set(vault.blobs.iter_ids()) == set()
    with vault.index.connection():
        row = InlineBlob.get_by_id(bid)
    assert len(bytes(row.data)) == blobfmt.ciphertext_size(LIMIT, vault.settings.seg_log2)
    assert read(s, "/small") == data
    with s.open_file("/small") as r:  # ranges, as a GET with Range reads them
        assert b"".join(r.iter_range(100, 4195)) == data[100:4196]
        r.seek(LIMIT - 10)
        assert r.read(100) == data[-10:]
    assert s.hashes("/small")["sha1"] == hashlib.sha1(data).hexdigest()
    assert s.stat("/small").size == LIMIT


def test_empty_file_is_inline_too(vault: Vault) -> None:
    s = login(vault)
    put(s, "/empty", b"")
    assert inline_ids(vault) == {blob_of(s, "/empty")}
    assert read(s, "/empty") == b""


def test_larger_or_unknown_length_goes_to_the_store(vault: Vault) -> None:
    s = login(vault)
    put(s, "/big", os.urandom(LIMIT + 1))
    put(s, "/chunked", b"x" * 100, known=False)  # no Content-Length: streamed as usual
    assert inline_ids(vault) == set()
    assert set(vault.blobs.iter_ids()) == referenced(vault)
    assert len(referenced(vault)) == 2


def test_inline_max_zero_turns_it_off(tmp_path: Path) -> None:
    settings = VaultSettings(
        argon2_opslimit=FAST.argon2_opslimit, argon2_memlimit=FAST.argon2_memlimit, inline_max=0
    )
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), settings=settings)
    try:
        s = login(vault)
        put(s, "/a", b"hello")
        assert inline_ids(vault) == set()
        assert set(vault.blobs.iter_ids()) == referenced(vault) != set()
        assert read(s, "/a") == b"hello"
    finally:
        vault.close()


def test_replace_copy_delete_keep_stored_equal_to_referenced(plain_vault: Vault) -> None:
    vault = plain_vault  # the paths without versions and trash
    s = login(vault)
    s.mkdir("/d")
    put(s, "/d/f", b"one")
    put(s, "/d/f", b"two, small again")  # inline replaced by inline: the old row goes
    assert read(s, "/d/f") == b"two, small again"
    assert stored_blob_ids(vault) == referenced(vault) and len(inline_ids(vault)) == 1
    big = os.urandom(LIMIT * 3)
    put(s, "/d/f", big)  # inline replaced by a stored object
    assert inline_ids(vault) == set()
    assert stored_blob_ids(vault) == referenced(vault)
    put(s, "/d/f", b"small once more")  # and back
    assert set(vault.blobs.iter_ids()) == set()
    s.copy("/d", "/e")  # the copy shares the inline blob under a new content key
    assert len(inline_ids(vault)) == 1 and len(referenced(vault)) == 1
    s.delete("/d")
    vault.collect_garbage(grace=0)
    assert read(s, "/e/f") == b"small once more"  # still referenced by the copy
    assert stored_blob_ids(vault) == referenced(vault)
    s.delete("/e")
    vault.collect_garbage(grace=0)
    assert stored_blob_ids(vault) == set()


def test_failed_small_writes_leave_nothing(vault: Vault) -> None:
    s = login(vault)
    put(s, "/f", b"original")
    before = stored_blob_ids(vault)
    with pytest.raises(LengthMismatch):
        s.write_file("/f", [b"short"], 100)
    with pytest.raises(ChecksumMismatch):
        s.write_file("/f", [b"new body"], 8, sha1="0" * 40)
    vault.set_quota("alice", 20)
    with pytest.raises(InsufficientStorage):
        s.write_file("/g", [b"y" * 30], 30)
    assert read(s, "/f") == b"original"
    assert stored_blob_ids(vault) == before == referenced(vault)
    assert not s.exists("/g")


def _tamper(vault: Vault, blob_id: str, data: bytes) -> None:
    with vault.index.connection():
        InlineBlob.update(data=data).where(InlineBlob.blob_id == blob_id).execute()


def _stored(vault: Vault, blob_id: str) -> bytes:
    with vault.index.connection():
        return bytes(InlineBlob.get_by_id(blob_id).data)


def test_tampered_inline_blobs_are_detected(vault: Vault) -> None:
    s = login(vault)
    put(s, "/a", os.urandom(5000))
    put(s, "/b", os.urandom(5000))
    a, b = blob_of(s, "/a"), blob_of(s, "/b")
    good = _stored(vault, a)
    flipped = bytearray(good)
    flipped[-100] ^= 1
    for bad in (bytes(flipped), good[:-5], _stored(vault, b)):
        _tamper(vault, a, bad)
        with pytest.raises(IntegrityError), s.open_file("/a") as r:
            r.read_all()
    _tamper(vault, a, good)
    assert len(read(s, "/a")) == 5000
