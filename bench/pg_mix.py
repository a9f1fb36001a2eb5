#!/usr/bin/env python3
"""The 32-client mixed workload on a SQLite index and on a PostgreSQL index, in one run.

Usage: python bench/pg_mix.py [--clients 32] [--seconds 20] [--procs 1] [--only sqlite|pg]

Each variant gets a fresh data dir (local blob directory) and ``davserver serve`` as a
subprocess (``--procs`` of them on the same index and blob directory, clients spread over
them); PostgreSQL is a private throwaway cluster (tests/harness/postgres.py). The workload is
tests/harness/mixload.py: PUT/GET/PROPFIND/MOVE/DELETE/LOCK at random on a shared tree of
8 x 16 names. Prints ops/s, p50/p99 and the statuses per operation for each, and the
PostgreSQL/SQLite throughput ratio.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import postgres as pgh  # noqa: E402
from tests.harness.mixload import MixResult, run_mix, setup_tree  # noqa: E402
from tests.harness.serveproc import run_cli, start_serve_process  # noqa: E402


def run_variant(
    work: Path, index_url: str | None, procs: int, clients: int, seconds: float
) -> MixResult:
    data = work / "data"
    env = {"DAVSERVER_SERVER_THREADS": str(clients)}
    if index_url:
        env["DAVSERVER_INDEX_URL"] = index_url
    run_cli(["init", "--data-dir", str(data)], env)
    password = secrets.token_urlsafe(12)
    run_cli(["user", "add", "bench", "--password-stdin", "--data-dir", str(data)], env, password)
    servers = [start_serve_process(data, env) for _ in range(procs)]
    try:
        setup_tree(servers[0].url, "bench", password)
        result = run_mix([s.url for s in servers], "bench", password, clients, seconds)
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        text = s.log_text()
        tracebacks = text.count("Traceback")
        if tracebacks:
            # The exception lines (last line of each traceback), most frequent first.
            kinds = Counter(
                line.split(":")[0]
                for line in text.splitlines()
                if re.match(r"^[A-Za-z_.]+(Error|Exception|Detected|Violation)\b", line)
            )
            print(f"  {tracebacks} tracebacks in a server log: {dict(kinds.most_common(6))}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--only", choices=("sqlite", "pg"))
    ap.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    args = ap.parse_args()
    results: dict[str, MixResult] = {}
    with tempfile.TemporaryDirectory(prefix="pg-mix-") as tmp:
        work = Path(tempfile.mkdtemp(prefix="pg-mix-keep-") if args.keep else tmp)
        if args.keep:
            print(f"data dirs and logs under {work}")
        if args.only != "pg":
            (work / "sqlite").mkdir()
            results["sqlite"] = run_variant(
                work / "sqlite", None, args.procs, args.clients, args.seconds
            )
            print(f"SQLite ({args.procs} process(es)):\n{results['sqlite'].summary()}", flush=True)
        if args.only != "sqlite":
            bindir = pgh._find_bindir()
            if bindir is None:
                print(pgh.NOT_INSTALLED)
                return 1
            cluster = pgh._Cluster(bindir)
            try:
                cluster.start()
                url = pgh._create_role_and_db(cluster)
                (work / "pg").mkdir()
                results["pg"] = run_variant(
                    work / "pg", url, args.procs, args.clients, args.seconds
                )
            finally:
                cluster.stop()
            print(f"PostgreSQL ({args.procs} process(es)):\n{results['pg'].summary()}", flush=True)
    if len(results) == 2:
        ratio = results["pg"].ops_per_s / max(results["sqlite"].ops_per_s, 1e-9)
        print(f"PostgreSQL / SQLite throughput: {ratio:.2f}")
    for name, r in results.items():
        print(f"{name}: 5xx {r.server_errors}, unanswered {r.unanswered} {r.errors[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
