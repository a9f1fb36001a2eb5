"""pytest plugin: a real davserver (cheroot + WsgiDAV + vault) on a free 127.0.0.1 port.

Fixtures:

- ``dav_server`` (function): a fresh data dir from ``davserver init`` (local blob store +
  SQLite), served in a thread; user ``alice`` exists. Stopped and closed afterwards.
- ``dav_server_s3`` (function): the same, with the config switched to the real MinIO
  (``minio_server``/``s3_bucket`` from ``tests.harness.minio``) under a fresh key prefix —
  only ``storage.*`` differs.
- ``dav_any`` (function): parametrized over both (``local``, ``s3``).

Helpers: ``start_dav_server(tmp, **env)`` for tests that need special settings (quota, rate
limits, TLS), and ``DavClient`` — a minimal raw-HTTP client (``http.client``) with Basic auth
that returns status, headers and body, so tests see exactly what a DAV client would.

Argon2id runs with small parameters (1 pass, 8 MiB) to keep the suite fast. The index binds
its models per process, so only one server runs per test process at a time.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from click.testing import CliRunner

from davserver.cli import main as cli_main
from davserver.config import Config, load
from davserver.vault import Vault

FAST_ENV = {
    "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
    "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": str(8 * 1024 * 1024),
    "DAVSERVER_SERVER_HOST": "127.0.0.1",
    "DAVSERVER_SERVER_PORT": "0",
    "DAVSERVER_SERVER_THREADS": "8",
}


@dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass
class DavClient:
    """Raw HTTP against the server; ``path`` is a tree path (quoted here) or a full URL."""

    base_url: str
    user: str | None = None
    password: str | None = None
    context: Any = None  # ssl.SSLContext for https

    def _conn(self) -> http.client.HTTPConnection:
        u = urlsplit(self.base_url)
        if u.scheme == "https":
            return http.client.HTTPSConnection(u.hostname, u.port, timeout=60, context=self.context)
        return http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + quote(path)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Response:
        hdrs = dict(headers or {})
        if auth and self.user is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = basic(self.user, self.password or "")
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn = self._conn()
        try:
            conn.request(method, quote(path), body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.reason, resp.headers, data)
        finally:
            conn.close()

    def put(self, path: str, data: bytes, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("PUT", path, data, headers)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", path, None, headers)

    def mkcol(self, path: str) -> Response:
        return self.request("MKCOL", path)

    def delete(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("DELETE", path, None, headers)

    def propfind(self, path: str, depth: str | None = "1", body: str | None = None) -> Response:
        headers = {} if depth is None else {"Depth": depth}
        if body is not None:
            headers["Content-Type"] = "application/xml"
        return self.request("PROPFIND", path, body, headers)

    def move(self, src: str, dst: str, overwrite: bool | None = None, **hdrs: str) -> Response:
        headers = {"Destination": self.url(dst), **hdrs}
        if overwrite is not None:
            headers["Overwrite"] = "T" if overwrite else "F"
        return self.request("MOVE", src, None, headers)

    def copy(
        self, src: str, dst: str, overwrite: bool | None = None, depth: str | None = None
    ) -> Response:
        headers = {"Destination": self.url(dst)}
        if overwrite is not None:
            headers["Overwrite"] = "T" if overwrite else "F"
        if depth is not None:
            headers["Depth"] = depth
        return self.request("COPY", src, None, headers)


@dataclass
class DavServer:
    url: str
    config: Config
    vault: Vault
    server: Any
    data_dir: Path
    thread: threading.Thread
    users: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return str(urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    def add_user(self, name: str, password: str | None = None) -> DavClient:
        password = password or secrets.token_urlsafe(12)
        self.vault.create_user(name, password)
        self.users[name] = password
        return self.client(name)

    def client(self, name: str | None = None, password: str | None = None) -> DavClient:
        if name is None:
            return DavClient(self.url)
        return DavClient(self.url, name, password if password is not None else self.users[name])

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.vault.close()


def init_data_dir(data_dir: Path) -> None:
    """``davserver init`` through the real CLI."""
    result = CliRunner().invoke(cli_main, ["init", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output


def make_config(data_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    if not (data_dir / "davserver.yaml").exists():
        init_data_dir(data_dir)
    return load(data_dir / "davserver.yaml", {**FAST_ENV, **(env or {})})


def s3_env(minio: Any, bucket: str) -> dict[str, str]:
    """The only difference between a local and an S3 configuration."""
    return {
        "DAVSERVER_STORAGE_BACKEND": "s3",
        "DAVSERVER_STORAGE_S3_ENDPOINT": minio.endpoint,
        "DAVSERVER_STORAGE_S3_BUCKET": bucket,
        "DAVSERVER_STORAGE_S3_ACCESS_KEY": minio.access_key,
        "DAVSERVER_STORAGE_S3_SECRET_KEY": minio.secret_key,
        "DAVSERVER_STORAGE_S3_SECURE": "true" if minio.secure else "false",
        "DAVSERVER_STORAGE_S3_REGION": minio.region or "",
        "DAVSERVER_STORAGE_S3_PREFIX": f"dav-{secrets.token_hex(4)}/",
    }


def start_dav_server(
    data_dir: Path, env: Mapping[str, str] | None = None, users: tuple[str, ...] = ("alice",)
) -> DavServer:
    """Init ``data_dir`` if needed, open its vault, serve it in a thread on a free port."""
    from davserver.runtime import open_vault
    from davserver.server import make_server

    config = make_config(data_dir, env)
    vault = open_vault(config)
    server, url = make_server(config, vault)
    thread = threading.Thread(target=server.serve, name="dav-test-server", daemon=True)
    thread.start()
    dav = DavServer(url, config, vault, server, data_dir, thread)
    for name in users:
        dav.add_user(name)
    return dav


@pytest.fixture
def dav_server(tmp_path: Path) -> Iterator[DavServer]:
    dav = start_dav_server(tmp_path / "data")
    try:
        yield dav
    finally:
        dav.stop()


@pytest.fixture
def dav_server_s3(tmp_path: Path, minio_server: Any, s3_bucket: str) -> Iterator[DavServer]:
    dav = start_dav_server(tmp_path / "data", s3_env(minio_server, s3_bucket))
    try:
        yield dav
    finally:
        dav.stop()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def dav_any(request: Any, tmp_path: Path) -> Iterator[DavServer]:
    env: dict[str, str] = {}
    if request.param == "s3":
        env = s3_env(request.getfixturevalue("minio_server"), request.getfixturevalue("s3_bucket"))
    dav = start_dav_server(tmp_path / "data", env)
    try:
        yield dav
    finally:
        dav.stop()


@pytest.fixture
def alice(dav_server: DavServer) -> DavClient:
    return dav_server.client("alice")


def env_without_davserver() -> dict[str, str]:
    """The process environment minus DAVSERVER_* (for subprocesses with explicit config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DAVSERVER_")}
