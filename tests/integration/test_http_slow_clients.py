"""Idle and slow clients against a real server on raw sockets (issue 9, point 5).

The server runs with 8 worker threads. 1,000 connections that send nothing, 200 that send
their request head a byte a second and 50 that send their body a byte a second must not keep
a legitimate client from being answered within 1 s (the one bounded wait the issue names).
The other tests check the deadlines (total, not per ``recv``), the size limits (answered
before any authentication work) and that keep-alive, pipelining, ``Expect: 100-continue`` and
TLS still work.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from davserver.http import connections
from davserver.http.connections import raise_open_file_limit
from tests.harness.davserver import (
    FAST_ENV,
    DavClient,
    DavServer,
    basic,
    env_without_davserver,
    init_data_dir,
    start_dav_server,
)
from tests.integration.test_dav_server import _self_signed

IDLE, SLOW_HEADS, SLOW_BODIES = 1000, 200, 50


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[DavServer]:
    # Long deadlines: every slow client must still be waiting while the legitimate requests
    # are measured.
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_SERVER_HEAD_TIMEOUT": "120"})
    try:
        yield dav
    finally:
        dav.stop()


def _connect(dav: DavServer) -> socket.socket:
    s = socket.create_connection((dav.host, dav.port), timeout=30)
    return s


def _waiting_connections(dav: DavServer) -> int:
    return len(dav.server._connections._selector) - 1  # minus the listening socket


def _recv_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the peer closes (or ``timeout`` passes: a bounded wait)."""
    sock.settimeout(timeout)
    out = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _timed_request(
    dav: DavServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, float]:
    auth = basic("alice", dav.users["alice"])
    started = time.monotonic()
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Authorization": auth})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - started
    finally:
        conn.close()


def test_legitimate_client_answered_within_1s_despite_idle_and_slow_clients(
    slow_server: DavServer,
) -> None:
    dav = slow_server
    assert raise_open_file_limit() >= IDLE + SLOW_HEADS + SLOW_BODIES + 200
    alice = dav.client("alice")
    assert alice.put("/hello.txt", b"hello").status == 201  # logs in once (key cached)
    auth = basic("alice", dav.users["alice"])
    idle = [_connect(dav) for _ in range(IDLE)]
    heads = [_connect(dav) for _ in range(SLOW_HEADS)]
    bodies = [_connect(dav) for _ in range(SLOW_BODIES)]
    head_bytes = [
        f"PUT /slow-head-{i}.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n".encode()
        for i in range(SLOW_HEADS)
    ]
    for i, s in enumerate(bodies):
        s.sendall(
            f"PUT /slow-body-{i}.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
        )
    stop = threading.Event()

    def trickle() -> None:  # one byte a second on each slow connection
        n = 0
        while not stop.wait(1.0):
            for i, s in enumerate(heads):
                with contextlib.suppress(OSError):
                    s.send(head_bytes[i][n : n + 1])
            for s in bodies:
                with contextlib.suppress(OSError):
                    s.send(b"x")
            n += 1

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        total = IDLE + SLOW_HEADS + SLOW_BODIES
        while _waiting_connections(dav) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _waiting_connections(dav) >= total  # all accepted, all waiting
        time.sleep(2.5)  # a few bytes sent by every slow client
        timings = []
        for i in range(5):
            status, took = _timed_request(dav, "GET", "/hello.txt")
            assert status == 200
            timings.append(took)
            status, took = _timed_request(dav, "PUT", f"/legit-{i}.txt", b"legit")
            assert status == 201
            timings.append(took)
        print(f"legitimate request times under load: {[f'{t:.3f}' for t in timings]}")
        assert max(timings) < 1.0, timings
        # The slow clients are still connected and unanswered: they really were waiting.
        for s in heads[:20] + bodies[:20] + idle[:20]:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        stop.set()
        sender.join(5)
        for s in idle + heads + bodies:
            s.close()
    assert alice.get("/legit-4.txt").body == b"legit"
    assert alice.get("/slow-body-0.txt").status == 404  # nothing committed


