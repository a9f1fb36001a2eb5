"""Schema 8 (device tokens) on an index made before it: the new ``envelope`` columns are
added, password envelopes are untouched, and tokens work on the migrated index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playhouse.migrate import SchemaMigrator, migrate

from davserver.blobs.local import LocalBlobStore
from davserver.index import SCHEMA_VERSION
from davserver.index.models import SchemaInfo
from tests.harness.vaults import make_vault

PEPPER = os.urandom(32)
TOKEN_COLUMNS = ("label_ct", "scope_node", "perms", "expires", "last_used")


def _back_to_schema_7(url: str, base: Path) -> None:
    vault = make_vault(base, LocalBlobStore(base / "blobs"), index_url=url, pepper=PEPPER)
    vault.create_user("old", "pw")
    vault.login("old", "pw").write_file("/a.txt", [b"kept"], 4)
    db = vault.index.db
    with vault.index.connection():
        m = SchemaMigrator.from_database(db)
        migrate(*(m.drop_column("envelope", c) for c in TOKEN_COLUMNS))
        assert not set(TOKEN_COLUMNS) & {c.name for c in db.get_columns("envelope")}
        SchemaInfo.update(value="7").where(SchemaInfo.key == "schema_version").execute()
    vault.close()


def _check_migrated(url: str, base: Path) -> None:
    vault = make_vault(base, LocalBlobStore(base / "blobs"), index_url=url, pepper=PEPPER)
    try:
        assert vault.index.schema_version() == SCHEMA_VERSION
        with vault.index.connection():
            have = {c.name for c in vault.index.db.get_columns("envelope")}
        assert set(TOKEN_COLUMNS) <= have
        assert vault.login("old", "pw").open_file("/a.txt").read_all() == b"kept"
        token_id, token = vault.create_token("old", "pw", "laptop", perms="ro")
        assert vault.login("old", token).open_file("/a.txt").read_all() == b"kept"
        (info,) = vault.list_tokens("old")
        assert (info.id, info.label, info.perms) == (token_id, "laptop", "ro")
    finally:
        vault.close()


def test_a_schema_7_sqlite_index_is_migrated(tmp_path: Path) -> None:
    _back_to_schema_7("sqlite:///index.db", tmp_path)
    _check_migrated("sqlite:///index.db", tmp_path)


@pytest.mark.postgres
def test_a_schema_7_postgres_index_is_migrated(tmp_path: Path, postgres_db_url: str) -> None:
    _back_to_schema_7(postgres_db_url, tmp_path)
    _check_migrated(postgres_db_url, tmp_path)
