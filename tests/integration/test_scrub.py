"""``davserver scrub`` on a real data directory (local blobs and real MinIO): digests recorded
while uploading, one flipped ciphertext byte found without any password, rolling ``--limit``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from davserver.index import SCHEMA_VERSION
from tests.harness.davserver import s3_env
from tests.harness.minio import make_minio_client
from tests.integration.test_fsck import FILES, PASSWORD, Store, build_store


@pytest.fixture(params=["local", "s3"])
def store(request: Any, tmp_path: Path) -> Store:
    env: dict[str, str] = {}
    if request.param == "s3":
        env = s3_env(request.getfixturevalue("minio_server"), request.getfixturevalue("s3_bucket"))
    return build_store(tmp_path / "data", env)


def scrub(s: Store, *args: str) -> tuple[int, dict[str, Any]]:
    result = s.cli("scrub", "--json", *args)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def flip_in_minio(client: Minio, bucket: str, key: str, offset: int) -> None:
    """Flip one byte of a stored object with the MinIO client itself (no davserver code)."""
    resp = client.get_object(bucket, key)
    try:
        data = bytearray(resp.read())
    finally:
        resp.close()
        resp.release_conn()
    data[offset] ^= 0x01

    client.put_object(bucket, key, io.BytesIO(bytes(data)), len(data))


def test_digests_are_recorded_on_upload_and_a_clean_store_scrubs_clean(store: Store) -> None:
    with store.db() as db:
        missing = db.execute("SELECT COUNT(*) FROM version WHERE digest IS NULL").fetchone()[0]
        inline = db.execute("SELECT COUNT(*) FROM inline_blob WHERE digest IS NULL").fetchone()[0]
    assert missing == 0 and inline == 0
    code, report = scrub(store)
    assert code == 0, report
    assert report["objects"] == len(FILES)
    assert report["recorded"] == 0  # every digest came from the upload path
    assert report["bytes"] > sum(len(d) for d in FILES.values())
    text = store.cli("scrub")
    assert text.exit_code == 0 and "0 problems" in text.output


def test_a_flipped_byte_is_found_without_any_password(store: Store, request: Any) -> None:
    big = store.blobs["/big.bin"]
    offset = 56 + 70_000
    if store.config.storage.backend == "s3":
        client = make_minio_client(request.getfixturevalue("minio_server"))
        bucket = store.config.storage.s3.bucket
        flip_in_minio(client, bucket, store.config.storage.s3.prefix + big, offset)
    else:
        path = store.data_dir / "blobs" / big[:2] / big[2:4] / big
        os.chmod(path, 0o600)
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 0x01]))
    # Keyless fsck cannot see it (the length is right); scrub can.
    assert store.cli("fsck").exit_code == 0
    code, report = scrub(store)
    assert code == 1
    assert [(p["kind"], p["ids"]) for p in report["problems"]] == [
        ("digest_mismatch", {"blob": big})
    ]
    assert "big" not in json.dumps(report)


def test_a_flipped_byte_of_an_inline_blob(tmp_path: Path) -> None:
    s = build_store(tmp_path / "data", {})
    blob = s.blobs["/small.txt"]
    with s.db() as db:
        (data,) = db.execute("SELECT data FROM inline_blob WHERE blob_id = ?", (blob,)).fetchone()
        data = bytearray(data)
        data[60] ^= 0x04
        db.execute("UPDATE inline_blob SET data = ? WHERE blob_id = ?", (bytes(data), blob))
    code, report = scrub(s)
    assert code == 1
    assert [(p["kind"], p["ids"]) for p in report["problems"]] == [
        ("digest_mismatch", {"blob": blob})
    ]


def test_older_versions_get_their_digest_on_the_first_pass(tmp_path: Path) -> None:
    s = build_store(tmp_path / "data", {})
    with s.db() as db:
        db.execute("UPDATE version SET digest = NULL")
        db.execute("UPDATE inline_blob SET digest = NULL")
    code, report = scrub(s)
    assert code == 0 and report["recorded"] == len(FILES)
    with s.db() as db:
        assert db.execute("SELECT COUNT(*) FROM version WHERE digest IS NULL").fetchone()[0] == 0
    # The recorded digests are those the upload path computes: a flip is found next time.
    big = s.blobs["/big.bin"]
    path = s.data_dir / "blobs" / big[:2] / big[2:4] / big
    os.chmod(path, 0o600)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))
    code, report = scrub(s)
    assert code == 1 and report["recorded"] == 0
    assert [p["ids"]["blob"] for p in report["problems"]] == [big]


def test_limit_scrubs_a_rolling_subset_oldest_first(tmp_path: Path) -> None:
    s = build_store(tmp_path / "data", {})
    n = len(FILES)
    order: list[str] = []
    for _ in range(n):
        code, report = scrub(s, "--limit", "1")
        assert code == 0 and report["objects"] == 1
        with s.db() as db:
            (newest,) = db.execute(
                "SELECT blob_id FROM version ORDER BY scrubbed_at DESC LIMIT 1"
            ).fetchone()
        order.append(newest)
    assert sorted(order) == sorted(s.blobs.values())  # each object once, none skipped
    code, report = scrub(s, "--limit", "1")
    with s.db() as db:
        (newest,) = db.execute(
            "SELECT blob_id FROM version ORDER BY scrubbed_at DESC LIMIT 1"
        ).fetchone()
    assert newest == order[0]  # the least recently scrubbed comes round again
    code, report = scrub(s, "--limit", "100%")
    assert report["objects"] == n
    code, report = scrub(s, "--limit", "40%")
    assert 1 <= report["objects"] < n
    bad = s.cli("scrub", "--limit", "lots")
    assert bad.exit_code == 2 and "--limit" in bad.output


def test_an_index_of_schema_4_is_migrated_and_scrub_fills_the_digests(tmp_path: Path) -> None:
    s = build_store(tmp_path / "data", {})
    with s.db() as db:  # back to schema 4: no digest columns
        indexes = [r[1] for r in db.execute("PRAGMA index_list(version)")]
        for name in indexes:
            if "scrubbed_at" in name:
                db.execute(f'DROP INDEX "{name}"')
        db.execute("ALTER TABLE version DROP COLUMN digest")
        db.execute("ALTER TABLE version DROP COLUMN scrubbed_at")
        db.execute("ALTER TABLE inline_blob DROP COLUMN digest")
        db.execute("UPDATE schema_info SET value = '4' WHERE key = 'schema_version'")
    code, report = scrub(s)
    assert code == 0, report
    assert report["recorded"] == len(FILES)
    with s.db() as db:
        # Migrated to the current schema (5 added the digests).
        assert db.execute("SELECT value FROM schema_info").fetchone()[0] == str(SCHEMA_VERSION)
        assert db.execute("SELECT COUNT(*) FROM version WHERE digest IS NULL").fetchone()[0] == 0
        assert (
            db.execute("SELECT COUNT(*) FROM inline_blob WHERE digest IS NULL").fetchone()[0] == 0
        )
    assert s.cli("fsck").exit_code == 0


def test_a_copy_shares_the_object_and_its_digest(tmp_path: Path) -> None:
    from davserver.runtime import open_vault

    s = build_store(tmp_path / "data", {})
    vault = open_vault(s.config)
    try:
        vault.login("alice", PASSWORD).copy("/big.bin", "/copy.bin")
    finally:
        vault.close()
    with s.db() as db:
        assert db.execute("SELECT COUNT(*) FROM version").fetchone()[0] == len(FILES) + 1
        assert db.execute("SELECT COUNT(*) FROM version WHERE digest IS NULL").fetchone()[0] == 0
    code, report = scrub(s)
    assert code == 0, report
    assert report["objects"] == len(FILES)  # the shared object is read once
    assert report["recorded"] == 0
    assert "Exit codes: 0" in s.cli("scrub", "--help").output
    assert s.cli("fsck").exit_code == 0