def _short_deadlines(tmp_path: Path, **extra: str) -> DavServer:
    env = {
        "DAVSERVER_SERVER_HEAD_TIMEOUT": "2",
        "DAVSERVER_SERVER_IDLE_TIMEOUT": "2",
        "DAVSERVER_SERVER_BODY_TIMEOUT": "2",
        "DAVSERVER_SERVER_BODY_MIN_RATE": "1000000",
        **extra,
    }
    return start_dav_server(tmp_path / "data", env)


@pytest.fixture
def short_server(tmp_path: Path) -> Iterator[DavServer]:
    dav = _short_deadlines(tmp_path)
    try:
        yield dav
    finally:
        dav.stop()


def test_head_deadline_is_total_not_per_recv(short_server: DavServer) -> None:
    """A byte a second never lets a per-recv timeout fire; the total deadline does."""
    dav = short_server
    s = _connect(dav)
    request = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
    started = time.monotonic()
    answer = b""
    s.settimeout(1.0)
    for byte in request:
        try:
            s.send(bytes([byte]))
            answer = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if answer or time.monotonic() - started > 20:
            break
    answer += _recv_all(s, 10)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"Connection: close" in answer


def test_silent_new_and_idle_kept_alive_connections_are_closed(short_server: DavServer) -> None:
    dav = short_server
    silent = _connect(dav)
    assert _recv_all(silent, 15) == b""  # closed without an answer after head_timeout
    silent.close()
    auth = basic("alice", dav.users["alice"])
    kept = _connect(dav)
    kept.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
    answer = _recv_all(kept, 15)  # one answer, then closed after idle_timeout
    kept.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1


def test_slow_body_waiting_in_the_selector_gets_408(short_server: DavServer) -> None:
    dav = short_server
    auth = basic("alice", dav.users["alice"])
    s = _connect(dav)
    s.sendall(
        f"PUT /never.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Content-Length: 1000\r\n\r\nabc".encode()
    )
    answer = _recv_all(s, 15)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert dav.client("alice").get("/never.txt").status == 404


def test_body_stalled_in_a_worker_gets_408_and_nothing_is_committed(
    short_server: DavServer,
) -> None:
    """More than the selector's 64 KiB arrive fast, so a worker reads the rest: its reader
    enforces the same total body deadline."""
    dav = short_server
    alice = dav.client("alice")
    assert alice.put("/kept.bin", b"old bytes").status == 201
    auth = basic("alice", dav.users["alice"])
    s = _connect(dav)
    s.sendall(
        f"PUT /kept.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Length: {1 << 20}\r\n\r\n".encode()
        + b"x" * (200 << 10)
    )
    answer = _recv_all(s, 20)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert alice.get("/kept.bin").body == b"old bytes"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * (9 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (70 << 10) + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(101))
            + b"\r\n",
            431,
        ),
    ],
    ids=["request-line-9KiB", "headers-70KiB", "101-headers"],
)
def test_oversized_heads_are_refused_before_authentication(
    short_server: DavServer, head: bytes, status: int
) -> None:
    """Wrong credentials in every oversized request: answered with the size error, never
    401, and they do not count as failed logins (the user is not throttled afterwards)."""
    dav = short_server
    wrong = basic("alice", "wrong password").encode()
    head = head.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: " + wrong + b"\r\n", 1)
    for _ in range(12):  # more than security.login_fail_limit (10)
        s = _connect(dav)
        with contextlib.suppress(OSError):
            s.sendall(head)
        answer = _recv_all(s, 15)
        s.close()
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
    assert dav.client("alice").get("/").status == 200


def test_huge_header_is_cut_off_at_the_limit(short_server: DavServer) -> None:
    """A 64 MiB header: the answer comes after 64 KiB; the rest is never read."""
    dav = short_server
    s = _connect(dav)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
    sent = 0
    block = b"h" * (1 << 20)
    with contextlib.suppress(OSError):
        s.settimeout(10)
        while sent < (64 << 20):
            s.sendall(block)
            sent += len(block)
    answer = _recv_all(s, 15)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert sent < (64 << 20)  # the server stopped reading long before the end


