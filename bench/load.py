#!/usr/bin/env python3
"""Service under load: N clients, a mixed workload on one shared tree, every read verified.

Usage: python bench/load.py [--clients 32] [--seconds 30] [--configs local,minio,postgres,two]
                            [--json PATH] [--markdown] [--seed N] [--timeout S]

For each configuration it starts its own davserver process(es) on free loopback ports (with
the helpers of bench/run.py and tests/harness), runs the workload for ``--seconds``, stops
them, and finally prints one table with the configurations side by side:

- ``local``:    SQLite index, local blob directory (what ``davserver init`` creates);
- ``minio``:    SQLite index, blobs in MinIO;
- ``postgres``: PostgreSQL index (a private cluster, tests/harness/postgres.py), blobs in MinIO;
- ``two``:      two ``davserver serve`` processes on one data dir (one pepper), one PostgreSQL
                database and one bucket, clients split between their ports;
- extra, not run by default: ``pg-local`` (PostgreSQL + local blobs) and ``workers2``
  (``server.workers=2`` on PostgreSQL + MinIO: two forked processes on one port).

The workload. All clients log in as one user and work in one tree, ``/load-XXXX/`` with
directories ``d0…d3`` holding the file names ``f0…f15`` and the collection names ``c0…c7``.
Each client repeatedly picks: GET of a file; PUT of a small (200 B-8 KiB, kept inline in the
index) or medium (32-512 KiB, in the blob store) body; PROPFIND Depth 1 of a directory or of
the tree's root; MOVE and COPY (Overwrite: T) between file names; DELETE of a file or a
collection; MKCOL of a collection; and LOCK (exclusive), PUT with the lock token, GET, UNLOCK.
Every body PUT is unique and self-describing (an id and size in a header line, then bytes
derived from the id), so any body read back names the write it came from and any torn or
garbage body is caught byte for byte.

The model. Every request is recorded with its start and end time (one monotonic clock) and
its status. A 2xx is an acknowledged effect (PUT writes, DELETE deletes, MOVE deletes its
source and writes the source's value to its destination, COPY writes it, LOCK on a new name
creates an empty file, MKCOL creates a collection); a 4xx is no effect; a 5xx or a request
without an answer may or may not have taken effect (within its interval, or at any time
later when no answer came). An observation — a GET's body or 404, a PROPFIND's members and
their sizes, what a status implies (PUT 201: the name was free; 204: it existed; DELETE or
MOVE 404: it was absent) — must be explained by the state after some effect that was in
flight during the observation or was the last acknowledged one before it began: an effect X
is ruled out when another *acknowledged* effect Y started after X could last have happened
and ended before the observation started. Reads that return a lost acknowledged write, an
old value, a deleted file, a missing file, a wrong size or bytes nobody wrote are reported
as verification failures, with the history of that path. (Crossing MOVEs whose values depend
on each other are not checked, and counted as "unverifiable".)

Reported per configuration: operations per second per kind, counts per status, p50/p99
latency per kind, 5xx and unanswered requests, verification failures, the server's peak RSS
(VmRSS sampled from /proc every 0.2 s, summed over its processes), its CPU seconds, and the
load average (other work on the machine skews every figure). The PostgreSQL cluster is the
test harness's (fsync off). Exit status 1 if any verification failed or a configuration could
not run; 5xx answers are reported, not judged. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import http.client
import importlib.util
import itertools
import json
import math
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_bench_run() -> ModuleType:
    """bench/run.py (a script, not a package module): its process and HTTP helpers."""
    name = "bench_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


KIB = 1024
USER = "load"
DIRS, FILES, COLLS = 4, 16, 8
# What a client picks, with weights (LOCK stands for LOCK, PUT with the token, GET, UNLOCK).
MIX: tuple[tuple[str, int], ...] = (
    ("GET", 28),
    ("PUT-small", 14),
    ("PUT-medium", 6),
    ("PROPFIND", 10),
    ("MOVE", 8),
    ("COPY", 5),
    ("DELETE", 8),
    ("MKCOL", 4),
    ("LOCK", 4),
)
KINDS: tuple[str, ...] = ("GET", "PUT-small", "PUT-medium", "PROPFIND", "MOVE", "COPY")
KINDS += ("DELETE", "MKCOL", "LOCK", "UNLOCK")
SMALL = (200, 8 * KIB)
MEDIUM = (32 * KIB, 512 * KIB)
LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>bench/load.py</D:owner></D:lockinfo>"
)
PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:resourcetype/><D:getcontentlength/><D:getetag/></D:prop></D:propfind>"
)

# Values a name can hold in the model. Positive ints are body ids.
ABSENT, EMPTY, DIR, ANY = -1, 0, -2, -3
INF = math.inf


# -- bodies ---------------------------------------------------------------------------------------

_HEADER = re.compile(rb"^LOAD1 (\d+) (\d+)\n")


def make_body(body_id: int, size: int) -> bytes:
    """A unique body: ``LOAD1 <id> <size>\\n`` and bytes derived from the id, ``size`` in all."""
    head = b"LOAD1 %d %d\n" % (body_id, size)
    return head + random.Random(body_id).randbytes(max(0, size - len(head)))


def parse_body(data: bytes) -> int:
    """The id of a body ``make_body`` made (``EMPTY`` for no bytes); ValueError if it is torn,
    truncated, padded, or not one of ours."""
    if not data:
        return EMPTY
    m = _HEADER.match(data)
    if m is None:
        raise ValueError(f"no body header ({len(data)} bytes, starting {data[:24]!r})")
    body_id, size = int(m.group(1)), int(m.group(2))
    if len(data) != size:
        raise ValueError(f"body {body_id}: {len(data)} bytes, written with {size}")
    if data != make_body(body_id, size):
        raise ValueError(f"body {body_id}: bytes differ from what was written")
    return body_id


# -- the history and its checker ------------------------------------------------------------------


@dataclass
class Op:
    """One request as the client saw it. ``status`` None: no answer (timeout, reset)."""

    id: int
    kind: str  # one of KINDS
    client: int
    path: str
    start: float
    end: float
    status: int | None
    dst: str | None = None  # MOVE, COPY
    body_id: int | None = None  # PUT: the body sent; GET 200: the body received
    size: int = 0  # PUT: bytes sent
    listing: dict[str, int] | None = None  # PROPFIND 207: name -> size (DIR for collections)
    note: str = ""  # an error, or why a 2xx body could not be parsed


@dataclass
class Failure:
    op: Op
    path: str
    what: str


@dataclass
class _Effect:
    op: int
    start: float
    end: float  # the latest it can have happened (INF: no answer)
    certain: bool
    value: int | None = None  # a literal value, or None: the value of ``src`` (MOVE, COPY)
    src: str | None = None
    src_end: float = 0.0


@dataclass
class _Obs:
    op: Op
    path: str
    start: float
    end: float
    expect: str  # "value", "exists", "absent", "size", "dir"
    arg: int = 0


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _unknown(status: int | None) -> bool:
    return status is None or status >= 500


@dataclass
class Checker:
    """Replays a history (see the module docstring for the rules); ``check()`` → failures."""

    ops: list[Op]
    sizes: dict[int, int] = field(default_factory=dict)  # body id -> size
    observations: int = 0
    unverifiable: int = 0
    _effects: dict[str, list[_Effect]] = field(default_factory=dict)
    _starts: dict[str, list[float]] = field(default_factory=dict)
    _obs: list[_Obs] = field(default_factory=list)
    _memo: dict[int, frozenset[int]] = field(default_factory=dict)
    _busy: set[int] = field(default_factory=set)
    _failures: list[Failure] = field(default_factory=list)

    # -- deriving effects and observations ------------------------------------------------
    def _effect(self, op: Op, path: str, value: int | None, src: str | None = None) -> None:
        certain = _ok(op.status)
        end = INF if op.status is None else op.end
        self._effects.setdefault(path, []).append(
            _Effect(op.id, op.start, end, certain, value, src, end)
        )

    def _observe(self, op: Op, path: str, expect: str, arg: int = 0) -> None:
        self._obs.append(_Obs(op, path, op.start, op.end, expect, arg))

    def _derive(self, op: Op) -> None:
        st, k = op.status, op.kind
        if k.startswith("PUT"):
            if op.body_id is not None:
                self.sizes[op.body_id] = op.size
            if _ok(st) or _unknown(st):
                self._effect(op, op.path, op.body_id)
            if st == 201:
                self._observe(op, op.path, "absent")
            elif st == 204:
                self._observe(op, op.path, "exists")
        elif k == "GET":
            if st == 200:
                if op.body_id is None:
                    self._failures.append(Failure(op, op.path, f"torn or garbage body: {op.note}"))
                else:
                    self._observe(op, op.path, "value", op.body_id)
            elif st == 404:
                self._observe(op, op.path, "absent")
        elif k == "DELETE":
            if _ok(st) or _unknown(st):
                self._effect(op, op.path, ABSENT)
            if _ok(st):
                self._observe(op, op.path, "exists")
            elif st == 404:
                self._observe(op, op.path, "absent")
        elif k in ("MOVE", "COPY"):
            assert op.dst is not None
            if _ok(st) or _unknown(st):
                self._effect(op, op.dst, None, src=op.path)
                if k == "MOVE":
                    self._effect(op, op.path, ABSENT)
            if _ok(st):
                self._observe(op, op.path, "exists")
                self._observe(op, op.dst, "absent" if st == 201 else "exists")
            elif st == 404:
                self._observe(op, op.path, "absent")
        elif k == "MKCOL":
            if _ok(st) or _unknown(st):
                self._effect(op, op.path, DIR)
            if st == 201:
                self._observe(op, op.path, "absent")
            elif st == 405:
                self._observe(op, op.path, "dir")
        elif k == "LOCK":
            if st == 201 or _unknown(st):  # a LOCK of a free name creates an empty file
                self._effect(op, op.path, EMPTY)
            if st == 201:
                self._observe(op, op.path, "absent")
            elif st == 200:
                self._observe(op, op.path, "exists")
        elif k == "PROPFIND" and st == 207 and op.listing is not None:
            for name, size in op.listing.items():
                if name.endswith("/(unreadable)"):
                    self._failures.append(Failure(op, name[1:], f"torn listing: {op.note}"))
                elif name.startswith("?"):
                    self._failures.append(Failure(op, name[1:], "listed a name nobody created"))
                elif size == ABSENT:
                    self._observe(op, name, "absent")
                elif size == DIR:
                    self._observe(op, name, "dir")
                else:
                    self._observe(op, name, "size", size)

    # -- the model --------------------------------------------------------------------------
    def values(self, path: str, start: float, end: float, exclude: int = -1) -> frozenset[int]:
        """What ``path`` may hold at some instant of ``[start, end]`` (not counting ``exclude``)."""
        effects = self._effects.get(path, [])
        latest, before = -INF, False  # latest start of an acknowledged effect done by `start`
        for y in effects:
            if y.op != exclude and y.certain and y.end < start:
                before = True
                latest = max(latest, y.start)
        out: set[int] = set() if before else {ABSENT}
        stop = bisect.bisect_left(self._starts.get(path, []), end)
        for x in effects[:stop]:
            if x.op != exclude and x.end >= latest:
                out |= self._effect_values(x)
        return frozenset(out)

    def _effect_values(self, x: _Effect) -> frozenset[int]:
        if x.src is None:
            assert x.value is not None
            return frozenset((x.value,))
        if x.op in self._memo:
            return self._memo[x.op]
        if x.op in self._busy:  # MOVEs whose values depend on each other
            self.unverifiable += 1
            return frozenset((ANY,))
        self._busy.add(x.op)
        try:
            got = self.values(x.src, x.start, x.src_end, exclude=x.op) - {ABSENT}
        finally:
            self._busy.discard(x.op)
        result = got or frozenset((ANY,))  # the source cannot have been absent: flagged apart
        self._memo[x.op] = result
        return result

    def _size(self, value: int) -> int | None:
        if value == EMPTY:
            return 0
        return self.sizes.get(value)

    def _explained(self, o: _Obs, vals: frozenset[int]) -> bool:
        if ANY in vals:
            return True
        if o.expect == "value":
            return o.arg in vals
        if o.expect == "absent":
            return ABSENT in vals
        if o.expect == "dir":
            return DIR in vals
        if o.expect == "exists":
            return bool(vals - {ABSENT})
        return any(self._size(v) == o.arg for v in vals if v != ABSENT)  # "size"

    def check(self) -> list[Failure]:
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        for op in sorted(self.ops, key=lambda o: o.start):
            self._derive(op)
        for path, effects in self._effects.items():
            effects.sort(key=lambda e: e.start)
            self._starts[path] = [e.start for e in effects]
        # MOVE/COPY values in start order: each one's sources are then mostly known already,
        # which keeps the recursion as shallow as the concurrency.
        moved = [e for effects in self._effects.values() for e in effects if e.src is not None]
        for e in sorted(moved, key=lambda e: e.start):
            self._effect_values(e)
        for o in self._obs:
            self.observations += 1
            vals = self.values(o.path, o.start, o.end, exclude=o.op.id)
            if not self._explained(o, vals):
                self._failures.append(Failure(o.op, o.path, self._describe(o, vals)))
        return self._failures

    def _describe(self, o: _Obs, vals: frozenset[int]) -> str:
        def name(v: int) -> str:
            return {ABSENT: "absent", EMPTY: "empty", DIR: "collection", ANY: "any"}.get(
                v, f"body {v}"
            )

        want = ", ".join(sorted(name(v) for v in vals)) or "nothing"
        seen = {
            "value": f"body {o.arg}" if o.arg != EMPTY else "an empty body",
            "absent": "absent",
            "dir": "a collection",
            "exists": "present",
            "size": f"present with {o.arg} bytes",
        }[o.expect]
        return f"{o.op.kind} {o.op.status} saw {seen}; the model allows: {want}"

    def history(self, path: str, around: float, count: int = 14) -> list[str]:
        """The last ``count`` requests that touched ``path`` up to a second after ``around``."""
        touching = [
            op
            for op in sorted(self.ops, key=lambda o: o.start)
            if path in (op.path, op.dst) and op.start <= around + 1
        ]
        lines = []
        for op in touching[-count:]:
            what = f"{op.kind} {op.path}" + (f" -> {op.dst}" if op.dst else "")
            if op.body_id is not None:
                what += f" body {op.body_id}"
            lines.append(
                f"  t={op.start:9.3f}..{op.end:9.3f} client {op.client:2d} {what}: "
                f"{op.status if op.status is not None else 'no answer'} {op.note}".rstrip()
            )
        return lines


# -- the clients ----------------------------------------------------------------------------------


class Conn:
    """One keep-alive connection with Basic auth; a failed request closes it."""

    def __init__(self, port: int, auth: str, timeout: float) -> None:
        self.port, self.auth, self.timeout = port, auth, timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int | None, http.client.HTTPMessage | None, bytes, str]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        hdrs = {"Authorization": self.auth, **(headers or {})}
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return None, None, b"", type(exc).__name__
        # Read in blocks, so that a body cut short (the connection closed, or the server
        # stopped sending before its Content-Length) is reported as what it is: an answer
        # whose body is torn, not a request without an answer.
        parts: list[bytes] = []
        try:
            while block := resp.read(64 * KIB):
                parts.append(block)
        except (OSError, http.client.HTTPException) as exc:
            partial = getattr(exc, "partial", b"")
            got = sum(map(len, parts)) + len(partial)
            self.close()
            note = f"response cut short ({type(exc).__name__}) after {got} of "
            note += f"{resp.getheader('Content-Length', '?')} bytes"
            return resp.status, resp.headers, b"".join(parts) + partial, note
        data = b"".join(parts)
        declared = resp.getheader("Content-Length")
        if method != "HEAD" and declared and declared.isdigit() and int(declared) != len(data):
            # http.client's read(amt) ends quietly at an early EOF.
            self.close()
            note = f"response cut short (closed) after {len(data)} of {declared} bytes"
            return resp.status, resp.headers, data, note
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, data, ""


@dataclass
class Tree:
    root: str

    def file(self, rnd: random.Random) -> str:
        return f"{self.root}/d{rnd.randrange(DIRS)}/f{rnd.randrange(FILES)}"

    def coll(self, rnd: random.Random) -> str:
        return f"{self.root}/c{rnd.randrange(COLLS)}"

    def members(self, directory: str) -> list[str]:
        if directory == self.root:
            return [f"{self.root}/c{k}" for k in range(COLLS)]
        return [f"{directory}/f{j}" for j in range(FILES)]


def parse_listing(tree: Tree, directory: str, data: bytes) -> dict[str, int]:
    """name -> size (DIR for a collection, ABSENT if not listed, '?name' for a stranger)."""
    out = {name: ABSENT for name in tree.members(directory)}
    known = set(out) | {directory}
    if directory == tree.root:
        known |= {f"{tree.root}/d{i}" for i in range(DIRS)}
    for resp in ET.fromstring(data).iter("{DAV:}response"):
        href = resp.findtext("{DAV:}href") or ""
        name = unquote(urlsplit(href).path).rstrip("/")
        if name not in known:
            out["?" + name] = 0
            continue
        if name == directory or name not in out:
            continue
        size, is_dir = 0, False
        for ps in resp.iter("{DAV:}propstat"):
            if "200" not in (ps.findtext("{DAV:}status") or ""):
                continue
            length = ps.findtext(".//{DAV:}getcontentlength")
            if length is not None and length.strip():
                size = int(length)
            if ps.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                is_dir = True
        out[name] = DIR if is_dir else size
    return out


class Workload:
    """``clients`` threads doing the mix against ``ports`` for ``seconds``; a history."""

    def __init__(
        self, ports: list[int], password: str, clients: int, seconds: float, seed: int,
        timeout: float,
    ) -> None:  # fmt: skip
        import base64

        self.ports = ports
        self.auth = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
        self.clients, self.seconds, self.seed, self.timeout = clients, seconds, seed, timeout
        self.tree = Tree(f"/load-{secrets.token_hex(3)}")
        self._ids = itertools.count(1)
        self._bodies = itertools.count(1)
        self.t0 = 0.0
        self.ops: list[Op] = []
        self._lock = threading.Lock()

    def setup(self) -> None:
        """The tree's directories, and one login per server process (fills its login cache)."""
        for port in self.ports:
            c = Conn(port, self.auth, self.timeout)
            status, _, data, err = c.request("PROPFIND", "/", None, {"Depth": "0"})
            if status != 207:
                raise RuntimeError(f"login on port {port}: {status or err} {data[:200]!r}")
            c.close()
        c = Conn(self.ports[0], self.auth, self.timeout)
        for path in [self.tree.root] + [f"{self.tree.root}/d{i}" for i in range(DIRS)]:
            status, _, data, err = c.request("MKCOL", path)
            if status != 201:
                raise RuntimeError(f"MKCOL {path}: {status or err} {data[:200]!r}")
        c.close()

    def run(self) -> float:
        barrier = threading.Barrier(self.clients + 1)
        threads = [
            threading.Thread(target=self._client, args=(k, barrier), daemon=True)
            for k in range(self.clients)
        ]
        for t in threads:
            t.start()
        self.t0 = time.monotonic()  # read by the clients only once they passed the barrier
        barrier.wait()
        began = time.monotonic()
        for t in threads:
            t.join(self.seconds + self.timeout * 4 + 30)
        return time.monotonic() - began

    # -- one client --------------------------------------------------------------------------
    def _client(self, k: int, barrier: threading.Barrier) -> None:
        rnd = random.Random(self.seed * 1000 + k)
        conn = Conn(self.ports[k % len(self.ports)], self.auth, self.timeout)
        conn.request("PROPFIND", "/", None, {"Depth": "0"})  # warm: logged in, connected
        barrier.wait()
        deadline = time.monotonic() + self.seconds
        kinds, weights = zip(*MIX, strict=True)
        mine: list[Op] = []
        try:
            while time.monotonic() < deadline:
                kind = rnd.choices(kinds, weights)[0]
                getattr(self, "_do_" + kind.split("-")[0].lower())(conn, k, rnd, kind, mine)
        finally:
            conn.close()
            with self._lock:
                self.ops.extend(mine)

    def _send(
        self, conn: Conn, k: int, kind: str, method: str, path: str, out: list[Op],
        body: bytes | None = None, headers: dict[str, str] | None = None, **fields: Any,
    ) -> tuple[Op, http.client.HTTPMessage | None, bytes]:  # fmt: skip
        start = time.monotonic() - self.t0
        status, hdrs, data, err = conn.request(method, path, body, headers)
        op = Op(next(self._ids), kind, k, path, start, time.monotonic() - self.t0, status, **fields)
        op.note = err
        out.append(op)
        return op, hdrs, data

    def _dest(self, conn: Conn, path: str) -> dict[str, str]:
        return {"Destination": f"http://127.0.0.1:{conn.port}{path}", "Overwrite": "T"}

    def _do_get(self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]) -> None:
        self._get(conn, k, self.tree.file(rnd), out)

    def _get(self, conn: Conn, k: int, path: str, out: list[Op]) -> None:
        op, _, data = self._send(conn, k, "GET", "GET", path, out)
        if op.status == 200 and not op.note:  # a note: the body was cut short (torn)
            try:
                op.body_id = parse_body(data)
            except ValueError as exc:
                op.note = str(exc)

    def _do_put(
        self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op],
        path: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        lo, hi = SMALL if kind == "PUT-small" else MEDIUM
        body_id, size = next(self._bodies), rnd.randint(lo, hi)
        self._send(
            conn, k, kind, "PUT", path or self.tree.file(rnd), out, make_body(body_id, size),
            {"Content-Type": "application/octet-stream", **(headers or {})},
            body_id=body_id, size=size,
        )  # fmt: skip

    def _do_propfind(
        self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]
    ) -> None:
        i = rnd.randrange(DIRS + 1)
        directory = self.tree.root if i == DIRS else f"{self.tree.root}/d{i}"
        op, _, data = self._send(
            conn, k, "PROPFIND", "PROPFIND", directory + "/", out, PROPFIND_BODY.encode(),
            {"Depth": "1", "Content-Type": "application/xml"},
        )  # fmt: skip
        if op.status == 207:
            try:
                if op.note:
                    raise ValueError(op.note)
                op.listing = parse_listing(self.tree, directory, data)
            except (ET.ParseError, ValueError) as exc:
                op.note = f"unreadable multistatus: {exc}"
                op.listing = {"?" + directory + "/(unreadable)": 0}

    def _do_move(self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]) -> None:
        src, dst = self.tree.file(rnd), self.tree.file(rnd)
        while dst == src:
            dst = self.tree.file(rnd)
        self._send(conn, k, kind, kind, src, out, None, self._dest(conn, dst), dst=dst)

    _do_copy = _do_move

    def _do_delete(self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]) -> None:
        path = self.tree.coll(rnd) if rnd.random() < 0.25 else self.tree.file(rnd)
        self._send(conn, k, "DELETE", "DELETE", path, out)

    def _do_mkcol(self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]) -> None:
        self._send(conn, k, "MKCOL", "MKCOL", self.tree.coll(rnd), out)

    def _do_lock(self, conn: Conn, k: int, rnd: random.Random, kind: str, out: list[Op]) -> None:
        path = self.tree.file(rnd)
        headers = {"Timeout": "Second-30", "Depth": "0", "Content-Type": "application/xml"}
        op, hdrs, _ = self._send(conn, k, "LOCK", "LOCK", path, out, LOCK_BODY.encode(), headers)
        token = (hdrs.get("Lock-Token") or "").strip() if hdrs is not None else ""
        if op.status not in (200, 201) or not token:
            return
        if_header = {"If": f"({token})" if token.startswith("<") else f"(<{token}>)"}
        try:
            self._do_put(conn, k, rnd, "PUT-small", out, path, if_header)
            self._get(conn, k, path, out)
        finally:
            lock_token = token if token.startswith("<") else f"<{token}>"
            self._send(conn, k, "UNLOCK", "UNLOCK", path, out, None, {"Lock-Token": lock_token})


