"""The Prometheus endpoint of a real ``davserver serve``: real requests (a failed login, a PUT
and GET of a file stored in MinIO), parsed with prometheus_client's own parser, checked by
``promtool check metrics``, and searched for every name, path and id the test used.

The user, directory and file names are distinctive so that finding one anywhere in the
exposition cannot be a coincidence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.davserver import DavClient, s3_env
from tests.harness.minio import ensure_minio_binary, free_port, start_minio
from tests.harness.serve import ServeProcess, process_env

USER = "qzmetricsuser7x"
PASSWORD = "horse battery metrics"
DIR = "/dirzq9metrics"
FILE = DIR + "/filezq9secret.bin"
MISSING = "/nothingzq9here.txt"
BODY = os.urandom(300 * 1024)  # far above storage.inline_max: a real object in the store


def _cli(data_dir: Path, env: Mapping[str, str], *args: str, stdin: str = "") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args, "--data-dir", str(data_dir)],
        input=stdin,
        text=True,
        env=process_env(env),
        capture_output=True,
        check=True,
    )
    return out.stdout


def _init(data_dir: Path, env: Mapping[str, str]) -> str:
    _cli(data_dir, env, "init")
    _cli(data_dir, env, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    users = json.loads(_cli(data_dir, env, "user", "list", "--json"))
    return str(users[0]["id"])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.status == 200
        return str(r.read().decode("utf-8"))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value}, through prometheus_client's parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Mapping[Any, float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def total(got: Mapping[Any, float], name: str) -> float:
    return sum(v for (n, _), v in got.items() if n == name)


def wait_for(fn: Any, timeout: float = 30.0) -> Any:
    """Poll ``fn`` until it returns something true (bounded wait, generous on a busy box)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture
def s3_served(tmp_path: Path, minio_server: Any, s3_bucket: str) -> Iterator[tuple[Any, ...]]:
    port = free_port()
    env = {**s3_env(minio_server, s3_bucket), "DAVSERVER_METRICS_PORT": str(port)}
    data = tmp_path / "data"
    user_id = _init(data, env)
    served = ServeProcess(data, env)
    try:
        yield served, port, user_id
    finally:
        served.stop()


@pytest.mark.s3
def test_metrics_of_real_requests_parse_pass_promtool_and_name_nothing(
    s3_served: tuple[Any, ...],
) -> None:
    served, port, user_id = s3_served
    client = DavClient(served.url, USER, PASSWORD)
    assert client.request("PROPFIND", "/", headers={"Depth": "1"}).status == 207
    assert client.mkcol(DIR).status == 201
    assert client.put(FILE, BODY).status == 201
    r = client.get(FILE)
    assert (r.status, r.body == BODY) == (200, True)
    assert client.get(MISSING).status == 404
    assert DavClient(served.url, USER, "wrong password").get("/").status == 401
    assert client.request("BREW", "/").status in (400, 405, 501)  # an unknown method

    text = scrape(port)
    got = samples(text)
    assert value(got, "davserver_http_requests_total", method="PUT", status_class="2xx") == 1
    assert value(got, "davserver_http_requests_total", method="GET", status_class="2xx") == 1
    assert value(got, "davserver_http_requests_total", method="GET", status_class="4xx") == 2
    assert value(got, "davserver_http_requests_total", method="MKCOL", status_class="2xx") == 1
    assert total(got, "davserver_http_requests_total") == 7
    assert not any(dict(labels).get("method") == "BREW" for (_, labels) in got), (
        "an unknown method became a label"
    )
    assert value(got, "davserver_http_request_duration_seconds_count", method="PUT") == 1
    assert value(got, "davserver_http_requests_in_flight") == 0
    assert value(got, "davserver_http_received_bytes_total") >= len(BODY)
    assert value(got, "davserver_http_sent_bytes_total") >= len(BODY)
    assert value(got, "davserver_uploads_total", result="ok") == 1
    assert value(got, "davserver_logins_total", kind="password", result="failure") == 1
    assert value(got, "davserver_logins_total", kind="password", result="success") == 1
    assert value(got, "davserver_login_cache_lookups_total", result="hit") >= 5
    assert value(got, "davserver_argon2id_duration_seconds_count") >= 2
    assert value(got, "davserver_blobstore_requests_total", operation="put", result="ok") == 1
    assert value(got, "davserver_blobstore_requests_total", operation="open", result="ok") >= 1
    assert (
        value(
            got, "davserver_blobstore_request_duration_seconds_count", operation="put", result="ok"
        )
        == 1
    )
    assert value(got, "davserver_index_up") == 1
    assert value(got, "davserver_blobstore_up") == 1
    assert value(got, "davserver_users") == 1
    assert value(got, "davserver_stored_bytes") == len(BODY)
    assert value(got, "davserver_active_locks") == 0

    # promtool (Debian package "prometheus") lints the exposition as Prometheus would.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs the Debian package prometheus"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, text=True, capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # No series names the user, a path, an id or an address: not in a label, not anywhere.
    lowered = text.lower()
    for secret in (
        USER,
        DIR.strip("/"),
        FILE.rsplit("/", 1)[1],
        MISSING.strip("/"),
        "zq9",
        user_id,
        "127.0.0.1",
        PASSWORD,
    ):
        assert secret.lower() not in lowered, f"{secret!r} is exposed in the metrics"


def test_metrics_listener_is_off_unless_configured(tmp_path: Path) -> None:
    """Without metrics.port nothing listens for metrics (the port stays free)."""
    port = free_port()
    data = tmp_path / "data"
    _init(data, {})
    served = ServeProcess(data, {})
    try:
        assert DavClient(served.url, USER, PASSWORD).get("/").status == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert "metrics at" not in served.log()
    finally:
        served.stop()


