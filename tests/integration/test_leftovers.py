"""Crash leftovers are reclaimed while the server runs (issue 9, point 10).

A real ``davserver serve`` is killed with SIGKILL five times while a large PUT streams into
it, on the local backend (temp files in ``blobs/tmp``) and on MinIO (incomplete multipart
uploads, invisible in listings but holding their parts). The server is started again on the
same data; within one ``gc.interval`` past ``gc.upload_grace`` the bytes in the store — every
file under the blob directory, or every object and every multipart part under the bucket
prefix, as MinIO itself lists them — equal the ciphertext bytes the index references, and no
tracking row of an unfinished upload is left. An upload still sending data when the grace
period has passed is not touched.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error

from davserver.blobs import BlobStore, PartialUpload
from davserver.blobs.local import LocalBlobStore
from davserver.crypto import blobfmt
from davserver.errors import BlobNotFound, StorageError
from tests.harness.davserver import basic, s3_env
from tests.harness.minio import make_minio_client, make_s3_store
from tests.harness.serve import PASSWORD, ServeProcess, init_with_user

MiB = 1 << 20
GRACE = 4  # gc.upload_grace in seconds
INTERVAL = 2  # gc.interval
# Scheduling slack on a loaded machine for the bounded wait: a maintenance round itself
# (listing, deletes, one SQLite transaction per row) plus process start-up.
SLACK = 10
KILLS = 5
ENV = {
    "DAVSERVER_GC_UPLOAD_GRACE": str(GRACE),
    "DAVSERVER_GC_INTERVAL": str(INTERVAL),
    "DAVSERVER_SERVER_WORKERS": "1",
}


class Backend:
    """Where the blobs of one test live, and how to count the bytes there."""

    def __init__(self, data_dir: Path, env: dict[str, str], minio: Any = None) -> None:
        self.data_dir = data_dir
        self.env = env
        self.client: Minio | None = make_minio_client(minio) if minio is not None else None
        self.bucket = env.get("DAVSERVER_STORAGE_S3_BUCKET", "")
        self.prefix = env.get("DAVSERVER_STORAGE_S3_PREFIX", "")

    def stored_bytes(self) -> int:
        """Every byte the store holds, partial uploads included."""
        if self.client is None:
            return sum(
                f.stat().st_size for f in (self.data_dir / "blobs").rglob("*") if f.is_file()
            )
        return sum(
            o.size or 0
            for o in self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True)
        ) + sum(size for _, size in self.multipart_uploads())

    def partial_bytes(self) -> int:
        if self.client is None:
            return sum(f.stat().st_size for f in (self.data_dir / "blobs" / "tmp").iterdir())
        return sum(size for _, size in self.multipart_uploads())

    def multipart_uploads(self) -> list[tuple[str, int]]:
        """(upload id, bytes in its parts) of every incomplete upload under the prefix.
        The whole bucket is listed: MinIO takes a prefix here as an exact object key."""
        assert self.client is not None
        out = []
        page = self.client._list_multipart_uploads(self.bucket)
        assert not page.is_truncated
        for u in page.uploads:
            if not u.object_name.startswith(self.prefix):
                continue
            assert u.upload_id is not None
            try:
                parts = self.client._list_parts(self.bucket, u.object_name, u.upload_id)
            except S3Error as exc:
                if exc.code != "NoSuchUpload":
                    raise
                continue  # the collector aborted it between the two listings: no bytes left
            out.append((u.upload_id, sum(p.size or 0 for p in parts.parts)))
        return out


def referenced_bytes(data_dir: Path) -> int:
    """The ciphertext bytes (DESIGN §5: L = 56 + P + 16·N) of every blob a version points at
    that lives in the store (not inline in the index), read from the SQLite index."""
    with sqlite3.connect(f"file:{data_dir / 'index.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT DISTINCT blob_id, plain_size FROM version "
            "WHERE blob_id NOT IN (SELECT blob_id FROM inline_blob)"
        ).fetchall()
    return sum(blobfmt.ciphertext_size(size, blobfmt.DEFAULT_SEG_LOG2) for _, size in rows)


def unfinished_rows(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'index.db'}?mode=ro", uri=True) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM blob_gc WHERE state = 'uploading'").fetchone()
    return int(n)


def start_put(p: ServeProcess, path: str, length: int) -> socket.socket:
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {p.host}:{p.port}\r\n"
        f"Authorization: {basic('alice', PASSWORD)}\r\nContent-Length: {length}\r\n\r\n"
    )
    s = socket.create_connection((p.host, p.port), timeout=60)
    s.sendall(head.encode("latin-1"))
    return s


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.2)


def kill_mid_put(backend: Backend, round_no: int) -> None:
    """Start the server, stream part of a 64 MiB PUT, and SIGKILL the server once the store
    holds at least 16 MiB of that upload."""
    p = ServeProcess(backend.data_dir, backend.env)
    sock = None
    try:
        before = backend.partial_bytes()
        sock = start_put(p, f"/big-{round_no}.bin", 64 * MiB)
        sent = 0
        while backend.partial_bytes() - before < 16 * MiB:
            assert sent < 48 * MiB, "the upload does not reach the store"
            sock.sendall(os.urandom(MiB))
            sent += MiB
            time.sleep(0.01)
    finally:
        p.kill()
        if sock is not None:
            sock.close()


def kills_leave_bytes_and_they_are_reclaimed(backend: Backend) -> None:
    data = backend.data_dir
    init_with_user(data, backend.env)
    p = ServeProcess(data, backend.env)
    c = p.client()
    keep = {f"/keep-{i}.bin": os.urandom((i + 1) * MiB + 123) for i in range(3)}
    for path, body in keep.items():
        assert c.put(path, body).status == 201
    assert c.put("/inline.txt", b"lives in the index").status == 201
    p.kill()

    for i in range(KILLS):
        kill_mid_put(backend, i)
    killed_at = time.monotonic()
    referenced = referenced_bytes(data)
    leftover = backend.stored_bytes() - referenced
    assert leftover >= KILLS * 16 * MiB, leftover  # what the crashes left behind
    assert unfinished_rows(data) == KILLS

    p = ServeProcess(data, backend.env)
    try:
        # Bounded wait: one maintenance round after the grace period (plus slack).
        wait_for(
            "reclaiming the crash leftovers",
            lambda: backend.stored_bytes() == referenced and unfinished_rows(data) == 0,
            GRACE + INTERVAL + SLACK - (time.monotonic() - killed_at),
        )
        print(
            f"{KILLS} kills left {leftover} bytes beyond the {referenced} referenced; "
            f"reclaimed {time.monotonic() - killed_at:.1f} s after the last kill"
        )
        assert backend.partial_bytes() == 0
        c = p.client()
        for path, body in keep.items():  # nothing referenced was touched
            assert c.get(path).body == body
        assert c.get("/inline.txt").body == b"lives in the index"
        for i in range(KILLS):
            assert c.get(f"/big-{i}.bin").status == 404
    finally:
        code = p.stop()
    assert code == 0
    log = p.log()
    assert "Traceback" not in log
    assert "partial uploads" in log and "left by crashes" in log


def test_local_kill9_leftovers_reclaimed(tmp_path: Path) -> None:
    kills_leave_bytes_and_they_are_reclaimed(Backend(tmp_path / "data", dict(ENV)))


@pytest.mark.s3
def test_s3_kill9_incomplete_multipart_uploads_aborted(
    tmp_path: Path, minio_server: Any, s3_bucket: str
) -> None:
    env = {**ENV, **s3_env(minio_server, s3_bucket)}
    kills_leave_bytes_and_they_are_reclaimed(Backend(tmp_path / "data", env, minio_server))


@pytest.fixture
def local_served(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "data"
    init_with_user(data, ENV)
    p = ServeProcess(data, ENV)
    try:
        yield p
    finally:
        p.kill()


def test_upload_in_flight_past_the_grace_period_is_left_alone(local_served: ServeProcess) -> None:
    """A PUT still sending data after several grace periods and GC rounds completes intact:
    only idle partial uploads are leftovers."""
    p = local_served
    total = 24 * MiB
    body = os.urandom(total)
    sock = start_put(p, "/slow.bin", total)
    started = time.monotonic()
    sent = 0
    step = total // 40
    # 40 steps over about 2 grace periods plus 2 GC rounds: every step well inside the grace.
    pause = (2 * GRACE + 2 * INTERVAL) / 40
    with sock:
        while sent < total:
            sock.sendall(body[sent : sent + step])
            sent += step
            time.sleep(pause)
        assert time.monotonic() - started > GRACE + INTERVAL
        sock.settimeout(60)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    r = p.client().get("/slow.bin")
    assert (r.status, r.body == body) == (200, True)
    assert unfinished_rows(p.data_dir) == 0


# -- the store's side: partial uploads listed with their age, and discarded ---------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    s: BlobStore
    if request.param == "local":
        s = LocalBlobStore(tmp_path / "blobs")
    else:
        server = request.getfixturevalue("minio_server")
        bucket = request.getfixturevalue("s3_bucket")
        s = make_s3_store(server, bucket, part_size=8 * MiB, prefix=f"t-{secrets.token_hex(6)}/")
    try:
        yield s
    finally:
        s.close()


class PausedPut:
    """A ``put`` in a thread whose body stops after ``first`` bytes until ``resume``."""

    def __init__(self, store: BlobStore, first: int, rest: int) -> None:
        self.blob_id = secrets.token_hex(16)
        self.data = os.urandom(first + rest)
        self.first = first
        self._go = threading.Event()
        self._sent = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(store,), daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        for i in range(0, self.first, MiB):
            yield self.data[i : min(i + MiB, self.first)]
        self._sent.set()
        self._go.wait(60)
        for i in range(self.first, len(self.data), MiB):
            yield self.data[i : i + MiB]

    def _run(self, store: BlobStore) -> None:
        try:
            store.put(self.blob_id, self._body())
        except BaseException as exc:  # handed to the test
            self.error = exc

    def mine(self, store: BlobStore, at_least: int) -> PartialUpload:
        """This upload's partial, once it holds ``at_least`` bytes (bounded wait)."""
        assert self._sent.wait(60)
        deadline = time.monotonic() + 30
        while True:
            found = [p for p in store.partial_uploads() if p.blob_id == self.blob_id]
            if found and found[0].size >= at_least:
                assert len(found) == 1
                return found[0]
            assert time.monotonic() < deadline, found
            time.sleep(0.1)

    def finish(self) -> None:
        self._go.set()
        self._thread.join(60)
        assert not self._thread.is_alive()