# -- servers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    index: str  # "sqlite" | "postgres"
    blobs: str  # "local" | "minio"
    processes: int = 1  # davserver serve processes on one data dir
    workers: int = 1  # server.workers of each


CONFIGS: dict[str, Spec] = {
    "local": Spec("sqlite", "local"),
    "minio": Spec("sqlite", "minio"),
    "postgres": Spec("postgres", "minio"),
    "two": Spec("postgres", "minio", processes=2),
    "pg-local": Spec("postgres", "local"),
    "workers2": Spec("postgres", "minio", workers=2),
}
DEFAULT_CONFIGS = ("local", "minio", "postgres", "two")
ALIASES = {"s3": "minio", "pg": "postgres", "sqlite": "local", "two-process": "two"}
DESCRIBE = {
    "local": "SQLite + local blobs",
    "minio": "SQLite + MinIO",
    "postgres": "PostgreSQL + MinIO",
    "two": "2 processes, PostgreSQL + MinIO",
    "pg-local": "PostgreSQL + local blobs",
    "workers2": "server.workers=2, PostgreSQL + MinIO",
}


class Postgres:
    """The test harness's private cluster, started on first use; a database per config."""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.base_url = ""

    def database(self, name: str) -> str:
        from tests.harness import postgres as pgh

        if self.cluster is None:
            bindir = pgh._find_bindir()
            if bindir is None:
                raise RuntimeError(pgh.NOT_INSTALLED)
            self.cluster = pgh._Cluster(bindir)
            self.cluster.start()
            self.base_url = pgh._create_role_and_db(self.cluster)
        import psycopg2

        db = f"load_{name.replace('-', '_')}_{secrets.token_hex(3)}"
        conn = psycopg2.connect(self.base_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db}"')
        finally:
            conn.close()
        return pgh._with_dbname(self.base_url, db)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def start_servers(
    br: ModuleType, run: Any, pg: Postgres, name: str
) -> tuple[list[Any], list[int], str]:
    """Init a data dir for ``name``, add the user, start its ``davserver serve`` process(es):
    (procs, ports, password)."""
    spec = CONFIGS[name]
    data, password = run.work / f"data-{name}", secrets.token_urlsafe(16)
    env = br.base_env() | {"DAVSERVER_SERVER_HOST": "127.0.0.1"}
    if spec.workers != 1:
        env["DAVSERVER_SERVER_WORKERS"] = str(spec.workers)
    if spec.blobs == "minio":
        minio = run.start_minio()
        env |= {
            "DAVSERVER_STORAGE_BACKEND": "s3",
            "DAVSERVER_STORAGE_S3_ENDPOINT": minio.endpoint,
            "DAVSERVER_STORAGE_S3_BUCKET": f"load-{name}",
            "DAVSERVER_STORAGE_S3_ACCESS_KEY": minio.access_key,
            "DAVSERVER_STORAGE_S3_SECRET_KEY": minio.secret_key,
            "DAVSERVER_STORAGE_S3_SECURE": "false",
            "DAVSERVER_STORAGE_S3_CREATE_BUCKET": "true",
        }
    if spec.index == "postgres":
        with br.INTERRUPTS.held():  # the cluster is recorded before a signal can stop us
            env["DAVSERVER_INDEX_URL"] = pg.database(name)
    cli = [sys.executable, "-m", "davserver.cli"]
    for args, stdin in ((["init"], ""), (["user", "add", USER, "--password-stdin"], password)):
        done = subprocess.run(
            [*cli, *args, "--data-dir", str(data)], env=env, cwd=run.work, input=stdin + "\n",
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"davserver {args[0]} failed: {done.stderr.strip()[-500:]}")
    procs, ports = [], []
    for i in range(spec.processes):
        port = br.free_port()
        argv = [*cli, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
        proc = run.spawn(f"{name}-{i}", argv, env, run.work)
        run.wait_ready(proc, port)
        procs.append(proc)
        ports.append(port)
    return procs, ports, password


class RssSampler:
    """Peak of the summed VmRSS of some processes (and their children), every ``every`` s."""

    def __init__(self, procs: list[Any], every: float = 0.2) -> None:
        self.procs, self.every = procs, every
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _rss(self) -> int:
        total = 0
        for proc in self.procs:
            for pid in proc.pids():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
        return total

    def _loop(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, self._rss())
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self._rss())


