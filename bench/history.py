#!/usr/bin/env python3
"""What versions and the trash cost: davserver with and without them, side by side, in one run.

Usage: python bench/history.py [--quick] [--size-mib N] [--small-count N] [--tree N]
                               [--rounds N] [--repeats N] [--json PATH] [--markdown] [--tmp DIR]

It starts two ``davserver serve`` processes (local blob directory and SQLite, every other
setting at its default) the way bench/run.py does, each on a free loopback port:

- ``disabled``: ``versions.retention: disabled`` (an overwrite replaces the file);
- ``auto``:     ``versions.retention: auto`` (the default: an overwrite keeps the old
                version; the first versions of a file are all kept, so is every one here).

(a) Writes, on both: N x 4 KiB PUT of new files, then N overwrites of the same files (one
    kept-alive connection, ops/s); one PUT of a large file (1 GiB, streamed from a pattern,
    never held in memory), then one overwrite of it (MB/s); the server's peak RSS during the
    large PUTs and the user's usage afterwards. The two servers take turns, measurement by
    measurement, for ``--rounds`` rounds (the order swapped each round), so that other load
    on the machine falls on both alike; each figure is the median of its rounds. What was
    written last is read back once (untimed) and compared.
(b) Deletes, on ``auto``: DELETE of a directory of 10,000 files and of single files into the
    trash and, for comparison, with ``X-Delete-Permanently: true``; the restore from the trash
    of each (ms, median of ``--repeats``: the tree goes into the trash and back that often).
    The restore is Nextcloud's ``MOVE`` to ``/remote.php/dav/trashbin/USER/restore/NAME`` if
    the server has that collection, else ``Session.trash_restore`` of the vault API in this
    process (logged in before any clock starts); the JSON says which. After each restore
    (untimed) the directory must list every file again.

It prints both tables (ratios auto/disabled and trash/permanent), writes JSON (default
bench/results/history.json), and stops and removes everything it started, also on Ctrl-C.
Exit status 1 if a server or a measurement failed. Method and results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_run() -> ModuleType:
    """bench/run.py as a module: its HTTP client, process runner and table renderer."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


B = _load_run()
MIB = B.MIB
NA = B.NA
CONFIGS = ("disabled", "auto")
TINY = 64  # bytes per file of the deleted tree
HREF = re.compile(rb"<(?:[A-Za-z0-9]+:)?href>([^<]*)</(?:[A-Za-z0-9]+:)?href>")
FILENAME = re.compile(rb"<(?:[A-Za-z0-9]+:)?trashbin-filename>([^<]*)</")
RESPONSE = re.compile(rb"<(?:[A-Za-z0-9]+:)?response[\s>]")


@dataclass(frozen=True)
class Sizes:
    big: int
    small_count: int
    tree: int
    clients: int
    repeats: int
    rounds: int


# (key, label, unit) of the two tables; every key is in the JSON.
WRITE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("put_small_ops", "{n} x 4 KiB PUT, new files", "ops/s"),
    ("overwrite_small_ops", "{n} x 4 KiB PUT, overwrites", "ops/s"),
    ("put_big_mb_s", "{big} PUT, new file", "MB/s"),
    ("overwrite_big_mb_s", "{big} PUT, overwrite", "MB/s"),
    ("put_small_cpu_s", "  server CPU, {n} new files", "s"),
    ("overwrite_small_cpu_s", "  server CPU, {n} overwrites", "s"),
    ("put_big_cpu_s", "  server CPU, {big} new file", "s"),
    ("overwrite_big_cpu_s", "  server CPU, {big} overwrite", "s"),
    ("rss_big_mib", "peak RSS during the {big} PUTs", "MiB"),
    ("usage_mib", "the user's usage after these writes", "MiB"),
)
DELETE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("delete_tree_ms", "DELETE dir of {t} files", "ms"),
    ("delete_file_ms", "DELETE one file", "ms"),
    ("restore_tree_ms", "restore dir of {t} files", "ms"),
    ("restore_file_ms", "restore one file", "ms"),
)
DELETE_MODES = ("trash", "permanent")


def label(text: str, sizes: Sizes) -> str:
    return text.format(n=sizes.small_count, big=B.size_label(sizes.big), t=sizes.tree)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 2)


# -- the servers -----------------------------------------------------------------------------


