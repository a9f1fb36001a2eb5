"""The engine on PostgreSQL: the same models and operations as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from davserver.blobs.local import LocalBlobStore
from davserver.errors import AlreadyExists, AuthError
from davserver.index import SCHEMA_VERSION
from tests.harness.vaults import make_vault, stored_blob_ids

pytestmark = pytest.mark.postgres


def test_vault_on_postgres(tmp_path: Path, postgres_db_url: str) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=postgres_db_url)
    try:
        assert vault.index.schema_version() == SCHEMA_VERSION
        vault.create_user("alice", "pw")
        with pytest.raises(AlreadyExists):
            vault.create_user("alice", "pw")
        with pytest.raises(AuthError):
            vault.login("alice", "nope")
        s = vault.login("alice", "pw")
        s.mkdir("/d")
        s.write_file("/d/f", [b"hello ", b"postgres"], expected_length=14)
        s.set_props("/d/f", {"{urn:x}p": "v"})
        s.move("/d", "/e")
        s.copy("/e", "/g")
        with s.open_file("/g/f") as r:
            assert r.read_all() == b"hello postgres"
        assert s.get_props("/e/f") == {"{urn:x}p": "v"}
        assert [e.name for e in s.list_dir("/")] == ["e", "g"]
        s.delete("/e")  # into the trash: still counted
        assert s.usage()[0] == 28
        (item,) = s.trash_items()
        s.trash_purge(item.name)
        assert s.usage()[0] == 14
        vault.delete_user("alice")
        assert stored_blob_ids(vault) == set()
    finally:
        vault.close()


def test_login_throttle_and_inline_blobs_on_postgres(tmp_path: Path, postgres_db_url: str) -> None:
    from davserver.index.models import InlineBlob
    from davserver.vault.throttle import LoginThrottle

    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=postgres_db_url)
    try:
        t = LoginThrottle(vault, limit=2, window=300)
        for _ in range(2):
            assert t.retry_after(["a:192.0.2.5"]) is None
            t.failed(["a:192.0.2.5", "u:x"])
        assert t.retry_after(["a:192.0.2.5"]) is not None
        t.reset("u:x")
        assert t.retry_after(["u:x"]) is None
        vault.create_user("bob", "pw")
        s = vault.login("bob", "pw")
        s.write_file("/small", [b"inline on postgres"], expected_length=18)
        with vault.index.connection():
            assert InlineBlob.select().count() == 1
        assert list(vault.blobs.iter_ids()) == []
        with s.open_file("/small") as r:
            assert r.read_all() == b"inline on postgres"
    finally:
        vault.close()