_EXC = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Detected|Violation|Timeout))\b")


def log_summary(procs: list[Any]) -> dict[str, Any]:
    """ERROR lines and tracebacks in the servers' logs, the exception names they mention, and
    the last lines of the first traceback of each exception class."""
    errors = tracebacks = 0
    names: collections.Counter[str] = collections.Counter()
    samples: dict[str, list[str]] = {}
    for proc in procs:
        with contextlib.suppress(OSError):
            lines = proc.log.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if "Traceback (most recent call last)" in line:
                    tracebacks += 1
                    frames = list(itertools.takewhile(lambda x: x.startswith(" "), lines[i + 1 :]))
                    last = lines[i + 1 + len(frames)] if i + 1 + len(frames) < len(lines) else ""
                    samples.setdefault(last.split(":", 1)[0], [*frames[-40:], last])
                if " ERROR " in line or "ERROR:" in line or line.startswith("ERROR"):
                    errors += 1
                names.update(set(_EXC.findall(line)))
    return {
        "error_lines": errors,
        "tracebacks": tracebacks,
        "exceptions": dict(names.most_common(6)),
        "traceback_samples": samples,
    }


# -- one configuration ----------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def summarize(
    ops: list[Op], elapsed: float, window: float, checker: Checker, failures: list[Failure]
) -> dict[str, Any]:
    """Rates count the requests done within the ``window`` (the run's nominal seconds), so a
    few requests hanging until their timeout after it do not dilute them; latencies and
    statuses count every request."""

    def rate(some: list[Op]) -> float:
        return round(sum(1 for o in some if o.end <= window) / window, 1) if window else 0.0

    by_kind: dict[str, list[Op]] = collections.defaultdict(list)
    for op in ops:
        by_kind[op.kind].append(op)
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        mine = by_kind.get(kind, [])
        lat = [(o.end - o.start) * 1000 for o in mine]
        statuses = collections.Counter(str(o.status) if o.status else "none" for o in mine)
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        kinds[kind] = {
            "count": len(mine),
            "ops_s": rate(mine),
            "p50_ms": None if p50 is None else round(p50, 1),
            "p99_ms": None if p99 is None else round(p99, 1),
            "statuses": dict(sorted(statuses.items())),
        }
    reasons = collections.Counter(o.note or "?" for o in ops if o.status is None)
    return {
        "elapsed_s": round(elapsed, 1),
        "ops": len(ops),
        "ops_s": rate(ops),
        "kinds": kinds,
        "5xx": sum(1 for o in ops if o.status is not None and o.status >= 500),
        "no_answer": sum(1 for o in ops if o.status is None),
        "no_answer_reasons": dict(reasons.most_common()),
        "locks_lost": lost_locks(ops),
        "observations": checker.observations,
        "unverifiable": checker.unverifiable,
        "failures": len(failures),
    }