def start(run: Any, config: str) -> Any:
    """A davserver with ``versions.retention`` = ``config``; settings go through the
    environment, as ``bench/run.py --set`` does."""
    saved = dict(B.DAVSERVER_SETTINGS)
    B.DAVSERVER_SETTINGS["DAVSERVER_VERSIONS_RETENTION"] = config
    try:
        srv = B.start_davserver(run, f"davserver-{config}", s3=False)
        srv.data_dir = run.work / f"davserver-{config}"
        return srv
    finally:
        B.DAVSERVER_SETTINGS.clear()
        B.DAVSERVER_SETTINGS.update(saved)


# -- (a) writes ------------------------------------------------------------------------------


def bench_writes(
    servers: dict[str, Any], sizes: Sizes, pattern: Any, results: dict[str, dict[str, Any]]
) -> None:
    """Every write measurement on both servers, interleaved: round by round, step by step,
    one server then the other (the order swapped each round), so that load from outside the
    run falls on both alike; the figure is the median over the rounds."""
    n = sizes.small_count
    clients = {c: srv.client() for c, srv in servers.items()}
    samples: dict[str, dict[str, list[float]]] = {c: {} for c in servers}

    def small(c: str, r: int, shift: int) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            body = pattern.at(i * 4096 + shift, 4096)
            clients[c].request("PUT", f"/small-{r}/f{i:05d}.bin", body)
        return n / (time.perf_counter() - t0)

    def big(c: str, r: int) -> float:
        t0 = time.perf_counter()
        servers[c].client().put_stream(f"/big-{r}.bin", sizes.big, pattern.chunks(sizes.big))
        return sizes.big / (time.perf_counter() - t0) / 1e6

    steps: list[tuple[str, Callable[[str, int], float]]] = [
        ("put_small_ops", lambda c, r: small(c, r, 0)),
        ("overwrite_small_ops", lambda c, r: small(c, r, 7919)),
        ("put_big_mb_s", big),
        ("overwrite_big_mb_s", big),
    ]
    for r in range(sizes.rounds):
        for c in servers:
            clients[c].request("MKCOL", f"/small-{r}/", expect=(201,))
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for key, fn in steps:
            for c in order:
                with servers[c].phase(f"{key}_{r}"):
                    samples[c].setdefault(key, []).append(fn(c, r))
    last = sizes.rounds - 1
    for c, srv in servers.items():
        out = results[c]["metrics"]
        for key, values in samples[c].items():
            stem = key.removesuffix("_ops").removesuffix("_mb_s")
            out[key] = round(statistics.median(values), 1)
            out[stem + "_samples"] = [round(v, 1) for v in values]
            # The server's CPU seconds for it: steadier than the wall clock on a busy machine.
            cpu = [srv.phases[f"{key}_{r}"]["cpu_s"] for r in range(sizes.rounds)]
            out[stem + "_cpu_s"] = round(statistics.median(cpu), 2)
        out["rss_big_mib"] = max(p["peak_rss_mib"] for k, p in srv.phases.items() if "_big_" in k)
        for i in range(n):  # what a GET answers is the last version written
            got = clients[c].request("GET", f"/small-{last}/f{i:05d}.bin", expect=(200,))
            pattern.check(i * 4096 + 7919, got, "GET of an overwritten small file")
        if clients[c].get_check(f"/big-{last}.bin", pattern) != sizes.big:
            raise B.BenchError("GET of the large file came back short")
        clients[c].close()
        data = srv_data(srv)
        out["usage_mib"] = round(usage_bytes(data) / MIB, 1)
        # On disk, including what waits for the collector (an overwritten blob, when disabled).
        out["stored_mib"] = round(stored_bytes(data) / MIB, 1)


def srv_data(srv: Any) -> Path:
    return Path(srv.data_dir)


