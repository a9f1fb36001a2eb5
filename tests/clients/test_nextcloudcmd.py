"""``nextcloudcmd`` (Debian package ``nextcloud-desktop-cmd``, the Nextcloud desktop client's
sync engine) against a real davserver, with the account's password.

What holds: discovery (``status.php``, OCS capabilities and user), the first sync of a tree
into an empty account, byte for byte, a second folder syncing the same account down, and
later syncs that pick up changes made on the server deep in the tree and deletions (they
need collection ETags that change with everything below them, issue 12 point 6).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer

pytestmark = pytest.mark.skipif(
    shutil.which("nextcloudcmd") is None,
    reason="nextcloudcmd (nextcloud-desktop-cmd) not installed",
)


USER = "ncuser"


def sync(dav: DavServer, local: Path, home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(home),
    }
    cmd = ["nextcloudcmd", "--non-interactive", "-u", USER, "-p", dav.users[USER]]
    cmd += ["--max-sync-retries", "1", str(local), dav.url]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file, the client's sync database left out."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.startswith((".sync_", "._sync_")):
                continue
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def dav(dav_server: DavServer) -> DavServer:
    # A password starting with "-" would be taken for an option (nextcloudcmd prints usage).
    dav_server.add_user(USER, "pw" + secrets.token_hex(8))
    return dav_server


@pytest.fixture
def local(tmp_path: Path) -> Path:
    root = tmp_path / "up"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "docs" / "été.txt").write_text("accents\n")
    (root / "docs" / "deep" / "random.bin").write_bytes(os.urandom(3 << 20))
    # An hour old: the client treats files changed during its run as not yet ready.
    for path in root.rglob("*"):
        os.utime(path, (path.stat().st_atime - 3600, path.stat().st_mtime - 3600))
    return root


def test_first_sync_uploads_the_tree(dav: DavServer, local: Path, tmp_path: Path) -> None:
    proc = sync(dav, local, tmp_path / "home")
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if "warning" in line or "error" in line]
    assert proc.returncode == 0, "\n".join(problems[-40:]) or log[-4000:]
    assert "status.php returns" in log and "Server capabilities" in log
    client = dav.client(USER)
    for rel, digest in tree(local).items():
        got = client.get("/" + rel)
        assert got.status == 200, rel
        assert hashlib.sha256(got.body).hexdigest() == digest, rel


def test_a_second_folder_syncs_down(dav: DavServer, local: Path, tmp_path: Path) -> None:
    assert sync(dav, local, tmp_path / "home").returncode == 0
    down = tmp_path / "down"
    down.mkdir()
    proc = sync(dav, down, tmp_path / "home2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert tree(down) == tree(local)


def test_later_syncs_pick_up_server_changes(dav: DavServer, local: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert sync(dav, local, home).returncode == 0
    client = dav.client(USER)
    assert client.put("/docs/deep/new.txt", b"made on the server\n").status == 201
    assert client.delete("/hello.txt").status == 204
    proc = sync(dav, local, home)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (local / "docs" / "deep" / "new.txt").read_bytes() == b"made on the server\n"
    assert not (local / "hello.txt").exists()
    # Nothing changed since: a third run finds nothing to do and changes nothing.
    before = tree(local)
    proc = sync(dav, local, home)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert tree(local) == before
