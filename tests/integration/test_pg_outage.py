"""PostgreSQL outages: 503 with Retry-After while the index is down, all well soon after.

A private PostgreSQL cluster of this test's own (``private_postgres``) is restarted with
``pg_ctl restart -m fast`` and ``-m immediate``, and stopped and started again, under a real
``davserver serve`` process with client threads that never stop asking (PUT, GET, PROPFIND,
MKCOL). The bounded waits are the issue's: while the index is down every request is answered
within 2 s, with 503 and ``Retry-After``; from 5 s after it is back, every request succeeds,
and davserver is never restarted.
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.mixload import Conn
from tests.harness.serveproc import ServeProcess, run_cli, start_serve_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER, PASSWORD = "out", "outage-password-1"
DOWN_WAIT = 2.0  # a request while the index is down is answered within this
BACK_WITHIN = 5.0  # every request succeeds from this long after the index is back


@dataclass
class Sample:
    started: float
    took: float
    status: int  # 0: no HTTP answer
    retry_after: str | None
    kind: str


class Load:
    """Client threads asking all the time; every request is recorded with its timing."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _run(self, k: int) -> None:
        rng = random.Random(k)
        # Some requests log in afresh (no cached login: the failed-login counters are in the
        # index too), most reuse the cached one.
        c = Conn(self.url, USER, PASSWORD, timeout=30)
        n = 0
        while not self._stop.is_set():
            n += 1
            kind = rng.choice(("PUT", "GET", "PROPFIND", "MKCOL"))
            path = f"/t{k}/f{n % 5}"
            t0 = time.monotonic()
            status, retry_after = 0, None
            try:
                if kind == "PUT":
                    resp = c.request("PUT", path, os.urandom(rng.choice((300, 30000))))
                elif kind == "GET":
                    resp = c.request("GET", f"/t{k}/f0")
                elif kind == "PROPFIND":
                    resp = c.request("PROPFIND", f"/t{k}/", None, {"Depth": "1"})
                else:
                    resp = c.request("MKCOL", f"/t{k}/d{n}")
                status = resp[0]
                retry_after = resp[1].get("Retry-After") if resp[1] is not None else None
            except (OSError, http.client.HTTPException):
                pass
            with self._lock:
                self.samples.append(Sample(t0, time.monotonic() - t0, status, retry_after, kind))
            time.sleep(0.02)
        c.close()

    def between(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.started <= end]


def _ok(s: Sample) -> bool:
    return s.status in (200, 201, 204, 207, 405) or (s.kind == "GET" and s.status == 404)


@pytest.fixture
def server(tmp_path: Path, private_postgres: tuple[Any, str]) -> Any:
    cluster, url = private_postgres
    data = tmp_path / "data"
    env = {"DAVSERVER_INDEX_URL": url, "DAVSERVER_SERVER_THREADS": "16"}
    run_cli(["init", "--data-dir", str(data)], env)
    run_cli(["user", "add", USER, "--password-stdin", "--data-dir", str(data)], env, PASSWORD)
    srv = start_serve_process(data, env)
    c = Conn(srv.url, USER, PASSWORD)
    for k in range(4):
        assert c.request("MKCOL", f"/t{k}")[0] == 201
        assert c.request("PUT", f"/t{k}/f0", b"zero")[0] == 201
    c.close()
    try:
        yield cluster, srv
    finally:
        srv.stop()


def _check_down(samples: list[Sample], what: str) -> None:
    assert samples, f"{what}: no request was made while the index was down"
    for s in samples:
        assert s.took <= DOWN_WAIT, f"{what}: a {s.kind} took {s.took:.1f} s while down"
        assert _ok(s) or (s.status == 503 and s.retry_after), (
            f"{what}: {s.kind} answered {s.status} (Retry-After {s.retry_after}) while down"
        )
    assert any(s.status == 503 for s in samples), f"{what}: nothing noticed the outage"


def _check_back(load: Load, back: float, what: str) -> None:
    time.sleep(BACK_WITHIN + 3.0)
    late = load.between(back + BACK_WITHIN, time.monotonic())
    assert len(late) >= 10, f"{what}: too few requests after the index came back"
    bad = [(s.kind, s.status) for s in late if not _ok(s)]
    assert not bad, f"{what}: failures {BACK_WITHIN} s after the index was back: {bad[:10]}"


def _restart(server: tuple[Any, ServeProcess], mode: str) -> None:
    cluster, srv = server
    with Load(srv.url) as load:
        time.sleep(2.0)
        before = load.between(0, time.monotonic())
        assert before and all(_ok(s) for s in before), [(s.kind, s.status) for s in before]
        down = time.monotonic()
        cluster.server_restart(mode)  # returns once the server accepts connections again
        back = time.monotonic()
        # While it restarted: every answer quick, and either fine or a 503 with Retry-After.
        during = load.between(down, back)
        for s in during:
            assert s.took <= DOWN_WAIT, f"restart -m {mode}: a {s.kind} took {s.took:.1f} s"
            assert _ok(s) or (s.status == 503 and s.retry_after), (mode, s.kind, s.status)
        _check_back(load, back, f"restart -m {mode}")
    _assert_no_request_tracebacks(srv)


def _assert_no_request_tracebacks(srv: ServeProcess) -> None:
    """Requests never end in a traceback (the maintenance loop may log its failed round)."""
    lines = srv.log_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            assert i and "maintenance round failed" in lines[i - 1], "\n".join(
                lines[i - 5 : i + 30]
            )


def test_restart_fast(server: tuple[Any, ServeProcess]) -> None:
    _restart(server, "fast")


def test_restart_immediate(server: tuple[Any, ServeProcess]) -> None:
    _restart(server, "immediate")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stop_then_start(server: tuple[Any, ServeProcess], mode: str) -> None:
    cluster, srv = server
    with Load(srv.url) as load:
        time.sleep(2.0)
        cluster.server_stop(mode)
        stopped = time.monotonic()
        time.sleep(4.0)  # down for a while: every request must say so, quickly
        cluster.server_start()
        back = time.monotonic()
        _check_down(load.between(stopped + 0.5, back - 0.5), f"stopped (-m {mode})")
        _check_back(load, back, f"stop -m {mode} / start")
    _assert_no_request_tracebacks(srv)
