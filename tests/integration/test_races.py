"""Concurrent clients against a real server (issue 9, found by bench/load.py): every answer
belongs to one state of the tree, no refused request leaves a trace, no lock is lost.

- a GET (whole, ranged, HEAD) serves exactly the version whose size and ETag it announces
  while another client keeps overwriting the file;
- a LOCK answered 423 on an unmapped URL leaves no empty file behind;
- a PUT, MOVE, COPY or DELETE racing a LOCK either sees the lock (423) or happens before it is
  granted: a granted lock is never dropped under its holder (who then PUTs and UNLOCKs with
  it), also with two server processes on one index;
- a lock whose resource is being removed never turns a LOCK response into a 500;
- two MKCOLs of one name answer 201 and 405, never 412.

Each test runs threads of raw HTTP clients (``http.client``); the races are hit by repetition,
and each test fails on the code before the fix in most runs.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from davserver.vault.locks import LockStore
from tests.harness.davserver import (
    DavClient,
    DavServer,
    basic,
    env_without_davserver,
    start_dav_server,
)

# Generous: a GET of a few KiB takes milliseconds; one that waits this long has hung.
TIMEOUT = 60.0

LOCKINFO = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>race</D:owner></D:lockinfo>"
)


class Raw:
    """One keep-alive connection; a timeout or broken answer is recorded, not raised."""

    def __init__(self, client: DavClient) -> None:
        u = urlsplit(client.base_url)
        self.host, self.port = str(u.hostname), int(u.port or 80)
        self.auth = basic(client.user or "", client.password or "")
        self.conn: http.client.HTTPConnection | None = None
        self.base = client.base_url.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        hdrs = {"Authorization": self.auth, **(headers or {})}
        try:
            self.conn.request(method, quote(path), body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return -1, {"error": type(exc).__name__}, b""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_threads(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
        assert not t.is_alive(), "a client thread did not finish"
    if errors:
        raise errors[0]


def body_of(n: int, size: int) -> bytes:
    """A unique, self-describing body: write number and size, then filler from them."""
    head = f"write {n:08d} size {size}\n".encode()
    return (head * (size // len(head) + 1))[:size]


# -- 1. torn GET ------------------------------------------------------------------------------


def test_get_serves_the_version_it_announces(dav_any: DavServer) -> None:
    """One client overwrites /x (2000 and 4000 bytes in turn) while others GET, HEAD and GET
    ranges of it: every answer's Content-Length, ETag and bytes belong to one version."""
    client = dav_any.client("alice")
    by_etag: dict[str, bytes] = {}
    first = body_of(0, 2000)
    r = client.put("/x", first)
    assert r.status == 201
    by_etag[str(r.header("ETag"))] = first
    done = threading.Event()
    seen: list[tuple[str, int, dict[str, str], bytes, str]] = []
    seen_lock = threading.Lock()

    def writer() -> None:
        raw = Raw(client)
        n = 1
        try:
            while not done.is_set():
                data = body_of(n, 2000 if n % 2 == 0 else 4000)
                status, headers, _ = raw.request("PUT", "/x", data)
                assert status == 204, (status, headers)
                by_etag[headers["etag"]] = data
                n += 1
        finally:
            raw.close()

    last_etag = [next(iter(by_etag))]

    def reader(kind: str, count: int) -> Callable[[], None]:
        def run() -> None:
            raw = Raw(client)
            try:
                for _ in range(count):
                    if_range = ""
                    if kind == "range":
                        if_range = last_etag[0]
                        hdrs = {"Range": "bytes=1000-2999", "If-Range": if_range}
                        status, headers, data = raw.request("GET", "/x", None, hdrs)
                    else:
                        status, headers, data = raw.request(kind, "/x")
                    if "etag" in headers:
                        last_etag[0] = headers["etag"]
                    with seen_lock:
                        seen.append((kind, status, headers, data, if_range))
            finally:
                raw.close()

        return run

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    try:
        run_threads(
            reader("GET", 300), reader("GET", 300), reader("range", 300), reader("HEAD", 200)
        )
    finally:
        done.set()
        writing.join(TIMEOUT)
    assert not writing.is_alive()
    assert len(by_etag) > 20, "the writer hardly wrote: the test proves nothing"
    _check_get_answers(seen, by_etag)