def test_keepalive_pipelining_and_expect_continue(short_server: DavServer) -> None:
    dav = short_server
    alice = dav.client("alice")
    for name in ("one", "two", "three"):
        assert alice.put(f"/{name}.txt", name.encode() * 3).status == 201
    auth = basic("alice", dav.users["alice"])
    s = _connect(dav)
    pipelined = b"".join(
        f"GET /{name}.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()
        for name in ("one", "two", "three")
    )
    put = (
        f"PUT /four.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Content-Length: 4\r\n\r\nfour"
    ).encode()
    s.sendall(
        pipelined
        + put
        + b"GET /four.txt HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth.encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    answer = _recv_all(s, 20)
    s.close()
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 ")[1:]]
    statuses = [part[:3] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"200", b"200", b"201", b"200"]
    assert [b[:15] for b in bodies[:3]] == [b"oneoneone", b"twotwotwo", b"threethreethree"]
    assert bodies[4] == b"four"
    # Expect: 100-continue: the selector sends the one 100, buffers the body, then a worker
    # answers; the file reads back byte for byte.
    body = bytes(range(256)) * 800  # 200 KiB: more than the selector buffers
    s = _connect(dav)
    s.sendall(
        f"PUT /five.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    s.settimeout(15)
    interim = s.recv(4096)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body + b"GET /five.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = _recv_all(s, 20)
    s.close()
    assert answer.count(b"100 Continue") == 0  # the worker did not send a second one
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:80]
    assert alice.get("/five.bin").body == body
    # A client that sends its body without waiting for the 100 is answered too.
    s = _connect(dav)
    s.sendall(
        f"PUT /six.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Content-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nsix".encode()
    )
    answer = _recv_all(s, 20)
    s.close()
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 201 "), answer[:80]
    assert alice.get("/six.txt").body == b"six"


def test_expect_continue_slow_bodies_wait_in_the_selector(slow_server: DavServer) -> None:
    """40 clients get their 100 Continue, then send their bodies a byte a second: with 8
    threads, a legitimate client is still answered within 1 s (issue 9 point 5)."""
    dav = slow_server
    alice = dav.client("alice")
    assert alice.put("/hello.txt", b"hello").status == 201
    auth = basic("alice", dav.users["alice"])
    clients = [_connect(dav) for _ in range(40)]
    for i, s in enumerate(clients):
        s.sendall(
            f"PUT /expect-{i}.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
    for s in clients:
        s.settimeout(15)
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for s in clients:
                with contextlib.suppress(OSError):
                    s.send(b"x")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(2.5)  # a few body bytes sent by every client
        assert _waiting_connections(dav) >= 40  # all in the selector, none in a worker
        timings = []
        for i in range(5):
            status, took = _timed_request(dav, "GET", "/hello.txt")
            assert status == 200
            timings.append(took)
            status, took = _timed_request(dav, "PUT", f"/legit-{i}.txt", b"legit")
            assert status == 201
            timings.append(took)
        print(f"legitimate request times beside 40 slow 100-continue bodies: {timings}")
        assert max(timings) < 1.0, timings
        for s in clients:  # still unanswered: really waiting
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        stop.set()
        sender.join(5)
        for s in clients:
            s.close()
    assert alice.get("/expect-0.txt").status == 404  # nothing committed


def test_curl_upload_with_expect_continue(short_server: DavServer, tmp_path: Path) -> None:
    dav = short_server
    upload = tmp_path / "upload.bin"
    data = bytes(range(256)) * 1000
    upload.write_bytes(data)
    url = f"http://{dav.host}:{dav.port}/curl.bin"
    base = ["curl", "-sS", "--max-time", "30", "-u", f"alice:{dav.users['alice']}"]
    if _has_curl():
        done = subprocess.run(
            [*base, "-v", "-T", str(upload), "-H", "Expect: 100-continue", url],
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert done.stderr.count(b"< HTTP/1.1 100 Continue") == 1, done.stderr[-2000:]
        assert b"< HTTP/1.1 201 " in done.stderr
    else:
        print("curl not installed: uploading with http.client instead")
        conn = http.client.HTTPConnection(dav.host, dav.port, timeout=30)
        conn.request(
            "PUT",
            "/curl.bin",
            body=data,
            headers={"Authorization": basic("alice", dav.users["alice"]), "Expect": "100-continue"},
        )
        assert conn.getresponse().status == 201
        conn.close()
    assert dav.client("alice").get("/curl.bin").body == data


def _has_curl() -> bool:
    try:
        subprocess.run(["curl", "--version"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def test_tls_handshakes_do_not_block_the_selector(tmp_path: Path) -> None:
    """Silent TCP connections to the TLS port (no ClientHello) and a half-done handshake
    wait in the selector; a real HTTPS client is still served."""
    cert, key = _self_signed(tmp_path)
    dav = _short_deadlines(
        tmp_path,
        DAVSERVER_SERVER_TLS_CERT=str(cert),
        DAVSERVER_SERVER_TLS_KEY=str(key),
        DAVSERVER_SERVER_HEAD_TIMEOUT="30",
    )
    try:
        silent = [_connect(dav) for _ in range(40)]  # 5 times the 8 threads
        partial = _connect(dav)
        partial.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello record
        ctx = ssl.create_default_context(cafile=str(cert))
        started = time.monotonic()
        conn = http.client.HTTPSConnection(dav.host, dav.port, timeout=30, context=ctx)
        conn.request("GET", "/", headers={"Authorization": basic("alice", dav.users["alice"])})
        resp = conn.getresponse()
        resp.read()
        took = time.monotonic() - started
        conn.close()
        assert resp.status == 200
        assert took < 1.0, took
        # Keep-alive and pipelining over TLS: three requests in one write, answered in order.
        alice = DavClient(dav.url, "alice", dav.users["alice"], context=ctx)
        for n in range(2):
            assert alice.put(f"/tls-{n}.txt", f"tls file {n}".encode()).status == 201
        auth = basic("alice", dav.users["alice"])
        with ctx.wrap_socket(_connect(dav), server_hostname="127.0.0.1") as tls:
            tls.sendall(
                b"".join(
                    b"GET /tls-%d.txt HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
                    % (n, auth.encode())
                    for n in range(2)
                )
                + f"GET /nothing HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = _recv_all(tls, 15)
        parts = answer.split(b"HTTP/1.1 ")[1:]
        assert [p[:3] for p in parts] == [b"200", b"200", b"404"]
        assert [p.split(b"\r\n\r\n", 1)[1] for p in parts[:2]] == [b"tls file 0", b"tls file 1"]
        plain = _connect(dav)  # plain HTTP on the HTTPS port: told so
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_all(plain, 15).startswith(b"HTTP/1.1 400 ")
        plain.close()
        for s in [*silent, partial]:
            s.close()
    finally:
        dav.stop()


def test_out_of_descriptors_idle_connections_make_room(tmp_path: Path) -> None:
    """``davserver serve`` limited to 200 descriptors, 400 idle connections: the oldest
    idle ones are closed (rather than the index losing its descriptors: every request got
    503 "cannot connect to the index database"), and a client is served."""
    data = tmp_path / "data"
    init_data_dir(data)
    env = {**env_without_davserver(), **FAST_ENV}
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
            str(data),
        ],
        input="pw\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    proc = subprocess.Popen(
        [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
        preexec_fn=few_descriptors,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" at ", 1)[1].strip()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(400)]
        client = DavClient(url, "alice", "pw")
        for _ in range(3):
            assert client.propfind("/", "0").status == 207
        closed = 0
        for s in idle:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                closed += s.recv(1) == b""
            s.close()
        assert closed >= 200  # the server made room by closing idle ones
    finally:
        proc.terminate()
        proc.wait(20)


def test_buffer_budget_refuses_big_partial_requests_not_small_ones(
    short_server: DavServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the budget for all buffered bytes (1 MiB here, 256 MiB by default), connections
    holding big partial heads get 503 with Retry-After; a small request still passes, and
    the budget is given back when connections go."""
    monkeypatch.setattr(connections, "BUFFER_BUDGET", 1 << 20)
    dav = short_server
    manager = dav.server._connections
    hogs = []
    for _ in range(24):  # 24 x 60 KiB of unfinished headers
        s = _connect(dav)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (60 << 10))
        hogs.append(s)
    answers = [_recv_all(s, 0.5) for s in hogs]
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    assert refused and all(b"Retry-After: 5\r\n" in a for a in refused)
    assert len(refused) < len(hogs)  # the first ones fit in the budget and still wait
    assert dav.client("alice").get("/").status == 200
    for s in hogs:
        s.close()
    deadline = time.monotonic() + 15
    while manager.buffered and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manager.buffered == 0
