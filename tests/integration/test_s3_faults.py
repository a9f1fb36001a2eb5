"""Object-store outages and hangs (issue 9, points 4 and 13), on MinIO and on versitygw.

Each test starts a *private* S3 server (never the session one other tests share) and really
SIGSTOPs or kills its process, with a real davserver (32 request threads, as by default) in
front of it:

- a hung store: 40 concurrent GETs of stored (non-inline) files all get 503 with Retry-After
  within 10 s, while PROPFIND, MKCOL, LOCK and GET of an inline file answer within 1 s each;
  PUTs get 503 within 10 s, and so do 40 concurrent PUTs (with the same bound for the
  store-free requests meanwhile, and nothing committed); after SIGCONT everything works
  again, same davserver;
- a dead store (killed): 503 within a few seconds; after a restart on the same port,
  everything works again;
- a GET whose store hangs mid-stream is cut off (the connection closes before
  Content-Length) and logged once as an aborted response, without a traceback.

The measured latencies are printed (``pytest -s``) for the record in the issue.
"""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.davserver import DavClient, DavServer, Response, s3_env, start_dav_server
from tests.harness.minio import (
    MinioServer,
    ensure_minio_binary,
    make_minio_client,
    start_minio,
)
from tests.harness.versitygw import ensure_versitygw_binary, start_versitygw

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]

GETS = 40
HUNG_BOUND = 10.0  # seconds: a hung or dead store's 503 (issue 9, point 4)
FAST_BOUND = 1.0  # seconds: a request that does not need the store, meanwhile
BIG = 64 * 1024  # above storage.inline_max (16 KiB): kept in the object store
LOCKINFO = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
)


@dataclass
class Store:
    name: str
    server: MinioServer
    bucket: str

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid


@pytest.fixture(params=["minio", "versitygw"])
def private_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A private S3 server this test may SIGSTOP or kill; resumed and stopped afterwards."""
    if request.param == "minio":
        server = start_minio(ensure_minio_binary(), tmp_path / "minio")
    else:
        server = start_versitygw(ensure_versitygw_binary(), tmp_path / "versitygw")
    try:
        bucket = "davfault-" + secrets.token_hex(6)
        make_minio_client(server).make_bucket(bucket, location=server.region)
        yield Store(request.param, server, bucket)
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def dav(private_store: Store, tmp_path: Path) -> Iterator[DavServer]:
    env = {
        **s3_env(private_store.server, private_store.bucket),
        "DAVSERVER_SERVER_THREADS": "32",  # the default, as in the measurements
    }
    server = start_dav_server(tmp_path / "data", env)
    try:
        yield server
    finally:
        server.stop()


def hang(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel shows it stopped (delivery is not instant:
    a request sent right after ``kill`` can still be answered)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the store did not stop"
        time.sleep(0.01)


def timed(fn: Callable[[], Response]) -> tuple[Response, float]:
    started = time.monotonic()
    r = fn()
    return r, time.monotonic() - started


def assert_unavailable(r: Response, elapsed: float, what: str) -> None:
    assert r.status == 503, f"{what}: {r.status} {r.text[:200]}"
    retry_after = r.header("Retry-After")
    assert retry_after is not None and int(retry_after) >= 1, f"{what}: no Retry-After"
    assert elapsed < HUNG_BOUND, f"{what} took {elapsed:.1f} s"


def populate(alice: DavClient) -> None:
    for i in range(8):
        assert alice.put(f"/big{i}.bin", os.urandom(BIG)).status == 201
    assert alice.put("/small.txt", b"kept in the index").status == 201
    assert alice.mkcol("/dir").status == 201
    for i in range(8):  # warm: region lookup done, connections pooled
        assert alice.get(f"/big{i}.bin").status == 200


def store_free_requests(alice: DavClient, n: int) -> list[tuple[str, int, float]]:
    """PROPFIND, MKCOL, LOCK/UNLOCK and GET of an inline file, timed."""
    out: list[tuple[str, int, float]] = []
    r, t = timed(lambda: alice.propfind("/", "1"))
    out.append(("PROPFIND", r.status, t))
    r, t = timed(lambda: alice.mkcol(f"/col-{n}"))
    out.append(("MKCOL", r.status, t))
    r, t = timed(
        lambda: alice.request(
            "LOCK", "/small.txt", LOCKINFO, {"Depth": "0", "Timeout": "Second-60"}
        )
    )
    out.append(("LOCK", r.status, t))
    token = r.header("Lock-Token") or ""
    r, t = timed(lambda: alice.request("UNLOCK", "/small.txt", headers={"Lock-Token": token}))
    out.append(("UNLOCK", r.status, t))
    r, t = timed(lambda: alice.get("/small.txt"))
    out.append(("GET inline", r.status, t))
    assert r.body == b"kept in the index"
    return out


def concurrent_gets(
    alice: DavClient, count: int, method: str = "GET"
) -> tuple[list[threading.Thread], list[Any]]:
    """``count`` GETs of stored files (or PUTs of new ones) at once, each timed."""
    results: list[Any] = []
    lock = threading.Lock()
    body = os.urandom(BIG)

    def one(i: int) -> None:
        try:
            if method == "GET":
                r, t = timed(lambda: alice.get(f"/big{i % 8}.bin"))
            else:
                r, t = timed(lambda: alice.put(f"/wave{i}.bin", body))
            item: Any = (r, t)
        except Exception as exc:  # reported by the test, in its own thread
            item = exc
        with lock:
            results.append(item)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    return threads, results


def wait_until_served(alice: DavClient, timeout: float = 30.0) -> float:
    """Seconds until a GET of a stored file works again (the breaker probes the store)."""
    started = time.monotonic()
    while True:
        r = alice.get("/big0.bin")
        if r.status == 200:
            return time.monotonic() - started
        assert r.status == 503, r.status
        assert time.monotonic() - started < timeout, "the store never came back"
        time.sleep(0.5)


def check_all_works(alice: DavClient, tag: str) -> None:
    for i in range(8):
        assert alice.get(f"/big{i}.bin").status == 200
    data = os.urandom(BIG)
    assert alice.put(f"/after-{tag}.bin", data).status == 201
    assert alice.get(f"/after-{tag}.bin").body == data


def test_hung_store(private_store: Store, dav: DavServer) -> None:
    alice = dav.client("alice")
    populate(alice)
    baseline = store_free_requests(alice, 0)
    hang(private_store.pid)
    try:
        threads, results = concurrent_gets(alice, GETS)
        time.sleep(0.3)  # let the GETs take their threads
        during: list[tuple[str, int, float]] = []
        n = 1
        while any(t.is_alive() for t in threads):
            during += store_free_requests(alice, n)
            n += 1
        for t in threads:
            t.join()
    finally:
        os.kill(private_store.pid, signal.SIGCONT)
    get_times = sorted(t for r, t in results if not isinstance(r, Exception))
    print(
        f"\n[{private_store.name}] hung store: {GETS} GETs 503 in "
        f"{get_times[0]:.2f}..{get_times[-1]:.2f} s; store-free requests meanwhile "
        f"max {max((t for _, _, t in during), default=0):.3f} s over {len(during)} "
        f"(baseline max {max(t for _, _, t in baseline):.3f} s)"
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert len(results) == GETS
    for r, t in results:
        assert_unavailable(r, t, "GET")
    assert during, "no store-free request ran while the GETs waited"
    for what, status, t in during:
        assert status in (200, 201, 204, 207), (what, status)
        assert t < FAST_BOUND, f"{what} took {t:.2f} s while the store hung"
    back = wait_until_served(alice)
    print(f"[{private_store.name}] served again {back:.1f} s after SIGCONT")
    check_all_works(alice, "sigcont")

    # PUTs on a hung store, the breaker closed again: each waits for its own timeout. (A PUT
    # refused by an open breaker is answered before its body is read, and the connection
    # closed, which http.client does not survive while it still sends a large body.)
    hang(private_store.pid)
    try:
        big_put, big_put_t = timed(lambda: alice.put("/new-big.bin", os.urandom(9 << 20)))
        put, put_t = timed(lambda: alice.put("/new.bin", os.urandom(BIG)))
    finally:
        os.kill(private_store.pid, signal.SIGCONT)
    print(
        f"[{private_store.name}] hung store: 9 MiB (multipart) PUT 503 in {big_put_t:.2f} s, "
        f"64 KiB PUT 503 in {put_t:.2f} s"
    )
    assert_unavailable(big_put, big_put_t, "multipart PUT")
    assert_unavailable(put, put_t, "PUT")
    wait_until_served(alice)
    check_all_works(alice, "sigcont-put")


def test_hung_store_put_wave(private_store: Store, dav: DavServer) -> None:
    """40 PUTs of stored (non-inline) files on a hung store: the same bounds as for GETs."""
    alice = dav.client("alice")
    populate(alice)
    hang(private_store.pid)
    try:
        threads, results = concurrent_gets(alice, GETS, method="PUT")
        time.sleep(0.3)
        during: list[tuple[str, int, float]] = []
        n = 1
        while any(t.is_alive() for t in threads):
            during += store_free_requests(alice, n)
            n += 1
        for t in threads:
            t.join()
    finally:
        os.kill(private_store.pid, signal.SIGCONT)
    times = sorted(t for r, t in results if not isinstance(r, Exception))
    print(
        f"\n[{private_store.name}] hung store: {GETS} PUTs 503 in "
        f"{times[0]:.2f}..{times[-1]:.2f} s; store-free requests meanwhile "
        f"max {max((t for _, _, t in during), default=0):.3f} s over {len(during)}"
    )
    assert [r for r in results if isinstance(r, Exception)] == []
    for r, t in results:
        assert_unavailable(r, t, "PUT")
    assert during, "no store-free request ran while the PUTs waited"
    for what, status, t in during:
        assert status in (200, 201, 204, 207), (what, status)
        assert t < FAST_BOUND, f"{what} took {t:.2f} s while the store hung"
    wait_until_served(alice)
    check_all_works(alice, "put-wave")
    assert all(alice.get(f"/wave{i}.bin").status == 404 for i in range(GETS))  # none committed


def test_dead_store(private_store: Store, dav: DavServer) -> None:
    alice = dav.client("alice")
    populate(alice)
    proc = private_store.server.process
    assert proc is not None
    proc.kill()
    proc.wait()
    timings = []
    for i in range(5):
        r, t = timed(lambda i=i: alice.get(f"/big{i}.bin"))
        assert_unavailable(r, t, "GET")
        timings.append(t)
    r, t = timed(lambda: alice.put("/new.bin", os.urandom(BIG)))
    assert_unavailable(r, t, "PUT")
    for what, status, took in store_free_requests(alice, 1):
        assert status in (200, 201, 204, 207), (what, status)
        assert took < FAST_BOUND, f"{what} took {took:.2f} s with the store dead"
    print(
        f"\n[{private_store.name}] dead store: GET 503 in {max(timings):.2f} s at most, "
        f"PUT 503 in {t:.2f} s"
    )
    private_store.server.restart()
    back = wait_until_served(alice)
    print(f"[{private_store.name}] served again {back:.1f} s after the restart")
    check_all_works(alice, "restart")


def test_get_cut_mid_stream_is_logged_once(
    private_store: Store,
    dav: DavServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    alice = dav.client("alice")
    populate(alice)
    size = 48 << 20  # more than the socket buffers between the store and us hold
    body = os.urandom(size)
    assert alice.put("/huge.bin", body).status == 201
    caplog.set_level(logging.INFO)
    caplog.clear()
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=60)
    try:
        conn.request("GET", "/huge.bin", headers={"Authorization": alice_auth(alice)})
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == size
        first = resp.read(1 << 20)
        assert first == body[: 1 << 20]
        hang(private_store.pid)
        got = len(first)
        started = time.monotonic()
        while chunk := resp.read(1 << 20):  # b"" once the server closes the connection
            got += len(chunk)
        cut_after = time.monotonic() - started
    finally:
        conn.close()
        os.kill(private_store.pid, signal.SIGCONT)
    assert got < size
    with capfd.disabled():
        print(f"\n[{private_store.name}] GET cut after {got >> 20} MiB, {cut_after:.1f} s")
    time.sleep(0.5)  # the server thread logs after closing the connection
    aborted = [rec for rec in caplog.records if "aborted" in rec.getMessage()]
    assert len(aborted) == 1, [rec.getMessage() for rec in caplog.records]
    assert "GET" in aborted[0].getMessage()
    assert all(rec.exc_info is None for rec in caplog.records if rec.levelno >= logging.WARNING)
    assert "Traceback" not in capfd.readouterr().err
    # The same server serves the file in full once the store is back.
    wait_until_served(alice)
    assert alice.get("/huge.bin").body == body


def alice_auth(alice: DavClient) -> str:
    from tests.harness.davserver import basic

    return basic(alice.user or "", alice.password or "")
