"""``/healthz`` and ``/readyz`` against real dependencies that really go away.

The object store is a private MinIO process of this module's own, stopped with SIGSTOP
(it hangs: connections are accepted, nothing answers), resumed with SIGCONT, killed with
SIGKILL and started again on the same port and data. The index is a private PostgreSQL
cluster, stopped with ``pg_ctl stop`` and started again. Meanwhile ``/readyz`` must turn 503
within its timeout (``health.timeout``, 1 s here), naming the part that failed, and 200 once
it is back; ``/healthz`` must stay 200. Neither asks for credentials or tells anything about
the server (versions, hosts, users, paths, passwords).

The only timing assertions are the bounded waits the issue names: a 503 within the timeout
(plus ``MARGIN`` for a loaded machine) and a 200 within ``RECOVERY`` seconds of the return.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davserver import __version__
from tests.harness.davserver import DavServer, Response, s3_env, start_dav_server
from tests.harness.minio import (
    MinioServer,
    ensure_minio_binary,
    free_port,
    make_minio_client,
    start_minio,
)

TIMEOUT = 1  # health.timeout for these tests
MARGIN = 3.0  # seconds a loaded machine may add to the timeout
RECOVERY = 60.0  # seconds the dependency may take to answer again after it returned


def _json(resp: Response) -> dict[str, Any]:
    assert resp.header("Content-Type") == "application/json"
    assert resp.header("Cache-Control") == "no-store"
    data = json.loads(resp.body)
    assert isinstance(data, dict)
    return data


def _timed(dav: DavServer, path: str, method: str = "GET") -> tuple[Response, float]:
    started = time.monotonic()
    resp = dav.client().request(method, path)
    return resp, time.monotonic() - started


def _ready_within(dav: DavServer, seconds: float) -> Response:
    """Poll /readyz until it is 200, at most ``seconds``; the last answer."""
    started = time.monotonic()
    deadline = started + seconds
    while True:
        resp = dav.client().request("GET", "/readyz")
        if resp.status == 200 or time.monotonic() > deadline:
            print(f"/readyz {resp.status} after {time.monotonic() - started:.2f} s of polling")
            return resp
        time.sleep(0.2)


def _assert_unready(dav: DavServer, part: str, how: tuple[str, ...]) -> dict[str, Any]:
    resp, took = _timed(dav, "/readyz")
    assert resp.status == 503, resp.text
    assert took <= TIMEOUT + MARGIN, f"/readyz took {took:.1f} s"
    assert resp.header("Retry-After") == "5"
    data = _json(resp)
    assert data["status"] == "unavailable"
    assert data["checks"][part] in how, data
    print(f"/readyz 503 {data['checks']} in {took:.2f} s")
    return data


def _assert_alive(dav: DavServer) -> None:
    resp, took = _timed(dav, "/healthz")
    assert resp.status == 200 and _json(resp) == {"status": "ok"}
    assert took <= MARGIN  # it waits for nothing


def _secrets_of(dav: DavServer, *extra: str) -> list[str]:
    """What no health answer may contain."""
    words = [__version__, "WsgiDAV", "wsgidav", "cheroot", "Python", "peewee", "alice"]
    words += [str(dav.data_dir), *dav.users.values(), *extra]
    return [w for w in words if w]


def _assert_leaks_nothing(resp: Response, words: list[str]) -> None:
    everything = resp.text + "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    for word in words:
        assert word not in everything, f"{word!r} in a health answer"
    assert resp.header("WWW-Authenticate") is None
    assert (resp.header("Server") or "davserver") == "davserver"


# -- without any dependency going away ------------------------------------------------------


@pytest.fixture
def local_dav(tmp_path: Path) -> Iterator[DavServer]:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_HEALTH_TIMEOUT": str(TIMEOUT)})
    try:
        yield dav
    finally:
        dav.stop()


def test_both_answer_without_credentials_and_say_nothing(local_dav: DavServer) -> None:
    words = _secrets_of(local_dav)
    alive = local_dav.client().request("GET", "/healthz")
    assert alive.status == 200 and _json(alive) == {"status": "ok"}
    ready = local_dav.client().request("GET", "/readyz")
    assert ready.status == 200
    assert _json(ready) == {"status": "ok", "checks": {"index": "ok", "blobs": "ok"}}
    head = local_dav.client().request("HEAD", "/readyz")
    assert head.status == 200 and head.body == b""
    for resp in (alive, ready, head):
        _assert_leaks_nothing(resp, words)
    # With (wrong) credentials they answer the same: no login is attempted.
    wrong = local_dav.client("alice", "not the password").request("GET", "/readyz")
    assert wrong.status == 200


def test_other_methods_are_refused_and_the_tree_is_still_webdav(local_dav: DavServer) -> None:
    for method in ("PUT", "PROPFIND", "DELETE", "POST"):
        resp = local_dav.client("alice").request(method, "/healthz")
        assert resp.status == 405, method
        assert resp.header("Allow") == "GET, HEAD"
    alice = local_dav.client("alice")
    assert alice.put("/healthz.txt", b"mine").status == 201
    assert alice.get("/healthz.txt").body == b"mine"
    assert local_dav.client().request("GET", "/healthz.txt").status == 401
    # /readyz/… is not the probe: it is a path in the user's tree.
    assert alice.request("GET", "/readyz/x").status == 404
    # A top-level file named like a probe stays reachable under the Nextcloud alias.
    nc = "/remote.php/dav/files/alice/healthz"
    assert alice.put(nc, b"shadowed at /healthz").status == 201
    assert alice.get(nc).body == b"shadowed at /healthz"
    assert _json(alice.get("/healthz")) == {"status": "ok"}


def test_probes_stay_out_of_the_access_log_at_info(
    local_dav: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="davserver.access")
    alice = local_dav.client("alice")
    assert alice.request("GET", "/healthz").status == 200
    assert alice.request("GET", "/readyz").status == 200
    assert alice.request("PROPFIND", "/", headers={"Depth": "0"}).status == 207
    deadline = time.monotonic() + 10  # the line is written once the response is sent
    while len([r for r in caplog.records if r.name == "davserver.access"]) < 3:
        assert time.monotonic() < deadline, caplog.records
        time.sleep(0.05)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "davserver.access"]
    assert [level for level, msg in lines if " GET " in msg] == [logging.DEBUG] * 2
    assert [level for level, msg in lines if " PROPFIND " in msg] == [logging.INFO]


def test_a_missing_blob_directory_is_not_ready(local_dav: DavServer) -> None:
    blobs = local_dav.config.resolve_path(local_dav.config.storage.local.path)
    moved = blobs.with_name("blobs-away")
    os.rename(blobs, moved)
    try:
        _assert_unready(local_dav, "blobs", ("failed",))
        _assert_alive(local_dav)
    finally:
        os.rename(moved, blobs)
    assert _ready_within(local_dav, RECOVERY).status == 200


# -- the object store hangs, dies and comes back --------------------------------------------


class PrivateMinio:
    """A MinIO process of this test's own, which it may stop, kill and start again."""

    def __init__(self, workdir: Path) -> None:
        self.binary = ensure_minio_binary()
        self.workdir = workdir
        self.server: MinioServer = start_minio(self.binary, workdir)

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def kill(self) -> None:
        proc = self.server.process
        assert proc is not None
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process is killed as well, but be sure
        proc.kill()
        proc.wait(10)

    def start_again(self) -> None:
        """Same port, data and credentials (``start_minio`` picks a new port)."""
        s = self.server
        env = dict(
            os.environ,
            MINIO_ROOT_USER=s.access_key,
            MINIO_ROOT_PASSWORD=s.secret_key,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
        )
        argv = [
            str(self.binary), "server", str(self.workdir / "data"),
            "--address", s.endpoint, "--console-address", f"127.0.0.1:{free_port()}", "--quiet",
        ]  # fmt: skip
        with open(self.workdir / "minio-again.log", "ab") as log:  # the child keeps its copy
            s.process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        proc = self.server.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self.server.stop()


