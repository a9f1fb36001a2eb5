"""``davserver serve`` as a real subprocess (``python -m davserver.cli``), for tests and benches
that need several server processes on one index, or a server whose CPU is its own.

``start_serve_process(data_dir, env)`` initialises ``data_dir`` if needed (``davserver init``),
starts the server on a free port (``server.port`` 0) with the fast Argon2id settings of the
test harness, and waits for its "is serving … at URL" line. Its stderr (the log) goes to a
file, so a test can look for tracebacks; ``stop()`` sends SIGTERM and waits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.harness.davserver import FAST_ENV, env_without_davserver

ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"is serving .* at (http\S+)")


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a davserver subprocess: no inherited DAVSERVER_*, this checkout
    first on the import path, the harness's fast settings, then ``env``."""
    out = env_without_davserver()
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return {**out, **FAST_ENV, **(env or {})}


def run_cli(args: list[str], env: Mapping[str, str] | None = None, stdin: str = "") -> str:
    """Run one ``davserver`` command; its output (fails the caller on a non-zero exit)."""
    proc = subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"davserver {args[0]} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_serve_process(
    data_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> ServeProcess:
    """Start ``davserver serve`` on ``data_dir`` (initialised if needed) and wait until it
    serves."""
    if not (data_dir / "davserver.yaml").exists():
        run_cli(["init", "--data-dir", str(data_dir)], env)
    log = data_dir.parent / f"{data_dir.name}-serve-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=cli_env(env),
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = _READY.search(line)
        if m:
            return ServeProcess(proc, m.group(1), log)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"davserver serve did not start:\n{log.read_text(errors='replace')}")
