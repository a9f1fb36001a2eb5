"""``davserver gc`` as a real process against a served data directory (local and MinIO):
orphans planted straight into the store are listed exactly by ``--dry-run`` and removed by
``gc``, and nothing else goes (every file still reads back over HTTP)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from davserver.errors import BlobNotFound
from tests.harness.davserver import FAST_ENV, DavServer, s3_env, start_dav_server

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    args: list[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **FAST_ENV, **(env or {}), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def served(request: Any, tmp_path: Path) -> Iterator[tuple[DavServer, dict[str, str]]]:
    env: dict[str, str] = {}
    if request.param == "s3":
        env = s3_env(request.getfixturevalue("minio_server"), request.getfixturevalue("s3_bucket"))
    dav = start_dav_server(tmp_path / "data", env)
    try:
        yield dav, env
    finally:
        dav.stop()


def _files(dav: DavServer) -> dict[str, bytes]:
    """Some files: small ones (inline in the index), large ones (objects), an overwrite."""
    alice = dav.client("alice")
    assert alice.mkcol("/docs").status == 201
    files = {
        "/small.txt": b"hello",
        "/docs/big.bin": os.urandom(200_000),
        "/docs/mid.bin": os.urandom(40_000),
    }
    for path, data in files.items():
        assert alice.put(path, data).status in (201, 204)
    files["/docs/mid.bin"] = os.urandom(50_000)  # overwrite: the old blob becomes dead
    assert alice.put("/docs/mid.bin", files["/docs/mid.bin"]).status == 204
    return files


def _plant(dav: DavServer, n: int, size: int) -> list[str]:
    ids = []
    for _ in range(n):
        blob_id = secrets.token_hex(16)
        dav.vault.blobs.put(blob_id, [os.urandom(size)])
        ids.append(blob_id)
    return ids


def _age_local(dav: DavServer, ids: list[str], seconds: float) -> None:
    root = dav.config.resolve_path(dav.config.storage.local.path)
    old = time.time() - seconds
    for blob_id in ids:
        os.utime(root / blob_id[:2] / blob_id[2:4] / blob_id, (old, old))


def _gc(dav: DavServer, env: Mapping[str, str], *args: str) -> dict[str, Any]:
    result = run_cli(["gc", "--json", *args, "--data-dir", str(dav.data_dir)], env)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def _orphans(report: dict[str, Any], key: str) -> set[str]:
    return {i["id"] for i in report[key] if i["kind"] == "orphan"}


def test_gc_lists_then_removes_exactly_the_planted_orphans(
    served: tuple[DavServer, dict[str, str]],
) -> None:
    dav, env = served
    files = _files(dav)
    local = not env
    planted = _plant(dav, 3, 1000)
    if local:
        _age_local(dav, planted, 3 * 86400)  # three days old
        young = _plant(dav, 1, 500)  # an orphan inside the grace period: kept
        grace = "1d"
    else:
        # MinIO sets the object time itself: age by waiting past a small grace.
        time.sleep(2.5)
        young = []
        grace = "2s"

    dry = _gc(dav, env, "--dry-run", "--grace", grace)
    assert dry["dry_run"] is True
    assert _orphans(dry, "would_remove") == set(planted)
    assert {i["id"] for i in dry["would_remove"]} == set(planted)  # and nothing else
    assert sum(i["bytes"] for i in dry["would_remove"] if i["kind"] == "orphan") == 3000
    for blob_id in planted + young:  # a dry run removes nothing
        assert dav.vault.blobs.stat(blob_id).size > 0

    done = _gc(dav, env, "--grace", grace)
    assert _orphans(done, "removed") == set(planted)
    assert {i["id"] for i in done["removed"]} == set(planted)
    assert done["failed"] == []
    for blob_id in planted:
        with pytest.raises(BlobNotFound):
            dav.vault.blobs.stat(blob_id)
    for blob_id in young:
        assert dav.vault.blobs.stat(blob_id).size == 500

    alice = dav.client("alice")
    for path, data in files.items():
        got = alice.get(path)
        assert got.status == 200, path
        assert got.body == data, path

    again = _gc(dav, env, "--dry-run", "--grace", grace)
    assert _orphans(again, "would_remove") == set()


def test_gc_text_output_and_bad_grace(dav_server: DavServer) -> None:
    dav = dav_server
    planted = _plant(dav, 2, 4096)
    _age_local(dav, planted, 10 * 86400)
    dry = run_cli(["gc", "--dry-run", "--grace", "7d", "--data-dir", str(dav.data_dir)])
    assert dry.returncode == 0, dry.stderr
    assert "Would remove 2 items" in dry.stdout
    assert all(b in dry.stdout for b in planted)
    bad = run_cli(["gc", "--grace", "soon", "--data-dir", str(dav.data_dir)])
    assert bad.returncode == 2
    assert "bad duration" in bad.stderr
    assert "Traceback" not in bad.stderr
    help_text = run_cli(["gc", "--help"])
    assert "Exit codes" in help_text.stdout


def test_gc_removes_expired_chunked_uploads_and_crash_leftovers(dav_server: DavServer) -> None:
    """An abandoned Nextcloud chunked upload (expiry lowered to 1 s for the gc process) and
    a temp file a crashed PUT left in the local store (idle past gc.upload_grace, lowered to
    60 s; younger than the day after which opening the store sweeps such files anyway) are
    listed by --dry-run and removed by gc; a finished file stays readable."""
    dav = dav_server
    alice = dav.client("alice")
    assert alice.put("/keep.bin", b"k" * 60_000).status == 201
    uploads = "/remote.php/dav/uploads/alice"
    assert alice.mkcol(f"{uploads}/abandoned").status == 201
    chunk = os.urandom(70_000)
    assert alice.put(f"{uploads}/abandoned/00001", chunk).status == 201
    root = dav.config.resolve_path(dav.config.storage.local.path)
    leftover = root / "tmp" / (secrets.token_hex(16) + ".crashed")
    leftover.write_bytes(b"\0" * 5000)
    old = time.time() - 600
    os.utime(leftover, (old, old))
    time.sleep(1.5)  # the upload is now older than the 1 s expiry given to gc below
    env = {"DAVSERVER_GC_UPLOAD_EXPIRY": "1", "DAVSERVER_GC_UPLOAD_GRACE": "60"}

    assert len(list(dav.vault.blobs.iter_ids())) == 2  # keep.bin and the chunk
    dry = _gc(dav, env, "--dry-run")
    kinds = {i["kind"]: i for i in dry["would_remove"]}
    assert set(kinds) == {"expired-upload", "partial"}, dry
    assert kinds["expired-upload"]["bytes"] > len(chunk)  # its chunk's ciphertext
    assert kinds["partial"]["bytes"] == 5000
    assert leftover.exists()

    done = _gc(dav, env)
    assert {i["kind"] for i in done["removed"]} == {"expired-upload", "partial"}
    assert done["bytes"] > len(chunk) + 5000 - 1
    assert not leftover.exists()
    assert len(list(dav.vault.blobs.iter_ids())) == 1  # the chunk's object is gone
    with dav.vault.index.connection():
        from davserver.index.models import Upload, UploadChunk

        assert Upload.select().count() == 0
        assert UploadChunk.select().count() == 0
    assert alice.get("/keep.bin").body == b"k" * 60_000
    assert _gc(dav, env, "--dry-run")["would_remove"] == []


def test_parse_duration() -> None:
    from davserver.admin.gc import parse_duration
    from davserver.errors import ConfigError

    assert parse_duration("30m") == 1800
    assert parse_duration("24h") == 86400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    for bad in ("", "soon", "-1h", "3y"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
