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


@pytest.mark.postgres
def test_tokens_survive_a_move_to_postgres(tmp_path: Path, postgres_db_url: str) -> None:
    """``index migrate`` / ``backup`` copy every column of the models: a token made on
    SQLite logs in on the PostgreSQL copy, its label still opens, its recovery code too."""
    from davserver.index import connect
    from davserver.index.copy import copy_index

    src = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=PEPPER)
    src.create_user("u", "pw")
    src.login("u", "pw").write_file("/f", [b"moved"], 5)
    token_id, token = src.create_token("u", "pw", "Alice's phone", perms="ro")
    code = src.create_recovery_code("u", "pw")
    src.close()
    src_db, dst_db = connect("sqlite:///index.db", tmp_path), connect(postgres_db_url, tmp_path)
    try:
        copy_index(src_db, dst_db)
    finally:
        dst_db.close()
        src_db.close()
    dst = make_vault(
        tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=postgres_db_url, pepper=PEPPER
    )
    try:
        session = dst.login("u", token)
        assert session.perms == "ro" and session.open_file("/f").read_all() == b"moved"
        labels = {t.id: t.label for t in dst.list_tokens("u")}
        assert labels[token_id] == "Alice's phone"
        dst.reset_password_with_recovery("u", code, "pw2")
        assert dst.login("u", "pw2").open_file("/f").read_all() == b"moved"
    finally:
        dst.close()
