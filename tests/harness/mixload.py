"""A mixed WebDAV workload on a shared tree: N client threads, PUT/GET/PROPFIND/MOVE/DELETE/LOCK.

Used by the PostgreSQL concurrency tests and by ``bench/pg_mix.py`` (the same mix, so the
numbers in a test's output and the benchmark's are comparable). Every client keeps one
keep-alive connection (reopened after any error) to one of the given servers (round robin, so
two server processes share the load) and picks operations at random over a small tree of
``dirs`` directories with ``files`` names each, so that clients collide all the time: two PUTs
of one name, a MOVE onto a file being deleted, a LOCK of a file being moved. What it counts:
statuses per operation kind, latencies, and anything that is not an HTTP answer (a reset or
timed-out connection counts as status 0, "unanswered").

Statuses a correct server may give under such collisions: PUT 201/204 (or 423 while the
name is locked, 409 while its directory is moved away), GET 200/404, PROPFIND 207/404,
MOVE 201/204/404/409/412/423, DELETE 204/404/423, LOCK 200/201/423 then UNLOCK 204/409.
"""

from __future__ import annotations

import base64
import http.client
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

KINDS = ("PUT", "GET", "PROPFIND", "MOVE", "DELETE", "LOCK")
# Relative frequencies of the operations (a sync client's mix: many reads and writes).
WEIGHTS = (30, 20, 15, 15, 10, 10)

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>mixload</D:owner></D:lockinfo>"
)
_TOKEN = re.compile(r"<([^>]+)>")


@dataclass
class MixResult:
    """What one run measured."""

    seconds: float = 0.0
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # first few non-HTTP failures

    @property
    def ops(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    in_time: int = 0  # operations that ended within the run's duration

    @property
    def ops_per_s(self) -> float:
        """Operations that ended within the duration, per second of it (a request hanging
        past the end does not stretch the figure)."""
        return self.in_time / self.seconds if self.seconds else 0.0

    @property
    def unanswered(self) -> int:
        return self.count(lambda s: s == 0)

    def count(self, pred: object) -> int:
        """How many answers had a status for which ``pred(status)`` holds."""
        return sum(n for c in self.statuses.values() for s, n in c.items() if pred(s))  # type: ignore[operator]

    @property
    def server_errors(self) -> int:
        """5xx answers."""
        return self.count(lambda s: s >= 500)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def summary(self) -> str:
        parts = [
            f"{self.in_time} ops in {self.seconds:.1f} s = {self.ops_per_s:.1f} ops/s, "
            f"p50 {self.percentile(50) * 1000:.0f} ms, p99 {self.percentile(99) * 1000:.0f} ms, "
            f"5xx {self.server_errors}, unanswered {self.unanswered}"
        ]
        for kind in (*KINDS, "UNLOCK"):
            c = self.statuses.get(kind)
            if c:
                parts.append(f"  {kind}: " + " ".join(f"{s}x{n}" for s, n in sorted(c.items())))
        return "\n".join(parts)


class Conn:
    """One keep-alive connection with Basic auth; reconnects after any failure."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float = 60.0) -> None:
        u = urlsplit(base_url)
        self.host, self.port = str(u.hostname), int(u.port or 80)
        self.base = base_url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout = timeout
        self._c: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage | None, bytes]:
        hdrs = {"Authorization": self.auth, **(headers or {})}
        if self._c is None:
            self._c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._c.request(method, quote(path), body=body, headers=hdrs)
            resp = self._c.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, resp.headers, data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def url(self, path: str) -> str:
        return self.base + quote(path)

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None


def _name(rng: random.Random, dirs: int, files: int) -> str:
    return f"/d{rng.randrange(dirs)}/f{rng.randrange(files)}.bin"


def setup_tree(base_url: str, user: str, password: str, dirs: int = 8, files: int = 16) -> None:
    """The directories of the shared tree, and half of its files."""
    c = Conn(base_url, user, password)
    try:
        for d in range(dirs):
            status, _, _ = c.request("MKCOL", f"/d{d}")
            assert status in (201, 405), status
            for f in range(0, files, 2):
                status, _, _ = c.request("PUT", f"/d{d}/f{f}.bin", os.urandom(512))
                assert status in (201, 204), status
    finally:
        c.close()


def run_mix(
    base_urls: Sequence[str],
    user: str,
    password: str,
    clients: int = 32,
    seconds: float = 20.0,
    dirs: int = 8,
    files: int = 16,
    seed: int = 1,
) -> MixResult:
    """Run the mix for ``seconds`` with ``clients`` threads; returns what was measured."""
    result = MixResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def record(kind: str, status: int, took: float) -> None:
        with lock:
            result.statuses[kind][status] += 1
            result.latencies.append(took)
            if time.monotonic() <= deadline:
                result.in_time += 1

    def one(c: Conn, rng: random.Random) -> None:
        kind = rng.choices(KINDS, WEIGHTS)[0]
        path = _name(rng, dirs, files)
        t0 = time.monotonic()
        status = 0
        try:
            if kind == "PUT":
                # Mostly small files (kept in the index), some above storage.inline_max.
                size = rng.choice((200, 1500, 4000, 9000, 40000))
                status = c.request("PUT", path, os.urandom(size))[0]
            elif kind == "GET":
                status = c.request("GET", path)[0]
            elif kind == "PROPFIND":
                status = c.request("PROPFIND", f"/d{rng.randrange(dirs)}/", None, {"Depth": "1"})[0]
            elif kind == "MOVE":
                dst = _name(rng, dirs, files)
                hdrs = {"Destination": c.url(dst), "Overwrite": rng.choice("TF")}
                status = c.request("MOVE", path, None, hdrs)[0]
            elif kind == "DELETE":
                status = c.request("DELETE", path)[0]
            else:
                hdrs = {"Timeout": "Second-60", "Content-Type": "application/xml", "Depth": "0"}
                status, headers, _ = c.request("LOCK", path, LOCK_BODY.encode(), hdrs)
                token = headers.get("Lock-Token") if headers is not None else None
                if status in (200, 201) and token:
                    record(kind, status, time.monotonic() - t0)
                    kind, t0 = "UNLOCK", time.monotonic()
                    m = _TOKEN.search(token)
                    status = c.request(
                        "UNLOCK", path, None, {"Lock-Token": f"<{m.group(1) if m else token}>"}
                    )[0]
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                if len(result.errors) < 20:
                    result.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
        record(kind, status, time.monotonic() - t0)

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        c = Conn(base_urls[k % len(base_urls)], user, password)
        try:
            while time.monotonic() < deadline:
                one(c, rng)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    result.seconds = deadline - t0
    return result