def lost_locks(ops: list[Op]) -> int:
    """LOCK sequences whose PUT with the fresh token got 412 or whose UNLOCK got 409: the
    lock was gone although nobody unlocked it (another request removed it)."""
    by_client: dict[int, list[Op]] = collections.defaultdict(list)
    for op in sorted(ops, key=lambda o: o.start):
        by_client[op.client].append(op)
    lost = 0
    for seq in by_client.values():
        for i, op in enumerate(seq[:-1]):
            if op.kind != "LOCK" or op.status not in (200, 201):
                continue
            nxt = seq[i + 1 : i + 4]
            if any(
                (o.kind.startswith("PUT") and o.status == 412)
                or (o.kind == "UNLOCK" and o.status == 409)
                for o in nxt
                if o.path == op.path
            ):
                lost += 1
    return lost


def report_failures(checker: Checker, failures: list[Failure], limit: int = 6) -> list[str]:
    """The first failure of each kind (up to ``limit`` kinds), each with its path's history."""
    lines: list[str] = []
    kinds: set[str] = set()
    for f in failures:
        kind = f.what.split(";")[0].split(":")[0]
        if kind in kinds or len(kinds) >= limit:
            continue
        kinds.add(kind)
        lines.append(f"verification failure at t={f.op.start:.3f}s on {f.path}: {f.what}")
        lines.extend(checker.history(f.path, f.op.start))
    if len(failures) > len(kinds):
        lines.append(f"… {len(failures)} verification failures in all (every one in the JSON)")
    return lines