def test_workers_expose_merged_counters(tmp_path: Path) -> None:
    """server.workers = 2: requests spread over both workers (fresh connections) are counted
    once each in one exposition, read from the workers' files in the supervisor's private
    directory, which is gone once the server stopped."""
    port = free_port()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {
        "DAVSERVER_SERVER_WORKERS": "2",
        "DAVSERVER_METRICS_PORT": str(port),
        "TMPDIR": str(private_tmp),
    }
    data = tmp_path / "data"
    _init(data, env)
    served = ServeProcess(data, env)
    try:
        client = DavClient(served.url, USER, PASSWORD)
        requests = 40
        for i in range(requests):  # every request on a new connection
            assert client.put(f"/f{i}.txt", b"x" * i).status == 201

        dirs = list(private_tmp.glob("davserver-metrics-*"))
        assert len(dirs) == 1, dirs

        def both_workers_have_files() -> bool:
            return len({p.name for p in dirs[0].glob("counter_*.db")}) >= 2

        assert wait_for(both_workers_have_files), "the workers keep no metrics files"
        got = samples(scrape(port))
        assert value(got, "davserver_http_requests_total", method="PUT", status_class="2xx") == (
            requests
        )
        assert value(got, "davserver_uploads_total", result="ok") == requests
        # Each worker has its own login cache, so each ran Argon2id for the user once: 2 is
        # the sum of both workers' counts (the kernel spread 40 connections over both).
        assert value(got, "davserver_logins_total", kind="password", result="success") == 2
        assert value(got, "davserver_http_requests_in_flight") == 0
        assert value(got, "davserver_users") == 1
    finally:
        assert served.stop() == 0
    assert not list(private_tmp.glob("davserver-metrics-*")), "the metrics directory was left"


def test_integrity_failure_is_counted_by_kind(tmp_path: Path) -> None:
    """A flipped ciphertext byte in the local store: the GET gets 500 and the failure is
    counted as kind "content"."""
    port = free_port()
    env = {"DAVSERVER_METRICS_PORT": str(port)}
    data = tmp_path / "data"
    _init(data, env)
    served = ServeProcess(data, env)
    try:
        client = DavClient(served.url, USER, PASSWORD)
        assert client.put("/" + FILE.rsplit("/", 1)[1], BODY).status == 201
        (blob,) = [p for p in (data / "blobs").rglob("*") if p.is_file() and len(p.name) == 32]
        raw = bytearray(blob.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        blob.chmod(0o600)
        blob.write_bytes(bytes(raw))
        r = client.get("/" + FILE.rsplit("/", 1)[1])
        assert r.status == 500 or r.body != BODY  # never the tampered bytes as good data
        got = samples(scrape(port))
        assert value(got, "davserver_integrity_failures_total", kind="content") == 1
        assert total(got, "davserver_integrity_failures_total") == 1
    finally:
        served.stop()


def _yaml_block(text: str, first_line: str) -> str:
    """The fenced yaml block of docs/operations.md that starts with ``first_line``."""
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no yaml block starting with {first_line!r}")


def test_documented_scrape_config_and_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs the Debian package prometheus"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    rules = tmp_path / "davserver.yml"
    rules.write_text(_yaml_block(docs, "# rules/davserver.yml"))
    config = tmp_path / "prometheus.yml"
    config.write_text(_yaml_block(docs, "# prometheus.yml\nscrape_configs:"))
    outputs = []
    for args in (["check", "rules", str(rules)], ["check", "config", str(config)]):
        done = subprocess.run(
            [promtool, *args], text=True, capture_output=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    alerts = rules.read_text().count("- alert: ")
    assert alerts >= 5 and f"SUCCESS: {alerts} rules found" in outputs[0]


@pytest.mark.s3
def test_a_stopped_blob_store_shows_as_down_and_failed_calls(tmp_path: Path) -> None:
    """A private MinIO, stopped under a running server: davserver_blobstore_up turns 0 and
    the failed upload is counted as an unavailable put; the index stays up."""
    minio = start_minio(ensure_minio_binary(), tmp_path / "minio")
    port = free_port()
    env = {
        **s3_env(minio, "metrics-down"),
        "DAVSERVER_STORAGE_S3_CREATE_BUCKET": "true",
        "DAVSERVER_METRICS_PORT": str(port),
    }
    data = tmp_path / "data"
    served = None
    try:
        _init(data, env)
        served = ServeProcess(data, env)
        client = DavClient(served.url, USER, PASSWORD)
        assert client.put("/before.bin", BODY).status == 201
        assert value(samples(scrape(port)), "davserver_blobstore_up") == 1
        minio.stop()
        assert client.put("/after.bin", BODY).status == 503

        def down() -> dict[Any, float] | None:
            got = samples(scrape(port))
            return got if value(got, "davserver_blobstore_up") == 0 else None

        got = wait_for(down, timeout=60)  # the probe result is reused for 5 s
        assert got, "davserver_blobstore_up stayed 1 with the store stopped"
        assert value(got, "davserver_index_up") == 1
        failed = sum(
            v
            for (name, labels), v in got.items()
            if name == "davserver_blobstore_requests_total"
            and dict(labels)["operation"] == "put"
            and dict(labels)["result"] == "unavailable"
        )
        assert failed >= 1
        assert value(got, "davserver_uploads_total", result="ok") == 1
    finally:
        if served is not None:
            served.stop()
        minio.stop()