def usage_bytes(data: Path) -> int:
    """The user's ``usage_bytes`` (versions and trash count towards it), read from the index."""
    con = sqlite3.connect(f"file:{data / 'index.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute('SELECT usage_bytes FROM "user" WHERE name = ?', (B.USER,)).fetchone()
    finally:
        con.close()
    return int(row[0])


def stored_bytes(data: Path) -> int:
    """What the data directory holds: the blob directory and the index (with its WAL)."""
    total = sum(p.stat().st_size for p in (data / "blobs").rglob("*") if p.is_file())
    return total + sum(p.stat().st_size for p in data.glob("index.db*") if p.is_file())


# -- (b) deletes and restores ----------------------------------------------------------------


class Restorer:
    """Restores a trash item by its original name: by DAV if the server has the trashbin
    collection, else through the vault API on the same data directory."""

    def __init__(self, srv: Any, data_dir: Path) -> None:
        self.srv = srv
        self.client = srv.client()
        self.base = f"/remote.php/dav/trashbin/{B.USER}"
        self.session: Any = None
        self.vault: Any = None
        probe = self.client.request(
            "PROPFIND", self.base + "/trash/", headers={"Depth": "0"}, expect=range(200, 600)
        )
        self.via = "dav" if RESPONSE.search(probe) else "vault"
        if self.via == "vault":
            from davserver.config import load
            from davserver.runtime import open_vault

            config = load(data_dir / "davserver.yaml", {})
            self.vault = open_vault(config)
            self.session = self.vault.login(B.USER, srv.password)  # Argon2id: not timed

    def item(self, original: str) -> str:
        """The trash name (what restore takes) of the item that was ``/original``."""
        found = self.find(original)
        if len(found) != 1:
            raise B.BenchError(f"{len(found)} trash items for {original!r}")
        return found[0]

    def find(self, original: str) -> list[str]:
        """The trash names of the items that were ``/original``."""
        if self.via == "vault":
            items = self.session.trash_items()
            return [str(i.name) for i in items if i.original_location == original]
        body = (
            b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:" '
            b'xmlns:nc="http://nextcloud.org/ns"><d:prop><nc:trashbin-filename/>'
            b"<nc:trashbin-original-location/></d:prop></d:propfind>"
        )
        hdrs = {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'}
        listing = self.client.request("PROPFIND", self.base + "/trash/", body, hdrs)
        found = []
        for part in RESPONSE.split(listing)[1:]:
            href, name = HREF.search(part), FILENAME.search(part)
            if href and name and name.group(1).decode() == original.rsplit("/", 1)[-1]:
                found.append(unquote(href.group(1).decode()).rstrip("/").rsplit("/", 1)[-1])
        return found

    def restore(self, name: str) -> None:
        if self.via == "vault":
            self.session.trash_restore(name)
            return
        dest = f"http://127.0.0.1:{self.srv.port}{self.base}/restore/{quote(name)}"
        self.client.request(
            "MOVE", f"{self.base}/trash/{quote(name)}", headers={"Destination": dest},
            expect=(201, 204),
        )  # fmt: skip

    def close(self) -> None:
        self.client.close()
        if self.vault is not None:
            self.vault.close()


def bench_deletes(srv: Any, sizes: Sizes, pattern: Any, out: dict[str, Any]) -> None:
    """On one server: DELETE of a tree and of single files into the trash (each restored
    afterwards, the tree ``repeats`` times back and forth) and with X-Delete-Permanently."""
    one = srv.client()
    many = [srv.client() for _ in range(sizes.clients)]
    restorer = Restorer(srv, srv_data(srv))
    out["restore_via"] = restorer.via

    def timed(fn: Callable[..., object], *args: Any, **kw: Any) -> float:
        """Milliseconds of one call of ``fn(*args, **kw)``."""
        t0 = time.perf_counter()
        fn(*args, **kw)
        return (time.perf_counter() - t0) * 1000

    def keep(key: str, samples: list[float]) -> None:
        out[key] = median_ms(samples)
        out[key.removesuffix("_ms") + "_samples_ms"] = [round(v, 2) for v in samples]

    try:
        for mode in DELETE_MODES:
            hdrs = {"X-Delete-Permanently": "true"} if mode == "permanent" else {}
            tree = f"tree-{mode}"
            one.request("MKCOL", f"/{tree}/", expect=(201,))
            fill = B.in_parallel(
                many,
                sizes.tree,
                lambda c, i, d=tree: c.request("PUT", f"/{d}/t{i:05d}.txt", pattern.at(i, TINY)),
            )
            out[f"fill_tree_{mode}_s"] = round(fill, 2)
            files = [f"file-{mode}-{i}.bin" for i in range(sizes.repeats)]
            for i, f in enumerate(files):
                one.request("PUT", f"/{f}", pattern.at(i, 4096))
            cycles = sizes.repeats if mode == "trash" else 1
            deletes, restores = [], []
            for _ in range(cycles):
                with srv.phase(f"delete_tree_{mode}"):
                    deletes.append(
                        timed(one.request, "DELETE", f"/{tree}/", headers=hdrs, expect=(204,))
                    )
                one.request("PROPFIND", f"/{tree}/", headers={"Depth": "0"}, expect=(404,))
                if mode == "permanent":
                    break
                name = restorer.item(tree)  # untimed: the listing
                with srv.phase("restore_tree"):
                    restores.append(timed(restorer.restore, name))
                hdr = {"Depth": "1"}
                listed = one.request("PROPFIND", f"/{tree}/", headers=hdr, expect=(207,))
                if (got := len(RESPONSE.findall(listed))) != sizes.tree + 1:
                    raise B.BenchError(f"the restored tree lists {got} of {sizes.tree + 1}")
            keep(f"delete_tree_{mode}_ms", deletes)
            with srv.phase(f"delete_file_{mode}"):
                keep(
                    f"delete_file_{mode}_ms",
                    [
                        timed(one.request, "DELETE", f"/{f}", headers=hdrs, expect=(204,))
                        for f in files
                    ],
                )
            if mode == "permanent":
                # Whether the server honoured the header (else this column went to the trash).
                out["permanent_honoured"] = not restorer.find(tree)
                continue
            keep("restore_tree_trash_ms", restores)
            names = [restorer.item(f) for f in files]  # untimed: the listing
            with srv.phase("restore_file"):
                keep("restore_file_trash_ms", [timed(restorer.restore, n) for n in names])
            for i, f in enumerate(files):
                got_body = one.request("GET", f"/{f}", expect=(200,))
                pattern.check(i, got_body, f"GET of restored {f}")
    finally:
        restorer.close()
        for c in (one, *many):
            c.close()


# -- the report ------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return NA if a is None or not b else B.ratio(a / b)


def write_table(results: dict[str, dict[str, Any]], sizes: Sizes) -> tuple[list[str], list[Any]]:
    head = ["measurement", *CONFIGS, "auto/disabled"]
    rows = []
    for key, text, unit in WRITE_METRICS:
        b, a = (results.get(c, {}).get("metrics", {}).get(key) for c in CONFIGS)
        rows.append([f"{label(text, sizes)}, {unit}", B.fmt(b), B.fmt(a), ratio(a, b)])
    return head, rows


def paired_table(results: dict[str, dict[str, Any]], sizes: Sizes) -> tuple[list[str], list[Any]]:
    """The write rates another way, less sensitive to load from outside the run (which only
    ever slows a measurement down): the best round of each server, and the median of the
    per-round ratios (the two servers of one round ran back to back, so they shared the
    machine's state: its page cache, its disk's write-back)."""
    head = ["measurement", "best disabled", "best auto", "best auto/disabled", "median round ratio"]
    rows = []
    for key, text, unit in WRITE_METRICS:
        if not key.endswith(("_ops", "_mb_s")):
            continue
        stem = key.removesuffix("_ops").removesuffix("_mb_s")
        b, a = (results.get(c, {}).get("metrics", {}).get(stem + "_samples") for c in CONFIGS)
        if not a or not b:
            continue
        per_round = statistics.median(x / y for x, y in zip(a, b, strict=True) if y)
        rows.append(
            [
                f"{label(text, sizes)}, {unit}",
                B.fmt(max(b)),
                B.fmt(max(a)),
                ratio(max(a), max(b)),
                f"{per_round:.2f}",
            ]
        )
    return head, rows


def delete_table(metrics: dict[str, Any], sizes: Sizes) -> tuple[list[str], list[Any]]:
    head = ["measurement", "into trash", "permanently", "trash/permanent"]
    rows = []
    for key, text, unit in DELETE_METRICS:
        stem = key.removesuffix("_ms")
        t, p = metrics.get(f"{stem}_trash_ms"), metrics.get(f"{stem}_permanent_ms")
        rows.append([f"{label(text, sizes)}, {unit}", B.fmt(t), B.fmt(p), ratio(t, p)])
    return head, rows


def run_all(run: Any, sizes: Sizes, pattern: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Both servers up at once (each idle while the other is measured); their results and
    the errors of the run (by step)."""
    results: dict[str, dict[str, Any]] = {c: {"metrics": {}} for c in CONFIGS}
    errors: dict[str, str] = {}
    servers: dict[str, Any] = {}
    try:
        for c in CONFIGS:
            print(f"davserver-{c}: starting", file=sys.stderr, flush=True)
            servers[c] = start(run, c)
            results[c] |= {"pid": servers[c].proc.pid, "command": servers[c].command}
            servers[c].client().request("PROPFIND", "/", headers={"Depth": "0"}, expect=(207,))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("writes", lambda: bench_writes(servers, sizes, pattern, results)),
            (
                "deletes",
                lambda: bench_deletes(servers["auto"], sizes, pattern, results["auto"]["metrics"]),
            ),
        ]
        for step, fn in steps:
            print(f"  {step}…", file=sys.stderr, flush=True)
            try:
                fn()
            except Exception as exc:  # reported in the JSON and the exit status
                errors[step] = f"{type(exc).__name__}: {exc}"
                dead = [c for c, srv in servers.items() if srv.proc.popen.poll() is not None]
                for c in dead:
                    errors[step] += f"\n(davserver-{c} exited)\n{servers[c].proc.log_tail()}"
                if dead:
                    break
    except Exception as exc:  # a server would not start
        errors["start"] = f"{type(exc).__name__}: {exc}"
    finally:
        for c, srv in servers.items():
            results[c]["phases"] = srv.phases
            srv.proc.stop()
    return results, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    ap.add_argument("--size-mib", type=int, help="large file (default 1024; --quick 16)")
    ap.add_argument("--small-count", type=int, help="4 KiB files (default 1000; --quick 100)")
    ap.add_argument(
        "--tree", type=int, help="files in the deleted dir (default 10000; --quick 300)"
    )
    ap.add_argument("--clients", type=int, default=8, help="clients filling the tree (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="deletes and restores of each kind")
    ap.add_argument("--rounds", type=int, help="rounds of the writes (default 3; --quick 1)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "history.json")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--tmp", help="parent of the run's temporary directory (default $TMPDIR)")
    args = ap.parse_args(argv)
    q = args.quick
    sizes = Sizes(
        big=(args.size_mib or (16 if q else 1024)) * MIB,
        small_count=args.small_count or (100 if q else 1000),
        tree=args.tree or (300 if q else 10_000),
        clients=args.clients,
        repeats=max(1, args.repeats if not q else min(args.repeats, 3)),
        rounds=max(1, args.rounds or (1 if q else 3)),
    )
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": B.machine(),
        "versions": B.versions(),
        "sizes": sizes.__dict__,
        "configs": {},
    }
    B.INTERRUPTS.install()
    if (load := os.getloadavg()[0]) > 0.5:
        print(f"warning: load average {load:.2f}: other work skews the figures", file=sys.stderr)
    pattern = B.Pattern()
    run = B.Runner(args.tmp)
    report["workdir"] = str(run.work)
    t0 = time.perf_counter()
    try:
        report["configs"], report["errors"] = run_all(run, sizes, pattern)
        for where, err in report["errors"].items():
            print(f"{where} failed: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        run.close()
        report["processes"] = run.pids
        report["duration_s"] = round(time.perf_counter() - t0, 1)
        report["loadavg_at_end"] = os.getloadavg()

    results = report["configs"]
    start_load, end_load = report["machine"]["loadavg_at_start"][0], report["loadavg_at_end"][0]
    print(
        f"revision {report['versions'].get('git', NA)}, {report['machine']['nproc']} cores, "
        f"load average {start_load:.2f} at the start, {end_load:.2f} at the end; "
        f"writes: median of {sizes.rounds} interleaved rounds\n"
    )
    print("(a) writes: versions.retention disabled vs auto (ratio auto/disabled)\n")
    head, rows = write_table(results, sizes)
    print(B.render(head, rows, args.markdown))
    print("\n(a') the same writes: best round, and the median of the per-round ratios\n")
    head, rows = paired_table(results, sizes)
    print(B.render(head, rows, args.markdown))
    auto = results["auto"]["metrics"]
    print(
        "\n(b) DELETE into the trash vs X-Delete-Permanently, and the restore "
        f"(via {auto.get('restore_via', NA)}; ratio trash/permanent)\n"
    )
    head, rows = delete_table(auto, sizes)
    print(B.render(head, rows, args.markdown))
    if auto.get("permanent_honoured") is False:
        print(
            "\nnote: this server ignored X-Delete-Permanently: the 'permanently' column went "
            "into the trash as well"
        )
    fills = [auto.get(f"fill_tree_{m}_s") for m in DELETE_MODES]
    if all(fills):
        print(
            f"\nfilling each {sizes.tree}-file dir ({sizes.clients} clients, untimed above): "
            f"{fills[0]} s, {fills[1]} s"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {args.json}  ({report['duration_s']:.0f} s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