def run_config(
    br: ModuleType, run: Any, pg: Postgres, name: str, args: argparse.Namespace
) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    procs, ports, password = start_servers(br, run, pg, name)
    try:
        work = Workload(ports, password, args.clients, args.seconds, args.seed, args.timeout)
        work.setup()
        cpu0 = sum(p.cpu_s() for p in procs)
        with RssSampler(procs) as rss:
            elapsed = work.run()
        cpu = sum(p.cpu_s() for p in procs) - cpu0
        hwm = 0.0
        with contextlib.suppress(OSError, br.BenchError):  # a process that died has none
            hwm = sum(p.peak_rss_mib() for p in procs)
    finally:
        for p in procs:
            p.stop()
    checker = Checker(work.ops)
    failures = checker.check()
    out = summarize(work.ops, elapsed, args.seconds, checker, failures)
    out |= {
        "config": DESCRIBE[name],
        "ports": len(ports),
        "peak_rss_mib": round(rss.peak_kib / 1024, 1),
        "vmhwm_mib": round(hwm, 1),
        "server_cpu_s": round(cpu, 1),
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "server_log": log_summary(procs),
        "failure_report": report_failures(checker, failures),
        "failure_list": [
            {"t": round(f.op.start, 3), "path": f.path, "what": f.what, "client": f.op.client}
            for f in failures
        ],
    }
    return out


