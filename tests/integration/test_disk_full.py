"""Full disks (issue 9, point 9), really filled: a small tmpfs holds the whole data dir as
``davserver init`` lays it out (SQLite index and blob directory side by side), and a real
``davserver serve`` runs on it.

The disk is filled two ways: by a file that takes every last byte, and by a PUT larger than
the free space. Either way writes answer 507 with ``DAV:sufficient-disk-space`` (never 500,
never ``quota-not-exceeded``) with nothing committed and the old version intact; reads keep
working; DELETE still answers 204 on the completely full disk (the space reserve); and once
space is freed the server takes writes again and puts its reserve back.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.davserver import DavClient, DavServer, basic, s3_env, start_dav_server
from tests.harness.minio import (
    MinioUnavailableError,
    ensure_minio_binary,
    make_minio_client,
    start_minio,
)
from tests.harness.serve import PASSWORD, ServeProcess, init_with_user

MiB = 1 << 20
FS_SIZE = 32 * MiB
RESERVE = 2 * MiB
GC_INTERVAL = 1
ENV = {
    "DAVSERVER_STORAGE_RESERVE_BYTES": str(RESERVE),
    "DAVSERVER_GC_INTERVAL": str(GC_INTERVAL),
    "DAVSERVER_SERVER_WORKERS": "1",
}
DISK_FULL = b"sufficient-disk-space"
QUOTA = b"quota-not-exceeded"


@contextlib.contextmanager
def tmpfs(mnt: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``mnt``, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt", FS_SIZE) as mnt:
        yield mnt


@pytest.fixture
def served(small_fs: Path) -> Iterator[ServeProcess]:
    data = small_fs / "data"
    init_with_user(data, ENV)
    p = ServeProcess(data, ENV, log_path=small_fs.parent / "serve.log")
    try:
        wait_for_reserve(data)
        yield p
    finally:
        p.kill()


def wait_for_reserve(data: Path) -> None:
    """``serve`` creates its space reserve as its maintenance loop starts (bounded wait)."""
    reserve = data / "space-reserve"
    wait_for(
        "creating the space reserve",
        lambda: reserve.exists() and reserve.stat().st_size == RESERVE,
        GC_INTERVAL + 10,
    )


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path) -> None:
    """Write ``path`` until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (MiB, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\xff" * block)
    finally:
        os.close(fd)
    assert free(path.parent) == 0


def assert_disk_full(status: int, body: bytes) -> None:
    assert status == 507, (status, body[:300])
    assert DISK_FULL in body and QUOTA not in body, body[:300]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.2)


def raw_put(
    p: ServeProcess | DavServer, path: str, size: int, password: str = PASSWORD
) -> tuple[int, bytes]:
    """PUT ``size`` random bytes over a raw socket; return the status and body of the answer
    even if the server hangs up before the body was sent (as it does when it refuses a body
    it has not read, or when the disk fills mid-body)."""
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {p.host}:{p.port}\r\n"
        f"Authorization: {basic('alice', password)}\r\nContent-Length: {size}\r\n\r\n"
    )
    answer = b""
    with socket.create_connection((p.host, p.port), timeout=60) as s:
        s.sendall(head.encode("latin-1"))
        sent = 0
        try:
            while sent < size:
                block = os.urandom(min(MiB, size - sent))
                s.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(OSError):
            s.settimeout(30)
            while chunk := s.recv(65536):
                answer += chunk
                if b"</D:error>" in answer or b"</ns0:error>" in answer:
                    break
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:300]
    return int(head[9:12]), body


def test_full_disk_writes_507_reads_and_deletes_work_and_it_recovers(
    served: ServeProcess, small_fs: Path
) -> None:
    c = served.client()
    data = served.data_dir
    reserve = data / "space-reserve"
    assert reserve.stat().st_size == RESERVE  # made at start (the served fixture waits)
    keep, old = os.urandom(3 * MiB), os.urandom(300_000)
    assert c.put("/keep.bin", keep).status == 201
    assert c.put("/old.bin", old).status == 201
    assert c.put("/small.txt", b"inline, lives in the index").status == 201
    assert c.mkcol("/dir").status == 201
    assert c.put("/dir/inner.bin", os.urandom(500_000)).status == 201

    filler = small_fs / "filler"
    fill(filler)

    # Writes: 507 with the disk-space condition, through the index and through the blobs.
    assert_disk_full(*raw_put(served, "/new.bin", MiB))
    assert_disk_full(*raw_put(served, "/old.bin", 400_000))  # an overwrite: the old one stays
    r = c.put("/tiny.txt", b"0123456789")  # inline: only the index is written
    assert_disk_full(r.status, r.body)
    r = c.mkcol("/dir2")
    assert_disk_full(r.status, r.body)

    # Reads keep working and see nothing of the refused writes.
    r = c.get("/keep.bin")
    assert (r.status, r.body == keep) == (200, True)
    r = c.get("/old.bin")
    assert (r.status, r.body == old) == (200, True)
    assert c.get("/new.bin").status == 404
    assert c.get("/tiny.txt").status == 404
    r = c.propfind("/", "1")
    assert r.status == 207
    for name in (b"keep.bin", b"old.bin", b"small.txt", b"dir"):
        assert name in r.body
    assert b"new.bin" not in r.body and b"dir2" not in r.body

    # DELETE on the completely full disk: a file that lived in the index (frees no disk
    # space by itself), then a whole directory.
    assert free(small_fs) == 0
    assert c.delete("/small.txt").status == 204
    assert c.get("/small.txt").status == 404
    fill(filler)  # take whatever that freed, too
    assert c.delete("/dir").status == 204
    assert c.get("/dir/inner.bin").status == 404
    assert c.propfind("/dir", "0").status == 404

    # Space is freed: writes work again and the reserve comes back within a GC round.
    filler.unlink()
    wait_for(
        "filling up the space reserve",
        lambda: reserve.exists() and reserve.stat().st_size == RESERVE,
        GC_INTERVAL + 10,
    )
    new = os.urandom(MiB)
    assert c.put("/new.bin", new).status == 201
    assert c.get("/new.bin").body == new
    assert c.mkcol("/dir2").status == 201
    assert c.put("/tiny.txt", b"0123456789").status == 201
    assert c.get("/keep.bin").body == keep

    assert served.stop() == 0
    log = served.log()
    assert "Traceback" not in log and " 500" not in log, log[-3000:]
    assert "disk full" in log  # the operator is told


