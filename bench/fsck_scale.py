#!/usr/bin/env python3
"""Keyless ``davserver fsck`` and ``davserver scrub`` on a large store: time and peak RSS.

Usage: python bench/fsck_scale.py [--steps 10000,100000] [--dirs 100] [--size 100]
                                  [--threads 8] [--scrub] [--minio] [--json PATH] [--keep DIR]

It creates a data directory (``davserver init``) with one user, then grows the store to each
step's number of files: node and version rows inserted directly through the index models (in
batches, in one transaction each), and one tiny ciphertext object per version put through the
blob store API (``--threads`` at once), with exactly the length DESIGN §5 gives, so that the
store is consistent and fsck must report nothing. After each step it runs ``davserver fsck
--json`` (and ``davserver scrub --json`` with ``--scrub``) as a separate process and reports
its wall time and peak RSS (``VmHWM`` of the child, reported by itself as it exits). A
memory-bounded fsck shows about the same RSS at every step.

With ``--minio`` the objects go to a private MinIO (tests/harness/minio.py, on a free
loopback port, stopped at the end) instead of the local blob directory.

The rows are not real ciphertext (names, keys and metadata are random bytes): this measures
the keyless walk only, which never decrypts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAST_ENV = {
    "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
    "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": "8388608",
}
BATCH = 1000


# The child reports its own peak RSS (VmHWM, reset by exec): wait4's ru_maxrss would include
# the RSS of this process, which Linux carries over into a child across fork and exec.
_CHILD = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['FSCK_SCALE_HWM'], 'w').write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "sys.argv[0] = 'davserver'\n"
    "runpy.run_module('davserver.cli', run_name='__main__')\n"
)


def run_cli(data_dir: Path, *args: str) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak RSS in KiB, stdout) of one ``davserver`` process."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {
            **os.environ,
            **FAST_ENV,
            "PYTHONPATH": str(ROOT),
            "FSCK_SCALE_HWM": str(hwm),
        }
        cmd = [sys.executable, "-c", _CHILD, *args, "--data-dir", str(data_dir)]
        started = time.monotonic()
        proc = subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False
        )
        elapsed = time.monotonic() - started
        rss = int(hwm.read_text()) if hwm.exists() else -1
    return proc.returncode, elapsed, rss, proc.stdout.decode()


class Builder:
    def __init__(self, data_dir: Path, dirs: int, size: int, threads: int) -> None:
        from davserver.config import load
        from davserver.runtime import open_vault

        self.config = load(data_dir / "davserver.yaml", FAST_ENV)
        self.vault = open_vault(self.config)
        self.user_id = self.vault.create_user("bench", "bench-password")
        self.root_id = self._root()
        self.size = size
        self.threads = threads
        self.files = 0
        self.dir_ids = self._make_dirs(dirs)

    def _root(self) -> str:
        from davserver.index.models import User

        with self.vault.index.connection():
            return str(User.get_by_id(self.user_id).root_id)

    def _node(self, parent: str, kind: str, size: int = 0, version: str | None = None) -> dict:
        from davserver.index.fast import new_fileid

        return {
            "id": os.urandom(16).hex(),
            "owner": self.user_id,
            "parent": parent,
            "kind": kind,
            "name_mac": os.urandom(32),
            "name_ct": os.urandom(48),
            "key_env": os.urandom(72),
            "meta_ct": None,
            "current_version": version,
            "size": size,
            "created": time.time(),
            "fileid": new_fileid(),  # fsck wants one per node (schema 7)
        }

    def _make_dirs(self, n: int) -> list[str]:
        from davserver.index.models import Node

        rows = [self._node(self.root_id, "dir") for _ in range(n)]
        with self.vault.index.connection(), self.vault.index.atomic():
            Node.insert_many(rows).execute()
        return [r["id"] for r in rows]

    def grow_to(self, total: int) -> float:
        from davserver.crypto import blobfmt
        from davserver.index.models import Node, User, Version

        started = time.monotonic()
        ct_len = blobfmt.ciphertext_size(self.size, blobfmt.DEFAULT_SEG_LOG2)
        with ThreadPoolExecutor(self.threads) as pool:
            while self.files < total:
                n = min(BATCH, total - self.files)
                nodes, versions = [], []
                for i in range(n):
                    vid = os.urandom(16).hex()
                    node = self._node(
                        self.dir_ids[(self.files + i) % len(self.dir_ids)], "file", self.size, vid
                    )
                    nodes.append(node)
                    versions.append(
                        {
                            "id": vid,
                            "node": node["id"],
                            "version_no": 1,
                            "blob_id": os.urandom(16).hex(),
                            "plain_size": self.size,
                            "header24": blobfmt.make_header(os.urandom(32))[:24],
                            "ck_env": os.urandom(88),
                            "meta_ct": None,
                            "created": time.time(),
                            "digest": None,
                        }
                    )
                ids = [v["blob_id"] for v in versions]
                list(pool.map(self.vault.blobs.put, ids, ([os.urandom(ct_len)] for _ in ids)))
                with self.vault.index.connection(), self.vault.index.atomic():
                    Node.insert_many(nodes).execute()
                    Version.insert_many(versions).execute()
                    User.update(usage_bytes=User.usage_bytes + n * self.size).where(
                        User.id == self.user_id
                    ).execute()
                self.files += n
        return time.monotonic() - started

    def close(self) -> None:
        self.vault.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="10000,100000", help="file counts to measure at")
    ap.add_argument("--dirs", type=int, default=100, help="directories the files spread over")
    ap.add_argument("--size", type=int, default=100, help="plaintext bytes per file")
    ap.add_argument("--threads", type=int, default=8, help="parallel blob puts while building")
    ap.add_argument("--scrub", action="store_true", help="also time a full scrub")
    ap.add_argument("--minio", action="store_true", help="objects in a private MinIO")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it")
    args = ap.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fsck-scale-"))
    data_dir = base / "data"
    minio = None
    if args.minio:
        from tests.harness.davserver import s3_env
        from tests.harness.minio import ensure_minio_binary, make_minio_client, start_minio

        (base / "minio").mkdir(parents=True)
        minio = start_minio(ensure_minio_binary(), base / "minio")
        make_minio_client(minio).make_bucket("fsck-scale")
        FAST_ENV.update(s3_env(minio, "fsck-scale"))
    code, _, _, _ = run_cli(data_dir, "init")
    if code != 0:
        print(f"davserver init failed (exit {code})", file=sys.stderr)
        return 1
    builder = Builder(data_dir, args.dirs, args.size, args.threads)
    results = []
    try:
        for step in steps:
            built = builder.grow_to(step)
            code, secs, rss, out = run_cli(data_dir, "fsck", "--json")
            report = json.loads(out) if out.strip() else {}
            row = {
                "files": step,
                "objects": report.get("checked", {}).get("objects"),
                "build_s": round(built, 1),
                "fsck_exit": code,
                "fsck_problems": len(report.get("problems", [])),
                "fsck_s": round(secs, 1),
                "fsck_peak_rss_mib": round(rss / 1024, 1),
            }
            if args.scrub:
                code, secs, rss, _ = run_cli(data_dir, "scrub", "--json")
                row.update(
                    scrub_exit=code,
                    scrub_s=round(secs, 1),
                    scrub_peak_rss_mib=round(rss / 1024, 1),
                )
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        builder.close()
        if minio is not None:
            minio.stop()
    cols = list(results[0])
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0 if all(r["fsck_exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