# -- the table ------------------------------------------------------------------------------------


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def build_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    names = list(results)
    rows: list[list[str]] = [["", *names]]

    def row(label: str, get: Any) -> None:
        cells = []
        for n in names:
            r = results[n]
            cells.append("not run" if "error" in r else get(r))
        rows.append([label, *cells])

    row("all kinds, ops/s", lambda r: _fmt(r["ops_s"]))
    for kind in KINDS:
        row(f"{kind} ops/s", lambda r, k=kind: _fmt(r["kinds"][k]["ops_s"]))
        row(
            f"{kind} p50 / p99 ms",
            lambda r, k=kind: f"{_fmt(r['kinds'][k]['p50_ms'])} / {_fmt(r['kinds'][k]['p99_ms'])}",
        )
    row("5xx answers", lambda r: str(r["5xx"]))
    row("no answer (timeout, reset)", lambda r: str(r["no_answer"]))
    row("locks lost (own token refused)", lambda r: str(r["locks_lost"]))
    row("observations checked", lambda r: str(r["observations"]))
    row("unverifiable (crossing MOVEs)", lambda r: str(r["unverifiable"]))
    row("VERIFICATION FAILURES", lambda r: str(r["failures"]))
    row("server peak RSS MiB (sampled)", lambda r: _fmt(r["peak_rss_mib"]))
    row("server CPU s", lambda r: _fmt(r["server_cpu_s"]))
    row("load avg 1 min, start/end", lambda r: "{} / {}".format(*r["loadavg_1m"]))
    return rows


