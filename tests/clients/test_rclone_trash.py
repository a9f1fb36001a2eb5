"""rclone pointed at the trash (README "Undo"): it lists the trashed items, folders browsed,
and copies a trashed file out byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")


def rclone_at(url: str, password: str, *args: str) -> str:
    obscured = subprocess.run(
        ["rclone", "obscure", "--", password], capture_output=True, text=True, check=True
    ).stdout.strip()
    cmd = ["rclone", *args, "--webdav-url", url, "--webdav-vendor", "owncloud"]
    cmd += ["--webdav-user", "alice", "--webdav-pass", obscured, "--config", "/dev/null"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_rclone_lists_and_copies_from_the_trash(dav_server: DavServer, tmp_path: Path) -> None:
    c = dav_server.client("alice")
    data = bytes(range(256)) * 400
    assert c.mkcol("/Docs").status == 201
    assert c.put("/Docs/report é.bin", data).status == 201
    assert c.put("/note.txt", b"note").status == 201
    assert c.delete("/Docs").status == 204
    assert c.delete("/note.txt").status == 204
    url = dav_server.url + "remote.php/dav/trashbin/alice/trash/"
    password = dav_server.users["alice"]
    listing = rclone_at(url, password, "lsf", "-R", ":webdav:")
    names = sorted(listing.splitlines())
    assert len(names) == 3, listing
    docs = next(n for n in names if n.startswith("Docs.d") and n.endswith("/"))
    assert any(n.startswith("note.txt.d") for n in names)
    assert f"{docs}report é.bin" in listing
    rclone_at(url, password, "copy", f":webdav:{docs}", str(tmp_path / "out"))
    assert (tmp_path / "out" / "report é.bin").read_bytes() == data
