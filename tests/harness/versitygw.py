"""pytest plugin: a real Versity S3 gateway (``versitygw``, ``posix`` backend) for the tests.

MinIO's community edition is in maintenance mode, so the S3 suites also run against a second,
independent S3 implementation. Fixtures:

- ``versitygw_server`` (session): a running versitygw on a free loopback port with random root
  credentials, serving a temporary directory (``posix`` backend), stopped at the end of the
  session. It is a ``MinioServer`` (the harness's generic "S3 service" record), so every helper
  of ``tests.harness.minio`` (``make_s3_store``, ``make_minio_client``, ``remove_bucket``) works
  on it unchanged.
- ``versitygw_bucket`` (module): a fresh random bucket on it, removed afterwards.
- ``s3_service`` (module, parametrized ``s3`` = MinIO, ``versitygw``): the server of either,
  for suites that take "an S3 store"; ``s3_service_bucket`` (module) is a bucket on it.

Helpers: ``start_versitygw(binary, workdir)`` (for tests that need a private gateway they may
SIGSTOP or kill) and ``ensure_versitygw_binary()``.

The binary is pinned and built like MinIO's: ``go install`` of the tagged module (about a
minute) into ``${DAVSERVER_CACHE_DIR:-~/.cache/davserver}/versitygw/<version>/versitygw``;
``scripts/setup`` runs ``python -m tests.harness.versitygw build``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.minio import (
    MinioServer,
    MinioUnavailableError,
    _log_tail,
    _to_terminal,
    cache_dir,
    free_port,
    make_minio_client,
    remove_bucket,
)

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"

_STARTUP_TIMEOUT = 60.0


def versitygw_binary_path() -> Path:
    return cache_dir() / "versitygw" / VERSITYGW_VERSION / "versitygw"


def ensure_versitygw_binary(announce: Callable[[str], None] = _to_terminal) -> Path:
    """Return the pinned versitygw binary, building it with ``go install`` if it is missing.

    Concurrent callers wait on a lock file instead of building twice. Raises
    ``MinioUnavailableError`` (the harness's "S3 service unavailable") with the exact error.
    """
    path = versitygw_binary_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        go = shutil.which("go")
        if go is None:
            raise MinioUnavailableError("cannot build versitygw: `go` is not on PATH")
        announce(f"building versitygw {VERSITYGW_VERSION} with go install (first run only)…")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as gobin:
            proc = subprocess.run(
                [go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
                env=dict(os.environ, GOBIN=gobin),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            built = Path(gobin) / "versitygw"
            if proc.returncode != 0 or not built.is_file():
                raise MinioUnavailableError(
                    f"`go install {VERSITYGW_MODULE}@{VERSITYGW_VERSION}` failed "
                    f"(exit {proc.returncode}):\n{proc.stdout.strip()}"
                )
            os.replace(built, path)
        announce(f"built versitygw in {time.monotonic() - started:.0f} s: {path}")
    return path


def start_versitygw(binary: Path, workdir: Path) -> MinioServer:
    """Start versitygw (posix backend on ``workdir/data``) on a free port; wait until it serves."""
    last_error = ""
    for attempt in range(3):  # a free port can be taken between probe and bind: retry
        port = free_port()
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"versitygw-{attempt}.log"
        server = MinioServer(
            endpoint=f"127.0.0.1:{port}",
            access_key="test-" + secrets.token_hex(8),
            secret_key=secrets.token_urlsafe(24),
            region="us-east-1",  # the gateway's default; it answers GetBucketLocation too
            log_path=log_path,
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ROOT_", "VGW_", "AWS_")) and k not in ("LOGFILE", "WEBHOOK")
        }
        # Credentials in the environment, not on the command line (ps shows that).
        env.update(ROOT_ACCESS_KEY_ID=server.access_key, ROOT_SECRET_ACCESS_KEY=server.secret_key)
        server.launch_argv = [
            str(binary),
            "--port",
            server.endpoint,
            "--quiet",
            "posix",
            str(data),
        ]
        server.launch_env = env
        server.wait_ready = _wait_serving
        with open(log_path, "wb") as log:
            server.process = subprocess.Popen(
                server.launch_argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_serving(server)
            return server
        except MinioUnavailableError as exc:
            server.stop()
            last_error = str(exc)
    raise MinioUnavailableError(last_error)


def _wait_serving(server: MinioServer) -> None:
    """Until the gateway answers HTTP (an unsigned request gets an S3 error: that is enough)."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    proc = server.process
    assert proc is not None and server.log_path is not None
    while True:
        if proc.poll() is not None:
            raise MinioUnavailableError(
                f"versitygw exited with status {proc.returncode}:\n{_log_tail(server.log_path)}"
            )
        try:
            with urllib.request.urlopen(server.url + "/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # 403 AccessDenied: it serves
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise MinioUnavailableError(
                f"versitygw not serving after {_STARTUP_TIMEOUT:.0f} s:\n"
                f"{_log_tail(server.log_path)}"
            )
        time.sleep(0.1)


def _announcer(request: pytest.FixtureRequest) -> Callable[[str], None]:
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def announce(message: str) -> None:
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            _to_terminal("\n" + message)

    return announce


@pytest.fixture(scope="session")
def versitygw_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MinioServer]:
    binary = ensure_versitygw_binary(_announcer(request))
    server = start_versitygw(binary, tmp_path_factory.mktemp("versitygw"))
    try:
        yield server
    finally:
        server.stop()


def _bucket(server: MinioServer) -> Iterator[str]:
    client = make_minio_client(server)
    name = "davtest-" + secrets.token_hex(8)
    client.make_bucket(name, location=server.region)
    try:
        yield name
    finally:
        remove_bucket(client, name)


@pytest.fixture(scope="module")
def versitygw_bucket(versitygw_server: MinioServer) -> Iterator[str]:
    yield from _bucket(versitygw_server)


#: The S3 implementations the S3 suites run against: pytest id -> server fixture.
S3_SERVICES = {"s3": "minio_server", "versitygw": "versitygw_server"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.s3) for name in S3_SERVICES],
)
def s3_service(request: pytest.FixtureRequest) -> MinioServer:
    server: MinioServer = request.getfixturevalue(S3_SERVICES[request.param])
    return server


@pytest.fixture(scope="module")
def s3_service_bucket(s3_service: MinioServer) -> Iterator[str]:
    yield from _bucket(s3_service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.versitygw", description="The test suite's pinned versitygw."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the pinned versitygw if missing; print its path")
    sub.add_parser("path", help="print where the pinned versitygw binary lives")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(versitygw_binary_path())
        return 0
    try:
        print(ensure_versitygw_binary())
    except MinioUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