def test_partial_upload_listed_with_its_idle_time(store: BlobStore) -> None:
    # 17 MiB: on S3 two 8 MiB parts are stored while the body waits.
    put = PausedPut(store, 17 * MiB, 3 * MiB)
    stored = 16 * MiB
    p1 = put.mine(store, stored)
    assert p1.size >= stored and p1.idle >= 0
    time.sleep(1.5)
    p2 = put.mine(store, stored)
    assert p2.handle == p1.handle and p2.idle >= p1.idle + 1.0  # no growth: idle goes up
    put.finish()
    assert put.error is None
    assert store.stat(put.blob_id).size == len(put.data)
    assert [p for p in store.partial_uploads() if p.blob_id == put.blob_id] == []
    assert put.blob_id in set(store.iter_ids())


def test_discarded_partial_fails_its_put_and_leaves_nothing(store: BlobStore) -> None:
    put = PausedPut(store, 17 * MiB, 9 * MiB)
    partial = put.mine(store, 16 * MiB)
    store.discard_partial(partial)
    assert [p for p in store.partial_uploads() if p.blob_id == put.blob_id] == []
    store.discard_partial(partial)  # gone already: fine
    put.finish()
    assert isinstance(put.error, StorageError), put.error
    with pytest.raises(BlobNotFound):
        store.stat(put.blob_id)
    assert [p for p in store.partial_uploads() if p.blob_id == put.blob_id] == []


