"""``davserver serve`` as a real subprocess on an existing data dir, for tests that kill it,
restart it on the same data, or need its maintenance loop (which only ``serve`` runs).

``init_with_user(data_dir, env)`` runs ``davserver init`` and ``user add alice`` through the
real CLI; ``ServeProcess(data_dir, env)`` starts ``python -m davserver.cli serve`` (the
checkout on ``PYTHONPATH``, not an installed copy) and waits for the URL it prints. Its stderr
goes to a file (``log_path``) so that a test can read the whole server log after a ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.harness.davserver import FAST_ENV, DavClient, env_without_davserver

PASSWORD = "correct horse battery"
_ROOT = Path(__file__).resolve().parents[2]


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a davserver subprocess: fast Argon2id, this checkout first on
    ``PYTHONPATH``, plus ``extra``."""
    env = {**env_without_davserver(), **FAST_ENV, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    return env


def init_with_user(data_dir: Path, extra: Mapping[str, str] | None = None) -> None:
    env = process_env(extra)
    cli = [sys.executable, "-m", "davserver.cli"]
    subprocess.run(
        [*cli, "init", "--data-dir", str(data_dir)], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [*cli, "user", "add", "alice", "--password-stdin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )


class ServeProcess:
    """A running ``davserver serve`` on ``data_dir`` (already initialised)."""

    def __init__(
        self, data_dir: Path, extra: Mapping[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path or data_dir.parent / "serve.log"
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=process_env(extra),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " at " not in line:
            self.kill()
            raise AssertionError(f"davserver serve did not start: {self.log()[-2000:]}")
        self.url = line.rsplit(" at ", 1)[1].strip()
        host_port = self.url.split("//", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)

    def client(self) -> DavClient:
        return DavClient(self.url, "alice", PASSWORD)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)
        self._close()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        finally:
            self._close()
        return code

    def _close(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()