def status_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    names = list(results)
    rows: list[list[str]] = [["statuses", *names]]
    for kind in KINDS:
        cells = []
        for n in names:
            r = results[n]
            st = {} if "error" in r else r["kinds"][kind]["statuses"]
            cells.append(" ".join(f"{s}:{c}" for s, c in st.items()) or "-")
        rows.append([kind, *cells])
    return rows


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in rows
    )


# -- main -----------------------------------------------------------------------------------------


def pick_configs(spec: str) -> list[str]:
    out = []
    for raw in spec.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if name not in CONFIGS:
            raise SystemExit(f"unknown config {raw!r}; choose from {', '.join(CONFIGS)}")
        out.append(name)
    return out


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--seconds", type=float, default=30.0, help="per configuration (default 30)")
    ap.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma list of {', '.join(CONFIGS)} (default {','.join(DEFAULT_CONFIGS)})",
    )
    ap.add_argument("--json", type=Path, help="write every figure and the failures here")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--seed", type=int, default=1, help="of the clients' choices (default 1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per request, s (default 60)")
    ap.add_argument("--tmp", help="parent of the run's temporary directory (default $TMPDIR)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    configs = pick_configs(args.configs)

    br = _load_bench_run()
    br.INTERRUPTS.install()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": ["bench/load.py", *(list(argv) if argv is not None else sys.argv[1:])],
        "clients": args.clients,
        "seconds": args.seconds,
        "machine": br.machine(),
        "versions": br.versions(),
        "results": {},
    }
    if (load := os.getloadavg()[0]) > 0.5:
        print(f"warning: load average {load:.2f}: other work skews the figures", file=sys.stderr)
    run, pg = br.Runner(args.tmp), Postgres()
    results: dict[str, dict[str, Any]] = report["results"]
    try:
        for name in configs:
            print(f"{name} ({DESCRIBE[name]}): {args.clients} clients, {args.seconds:g} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            try:
                results[name] = run_config(br, run, pg, name, args)
            except (
                RuntimeError,
                OSError,
                ImportError,
                subprocess.SubprocessError,
                br.BenchError,
            ) as exc:
                results[name] = {"error": str(exc)}
                print(f"{name}: could not run: {exc}", file=sys.stderr)
                continue
            for line in results[name]["failure_report"]:
                print(f"{name}: {line}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        run.close()
        pg.stop()
    report["loadavg_at_end"] = os.getloadavg()
    print(render(build_rows(results), args.markdown))
    print()
    print(render(status_rows(results), args.markdown))
    print(
        "\nclients: "
        f"{args.clients} threads, one user, one tree; {args.seconds:g} s per configuration; "
        "latencies include the client's own time (same machine)."
    )
    for name, r in results.items():
        if "error" in r:
            print(f"{name}: not run: {r['error']}")
        if r.get("no_answer"):
            print(f"{name}: requests without an answer: {r['no_answer_reasons']}")
        if "server_log" in r and (r["server_log"]["error_lines"] or r["server_log"]["tracebacks"]):
            log = r["server_log"]
            print(
                f"{name}: server log has {log['error_lines']} ERROR lines, {log['tracebacks']} "
                f"tracebacks; exceptions named: {log['exceptions']}"
            )
            for sample in log["traceback_samples"].values():
                files = [x.strip() for x in sample if x.strip().startswith("File")]
                ours = [x for x in files if "/davserver/" in x and "site-packages" not in x]
                where = (ours or files or [""])[-1]
                print(f"{name}:   {sample[-1][:160]}  ({where[:160]})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON: {args.json}")
    bad = any("error" in r or r["failures"] for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