def _check_get_answers(
    seen: list[tuple[str, int, dict[str, str], bytes, str]], by_etag: dict[str, bytes]
) -> None:
    bad = []
    for kind, status, headers, data, if_range in seen:
        if status == -1:
            bad.append(f"{kind}: no answer ({headers.get('error')})")
            continue
        if status not in (200, 206):
            bad.append(f"{kind}: status {status}")
            continue
        etag = headers.get("etag", "")
        version = by_etag.get(etag)
        if version is None:
            bad.append(f"{kind}: ETag {etag} names no write")
            continue
        length = int(headers.get("content-length", "-1"))
        if kind == "HEAD":
            if length != len(version):
                bad.append(f"HEAD: Content-Length {length} for a {len(version)}-byte version")
            continue
        if len(data) != length:
            bad.append(f"{kind}: {len(data)} bytes for Content-Length {length}")
        if status == 206:
            if if_range and etag != if_range:
                bad.append(f"range: 206 of {etag} for If-Range {if_range}")
            want = version[1000:3000]
            if headers.get("content-range") != f"bytes 1000-{999 + len(want)}/{len(version)}":
                bad.append(f"range: Content-Range {headers.get('content-range')}")
        else:
            want = version
        if data != want:
            bad.append(f"{kind}: bytes of another version: {data[:30]!r} for ETag {etag}")
    assert not bad, f"{len(bad)} of {len(seen)} answers inconsistent: {bad[:5]}"


def test_an_open_reader_keeps_the_blob_of_a_replaced_version(dav_any: DavServer) -> None:
    """The garbage collector leaves the blob of a version being read (this process) until the
    reader closes; a reader asked for a removed version gets VersionGone, not other bytes."""
    from davserver.errors import VersionGone

    session = dav_any.vault.login("alice", dav_any.users["alice"])
    old, new = body_of(1, 300_000), body_of(2, 200_000)  # above inline_max: real blobs
    session.write_file("/big", [old], expected_length=len(old))
    entry = session.stat("/big")
    reader = session.open_file("/big", version_id=entry.version_id)
    blob_id = reader._blob_id
    session.write_file("/big", [new], expected_length=len(new))
    # Versions are kept: removing the old one (which collects garbage after) frees its blob.
    session.delete_version(entry.fileid, 1)
    assert dav_any.vault.collect_garbage(grace=0) == 0
    assert reader.read_all() == old
    reader.close()
    with pytest.raises(VersionGone):
        session.open_file("/big", version_id=entry.version_id)
    assert dav_any.vault.collect_garbage(grace=0) == 1
    assert blob_id not in set(dav_any.vault.blobs.iter_ids())
    assert session.open_file("/big").read_all() == new


# -- 2. a refused LOCK leaves nothing -------------------------------------------------------


def _stale_lock(dav: DavServer, path: str) -> None:
    """A lock row on a name that holds nothing (what the MOVE/LOCK race of point 3 left)."""
    store = LockStore(dav.vault)
    user_id = dav.vault.login("alice", dav.users["alice"]).user_id
    url = "/" + user_id + path
    record = {
        "root": url,
        "type": "write",
        "scope": "exclusive",
        "depth": "0",
        "owner": "<D:owner xmlns:D='DAV:'>other</D:owner>",
        "principal": "alice",
    }
    store.create(user_id, path, record, 600)


def test_refused_lock_on_an_unmapped_url_creates_nothing(dav_any: DavServer) -> None:
    """LOCK of an unmapped URL creates an empty file only when the lock is granted."""
    client = dav_any.client("alice")
    _stale_lock(dav_any, "/gone")
    r = client.request("LOCK", "/gone", LOCKINFO, {"Timeout": "Second-60"})
    assert r.status == 423
    assert client.get("/gone").status == 404
    listing = client.propfind("/", "1")
    assert listing.status == 207 and b"/gone" not in listing.body
    # A granted one still creates the file (RFC 4918 §7.3).
    r = client.request("LOCK", "/new", LOCKINFO, {"Timeout": "Second-60"})
    assert r.status == 201
    got = client.get("/new")
    assert got.status == 200 and got.body == b""


# -- 3./4. tree changes racing LOCK ---------------------------------------------------------


def _lock_holder(raw: Raw, path: str, cycles: int, problems: list[str]) -> None:
    """LOCK, PUT with the token, GET, UNLOCK, again: a granted lock must hold throughout."""
    granted = 0
    for n in range(cycles):
        status, headers, body = raw.request(
            "LOCK", path, LOCKINFO.encode(), {"Timeout": "Second-120"}
        )
        if status >= 500 or status < 0:
            problems.append(f"LOCK {status}: {body[:200]!r}")
            continue
        if status not in (200, 201):
            continue  # 423: the other client's change was under way; 409/404: no parent
        granted += 1
        token = headers["lock-token"].strip("<>")
        data = body_of(n, 300)
        s, _, b = raw.request("PUT", path, data, {"If": f"(<{token}>)"})
        if s not in (201, 204):
            problems.append(f"PUT with the token of a granted lock: {s} {b[:200]!r}")
        s, _, b = raw.request("GET", path)
        if s != 200 or b != data:
            problems.append(f"GET of a locked file after its holder's PUT: {s} {b[:40]!r}")
        s, _, b = raw.request("UNLOCK", path, None, {"Lock-Token": f"<{token}>"})
        if s != 204:
            problems.append(f"UNLOCK of a granted lock: {s} {b[:200]!r}")
    if granted < 10:
        problems.append(f"only {granted} locks granted: the race was hardly run")


