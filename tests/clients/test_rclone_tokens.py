"""rclone (vendors ``nextcloud`` and ``owncloud``) logged in with device tokens instead of the
account password: a whole-account token works as the password does (chunked uploads, hashes,
modification times, an unchanged tree costs no upload); a token scoped to one folder sees
that folder as the whole account; a read-only one reads and is refused every write; a revoked
one is refused at once."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer
from tests.harness.rclone import RCLONE, Rclone, access_log

pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone not installed")

MIB = 1 << 20
USER = "tk"


def _url(dav: DavServer, vendor: str) -> str:
    if vendor == "nextcloud":  # rclone's nextcloud vendor needs Nextcloud's path
        return dav.url.rstrip("/") + f"/remote.php/dav/files/{USER}/"
    return dav.url


def _rclone(dav: DavServer, vendor: str, token: str, home: Path) -> Rclone:
    extra = ("--webdav-nextcloud-chunk-size", "1M") if vendor == "nextcloud" else ()
    return Rclone(_url(dav, vendor), vendor, USER, token, home, extra)


def _tree(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    files = {
        "a.txt": b"token\n",
        "d/chunked.bin": rng.randbytes(2 * MIB + 11),  # chunks with the nextcloud vendor
        "d/é ü.bin": rng.randbytes(70_000),
    }
    for i, (name, data) in enumerate(sorted(files.items())):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        os.utime(root / name, (1_600_000_000 + i * 3600,) * 2)
    return files


@pytest.fixture
def dav(dav_server: DavServer) -> DavServer:
    dav_server.add_user(USER)
    return dav_server


@pytest.mark.parametrize("vendor", ["nextcloud", "owncloud"])
def test_a_whole_account_token_works_as_the_password(
    dav: DavServer, vendor: str, tmp_path: Path
) -> None:
    _, token = dav.vault.create_token(USER, dav.users[USER], f"rclone {vendor}")
    rc = _rclone(dav, vendor, token, tmp_path / "home")
    src, back = tmp_path / "src", tmp_path / "back"
    files = _tree(src)
    with access_log() as log:
        assert rc.transfers("copy", str(src), ":webdav:t")["transfers"] == len(files)
        log.settle()
        if vendor == "nextcloud":
            assert log.statuses[("MOVE", "201")] == 1  # the chunked file's assembly
    rc.run("check", str(src), ":webdav:t")  # by SHA-1
    assert rc.hashes("SHA1", ":webdav:t") == {
        n: hashlib.sha1(d).hexdigest() for n, d in files.items()
    }
    rc.run("copy", ":webdav:t", str(back))
    for name, data in files.items():
        assert (back / name).read_bytes() == data
        assert int((back / name).stat().st_mtime) == int((src / name).stat().st_mtime)
    with access_log() as log:
        assert rc.transfers("sync", str(src), ":webdav:t")["transfers"] == 0
        log.settle()
        assert log.methods["PUT"] == 0
    # The owner with the password sees what the token wrote.
    assert dav.client(USER).get("/t/a.txt").body == b"token\n"
    # Revoked: refused at once.
    (info,) = dav.vault.list_tokens(USER)
    dav.vault.revoke_token(USER, info.id)
    proc = rc.run("lsf", ":webdav:t", check=False)
    assert proc.returncode != 0


@pytest.mark.parametrize("vendor", ["nextcloud", "owncloud"])
def test_scoped_and_read_only_tokens(dav: DavServer, vendor: str, tmp_path: Path) -> None:
    owner = dav.client(USER)
    assert owner.mkcol("/Photos").status == 201
    assert owner.put("/Photos/old.jpg", b"old photo").status == 201
    assert owner.put("/secret.txt", b"not for the device").status == 201
    _, scoped = dav.vault.create_token(USER, dav.users[USER], "phone", scope="/Photos")
    rc = _rclone(dav, vendor, scoped, tmp_path / "home-scoped")
    src = tmp_path / "src"
    files = _tree(src)
    rc.run("copy", str(src), ":webdav:new")
    # The folder is the device's whole account: its root lists the folder's contents.
    listed = rc.run("lsf", "-R", ":webdav:").stdout.split()
    assert "old.jpg" in listed and "secret.txt" not in listed
    assert "new/d/chunked.bin" in listed
    assert owner.get("/Photos/new/d/chunked.bin").body == files["d/chunked.bin"]
    assert rc.run("cat", ":webdav:../secret.txt", check=False).returncode != 0

    _, ro = dav.vault.create_token(USER, dav.users[USER], "viewer", perms="ro")
    reader = _rclone(dav, vendor, ro, tmp_path / "home-ro")
    assert reader.run("cat", ":webdav:secret.txt").stdout == "not for the device"
    with access_log() as log:
        proc = reader.run("copy", str(src), ":webdav:ro-copy", "--retries", "1", check=False)
        log.settle()
    assert proc.returncode != 0
    assert log.statuses[("PUT", "201")] == log.statuses[("MKCOL", "201")] == 0
    assert owner.propfind("/ro-copy", "0").status == 404
