"""litmus (the Debian package) against a real davserver: local backend, MinIO and versitygw.

``litmus -k`` exits 0 even when tests fail, so the summary lines are parsed: every group must
report all its tests passed, and no test may end in FAIL or WARNING.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer, s3_env, start_dav_server
from tests.harness.minio import MinioServer

GROUPS = ("basic", "copymove", "props", "locks", "http")
_SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")

pytestmark = pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus not installed")


def run_litmus(dav: DavServer, workdir: Path, user: str = "litmus") -> str:
    # A password starting with "-" would be taken for an option by litmus.
    client = dav.add_user(user, "pw" + secrets.token_hex(8))
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["litmus", "-k", dav.url, user, client.password or ""],
        cwd=workdir,
        env={"TESTS": " ".join(GROUPS), "PATH": "/usr/bin:/bin", "HOME": str(workdir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.stdout + proc.stderr


def check(output: str) -> None:
    summaries = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in _SUMMARY.findall(output)}
    assert set(summaries) == set(GROUPS), output
    failed = [g for g, (run, passed, fails) in summaries.items() if fails or passed != run]
    assert not failed, output
    bad = [line for line in output.splitlines() if re.search(r"\b(FAIL|WARNING)\b", line)]
    assert not bad, "\n".join(bad)


def test_litmus_local(dav_server: DavServer, tmp_path: Path) -> None:
    check(run_litmus(dav_server, tmp_path / "litmus"))


@pytest.mark.s3
def test_litmus_s3(s3_service: MinioServer, s3_service_bucket: str, tmp_path: Path) -> None:
    """On each S3 implementation (``s3`` = MinIO, ``versitygw``; tests/harness/versitygw.py)."""
    dav = start_dav_server(tmp_path / "data", s3_env(s3_service, s3_service_bucket))
    try:
        check(run_litmus(dav, tmp_path / "litmus"))
    finally:
        dav.stop()


@pytest.mark.postgres
def test_litmus_postgres_index(tmp_path: Path, postgres_db_url: str) -> None:
    """The same server with its index (and so its lock table) in PostgreSQL."""
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_INDEX_URL": postgres_db_url})
    try:
        check(run_litmus(dav, tmp_path / "litmus"))
    finally:
        dav.stop()
