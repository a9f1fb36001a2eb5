"""The server process: ``davserver serve``, clean shutdown, TLS, timeouts, early rejection of
unread bodies without buffering them, body limits, keep-alive, and the S3 switch."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.davserver import (
    FAST_ENV,
    DavClient,
    DavServer,
    basic,
    env_without_davserver,
    init_data_dir,
    start_dav_server,
)

MiB = 1 << 20


class ServeProcess:
    """``davserver serve`` in a subprocess, on a fresh data dir with user alice."""

    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = tmp / "data"
        init_data_dir(self.data_dir)
        self.env = {**env_without_davserver(), **FAST_ENV, **(extra_env or {})}
        self.password = "correct horse"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "davserver.cli",
                "user",
                "add",
                "alice",
                "--password-stdin",
                "--data-dir",
                str(self.data_dir),
            ],
            input=self.password + "\n",
            text=True,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        assert self.proc.stdout is not None
        self.banner = [self.proc.stdout.readline() for _ in range(3)]
        self.url = self.banner[0].rsplit(" at ", 1)[1].strip()
        host_port = self.url.split("//", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)

    def client(self) -> DavClient:
        return DavClient(self.url, "alice", self.password)

    def rss(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(key)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    p = ServeProcess(tmp_path)
    try:
        yield p
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def test_serve_prints_url_and_login_help(served: ServeProcess) -> None:
    assert served.url.startswith("http://127.0.0.1:")
    assert "davserver user add" in served.banner[1]
    assert served.client().propfind("/", "0").status == 207


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signal(served: ServeProcess, sig: int) -> None:
    assert served.client().put("/f", b"x").status == 201
    started = time.monotonic()
    code, out, err = served.stop(sig)
    assert code == 0, err
    assert time.monotonic() - started < 15
    assert "davserver stopped." in out
    assert "Traceback" not in err


def test_access_log_of_the_real_process(served: ServeProcess) -> None:
    c = served.client()
    c.mkcol("/NameNobodyMaySee")
    c.put("/NameNobodyMaySee/file.txt", b"x")
    _, _, err = served.stop()
    assert "MKCOL 201" in err and "PUT 201" in err
    for secret in ("NameNobodyMaySee", "file.txt", served.password, "alice"):
        assert secret not in err


def send_unwanted_body(host: str, port: int, head: str, total: int) -> bytes:
    """Send ``head`` and up to ``total`` body bytes until the server hangs up; return its
    answer."""
    block = b"\0" * MiB
    sent = 0
    answer = b""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        try:
            while sent < total:
                s.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            s.settimeout(5)
            while chunk := s.recv(65536):
                answer += chunk
        except (OSError, TimeoutError):
            pass
    return answer


@pytest.mark.slow
def test_rejected_500_mib_put_leaves_rss_flat(served: ServeProcess) -> None:
    c = served.client()
    c.put("/warm", b"x" * MiB)  # warm up: imports, threads, caches
    c.get("/warm")
    before = served.rss()
    total = 500 * MiB
    host = f"Host: {served.host}:{served.port}\r\n"
    cases = {
        "401": f"PUT /big HTTP/1.1\r\n{host}Content-Length: {total}\r\n\r\n",
        "409": (
            f"PUT /no/parent/big HTTP/1.1\r\n{host}Authorization: "
            f"{basic('alice', served.password)}\r\nContent-Length: {total}\r\n\r\n"
        ),
    }
    for status, head in cases.items():
        answer = send_unwanted_body(served.host, served.port, head, total)
        assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:80]
    time.sleep(0.5)
    peak = served.rss("VmHWM")
    assert peak - before < 64 * MiB, (before, peak)
    assert c.propfind("/", "1").status == 207  # still serving


def test_early_rejection_closes_but_normal_requests_keep_alive(dav_server: DavServer) -> None:
    import http.client

    conn = http.client.HTTPConnection(dav_server.host, dav_server.port, timeout=10)
    auth = {"Authorization": basic("alice", dav_server.users["alice"])}
    conn.request("PUT", "/a", body=b"x" * 1000, headers=auth)
    r = conn.getresponse()
    r.read()
    assert r.status == 201 and r.getheader("Connection") != "close"
    conn.request("GET", "/a", headers=auth)  # same connection
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"x" * 1000
    # No credentials: rejected unread. A small body is read and dropped, so the answer
    # reaches clients that send their whole body first, and the connection stays usable.
    conn.request("PUT", "/b", body=b"y" * 100_000)
    r = conn.getresponse()
    r.read()
    assert r.status == 401 and r.getheader("Connection") != "close"
    conn.request("GET", "/a", headers=auth)  # still the same connection
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"x" * 1000
    conn.close()
    # A large one is not read at all: the connection closes instead.
    raw = socket.create_connection((dav_server.host, dav_server.port), timeout=10)
    raw.sendall(b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"z" * 65536)
    answer = b""
    while chunk := raw.recv(65536):
        answer += chunk
    raw.close()
    assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer


def test_slow_upload_is_not_cut_off(dav_server: DavServer) -> None:
    assert dav_server.server.timeout >= 60  # cheroot's 10 s default would cut slow clients
    assert dav_server.server.requests.max == dav_server.config.server.threads


@pytest.mark.slow
def test_upload_pausing_longer_than_10_seconds(dav_server: DavServer) -> None:
    head = (
        "PUT /slow HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {basic('alice', dav_server.users['alice'])}\r\n"
        "Content-Length: 20\r\n\r\n"
    )
    with socket.create_connection((dav_server.host, dav_server.port), timeout=60) as s:
        s.sendall(head.encode() + b"0123456789")
        time.sleep(11)
        s.sendall(b"abcdefghij")
        assert s.recv(100).startswith(b"HTTP/1.1 201")
    assert dav_server.client("alice").get("/slow").body == b"0123456789abcdefghij"


def test_max_body_bytes(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_SERVER_MAX_BODY_BYTES": "1000"})
    try:
        alice = dav.client("alice")
        assert alice.put("/ok", b"x" * 1000).status == 201
        assert alice.put("/big", b"x" * 1001).status == 413
        assert alice.get("/big").status == 404
    finally:
        dav.stop()


def test_huge_xml_body_is_refused_unread(dav_server: DavServer) -> None:
    head = (
        f"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\nAuthorization: "
        f"{basic('alice', dav_server.users['alice'])}\r\nContent-Length: {9 * MiB}\r\n\r\n"
    )
    answer = send_unwanted_body(dav_server.host, dav_server.port, head, 9 * MiB)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:60]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    dav = start_dav_server(
        tmp_path / "data",
        {"DAVSERVER_SERVER_TLS_CERT": str(cert), "DAVSERVER_SERVER_TLS_KEY": str(key)},
    )
    try:
        assert dav.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        alice = DavClient(dav.url, "alice", dav.users["alice"], context=ctx)
        assert alice.put("/secure.txt", b"tls").status == 201
        assert alice.get("/secure.txt").body == b"tls"
        with pytest.raises(ssl.SSLError):
            DavClient(dav.url, "alice", "x", context=ssl.create_default_context()).get("/")
    finally:
        dav.stop()


@pytest.mark.s3
def test_s3_switch_changes_only_the_backend(dav_server_s3: DavServer) -> None:
    alice = dav_server_s3.client("alice")
    data = os.urandom(200_000)
    assert alice.put("/on-minio.bin", data).status == 201
    assert alice.get("/on-minio.bin").body == data
    local_blobs = dav_server_s3.data_dir / "blobs"
    assert not any(p.is_file() for p in local_blobs.rglob("*"))
    s3 = dav_server_s3.config.storage.s3
    assert s3.endpoint and dav_server_s3.config.storage.backend == "s3"
    blobs = dav_server_s3.vault.blobs
    while hasattr(blobs, "inner"):  # behind the metrics wrapper (and any guard)
        blobs = blobs.inner
    assert blobs.__class__.__name__ == "S3BlobStore"


def test_run_demo_script(tmp_path: Path) -> None:
    """The README's ``make run`` (scripts/run-demo): init, demo user, serve on 127.0.0.1."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "run-demo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **env_without_davserver(),
        **{k: v for k, v in FAST_ENV.items() if "ARGON2" in k},
        "DAVSERVER_DEMO_DIR": str(tmp_path / "demo-data"),
        "DAVSERVER_DEMO_PORT": str(port),
        "PYTHON": sys.executable,
    }
    for run in (1, 2):
        proc = subprocess.Popen(
            ["bash", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines = []
            while not (line := proc.stdout.readline()).startswith("davserver is serving"):
                assert line, "".join(lines)
                lines.append(line)
            assert f"http://127.0.0.1:{port}/" in line
            text = "".join(lines)
            if run == 1:
                password = text.split("password: ", 1)[1].split()[0]
            else:
                assert "password:" not in text  # printed once only
            client = DavClient(f"http://127.0.0.1:{port}/", "demo", password)
            assert client.propfind("/", "0").status == 207
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
        assert proc.returncode == 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_forked_workers_share_the_port_the_index_and_stop_together(tmp_path: Path) -> None:
    """server.workers = 2: two processes serve one port, share locks and listings through
    the index, and SIGTERM stops them all."""
    served = ServeProcess(tmp_path, {"DAVSERVER_SERVER_WORKERS": "2"})
    try:
        workers = _children(served.proc.pid)
        assert len(workers) == 2
        # Every request on a fresh connection: the kernel spreads them over both workers.
        for i in range(20):
            assert served.client().put(f"/f{i}", b"x" * i).status == 201
        listing = served.client().propfind("/", "1")
        assert listing.status == 207 and listing.body.count(b"<D:response>") == 21
        from tests.integration.test_dav_locks import lock

        status, token = lock(served.client(), "/f3")
        assert status == 200 and token
        for _ in range(6):  # whichever worker answers, the lock holds
            assert served.client().put("/f3", b"nope").status == 423
        unlock = served.client().request("UNLOCK", "/f3", None, {"Lock-Token": f"<{token}>"})
        assert unlock.status == 204
        assert served.client().put("/f3", b"yes").status == 204
    finally:
        code, _out, err = served.stop()
    assert code == 0, err
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_forked_workers_share_the_failed_login_limit(tmp_path: Path) -> None:
    """Failed logins counted by one worker count in the other: the limit is per server, not
    per process (the counters live in the index)."""
    served = ServeProcess(
        tmp_path,
        {
            "DAVSERVER_SERVER_WORKERS": "2",
            "DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "4",
            "DAVSERVER_SECURITY_LOGIN_FAIL_WINDOW": "300",
        },
    )
    try:
        good = served.client()
        assert good.propfind("/", "0").status == 207
        bad = [DavClient(served.url, "alice", f"wrong{i}") for i in range(8)]
        # Fresh connections: the kernel spreads them over both workers, yet the fifth
        # attempt onwards is refused, whichever worker answers.
        statuses = [c.propfind("/", "0").status for c in bad]
        assert statuses == [401] * 4 + [429] * 4
    finally:
        code, _out, err = served.stop()
    assert code == 0, err
