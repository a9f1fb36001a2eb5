"""pytest plugin: a real MinIO server (or an external S3 service) for integration tests.

Fixtures:

- ``minio_server`` (session): a running MinIO on free loopback ports with random root
  credentials, stopped at the end of the session. If ``DAVSERVER_TEST_S3_ENDPOINT`` is set
  (with ``DAVSERVER_TEST_S3_ACCESS_KEY``, ``DAVSERVER_TEST_S3_SECRET_KEY``, optionally
  ``DAVSERVER_TEST_S3_SECURE=1`` and ``DAVSERVER_TEST_S3_REGION``), that service is used instead
  and nothing is started.
- ``s3_bucket`` (module): a fresh random bucket, removed with everything in it afterwards.
- ``s3_store`` (function): an ``S3BlobStore`` on that bucket under a fresh random key prefix,
  so each test sees only its own blobs (``iter_ids`` included).

Helpers: ``make_s3_store(server, bucket, **kw)`` and ``make_minio_client(server)``.

The MinIO binary is pinned and built from source with ``go install`` (MinIO no longer ships
binaries for every release, and the Go proxy only knows the pseudo-version of the repository's
last commit) into a cache directory outside the repository:
``${DAVSERVER_CACHE_DIR:-~/.cache/davserver}/minio/<version>/minio``. The first run takes
several minutes; CI runs ``python -m tests.harness.minio build`` before pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from minio import Minio

if TYPE_CHECKING:
    from davserver.blobs.s3 import S3BlobStore

MINIO_MODULE = "github.com/minio/minio"
#: The repository's final commit 7aac2a2c5b7c (Feb 2026). The RELEASE.* tag form is not a
#: valid Go module version, so the proxy refuses it; the pseudo-version names the same code.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"

_STARTUP_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


class MinioUnavailableError(RuntimeError):
    """MinIO could not be built or started; the message says why, verbatim."""


# -- the binary ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("DAVSERVER_CACHE_DIR") or "~/.cache/davserver").expanduser()


def minio_binary_path() -> Path:
    return cache_dir() / "minio" / MINIO_VERSION / "minio"


def _to_terminal(message: str) -> None:
    stream = sys.__stderr__
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


def ensure_minio_binary(announce: Callable[[str], None] = _to_terminal) -> Path:
    """Return the pinned MinIO binary, building it with ``go install`` if it is missing.

    Concurrent callers (two pytest sessions) wait on a lock file instead of building twice.
    Raises ``MinioUnavailableError`` with the exact error if ``go`` is missing or the build fails.
    """
    path = minio_binary_path()
    if _is_executable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_executable(path):  # built by another process while we waited
            return path
        go = shutil.which("go")
        if go is None:
            raise MinioUnavailableError(
                "cannot build MinIO: `go` is not on PATH (install Go, or point the tests at an "
                "existing S3 service with DAVSERVER_TEST_S3_ENDPOINT)"
            )
        announce(
            f"building MinIO {MINIO_VERSION} with go install (first run only, several minutes)…"
        )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as gobin:
            env = dict(os.environ, GOBIN=gobin)
            proc = subprocess.run(
                [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            built = Path(gobin) / "minio"
            if proc.returncode != 0 or not built.is_file():
                raise MinioUnavailableError(
                    f"`go install {MINIO_MODULE}@{MINIO_VERSION}` failed "
                    f"(exit {proc.returncode}):\n{proc.stdout.strip()}"
                )
            os.replace(built, path)  # atomic: no half-written binary is ever found
        announce(f"built MinIO in {time.monotonic() - started:.0f} s: {path}")
    return path


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# -- the server ---------------------------------------------------------------------------------


@dataclass
class MinioServer:
    """Where the tests' S3 service listens and how to log in. ``secure`` = HTTPS."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False
    region: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    # How it was started, for ``restart`` (fault tests kill a private server, then revive it).
    launch_argv: list[str] = field(default_factory=list, repr=False)
    launch_env: dict[str, str] = field(default_factory=dict, repr=False)
    wait_ready: Callable[[MinioServer], None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint

    def restart(self) -> None:
        """Start the server again exactly as before (same port, data, credentials)."""
        assert self.launch_argv and self.log_path is not None and self.wait_ready is not None
        self.stop()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.launch_argv,
                env=self.launch_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(self)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_minio(binary: Path, workdir: Path) -> MinioServer:
    """Start MinIO on free loopback ports with data in ``workdir/data``; wait until it serves."""
    last_error = ""
    for attempt in range(3):  # a free port can be taken between probe and bind: retry
        port, console_port = free_port(), free_port()
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"minio-{attempt}.log"
        server = MinioServer(
            endpoint=f"127.0.0.1:{port}",
            access_key="test-" + secrets.token_hex(8),
            secret_key=secrets.token_urlsafe(24),
            log_path=log_path,
        )
        env = dict(
            os.environ,
            MINIO_ROOT_USER=server.access_key,
            MINIO_ROOT_PASSWORD=server.secret_key,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
        )
        server.launch_argv = [
            str(binary),
            "server",
            str(data),
            "--address",
            server.endpoint,
            "--console-address",
            f"127.0.0.1:{console_port}",
            "--quiet",
        ]
        server.launch_env = env
        server.wait_ready = _wait_healthy
        with open(log_path, "wb") as log:
            server.process = subprocess.Popen(
                server.launch_argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_healthy(server)
            return server
        except MinioUnavailableError as exc:
            server.stop()
            last_error = str(exc)
    raise MinioUnavailableError(last_error)


def _wait_healthy(server: MinioServer) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    proc = server.process
    assert proc is not None and server.log_path is not None
    for check in ("live", "ready"):
        url = f"{server.url}/minio/health/{check}"
        while True:
            if proc.poll() is not None:
                raise MinioUnavailableError(
                    f"MinIO exited with status {proc.returncode}:\n{_log_tail(server.log_path)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise MinioUnavailableError(
                    f"MinIO not {check} after {_STARTUP_TIMEOUT:.0f} s:\n"
                    f"{_log_tail(server.log_path)}"
                )
            time.sleep(0.1)


def external_server_from_env(environ: dict[str, str] | None = None) -> MinioServer | None:
    """The S3 service named by ``DAVSERVER_TEST_S3_*``, or ``None`` if none is configured."""
    env = os.environ if environ is None else environ
    endpoint = env.get("DAVSERVER_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    try:
        access_key = env["DAVSERVER_TEST_S3_ACCESS_KEY"]
        secret_key = env["DAVSERVER_TEST_S3_SECRET_KEY"]
    except KeyError as exc:
        raise MinioUnavailableError(
            f"DAVSERVER_TEST_S3_ENDPOINT is set but {exc.args[0]} is not"
        ) from None
    secure = env.get("DAVSERVER_TEST_S3_SECURE", "").lower() in ("1", "true", "yes", "on")
    return MinioServer(
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=secure,
        region=env.get("DAVSERVER_TEST_S3_REGION") or None,
    )


# -- clients and buckets ------------------------------------------------------------------------


def make_minio_client(server: MinioServer) -> Minio:
    """A plain SDK client with the server's root credentials (for setup and inspection)."""
    return Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=server.secure,
        region=server.region,
    )


def make_s3_store(server: MinioServer, bucket: str, **kw: Any) -> S3BlobStore:
    """An ``S3BlobStore`` on ``bucket`` of ``server``; ``kw`` go to its constructor."""
    from davserver.blobs.s3 import S3BlobStore

    return S3BlobStore(
        server.endpoint,
        bucket,
        server.access_key,
        server.secret_key,
        secure=server.secure,
        region=server.region,
        **kw,
    )


def remove_bucket(client: Minio, bucket: str) -> None:
    """Remove a bucket with its objects and incomplete multipart uploads (best effort)."""
    for obj in client.list_objects(bucket, recursive=True):
        if obj.object_name is not None:
            client.remove_object(bucket, obj.object_name)
    with contextlib.suppress(Exception):  # not every service lists uploads without a prefix
        for upload in client._list_multipart_uploads(bucket).uploads:
            if upload.object_name is not None and upload.upload_id is not None:
                client._abort_multipart_upload(bucket, upload.object_name, upload.upload_id)
    client.remove_bucket(bucket)


@pytest.fixture(scope="session")
def minio_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MinioServer]:
    external = external_server_from_env()
    if external is not None:
        yield external
        return
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def announce(message: str) -> None:
        # pytest captures fd 2 too: suspend capturing so the wait is explained on the terminal.
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            _to_terminal("\n" + message)

    binary = ensure_minio_binary(announce)
    server = start_minio(binary, tmp_path_factory.mktemp("minio"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_bucket(minio_server: MinioServer) -> Iterator[str]:
    client = make_minio_client(minio_server)
    name = "davtest-" + secrets.token_hex(8)
    client.make_bucket(name, location=minio_server.region)
    try:
        yield name
    finally:
        remove_bucket(client, name)


@pytest.fixture
def s3_store(minio_server: MinioServer, s3_bucket: str) -> Iterator[S3BlobStore]:
    store = make_s3_store(minio_server, s3_bucket, prefix=f"t-{secrets.token_hex(6)}/")
    try:
        yield store
    finally:
        store.close()


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.minio", description="The test suite's pinned MinIO."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the pinned MinIO if missing; print its path")
    sub.add_parser("path", help="print where the pinned MinIO binary lives")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(minio_binary_path())
        return 0
    try:
        print(ensure_minio_binary())
    except MinioUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