def _tree_changer(raw: Raw, target: str, stop: threading.Event, problems: list[str]) -> None:
    """PUT, COPY, MOVE onto and DELETE of ``target``, without its lock token."""
    n = 0
    while not stop.is_set():
        n += 1
        raw.request("PUT", "/src", body_of(n, 200))
        status, _, body = raw.request("PUT", target, body_of(n, 5000))
        if status >= 500 or status < 0:
            problems.append(f"PUT {status}: {body[:200]!r}")
        dest = {"Destination": raw.base + quote(target), "Overwrite": "T"}
        for method, path, hdrs in (
            ("COPY", "/src", dest),
            ("DELETE", target, {}),
            ("MOVE", "/src", dest),
            ("DELETE", target, {}),
        ):
            status, _, body = raw.request(method, path, None, hdrs)
            if status >= 500 or status < 0:
                problems.append(f"{method} {status}: {body[:200]!r}")


def _race_lock_with_tree_changes(holder: DavClient, changer: DavClient) -> None:
    problems: list[str] = []
    stop = threading.Event()
    a, b = Raw(holder), Raw(changer)

    def hold() -> None:
        try:
            _lock_holder(a, "/t", 150, problems)
        finally:
            stop.set()

    run_threads(hold, lambda: _tree_changer(b, "/t", stop, problems))
    a.close()
    b.close()
    assert not problems, f"{len(problems)} problems: {problems[:5]}"


def test_move_copy_delete_never_drop_a_lock_granted_meanwhile(dav_any: DavServer) -> None:
    """A MOVE/COPY/DELETE that started before a LOCK was granted either sees it (423) or
    changes the tree before the grant: the holder's PUT and UNLOCK then work."""
    client = dav_any.client("alice")
    _race_lock_with_tree_changes(client, client)


@pytest.mark.slow
def test_lock_atomicity_across_two_server_processes(tmp_path: Path) -> None:
    """The same race with the LOCK holder on one server process and the tree changes on
    another, on one index (what ``server.workers`` and two servers on one data dir do)."""
    dav = start_dav_server(tmp_path / "data")
    proc = None
    try:
        env = {
            **env_without_davserver(),
            "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
            "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": str(8 << 20),
        }
        cmd = [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(dav.data_dir)]
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" at ", 1)[1].strip()
        other = DavClient(url, "alice", dav.users["alice"])
        _race_lock_with_tree_changes(dav.client("alice"), other)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        dav.stop()


# -- 5. MKCOL -------------------------------------------------------------------------------


def test_concurrent_mkcol_of_one_name_is_201_and_405(dav_any: DavServer) -> None:
    _race_mkcol(dav_any.client("alice"))


@pytest.fixture
def dav_pg(tmp_path: Path, postgres_db_url: str) -> Iterator[DavServer]:
    """A server on a PostgreSQL index (read committed: the races differ from SQLite's)."""
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_INDEX_URL": postgres_db_url})
    try:
        yield dav
    finally:
        dav.stop()


def test_races_on_postgres(dav_pg: DavServer) -> None:
    """MKCOL (a unique-index violation was a 500 there) and lock atomicity."""
    client = dav_pg.client("alice")
    _race_mkcol(client)
    _race_lock_with_tree_changes(client, client)


def _race_mkcol(client: DavClient) -> None:
    statuses: dict[str, list[int]] = {}
    names = [f"/c{i}" for i in range(40)]

    def make(name: str, barrier: threading.Barrier) -> Callable[[], None]:
        def run() -> None:
            raw = Raw(client)
            barrier.wait(TIMEOUT)
            statuses.setdefault(name, []).append(raw.request("MKCOL", name)[0])
            raw.close()

        return run

    for name in names:
        barrier = threading.Barrier(3)
        run_threads(*(make(name, barrier) for _ in range(3)))
    bad = {n: sorted(s) for n, s in statuses.items() if sorted(s) != [201, 405, 405]}
    assert not bad, bad