def _readyz_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "readyz-blobs"]


def test_readyz_follows_a_hung_then_dead_object_store(tmp_path: Path) -> None:
    minio = PrivateMinio(tmp_path / "minio")
    dav: DavServer | None = None
    try:
        bucket = "health-" + secrets.token_hex(4)
        make_minio_client(minio.server).make_bucket(bucket)
        env = {**s3_env(minio.server, bucket), "DAVSERVER_HEALTH_TIMEOUT": str(TIMEOUT)}
        dav = start_dav_server(tmp_path / "data", env)
        words = _secrets_of(dav, minio.server.endpoint, minio.server.secret_key, bucket)
        assert _ready_within(dav, RECOVERY).status == 200

        # Hung: MinIO accepts connections and answers nothing.
        os.kill(minio.pid, signal.SIGSTOP)
        data = _assert_unready(dav, "blobs", ("timeout",))
        assert data["checks"]["index"] == "ok"
        _assert_alive(dav)
        # Asked again while the first check still hangs: the same check, no second thread.
        resp, _ = _timed(dav, "/readyz")
        assert resp.status == 503
        _assert_leaks_nothing(resp, words)
        assert len(_readyz_threads()) == 1

        os.kill(minio.pid, signal.SIGCONT)
        assert _ready_within(dav, RECOVERY).status == 200

        # Dead: nothing listens.
        minio.kill()
        data = _assert_unready(dav, "blobs", ("failed", "timeout"))
        assert data["checks"]["index"] == "ok"
        _assert_alive(dav)

        minio.start_again()
        assert _ready_within(dav, RECOVERY).status == 200
        _assert_alive(dav)
        # The store really serves again through the server, not just the probe.
        alice = dav.client("alice")
        assert alice.put("/after.bin", b"x" * 70000).status == 201
        assert alice.get("/after.bin").body == b"x" * 70000
    finally:
        if dav is not None:
            dav.stop()
        minio.stop()