def test_put_larger_than_the_free_space(served: ServeProcess, small_fs: Path) -> None:
    c = served.client()
    old = os.urandom(200_000)
    assert c.put("/f.bin", old).status == 201
    before = free(small_fs)
    assert_disk_full(*raw_put(served, "/f.bin", before + 4 * MiB))  # the PUT fills the disk
    # Nothing committed, the old version intact, and the partial blob's space given back.
    r = c.get("/f.bin")
    assert (r.status, r.body == old) == (200, True)
    assert os.listdir(served.data_dir / "blobs" / "tmp") == []
    assert free(small_fs) >= before - MiB
    # The server goes on as before.
    new = os.urandom(2 * MiB)
    assert c.put("/f.bin", new).status == 204
    assert c.get("/f.bin").body == new
    assert c.mkcol("/d").status == 201
    assert served.stop() == 0
    log = served.log()
    assert "Traceback" not in log and " 500" not in log, log[-3000:]


def test_lock_and_delete_on_a_full_disk(served: ServeProcess, small_fs: Path) -> None:
    """A LOCK writes a lock row: refused like any write. The file can still be deleted."""
    c: DavClient = served.client()
    assert c.put("/a.bin", os.urandom(MiB)).status == 201
    fill(small_fs / "filler")
    r = c.request("LOCK", "/a.bin", _LOCK_BODY, {"Timeout": "Second-60"})
    assert_disk_full(r.status, r.body)
    assert c.get("/a.bin").status == 200
    assert c.delete("/a.bin").status == 204
    assert c.propfind("/", "1").status == 207
    assert served.stop() == 0
    assert "Traceback" not in served.log()


def test_server_started_on_a_full_disk(small_fs: Path) -> None:
    """Restarted on a disk that filled while it was down (SQLite must re-create its -shm
    file to open the index at all): logins, reads and deletes work, writes are 507."""
    data = small_fs / "data"
    init_with_user(data, ENV)
    assert not (data / "space-reserve").exists()  # the CLI makes none, only serve does
    p = ServeProcess(data, ENV, log_path=small_fs.parent / "serve.log")
    c = p.client()
    keep = os.urandom(MiB)
    assert c.put("/keep.bin", keep).status == 201
    assert c.put("/gone.txt", b"small").status == 201
    wait_for_reserve(data)
    assert p.stop() == 0
    fill(small_fs / "filler")
    p = ServeProcess(data, ENV, log_path=small_fs.parent / "serve.log")
    try:
        c = p.client()
        assert DavClient(p.url, "alice", "wrong password").propfind("/", "0").status == 401
        r = c.get("/keep.bin")
        assert (r.status, r.body == keep) == (200, True)
        assert c.propfind("/", "1").status == 207
        fill(small_fs / "filler")
        assert_disk_full(*raw_put(p, "/new.bin", MiB))
        assert c.delete("/gone.txt").status == 204
        assert c.get("/gone.txt").status == 404
    finally:
        code = p.stop()
    assert code == 0
    assert "Traceback" not in p.log()


_LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>t</D:owner></D:lockinfo>"
)


@pytest.mark.s3
def test_full_minio_drive_is_507_disk_space(tmp_path: Path) -> None:
    """MinIO's own drive fills: the PUT is a 507 with the disk-space condition, not a 503."""
    with tmpfs(tmp_path / "mnt", 64 * MiB) as mnt:
        try:
            minio = start_minio(ensure_minio_binary(), mnt)
        except MinioUnavailableError as exc:
            pytest.skip(f"MinIO did not start on a tmpfs: {exc}")
        dav = None
        try:
            make_minio_client(minio).make_bucket("davfull")
            dav = start_dav_server(tmp_path / "data", s3_env(minio, "davfull"))
            c = dav.client("alice")
            keep = os.urandom(4 * MiB)
            assert c.put("/keep.bin", keep).status == 201
            fill(mnt / "filler")
            assert_disk_full(*raw_put(dav, "/big.bin", 12 * MiB, dav.users["alice"]))
            r = c.get("/keep.bin")
            assert (r.status, r.body == keep) == (200, True)
            assert c.get("/big.bin").status == 404
            assert c.delete("/keep.bin").status == 204
            (mnt / "filler").unlink()
            big = os.urandom(12 * MiB)
            # MinIO checks free space against drive information it caches for a while.
            wait_for("MinIO taking writes again", lambda: c.put("/big.bin", big).status == 201, 30)
            assert c.get("/big.bin").body == big
        finally:
            if dav is not None:
                dav.stop()
            minio.stop()
