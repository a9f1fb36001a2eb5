"""dav-tck (PyPI ``webdav-tck``, a Python port of litmus with extra cases) against a real
davserver on the local backend and on MinIO. It exits 1 on failure; the summary table is also
parsed so that a run that executed nothing cannot pass."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer

pytestmark = pytest.mark.skipif(
    shutil.which("dav-tck") is None, reason="dav-tck not installed (pip install webdav-tck)"
)
_ROW = re.compile(r"^\W*(Total|Passed|Failed)\W+(\d+)\b", re.MULTILINE)


def run_tck(dav: DavServer, workdir: Path) -> None:
    client = dav.add_user("tck", "pw" + secrets.token_hex(8))
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["dav-tck", "--no-colour", dav.url, "tck", client.password or ""],
        cwd=workdir,
        env={
            "PATH": "/usr/bin:/bin:" + str(Path(shutil.which("dav-tck") or "").parent),
            "HOME": str(workdir),
            "COLUMNS": "120",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    counts = {k: int(v) for k, v in _ROW.findall(out)}
    assert counts.get("Total", 0) >= 60, out
    assert counts.get("Passed") == counts["Total"], out
    assert proc.returncode == 0, out


@pytest.mark.slow
def test_dav_tck_local(dav_server: DavServer, tmp_path: Path) -> None:
    run_tck(dav_server, tmp_path / "tck")


@pytest.mark.s3
@pytest.mark.slow
def test_dav_tck_minio(dav_server_s3: DavServer, tmp_path: Path) -> None:
    run_tck(dav_server_s3, tmp_path / "tck")
