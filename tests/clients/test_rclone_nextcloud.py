"""rclone's ``nextcloud`` vendor against davserver, on the local backend and on MinIO.

What rclone 1.75 sends (observed with ``--dump headers``): the remote URL must end in
``/remote.php/dav/files/USER/``; files up to ``--webdav-nextcloud-chunk-size`` are one PUT
(``X-OC-Mtime``, ``OC-Checksum: SHA1:…``); larger ones go to
``/remote.php/dav/uploads/USER/rclone-chunked-upload-<md5 of the path>/``: ``DELETE`` of that
directory (a leftover of an earlier attempt), ``MKCOL``, one ``PUT`` per chunk named
``<first byte>-<last byte>`` (15 digits each, no extra headers), then ``MOVE …/.file`` with
``Destination``, ``X-OC-Mtime`` and ``OC-Checksum``. Setting a modification time is a
PROPPATCH of ``lastmodified`` followed by ``PATCH`` with ``X-Recalculate-Hash: sha1``.
rclone does not resume an interrupted chunked upload itself: the next attempt deletes the
old upload directory and starts again (resuming at the protocol level is tested in
``tests/integration/test_dav_nextcloud.py``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from davserver.index.models import Upload, UploadChunk, Version
from davserver.vault import Vault
from tests.harness.davserver import DavServer
from tests.harness.rclone import RCLONE, Rclone, access_log
from tests.harness.vaults import stored_blob_ids

pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone not installed")

MIB = 1 << 20


def nextcloud(dav: DavServer, tmp_path: Path, *extra: str) -> Rclone:
    dav.add_user("nc")
    url = dav.url.rstrip("/") + "/remote.php/dav/files/nc/"
    return Rclone(
        url,
        "nextcloud",
        "nc",
        dav.users["nc"],
        tmp_path / "home",
        ("--webdav-nextcloud-chunk-size", "1M", *extra),
    )


def uploads_left(vault: Vault) -> int:
    with vault.index.connection():
        return int(Upload.select().count())


def no_orphans(vault: Vault) -> None:
    vault.collect_garbage(grace=0)
    with vault.index.connection():
        referenced = {v.blob_id for v in Version.select(Version.blob_id)} | {
            c.blob_id for c in UploadChunk.select(UploadChunk.blob_id)
        }
    assert stored_blob_ids(vault) == referenced


def test_rclone_nextcloud_chunked_roundtrip(dav_any: DavServer, tmp_path: Path) -> None:
    rc = nextcloud(dav_any, tmp_path)
    rng = random.Random(5)
    src, back = tmp_path / "src", tmp_path / "back"
    files = {
        "small.txt": b"not chunked\n",
        "empty.bin": b"",
        "exact.bin": rng.randbytes(2 * MIB),  # an exact multiple of the chunk size
        "d/odd.bin": rng.randbytes(2 * MIB + MIB // 2 + 7),
        "d/just-over.bin": rng.randbytes(MIB + 1),
    }
    chunked = {n: d for n, d in files.items() if len(d) > MIB}
    n_chunks = sum(-(-len(d) // MIB) for d in chunked.values())
    for i, (name, data) in enumerate(sorted(files.items())):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        os.utime(src / name, (1_600_000_000 + i * 86_400,) * 2)

    with access_log() as log:
        stats = rc.transfers("copy", str(src), ":webdav:t")
        assert stats["transfers"] == len(files)
        # One MOVE of .file per chunked file; chunk PUTs plus one PUT per small file.
        log.settle()
        assert log.statuses[("MOVE", "201")] == len(chunked)
        assert log.statuses[("MKCOL", "201")] >= len(chunked)
        assert log.methods["PUT"] == n_chunks + len(files) - len(chunked)
        assert log.methods["PROPPATCH"] == 0  # X-OC-Mtime accepted on PUT and MOVE
    assert uploads_left(dav_any.vault) == 0

    rc.run("check", str(src), ":webdav:t")
    assert rc.hashes("SHA1", ":webdav:t") == {
        n: hashlib.sha1(d).hexdigest() for n, d in files.items()
    }
    rc.run("copy", ":webdav:t", str(back))
    for name, data in files.items():
        assert (back / name).read_bytes() == data
        assert int((back / name).stat().st_mtime) == int((src / name).stat().st_mtime)

    with access_log() as log:
        stats = rc.transfers("sync", str(src), ":webdav:t")
        assert stats["transfers"] == 0
        log.settle()
        assert log.methods["PUT"] == log.methods["MOVE"] == log.methods["MKCOL"] == 0

    # A same-size edit of a chunked file: caught by hash, re-uploaded in chunks over the
    # old version.
    edited = bytearray(files["d/odd.bin"])
    edited[MIB + 5] ^= 1
    (src / "d/odd.bin").write_bytes(bytes(edited))
    os.utime(src / "d/odd.bin", (1_600_000_000,) * 2)
    assert rc.run("check", str(src), ":webdav:t", check=False).returncode != 0
    with access_log() as log:
        assert rc.transfers("sync", str(src), ":webdav:t", "--checksum")["transfers"] == 1
        log.settle()
        assert log.statuses[("MOVE", "204")] == 1
    rc.run("check", str(src), ":webdav:t")

    # Touch: PROPPATCH lastmodified, then PATCH X-Recalculate-Hash.
    with access_log() as log:
        rc.run("touch", ":webdav:t/d/just-over.bin", "--timestamp", "2021-05-06T07:08:09")
        log.settle()
        assert log.statuses[("PATCH", "204")] == 1
    out = rc.run("lsf", "--format", "tp", "--time-format", "unix", ":webdav:t/d").stdout
    assert "1620284889;just-over.bin" in out.splitlines()
    rc.run("check", str(src), ":webdav:t", "--exclude", "d/just-over.bin")
    assert uploads_left(dav_any.vault) == 0
    no_orphans(dav_any.vault)


def test_rclone_nextcloud_interrupted_upload(dav_any: DavServer, tmp_path: Path) -> None:
    """rclone is killed in the middle of a chunked upload; nothing reaches the tree, and the
    next run replaces the stale upload and finishes. No chunk blob is left behind."""
    rc = nextcloud(dav_any, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(9).randbytes(6 * MIB + 123)
    (src / "big.bin").write_bytes(data)

    with access_log() as log:
        proc = rc.start("copy", str(src), ":webdav:t", "--bwlimit", "2M")
        try:
            deadline = time.monotonic() + 30
            while log.statuses[("PUT", "201")] < 2:
                assert proc.poll() is None, "rclone finished before it was interrupted"
                assert time.monotonic() < deadline, "no chunk arrived"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        log.settle()
        assert log.methods["MOVE"] == 0
    assert uploads_left(dav_any.vault) == 1
    listing = rc.run("lsf", "-R", ":webdav:", check=False).stdout
    assert "big.bin" not in listing

    with access_log() as log:
        assert rc.transfers("copy", str(src), ":webdav:t")["transfers"] == 1
        log.settle()
        assert log.statuses[("DELETE", "204")] == 1  # the stale upload directory
        assert log.statuses[("MOVE", "201")] == 1
    rc.run("check", str(src), ":webdav:t", "--download")
    assert uploads_left(dav_any.vault) == 0
    no_orphans(dav_any.vault)
