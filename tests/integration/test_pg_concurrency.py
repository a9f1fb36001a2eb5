"""PostgreSQL under concurrency: no deadlock or unique violation ever reaches a client.

Real PostgreSQL (tests/harness/postgres.py), real ``davserver serve`` processes
(tests/harness/serveproc.py) and real HTTP clients. The mixed load is tests/harness/mixload.py
(the same mix as bench/pg_mix.py): 32 threads of PUT/GET/PROPFIND/MOVE/DELETE/LOCK on a
shared tree, where collisions are the rule. Throughput is printed, never asserted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.davserver import s3_env
from tests.harness.mixload import Conn, MixResult, run_mix, setup_tree
from tests.harness.serveproc import ServeProcess, run_cli, start_serve_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER, PASSWORD = "mix", "mix-password-1"
CLIENTS = 32
SECONDS = 20.0


def _serve(data: Path, env: dict[str, str], procs: int = 1) -> list[ServeProcess]:
    env = {"DAVSERVER_SERVER_THREADS": str(CLIENTS), **env}
    run_cli(["init", "--data-dir", str(data)], env)
    run_cli(["user", "add", USER, "--password-stdin", "--data-dir", str(data)], env, PASSWORD)
    return [start_serve_process(data, env) for _ in range(procs)]


@pytest.fixture
def pg_server(tmp_path: Path, postgres_db_url: str) -> Iterator[ServeProcess]:
    (server,) = _serve(tmp_path / "data", {"DAVSERVER_INDEX_URL": postgres_db_url})
    try:
        yield server
    finally:
        server.stop()
    _assert_clean_log(server)


def _assert_clean_log(server: ServeProcess) -> None:
    log = server.log_text()
    for bad in ("Traceback", "DeadlockDetected", "UniqueViolation", "unexpected error"):
        assert bad not in log, f"{bad} in the server log:\n{log[-4000:]}"


def _mix(urls: list[str], label: str) -> MixResult:
    setup_tree(urls[0], USER, PASSWORD)
    result = run_mix(urls, USER, PASSWORD, CLIENTS, SECONDS)
    print(f"\n{label}:\n{result.summary()}")
    return result


def test_mixed_load_on_postgres_has_no_5xx(tmp_path: Path, postgres_db_url: str) -> None:
    """32 clients on PostgreSQL: zero 5xx; SQLite in the same run for the throughput ratio."""
    (sqlite,) = _serve(tmp_path / "sqlite", {})
    try:
        lite = _mix([sqlite.url], "SQLite index")
    finally:
        sqlite.stop()
    (pg,) = _serve(tmp_path / "pg", {"DAVSERVER_INDEX_URL": postgres_db_url})
    try:
        res = _mix([pg.url], "PostgreSQL index")
    finally:
        pg.stop()
    print(f"PostgreSQL / SQLite throughput: {res.ops_per_s / max(lite.ops_per_s, 1e-9):.2f}")
    assert res.ops > 1000, res.summary()  # the load really ran
    assert res.server_errors == 0 and res.unanswered == 0, (res.summary(), res.errors)
    # The SQLite run is the yardstick; a 5xx or a request left unanswered there is a bug too.
    assert lite.server_errors == 0 and lite.unanswered == 0, (lite.summary(), lite.errors)
    _assert_clean_log(pg)


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at the same moment (one thread each, released by one barrier)."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_two_puts_of_one_path_both_succeed(pg_server: ServeProcess) -> None:
    conns = [Conn(pg_server.url, USER, PASSWORD) for _ in range(3)]
    assert conns[0].request("MKCOL", "/race")[0] == 201
    for i in range(40):
        # Small bodies live in the index, larger ones in the blob store: both commit paths.
        size = 40_000 if i % 4 == 3 else 700
        bodies = [os.urandom(size), os.urandom(size)]
        path = f"/race/f{i % 10}.bin"  # new names first, then overwrites of existing ones
        statuses = _together(
            *(
                lambda c=c, b=b, p=path: c.request("PUT", p, b)[0]
                for c, b in zip(conns[:2], bodies, strict=True)
            )
        )
        assert all(s in (201, 204) for s in statuses), (i, statuses)
        status, _, got = conns[2].request("GET", path)
        assert status == 200 and got in bodies, (i, status, len(got))
    for c in conns:
        c.close()


def test_crossing_moves_never_5xx(pg_server: ServeProcess) -> None:
    """Round i: two MOVEs at once that cross — between two directories (each takes the
    other's directory: opposite lock orders), and of two directories into each other (at
    most one may win, or the tree would get a cycle cut off from the root)."""
    c1, c2, check = (Conn(pg_server.url, USER, PASSWORD) for _ in range(3))
    allowed = {201, 204, 403, 404, 409, 412}
    for i in range(40):
        p, q = f"/p{i}", f"/q{i}"
        for d in (p, q):
            assert check.request("MKCOL", d)[0] == 201
        assert check.request("PUT", f"{p}/a", b"a")[0] == 201
        assert check.request("PUT", f"{q}/b", b"b")[0] == 201
        if i % 2 == 0:
            moves = [(c1, f"{p}/a", f"{q}/a"), (c2, f"{q}/b", f"{p}/b")]
        else:
            moves = [(c1, p, f"{q}/in-q"), (c2, q, f"{p}/in-p")]
        statuses = _together(
            *(
                lambda c=c, s=s, d=d: c.request(
                    "MOVE", s, None, {"Destination": c.url(d), "Overwrite": "T"}
                )[0]
                for c, s, d in moves
            )
        )
        assert set(statuses) <= allowed, (i, statuses)
        if i % 2 == 0:
            assert statuses == [201, 201], (i, statuses)
            assert check.request("GET", f"{q}/a")[2] == b"a"
            assert check.request("GET", f"{p}/b")[2] == b"b"
        else:
            assert sorted(statuses).count(201) <= 1, (i, statuses)
            # Whatever won, both files are still reachable from the root.
            found = [
                check.request("GET", path)[0]
                for path in (f"{p}/a", f"{q}/b", f"{q}/in-q/a", f"{p}/in-p/b")
            ]
            assert found.count(200) == 2, (i, statuses, found)
    for c in (c1, c2, check):
        c.close()


@pytest.mark.s3
def test_two_server_processes_on_one_index_and_bucket(
    tmp_path: Path, postgres_db_url: str, minio_server: Any, s3_bucket: str
) -> None:
    env = {"DAVSERVER_INDEX_URL": postgres_db_url, **s3_env(minio_server, s3_bucket)}
    servers = _serve(tmp_path / "data", env, procs=2)
    try:
        res = _mix([s.url for s in servers], "two processes, one PostgreSQL, one bucket")
    finally:
        for s in servers:
            s.stop()
    assert res.ops > 500, res.summary()
    assert res.server_errors == 0 and res.unanswered == 0, (res.summary(), res.errors)
    for s in servers:
        _assert_clean_log(s)
