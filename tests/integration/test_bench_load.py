"""The load tool (bench/load.py): its model checker catches what it must, and a short real run
on the local configuration verifies every read without a failure.

The checker tests replay synthetic histories (a lost write, a torn body, a stale read after a
MOVE, a deleted file still listed) and check that each is reported, beside the concurrent
outcomes the model must allow. The run starts a real ``davserver serve`` through the tool's
own configuration code, asserts no timing and leaves no process behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "bench" / "load.py"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class History:
    """Builds ``Op`` records with consecutive ids."""

    def __init__(self, load: ModuleType) -> None:
        self.load = load
        self.ops: list[object] = []

    def op(
        self, kind: str, path: str, start: float, end: float, status: int | None, **kw: object
    ) -> None:
        op = self.load.Op(len(self.ops) + 1, kind, 0, path, start, end, status, **kw)
        self.ops.append(op)

    def put(self, path: str, start: float, end: float, status: int | None, body: int) -> None:
        self.op("PUT-small", path, start, end, status, body_id=body, size=1000 + body)

    def get(
        self, path: str, start: float, end: float, status: int, body: int | None = None
    ) -> None:
        self.op("GET", path, start, end, status, body_id=body)

    def failures(self) -> list[str]:
        return [f.what for f in self.load.Checker(self.ops).check()]


def test_bodies_name_their_write_and_torn_ones_are_refused(load: ModuleType) -> None:
    body = load.make_body(42, 5000)
    assert len(body) == 5000 and load.parse_body(body) == 42
    assert load.parse_body(b"") == load.EMPTY
    for torn in (body[:2737], body + b"x", body[:-1] + bytes([body[-1] ^ 1]), b"garbage" * 10):
        with pytest.raises(ValueError):
            load.parse_body(torn)


def test_a_lost_acknowledged_write_is_reported(load: ModuleType) -> None:
    h = History(load)
    h.put("/a", 0, 1, 201, body=1)
    h.put("/a", 2, 3, 204, body=2)
    h.get("/a", 4, 5, 200, body=1)  # the second write was acknowledged before: it is lost
    failures = h.failures()
    assert len(failures) == 1 and "body 1" in failures[0] and "body 2" in failures[0]

    ok = History(load)
    ok.put("/a", 0, 1, 201, body=1)
    ok.put("/a", 2, 3, 204, body=2)
    ok.get("/a", 4, 5, 200, body=2)
    assert ok.failures() == []


def test_writes_in_flight_may_or_may_not_be_seen(load: ModuleType) -> None:
    for seen in (1, 2):
        h = History(load)
        h.put("/a", 0, 1, 201, body=1)
        h.put("/a", 2, 6, 204, body=2)  # still running while the GET runs
        h.get("/a", 4, 5, 200, body=seen)
        assert h.failures() == []
    # A write that failed with a 5xx may have happened; one refused with 423 has not.
    h = History(load)
    h.put("/a", 0, 1, 201, body=1)
    h.put("/a", 2, 3, 500, body=2)
    h.put("/a", 2, 3, 423, body=3)
    h.get("/a", 4, 5, 200, body=2)
    h.get("/a", 4, 5, 200, body=1)
    h.get("/a", 6, 7, 200, body=3)
    assert len(h.failures()) == 1
    # Nothing deleted the file: a 404 is a lost file.
    h = History(load)
    h.put("/a", 0, 1, 201, body=1)
    h.get("/a", 4, 5, 404)
    assert len(h.failures()) == 1


def test_torn_reads_are_reported(load: ModuleType) -> None:
    h = History(load)
    h.put("/a", 0, 1, 201, body=1)
    h.op("GET", "/a", 2, 3, 200, body_id=None, note="body 1: 2737 bytes, written with 4206")
    failures = h.failures()
    assert len(failures) == 1 and "torn" in failures[0]


def test_moves_carry_values_and_leave_their_source_empty(load: ModuleType) -> None:
    h = History(load)
    h.put("/a", 0, 1, 201, body=1)
    h.op("MOVE", "/a", 2, 3, 201, dst="/b")
    h.get("/b", 4, 5, 200, body=1)  # fine
    h.get("/a", 4, 5, 404)  # fine
    assert h.failures() == []
    h.get("/a", 6, 7, 200, body=1)  # the source still serves the moved body
    h.get("/b", 6, 7, 404)  # the moved file vanished
    h.op("COPY", "/b", 8, 9, 201, dst="/c")
    h.get("/c", 10, 11, 200, body=7)  # a body nobody copied there
    assert len(h.failures()) == 3


def test_listings_are_checked_against_the_model(load: ModuleType) -> None:
    h = History(load)
    h.put("/d/f0", 0, 1, 201, body=1)
    h.put("/d/f1", 0, 1, 201, body=2)
    h.op("DELETE", "/d/f1", 2, 3, 204)
    # f0 listed with its size, f1 (deleted) not listed: all as acknowledged.
    h.op("PROPFIND", "/d/", 4, 5, 207, listing={"/d/f0": 1001, "/d/f1": load.ABSENT})
    assert h.failures() == []
    h.op("PROPFIND", "/d/", 6, 7, 207, listing={"/d/f0": 5, "/d/f1": 1002, "?/d/zz": 0})
    assert len(h.failures()) == 3  # wrong size, a deleted file listed, a stranger


def test_a_body_cut_short_is_a_torn_answer(load: ModuleType) -> None:
    """A raw socket that declares 4000 bytes and sends a complete 2000-byte body, then closes:
    the client keeps the status and calls the body cut short, so the checker reports it."""
    body = load.make_body(7, 2000)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        status, _, data, note = load.Conn(port, "Basic x", 10).request("GET", "/f")
    finally:
        thread.join(10)
        listener.close()
    assert status == 200 and data == body
    assert "cut short" in note and "2000 of 4000" in note
    h = History(load)
    h.put("/f", 0, 1, 201, body=7)
    h.op("GET", "/f", 2, 3, 200, body_id=None, note=note)
    assert any("cut short" in f for f in h.failures())


@pytest.mark.slow
def test_short_local_run_verifies_every_read(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = [sys.executable, str(TOOL), "--configs", "local", "--clients", "4", "--seconds", "4"]
    argv += ["--timeout", "20", "--json", str(out), "--tmp", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVSERVER_")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.is_file(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    local = report["results"]["local"]
    assert "error" not in local, local
    print(done.stdout)
    assert local["failures"] == 0, "\n".join(local["failure_report"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert local["observations"] > 100
    for kind in ("GET", "PUT-small", "PUT-medium", "PROPFIND", "MOVE", "COPY", "DELETE"):
        statuses = local["kinds"][kind]["statuses"]
        assert any(s.startswith("2") for s in statuses), (kind, statuses)
    assert local["kinds"]["MKCOL"]["count"] > 0 and local["kinds"]["LOCK"]["count"] > 0
    assert "local" in done.stdout and "VERIFICATION FAILURES" in done.stdout
    assert local["peak_rss_mib"] > 0
    # Nothing left running: the tool stops its servers and removes its work directory.
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("davbench-")]
    assert leftovers == []
