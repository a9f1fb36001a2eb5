#!/usr/bin/env python3
"""Stream a large file into and out of the vault; print MB/s and peak RSS per backend.

Usage: python bench/stream_rss.py [--size-mib 1024] [--backends local,s3] [--json out.json]

Each backend runs in its own child process so that its peak RSS (ru_maxrss) is its own. The
S3 backend runs against the pinned MinIO built by the test harness, started on loopback for
the run and stopped afterwards. As a baseline in the same run it also times a plain copy of the
same bytes to a local file and back (no encryption, no index), so the ratio shows what the
engine costs over the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 1 << 20


def _chunks(total: int) -> Iterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        yield block[:n]
        sent += n


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(backend: str, size: int) -> dict[str, float | str]:
    from davserver.blobs import BlobStore
    from davserver.blobs.local import LocalBlobStore
    from tests.harness.vaults import make_vault

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        rss_start = _peak_rss_mib()
        if backend == "plain":
            t0 = time.perf_counter()
            with open(work / "f", "wb") as f:
                for c in _chunks(size):
                    f.write(c)
                f.flush()
                os.fsync(f.fileno())
            t1 = time.perf_counter()
            with open(work / "f", "rb") as f:
                while f.read(CHUNK):
                    pass
            t2 = time.perf_counter()
        else:
            store: BlobStore
            if backend == "local":
                store = LocalBlobStore(work / "blobs")
            else:
                from davserver.blobs.s3 import S3BlobStore

                store = S3BlobStore(
                    os.environ["BENCH_S3_ENDPOINT"],
                    os.environ["BENCH_S3_BUCKET"],
                    os.environ["BENCH_S3_ACCESS_KEY"],
                    os.environ["BENCH_S3_SECRET_KEY"],
                    secure=False,
                    create_bucket=True,
                )
            vault = make_vault(work, store)
            vault.create_user("bench", "bench")
            s = vault.login("bench", "bench")
            t0 = time.perf_counter()
            s.write_file("/big.bin", _chunks(size), expected_length=size)
            t1 = time.perf_counter()
            n = 0
            with s.open_file("/big.bin") as r:
                for part in r.iter_range():
                    n += len(part)
            t2 = time.perf_counter()
            assert n == size, (n, size)
            s.delete("/big.bin")
            vault.close()
    mib = size / (1 << 20)
    return {
        "backend": backend,
        "size_mib": mib,
        "put_mb_s": round(size / 1e6 / (t1 - t0), 1),
        "get_mb_s": round(size / 1e6 / (t2 - t1), 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "rss_at_start_mib": round(rss_start, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--backends", default="plain,local,s3")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.size_mib << 20
    if args.child:
        print(json.dumps(child(args.child, size)))
        return 0

    env = dict(os.environ)
    minio = None
    backends = args.backends.split(",")
    if "s3" in backends:
        from tests.harness.minio import ensure_minio_binary, start_minio

        mtmp = tempfile.mkdtemp(prefix="bench-minio-")
        minio = start_minio(ensure_minio_binary(), Path(mtmp))
        env.update(
            BENCH_S3_ENDPOINT=minio.endpoint,
            BENCH_S3_BUCKET="bench",
            BENCH_S3_ACCESS_KEY=minio.access_key,
            BENCH_S3_SECRET_KEY=minio.secret_key,
        )
    results = []
    try:
        for b in backends:
            out = subprocess.run(
                [sys.executable, __file__, "--child", b, "--size-mib", str(args.size_mib)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if minio is not None:
            minio.stop()
            shutil.rmtree(mtmp, ignore_errors=True)
    base = next((r for r in results if r["backend"] == "plain"), None)
    print(
        f"{'backend':<8} {'MiB':>6} {'PUT MB/s':>9} {'GET MB/s':>9} {'peak RSS MiB':>13}"
        "  vs plain disk"
    )
    for r in results:
        ratio = ""
        if base and r is not base:
            put_ratio = r["put_mb_s"] / base["put_mb_s"]
            get_ratio = r["get_mb_s"] / base["get_mb_s"]
            ratio = f"PUT {put_ratio:.2f}x  GET {get_ratio:.2f}x"
        print(
            f"{r['backend']:<8} {r['size_mib']:>6.0f} {r['put_mb_s']:>9} {r['get_mb_s']:>9} "
            f"{r['peak_rss_mib']:>13}  {ratio}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
