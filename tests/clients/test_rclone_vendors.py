"""rclone's ``owncloud``, ``fastmail`` and ``rclone`` vendors against davserver, on the local
backend and on MinIO.

What each vendor gets from the server (rclone 1.75): all three send ``X-OC-Mtime`` on PUT,
COPY and MOVE and keep modification times when the answer says ``X-OC-Mtime: accepted``;
``owncloud`` also sends ``OC-Checksum: SHA1:…`` and reads SHA-1 and MD5 from
``oc:checksums``; ``fastmail`` reads SHA-1 from ``ME:sha1hex`` in an allprop listing;
``rclone`` gets no hashes (its ``check`` compares sizes, so it is checked with
``--download``).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer
from tests.harness.rclone import RCLONE, Rclone, access_log

pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone not installed")

HASHES = {"owncloud": ("SHA1", "MD5"), "fastmail": ("SHA1",), "rclone": ()}


def make_tree(root: Path) -> dict[str, bytes]:
    """A few files around the 64 KiB segment size, an empty file and an empty directory,
    each with its own modification time in the past."""
    rng = random.Random(11)
    files = {
        "a.txt": b"hello rclone\n",
        "empty.bin": b"",
        "dir/seg.bin": rng.randbytes(65_537),
        "dir/sub/ü ñ.bin": rng.randbytes(300_001),
        "dir/sub/one.bin": rng.randbytes(1),
        "big.bin": rng.randbytes(1_100_000),
    }
    for i, (name, data) in enumerate(sorted(files.items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_500_000_000 + i * 3601, 1_500_000_000 + i * 3601))
    (root / "empty-dir").mkdir()
    return files


def mtimes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): int(p.stat().st_mtime) for p in root.rglob("*") if p.is_file()
    }


def local_hash(kind: str, data: bytes) -> str:
    return hashlib.new(kind.lower(), data).hexdigest()


def vendor_roundtrip(dav: DavServer, vendor: str, tmp_path: Path) -> None:
    dav.add_user("rc")
    rc = Rclone(dav.url, vendor, "rc", dav.users["rc"], tmp_path / "home")
    src, back = tmp_path / "src", tmp_path / "back"
    files = make_tree(src)
    remote = ":webdav:tree"

    with access_log() as log:
        stats = rc.transfers("copy", str(src), remote, "--create-empty-src-dirs")
        assert stats["transfers"] == len(files)
        log.settle()
        assert log.methods["PUT"] == len(files)
        # Every PUT carried X-OC-Mtime and was answered "accepted": no PROPPATCH fallback.
        assert log.methods["PROPPATCH"] == 0

    # check: by hash where the vendor has one (the log says which), by content otherwise.
    proc = rc.run("check", str(src), remote)
    if HASHES[vendor]:
        assert "no hashes in common" not in proc.stderr.lower(), proc.stderr
        assert "no common hash" not in proc.stderr.lower(), proc.stderr
    assert f"{len(files)} matching files" in proc.stderr
    rc.run("check", str(src), remote, "--download")

    for kind in HASHES[vendor]:
        got = rc.hashes(kind, remote)
        assert got == {name: local_hash(kind, data) for name, data in files.items()}

    # Round trip: same bytes, same modification times, the empty directory too.
    rc.run("copy", remote, str(back), "--create-empty-src-dirs")
    for name, data in files.items():
        assert (back / name).read_bytes() == data
    assert (back / "empty-dir").is_dir()
    assert mtimes(back) == mtimes(src)

    # A second sync of an unchanged tree uploads nothing.
    with access_log() as log:
        stats = rc.transfers("sync", str(src), remote)
        assert stats["transfers"] == 0 and stats["bytes"] == 0
        log.settle()
        assert log.methods["PUT"] == 0 and log.methods["PROPPATCH"] == 0

    # A same-size edit that keeps the modification time: caught by hash, or by content.
    edited = src / "dir/seg.bin"
    stat = edited.stat()
    data = bytearray(edited.read_bytes())
    data[1000] ^= 0xFF
    edited.write_bytes(bytes(data))
    os.utime(edited, (stat.st_atime, stat.st_mtime))
    if HASHES[vendor]:
        proc = rc.run("check", str(src), remote, check=False)
        assert proc.returncode != 0 and "1 differences found" in proc.stderr, proc.stderr
    proc = rc.run("check", str(src), remote, "--download", check=False)
    assert proc.returncode != 0 and "1 differences found" in proc.stderr, proc.stderr
    # sync by checksum (or unconditionally) uploads exactly that file.
    flag = "--checksum" if HASHES[vendor] else "--ignore-times"
    stats = rc.transfers("sync", str(src), remote, flag)
    assert stats["transfers"] == (1 if HASHES[vendor] else len(files))
    rc.run("check", str(src), remote, "--download")

    # Server-side copy and move keep the modification time (X-OC-Mtime on COPY/MOVE).
    with access_log() as log:
        rc.run("copyto", f"{remote}/a.txt", f"{remote}/copies/a-copy.txt")
        rc.run("moveto", f"{remote}/big.bin", f"{remote}/moved/big-moved.bin")
        log.settle()
        assert log.methods["COPY"] == 1 and log.methods["MOVE"] == 1
        assert log.methods["PUT"] == 0 and log.methods["GET"] == 0
    listing = {
        line.split(";")[1]: line.split(";")[0]
        for line in rc.run(
            "lsf", "-R", "--files-only", "--format", "tp", "--time-format", "unix", remote
        ).stdout.splitlines()
    }
    want = mtimes(src)
    assert listing["copies/a-copy.txt"] == str(want["a.txt"])
    assert listing["moved/big-moved.bin"] == str(want["big.bin"])
    assert "big.bin" not in listing
    for kind in HASHES[vendor]:
        got = rc.hashes(kind, remote)
        assert got["moved/big-moved.bin"] == local_hash(kind, files["big.bin"])
        assert got["copies/a-copy.txt"] == local_hash(kind, files["a.txt"])

    # deletefile removes one file; purge removes the tree.
    rc.run("deletefile", f"{remote}/copies/a-copy.txt")
    names = rc.run("lsf", "-R", remote).stdout.split()
    assert "copies/a-copy.txt" not in names and "a.txt" in names
    rc.run("purge", remote)
    assert "tree/" not in rc.run("lsf", ":webdav:").stdout.split()


@pytest.mark.parametrize("vendor", ["owncloud", "fastmail", "rclone"])
def test_rclone_vendor_roundtrip(dav_any: DavServer, vendor: str, tmp_path: Path) -> None:
    vendor_roundtrip(dav_any, vendor, tmp_path)


def test_rclone_touch_sets_mtime_and_keeps_hash(dav_server: DavServer, tmp_path: Path) -> None:
    """``rclone touch`` of an existing file: PROPPATCH of lastmodified with the SHA-1 re-sent
    in ``oc:checksums`` (owncloud vendor) — accepted, and the checksum is still ours."""
    dav_server.add_user("rc")
    rc = Rclone(dav_server.url, "owncloud", "rc", dav_server.users["rc"], tmp_path / "home")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"touch me\n")
    rc.run("copy", str(src), ":webdav:t")
    with access_log() as log:
        rc.run("touch", ":webdav:t/f.txt", "--timestamp", "2020-02-03T04:05:06")
        log.settle()
        assert log.statuses[("PROPPATCH", "207")] == 1 and log.methods["PUT"] == 0
    out = rc.run("lsf", "--format", "tp", "--time-format", "unix", ":webdav:t").stdout
    assert out.split(";")[0] == "1580702706"
    assert rc.hashes("SHA1", ":webdav:t") == {"f.txt": local_hash("sha1", b"touch me\n")}