# -- the collector's side: a tracking row goes only after its bytes -----------------------------


def crashed_upload(vault: Any, age: float) -> tuple[str, Path]:
    """What a PUT killed mid-body leaves: its ``uploading`` row and a temp file, both
    ``age`` seconds old."""
    from davserver.index.models import BlobGC

    blob_id = secrets.token_hex(16)
    with vault.index.connection():
        BlobGC.insert(blob_id=blob_id, state="uploading", since=time.time() - age).execute()
    tmp = Path(vault.blobs.root) / "tmp" / f"{blob_id}.crashed"
    tmp.write_bytes(os.urandom(100_000))
    os.utime(tmp, (time.time() - age,) * 2)
    return blob_id, tmp


def row_kinds(vault: Any) -> list[tuple[str, str]]:
    from davserver.index.models import BlobGC

    with vault.index.connection():
        return [(r.blob_id, r.state) for r in BlobGC.select()]


def test_row_dropped_only_after_the_partial_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from davserver.vault import VaultSettings
    from tests.harness.vaults import FAST, make_vault

    settings = VaultSettings(**{**FAST.__dict__, "upload_grace": 10.0})
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), settings=settings)
    try:
        blob_id, tmp = crashed_upload(vault, age=60)
        real_unlink = os.unlink

        def failing_unlink(path: Any, *a: Any, **kw: Any) -> None:
            if str(path).endswith(".crashed"):
                raise OSError(5, "Input/output error")
            real_unlink(path, *a, **kw)

        # The temp file cannot be removed: the row stays, so the next run tries again.
        monkeypatch.setattr(os, "unlink", failing_unlink)
        vault.collect_garbage()
        assert (blob_id, "uploading") in row_kinds(vault) and tmp.exists()
        assert vault.reclaim_partial_uploads() == (0, 0)
        monkeypatch.undo()
        # Now it can: the bytes go, then the row.
        assert vault.collect_garbage() == 1
        assert not tmp.exists() and row_kinds(vault) == []
    finally:
        vault.close()


