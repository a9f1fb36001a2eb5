"""Schema 8 (``dir_tree``: directory ETags and sizes) on an index made before it, on SQLite
and PostgreSQL: every directory gets a row with the right byte total, ``dir_version`` goes,
the index gets an instance id and a data fingerprint, and the counters move from then on."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from davserver.blobs.local import LocalBlobStore
from davserver.index import SCHEMA_VERSION, dirtree, instance
from davserver.index.models import DirTree, DirVersion, SchemaInfo
from tests.harness.vaults import make_vault

PEPPER = os.urandom(32)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_url(request: Any, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_db_url"))
    return f"sqlite:///{tmp_path / 'index.db'}"


def _back_to_schema_7(url: str, base: Path) -> None:
    vault = make_vault(base, LocalBlobStore(base / "blobs"), index_url=url, pepper=PEPPER)
    vault.create_user("old", "pw")
    s = vault.login("old", "pw")
    for d in ("/a", "/a/b", "/c"):
        s.mkdir(d)
    s.write_file("/a/b/f", [b"x" * 100], 100)
    s.write_file("/a/g", [b"x" * 20], 20)
    s.write_file("/top", [b"x" * 3], 3)
    s.write_file("/c/gone", [b"x" * 50], 50)
    s.delete("/c/gone")  # into the trash: the trash root counts it
    db = vault.index.db
    with vault.index.connection():
        db.drop_tables([DirTree])
        db.create_tables([DirVersion])
        SchemaInfo.delete().where(
            SchemaInfo.key.in_([instance.INSTANCE_ID, instance.DATA_FINGERPRINT])
        ).execute()
        SchemaInfo.update(value="7").where(SchemaInfo.key == "schema_version").execute()
    vault.close()


def test_a_v7_index_migrates_with_correct_totals(tmp_path: Path, index_url: str) -> None:
    _back_to_schema_7(index_url, tmp_path)
    vault = make_vault(
        tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=index_url, pepper=PEPPER
    )
    try:
        assert vault.index.schema_version() == SCHEMA_VERSION
        db = vault.index.db
        with vault.index.connection():
            assert not db.table_exists("dir_version")
            assert not dirtree.drift(db)
            instance_id, fingerprint = instance.read(db)
        assert re.fullmatch(r"oc[a-z0-9]{10}", instance_id) and fingerprint
        s = vault.login("old", "pw")
        sizes = {p: s.stat(p).tree_bytes for p in ("/", "/a", "/a/b", "/c")}
        assert sizes == {"/": 123, "/a": 120, "/a/b": 100, "/c": 0}
        (item,) = s.trash_items()
        with vault.index.connection():
            trash = DirTree.get_by_id(s._trash_id())
        assert trash.bytes == 50
        before = {p: s.stat(p).etag for p in ("/", "/a", "/a/b", "/c")}
        s.write_file("/a/b/h", [b"y" * 5], 5)
        after = {p: s.stat(p).etag for p in ("/", "/a", "/a/b", "/c")}
        assert {p for p in before if before[p] != after[p]} == {"/", "/a", "/a/b"}
        assert s.stat("/").tree_bytes == 128
        assert s.trash_restore(item.name) == "/c/gone"
        assert s.stat("/c").tree_bytes == 50
        with vault.index.connection():
            assert DirTree.get_by_id(s._trash_id()).bytes == 0
            assert not dirtree.drift(db)
    finally:
        vault.close()
