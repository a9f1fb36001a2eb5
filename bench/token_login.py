#!/usr/bin/env python3
"""CPU time of one login: device token against password, side by side, in one run.

Usage: python bench/token_login.py [--password-logins N] [--token-logins N]
                                   [--index-url URL | --postgres]
                                   [--opslimit N] [--memlimit BYTES] [--json PATH] [--tmp DIR]

It opens a vault in this process (a SQLite index in a temporary directory unless
``--index-url`` names another or ``--postgres`` starts a private throwaway PostgreSQL, as
tests/harness/postgres.py does; a local blob directory), creates one user with the production
Argon2id parameters (3 passes, 64 MiB, unless told otherwise) and one device token, and
measures ``Vault.login`` with ``time.process_time`` (CPU of this process, every thread):

- ``full``: the login cache off (``login_cache_size`` 0), so every login does all the work a
  first request of a client does: the password runs Argon2id and opens the MK envelope; the
  token looks up its envelope by id, computes one keyed BLAKE2b, checks the verifier, opens
  the envelope, and records ``last_used`` (at most once a minute);
- ``cached``: the default cache, so every login after the first is what each further request
  of a client costs: one keyed hash for both, plus, for a token, the indexed query that
  re-checks its row (revocations in other worker processes show at once).

With PostgreSQL the figures are this process's CPU only: the database server's share of each
query is not in them.

Prints a table (median and mean µs per login, and the ratio password/token) and writes JSON
(default bench/results/token_login.json). The issue's target: a token login under 1 ms CPU.
Method and results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from davserver.blobs.local import LocalBlobStore  # noqa: E402
from davserver.index import open_index  # noqa: E402
from davserver.vault import Vault, VaultSettings  # noqa: E402


def cpu_per_call(fn: Callable[[], object], n: int) -> list[float]:
    """CPU seconds of each of ``n`` calls."""
    out = []
    for _ in range(n):
        start = time.process_time()
        fn()
        out.append(time.process_time() - start)
    return out


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, list[float]]]:
    settings = VaultSettings(argon2_opslimit=args.opslimit, argon2_memlimit=args.memlimit)
    pepper = os.urandom(32)
    results: dict[str, dict[str, list[float]]] = {}
    for mode, cache_size in (("full", 0), ("cached", settings.login_cache_size)):
        sub = workdir / mode
        sub.mkdir()
        url = args.index_url or "sqlite:///index.db"
        vault = Vault(
            open_index(url, sub),
            LocalBlobStore(sub / "blobs"),
            pepper,
            dataclasses.replace(settings, login_cache_size=cache_size),
        )
        try:
            name = f"bench-{mode}-{os.urandom(3).hex()}"
            password = "correct horse battery staple"
            vault.create_user(name, password)
            _tid, token = vault.create_token(name, password, "bench")
            vault.login(name, password)  # warm: imports, connections, first cache entry
            vault.login(name, token)
            login = functools.partial(vault.login, name)
            results[mode] = {
                "password": cpu_per_call(functools.partial(login, password), args.password_logins),
                "token": cpu_per_call(functools.partial(login, token), args.token_logins),
            }
            vault.delete_user(name)
        finally:
            vault.close()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--password-logins", type=int, default=20)
    p.add_argument("--token-logins", type=int, default=2000)
    p.add_argument("--index-url", default=None, help="default: SQLite in a temporary directory")
    p.add_argument("--postgres", action="store_true", help="a private throwaway PostgreSQL")
    p.add_argument("--opslimit", type=int, default=3)
    p.add_argument("--memlimit", type=int, default=64 * 1024 * 1024)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "token_login.json")
    p.add_argument("--tmp", type=Path, default=None)
    args = p.parse_args()

    cluster = None
    if args.postgres:
        from tests.harness import postgres as pgh

        bindir = pgh._find_bindir()
        if bindir is None:
            print(pgh.NOT_INSTALLED)
            return 1
        cluster = pgh._Cluster(bindir)
        cluster.start()
        args.index_url = pgh._create_role_and_db(cluster)
    try:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            results = measure(args, Path(tmp))
    finally:
        if cluster is not None:
            cluster.stop()
    index_name = "PostgreSQL" if args.postgres else (args.index_url or "SQLite")

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for mode, by_kind in results.items():
        med = {k: statistics.median(v) * 1e6 for k, v in by_kind.items()}
        mean = {k: statistics.fmean(v) * 1e6 for k, v in by_kind.items()}
        summary[mode] = {
            **{f"{k}_median_us": med[k] for k in med},
            **{f"{k}_mean_us": mean[k] for k in mean},
            **{f"{k}_n": float(len(v)) for k, v in by_kind.items()},
        }
        rows.append(
            (
                mode,
                f"{med['password']:,.0f}",
                f"{mean['password']:,.0f}",
                f"{med['token']:,.1f}",
                f"{mean['token']:,.1f}",
                f"{mean['password'] / mean['token']:,.1f}x",
            )
        )
    head = (
        "login",
        "password med µs",
        "password mean µs",
        "token med µs",
        "token mean µs",
        "ratio",
    )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(
        f"CPU per Vault.login (Argon2id {args.opslimit} passes, {args.memlimit >> 20} MiB; "
        f"index {index_name})"
    )
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    target = summary["full"]["token_mean_us"] < 1000
    print(f"token login under 1 ms CPU (full, mean): {'yes' if target else 'NO'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "opslimit": args.opslimit,
                "memlimit": args.memlimit,
                "index": "postgresql" if args.postgres else (args.index_url or "sqlite"),
                "results": summary,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if target else 1


if __name__ == "__main__":
    sys.exit(main())
