"""Smoke test of the side-by-side benchmark runner (bench/run.py) on tiny sizes.

It checks that the runner starts the servers it can here, produces JSON with every expected
key, and leaves no process or temporary directory behind. It asserts no timing: benchmarks are
scripts that print numbers (STYLE.md), and a loaded CI machine must not fail this test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness.minio import minio_binary_path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "bench" / "run.py"

pytestmark = pytest.mark.slow


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _serve_works() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "davserver.cli", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
    )
    return done.returncode == 0


def _servers(bench: ModuleType) -> list[str]:
    """wsgidav-fs always; rclone-crypt if rclone and MinIO are here; davserver if it serves."""
    servers = ["wsgidav-fs"]
    have_minio = minio_binary_path().is_file()
    try:
        bench.rclone_binary()
        have_rclone = True
    except bench.BenchError:
        have_rclone = False
    if have_minio and have_rclone:
        servers.append("rclone-crypt")
    if _serve_works():
        servers.append("davserver-local")
        if have_minio:
            servers.append("davserver-s3")
    return servers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_quick_run_writes_json_and_stops_everything(tmp_path: Path) -> None:
    bench = _load_runner()
    servers = _servers(bench)
    out = tmp_path / "result.json"
    argv = [sys.executable, str(RUNNER), "--quick", "--size-mib", "2", "--small-count", "16"]
    argv += ["--entries", "40", "--move-count", "12", "--repeats", "2"]
    argv += ["--only", ",".join(servers), "--json", str(out), "--tmp", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVSERVER_")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads(out.read_text())
    assert set(report["servers"]) == set(servers)
    expected = {key for key, _, _ in bench.METRICS}
    for name, result in report["servers"].items():
        assert result["errors"] == {}, name
        assert set(result["metrics"]) == expected, name
        for key, value in result["metrics"].items():
            assert isinstance(value, int | float) and value > 0, (name, key, value)
        assert result["phases"], name
        for phase in result["phases"].values():  # where the cores went, per test
            assert phase["cpu_s"] >= 0 and phase["client_cpu_s"] >= 0, name
            assert ("minio_cpu_s" in phase) == (name in ("davserver-s3", "rclone-crypt")), name
    assert {t["metric"] for t in report["targets"]} <= expected
    # The disk alone, beside the large PUT (with and without fsync).
    assert report["disk"]["write_mb_s"] > 0 and report["disk"]["write_fsync_mb_s"] > 0
    assert "the disk alone" in done.stdout
    for key in ("machine", "versions", "sizes", "processes", "duration_s"):
        assert key in report
    # The table went to stdout, with one column per server.
    header = next(line for line in done.stdout.splitlines() if line.startswith("measurement"))
    assert all(bench.SHORT[name] in header.split() for name in servers)

    # Everything it started is stopped, and its temporary directory is gone.
    started = {p["name"] for p in report["processes"]}
    assert set(servers) <= started
    for proc in report["processes"]:
        assert not _alive(proc["pid"]), proc
    assert not Path(report["workdir"]).exists()
    assert not list(tmp_path.glob("davbench-*"))


HISTORY = ROOT / "bench" / "history.py"


def test_history_bench_quick_run(tmp_path: Path) -> None:
    """bench/history.py on tiny sizes: both configurations run, every figure of both tables
    is there, the restores put everything back, and nothing is left running or on disk."""
    if not _serve_works():
        pytest.skip("davserver serve does not start here")
    out = tmp_path / "history.json"
    argv = [sys.executable, str(HISTORY), "--quick", "--size-mib", "2", "--small-count", "12"]
    argv += ["--tree", "40", "--clients", "4", "--repeats", "2", "--rounds", "2"]
    argv += ["--json", str(out), "--tmp", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVSERVER_")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads(out.read_text())
    spec = importlib.util.spec_from_file_location("bench_history", HISTORY)
    assert spec is not None and spec.loader is not None
    history = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = history
    spec.loader.exec_module(history)
    assert set(report["configs"]) == {"disabled", "auto"}
    assert report["errors"] == {}
    for name, result in report["configs"].items():
        for key, _, _ in history.WRITE_METRICS:
            value = result["metrics"][key]
            assert value >= 0 if key.endswith("_cpu_s") else value > 0, (name, key)
    auto, disabled = (report["configs"][c]["metrics"] for c in ("auto", "disabled"))
    # Overwrites keep versions only under "auto": its usage counts the old bytes too.
    assert auto["usage_mib"] > disabled["usage_mib"]
    for key, _, _ in history.DELETE_METRICS:
        assert auto[key.removesuffix("_ms") + "_trash_ms"] > 0, key
    for key in ("delete_tree_permanent_ms", "delete_file_permanent_ms"):
        assert auto[key] > 0, key
    assert auto["restore_via"] in ("dav", "vault")
    assert "auto/disabled" in done.stdout and "trash/permanent" in done.stdout

    for proc in report["processes"]:
        assert not _alive(proc["pid"]), proc
    assert not Path(report["workdir"]).exists()
    assert not list(tmp_path.glob("davbench-*"))
