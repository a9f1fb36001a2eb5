#!/usr/bin/env python3
"""``davserver gc --dry-run`` and ``backup`` on a large local store: time and peak RSS.

Usage: python bench/gc_store.py [--objects 100000] [--orphans 100] [--backup]

Builds a data directory with ``davserver init``, one user, and N files made straight in the
index (node and version rows, batched), each with an object of 80 bytes (the ciphertext
length of 8 bytes) in the local store, plus some untracked objects (orphans, aged by mtime).
Then runs the real CLI in a child process and prints its wall time and peak RSS
(GNU time's ``%M`` of the child), and checks that the dry run found exactly the orphans.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
    "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": str(8 * 1024 * 1024),
}


TIME = shutil.which("time") or "/usr/bin/time"


def cli(*args: str) -> tuple[str, float, float]:
    """Run the CLI; (stdout, seconds, peak RSS in MiB of that process alone).

    The RSS comes from GNU time's ``%M``, run from a small parent: ``ru_maxrss`` of a child
    forked straight from this (large) builder process would count the builder's pages too.
    """
    t0 = time.perf_counter()
    r = subprocess.run(
        [TIME, "-f", "%M", sys.executable, "-m", "davserver.cli", *args],
        env=ENV,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {r.stderr}")
    rss_kib = int(r.stderr.strip().splitlines()[-1])
    return r.stdout, took, rss_kib / 1024


def build(data: Path, objects: int, orphans: int) -> set[str]:
    from davserver.config import load
    from davserver.crypto import blobfmt
    from davserver.index.models import Node, User, Version
    from davserver.runtime import open_vault

    cli("init", "--data-dir", str(data))
    subprocess.run(
        [sys.executable, "-m", "davserver.cli", "user", "add", "bob", "--password-stdin",
         "--data-dir", str(data)],
        input="pw\n", env=ENV, check=True, capture_output=True, text=True,
    )  # fmt: skip
    config = load(data / "davserver.yaml", ENV)
    vault = open_vault(config)
    root = Path(config.resolve_path(config.storage.local.path))
    header = blobfmt.make_header(os.urandom(32), 16)[: blobfmt.HEADER_AD_LEN]
    with vault.index.connection():
        user = User.get(User.name == "bob")
        now = time.time()
        for start in range(0, objects, 5000):
            nodes, versions = [], []
            for _ in range(min(5000, objects - start)):
                nid, vid, bid = (secrets.token_hex(16) for _ in range(3))
                nodes.append(
                    {"id": nid, "owner": user.id, "parent": user.root_id, "kind": "file",
                     "name_mac": os.urandom(32), "name_ct": b"x", "key_env": b"x",
                     "current_version": vid, "size": 8, "created": now}
                )  # fmt: skip
                versions.append(
                    {"id": vid, "node": nid, "version_no": 1, "blob_id": bid, "plain_size": 8,
                     "header24": header, "ck_env": b"x", "created": now}
                )  # fmt: skip
                d = root / bid[:2] / bid[2:4]
                d.mkdir(parents=True, exist_ok=True)
                (d / bid).write_bytes(b"\0" * blobfmt.ciphertext_size(8, 16))
            with vault.index.atomic():
                Node.insert_many(nodes).execute()
                Version.insert_many(versions).execute()
    vault.close()
    planted = set()
    old = time.time() - 3 * 86400
    for _ in range(orphans):
        bid = secrets.token_hex(16)
        d = root / bid[:2] / bid[2:4]
        d.mkdir(parents=True, exist_ok=True)
        (d / bid).write_bytes(b"\0" * 100)
        os.utime(d / bid, (old, old))
        planted.add(bid)
    return planted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--orphans", type=int, default=100)
    ap.add_argument("--backup", action="store_true", help="also time a backup")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        planted = build(data, args.objects, args.orphans)
        print(f"built {args.objects} objects + {args.orphans} orphans in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        stdout, took, rss = cli("gc", "--dry-run", "--json", "--data-dir", str(data))
        found = {i["id"] for i in json.loads(stdout)["would_remove"] if i["kind"] == "orphan"}
        assert found == planted, (len(found), len(planted))
        print(f"gc --dry-run: {took:.1f} s, peak RSS {rss:.0f} MiB, {len(found)} orphans found")
        if args.backup:
            _, took, rss = cli("backup", str(Path(tmp) / "bk"), "--data-dir", str(data))
            print(f"backup: {took:.1f} s, peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
