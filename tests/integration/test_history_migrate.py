"""Schema 7 (versions and trash) on an index made before it: every node gets a random,
unique file id, files read back, and the new features work on the migrated index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playhouse.migrate import SchemaMigrator, migrate

from davserver.admin.fsck import Fsck
from davserver.blobs.local import LocalBlobStore
from davserver.index import SCHEMA_VERSION
from davserver.index.models import Node, SchemaInfo, TrashItem
from tests.harness.vaults import make_vault

PEPPER = os.urandom(32)


def _back_to_schema_6(url: str, base: Path) -> None:
    vault = make_vault(base, LocalBlobStore(base / "blobs"), index_url=url, pepper=PEPPER)
    vault.create_user("old", "pw")
    s = vault.login("old", "pw")
    s.mkdir("/d")
    for i in range(30):
        s.write_file(f"/d/f{i}.txt", [f"file {i}".encode()], None)
    db = vault.index.db
    with vault.index.connection():
        db.drop_tables([TrashItem])
        for table, index_cols in (("node", "fileid"),):
            for ix in db.get_indexes(table):
                if ix.columns == [index_cols]:
                    db.execute_sql(f'DROP INDEX "{ix.name}"')
        m = SchemaMigrator.from_database(db)
        migrate(
            m.drop_column("node", "fileid"),
            m.drop_column("user", "trash_id"),
            m.drop_column("version", "labelled"),
            m.drop_column("version", "label_ct"),
        )
        SchemaInfo.update(value="6").where(SchemaInfo.key == "schema_version").execute()
    vault.close()


def _check_migrated(url: str, base: Path) -> None:
    vault = make_vault(base, LocalBlobStore(base / "blobs"), index_url=url, pepper=PEPPER)
    try:
        assert vault.index.schema_version() == SCHEMA_VERSION
        with vault.index.connection():
            ids = [n.fileid for n in Node.select(Node.fileid)]
        assert len(ids) == 32 and all(0 < i < 2**63 for i in ids) and len(set(ids)) == 32
        s = vault.login("old", "pw")
        assert s.open_file("/d/f7.txt").read_all() == b"file 7"
        s.write_file("/d/f7.txt", [b"new"], 3)
        fileid = s.stat("/d/f7.txt").fileid
        assert [v.version_no for v in s.versions(fileid)[1]] == [2, 1]
        s.delete("/d")
        (item,) = s.trash_items()
        assert s.trash_restore(item.name) == "/d"
        report = Fsck(vault).run()
        assert report.remaining == [], [p.to_json() for p in report.remaining]
    finally:
        vault.close()


def test_a_schema_6_sqlite_index_is_migrated(tmp_path: Path) -> None:
    _back_to_schema_6("sqlite:///index.db", tmp_path)
    _check_migrated("sqlite:///index.db", tmp_path)


@pytest.mark.postgres
def test_a_schema_6_postgres_index_is_migrated(tmp_path: Path, postgres_db_url: str) -> None:
    _back_to_schema_6(postgres_db_url, tmp_path)
    _check_migrated(postgres_db_url, tmp_path)