def test_young_partial_or_fresh_object_keeps_an_old_row(tmp_path: Path) -> None:
    from davserver.vault import VaultSettings
    from tests.harness.vaults import FAST, make_vault

    settings = VaultSettings(**{**FAST.__dict__, "upload_grace": 10.0})
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), settings=settings)
    try:
        # An old row whose temp file is still growing (written just now): in flight.
        growing, tmp = crashed_upload(vault, age=60)
        os.utime(tmp, None)
        # An old row whose object was stored just now: its commit may be running.
        stored, tmp2 = crashed_upload(vault, age=60)
        tmp2.unlink()
        vault.blobs.put(stored, [b"ciphertext"])
        assert vault.collect_garbage() == 0
        assert vault.reclaim_partial_uploads() == (0, 0)
        assert tmp.exists() and vault.blobs.stat(stored).size == 10
        assert sorted(row_kinds(vault)) == sorted([(growing, "uploading"), (stored, "uploading")])
        # Once both are idle past the grace period they go, bytes first.
        old = time.time() - 60
        os.utime(tmp, (old, old))
        os.utime(Path(vault.blobs.root) / stored[:2] / stored[2:4] / stored, (old, old))
        assert vault.collect_garbage() == 2
        assert not tmp.exists() and row_kinds(vault) == []
        with pytest.raises(BlobNotFound):
            vault.blobs.stat(stored)
    finally:
        vault.close()


@pytest.mark.s3
def test_foreign_multipart_uploads_are_left_alone(minio_server: Any, s3_bucket: str) -> None:
    """A bucket may be shared (an empty prefix): only uploads of our own blob keys count."""
    store = make_s3_store(minio_server, s3_bucket, part_size=8 * MiB, prefix="")
    client = make_minio_client(minio_server)
    theirs = [
        client._create_multipart_upload(s3_bucket, key, {})
        for key in ("other-app/video.mp4", "not-a-blob-id")
    ]
    ours_id = secrets.token_hex(16)
    ours = client._create_multipart_upload(s3_bucket, ours_id, {})
    try:
        found = list(store.partial_uploads())
        assert [p.blob_id for p in found] == [ours_id]
        assert found[0].size == 0 and found[0].idle >= 0
        store.discard_partial(found[0])
        left = {u.upload_id for u in client._list_multipart_uploads(s3_bucket).uploads}
        assert ours not in left and set(theirs) <= left
    finally:
        for key, uid in zip(("other-app/video.mp4", "not-a-blob-id"), theirs, strict=True):
            client._abort_multipart_upload(s3_bucket, key, uid)
        store.close()