# -- the index database goes down and comes back --------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (``tests.harness.postgres``), which it may
    stop and start again on the same port."""

    def __init__(self) -> None:
        from tests.harness import postgres

        try:
            import psycopg2  # noqa: F401
        except ImportError:
            postgres._unavailable("psycopg2 not installed: pip install psycopg2-binary")
        bindir = postgres._find_bindir()
        if bindir is None:
            postgres._unavailable(postgres.NOT_INSTALLED)
        self.cluster = postgres._Cluster(bindir)
        self.cluster.start()
        self.url = postgres._create_role_and_db(self.cluster)

    def server_stop(self) -> None:
        c = self.cluster
        c.run("pg_ctl", "-D", str(c.data), "-m", "fast", "-w", "-t", "60", "stop")

    def server_start(self) -> None:
        c = self.cluster
        options = (  # as tests.harness.postgres starts it
            f"-c listen_addresses=127.0.0.1 -c port={c.port} "
            f"-c unix_socket_directories='{c.sock}' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        c.run(
            "pg_ctl", "-D", str(c.data), "-l", str(c.log), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def remove(self) -> None:
        try:
            self.cluster.stop()
        except RuntimeError:  # left stopped by a failed test: the files are removed anyway
            pass


def test_readyz_follows_the_index_database(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    dav: DavServer | None = None
    try:
        env = {"DAVSERVER_INDEX_URL": pg.url, "DAVSERVER_HEALTH_TIMEOUT": str(TIMEOUT)}
        dav = start_dav_server(tmp_path / "data", env)
        password = pg.url.split(":")[2].split("@")[0]
        words = _secrets_of(dav, password, "127.0.0.1", str(pg.cluster.port), "davserver_test")
        ready = _ready_within(dav, RECOVERY)
        assert ready.status == 200
        _assert_leaks_nothing(ready, words)

        pg.server_stop()
        data = _assert_unready(dav, "index", ("failed", "timeout"))
        assert data["checks"]["blobs"] == "ok"
        _assert_alive(dav)
        resp, _ = _timed(dav, "/readyz")
        _assert_leaks_nothing(resp, words)

        pg.server_start()
        assert _ready_within(dav, RECOVERY).status == 200
        _assert_alive(dav)
    finally:
        if dav is not None:
            dav.stop()
        pg.remove()
