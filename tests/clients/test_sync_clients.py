"""Nextcloud's and ownCloud's desktop sync engines (``nextcloudcmd``, Debian package
``nextcloud-desktop-cmd``; ``owncloudcmd``, ``owncloud-client-cmd``) against a real davserver.

One scenario per client, as a user moving a folder onto the server would live it:

1. a 500-file tree (nested folders, one 200 MiB file that goes through chunked upload, names
   with accents, emoji and NFD forms) syncs up into an empty account;
2. it syncs down into a second, empty folder: byte for byte (names compared in NFC: the
   server keeps names in NFC, as Nextcloud does);
3. edits, renames, moves and deletes on each side propagate on the next runs, and a file
   edited on both sides gives the client's conflict copy;
4. a run over an unchanged tree transfers nothing and sends only a few PROPFINDs (counted
   from the server's access log): the directory ETags that change with anything below them
   are what let the client stop at the root.

Each client runs it with a full-account device token, and with a token scoped to one folder
(``/Sync``: the client sees it as the whole account; a smaller tree, without the big file,
to keep the run short). The account password is never given to a client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import shutil
import subprocess
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer, start_dav_server

USER = "syncer"
BIG = 200 << 20
FILES = 500
SCOPE = "/Sync"


@dataclass
class Client:
    """One sync engine: how to call it and how it names conflict copies."""

    binary: str
    conflict_mark: str
    #: Whether it needs an exclude list given (Debian's owncloudcmd ships none and stops).
    needs_exclude_list: bool = False

    def run(self, dav: DavServer, local: Path, home: Path, password: str) -> str:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "QT_QPA_PLATFORM": "offscreen",
            "XDG_RUNTIME_DIR": str(home),
        }
        cmd = [self.binary, "--non-interactive", "-u", USER, "-p", password]
        cmd += ["--max-sync-retries", "1"]
        if self.needs_exclude_list:
            excludes = home / "sync-exclude.lst"
            excludes.write_text(".sync_*.db*\n._sync_*.db*\n.owncloudsync.log*\n*~\n")
            cmd += ["--exclude", str(excludes)]
        cmd += [str(local), dav.url]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        problems = [line for line in log.splitlines() if "warning" in line or "rror" in line]
        assert proc.returncode == 0, "\n".join(problems[-40:]) or log[-4000:]
        return log


CLIENTS = {
    "nextcloudcmd": Client("nextcloudcmd", "conflicted copy"),
    "owncloudcmd": Client("owncloudcmd", "conflict", needs_exclude_list=True),
}


class Requests(logging.Handler):
    """Counts the server's access-log lines (``<addr> <METHOD> <status> … path='…'`` at
    debug level) by method, for the WebDAV tree and chunked uploads; the clients' discovery
    requests (``status.php``, OCS) are counted apart, as ``discovery``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        parts = message.split(" ")
        if len(parts) < 3:
            return
        path = message.rsplit(" path=", 1)[-1].strip("'\"")
        key = parts[1] if path.startswith("/remote.php/") else "discovery"
        with self._lock_:
            self.counts[key] += 1

    def take(self) -> Counter[str]:
        with self._lock_:
            out, self.counts = self.counts, Counter()
        return out


@pytest.fixture
def requests_seen() -> Iterator[Requests]:
    logger = logging.getLogger("davserver.access")
    handler, level = Requests(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # with the path of each request
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(params=["token", "scoped"])
def access(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CLIENTS))
def client(request: pytest.FixtureRequest) -> Client:
    c = CLIENTS[request.param]
    if shutil.which(c.binary) is None:
        pytest.skip(f"{c.binary} is not installed (scripts/setup installs it)")
    return c


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[DavServer]:
    server = start_dav_server(tmp_path / "data", users=())
    # A password starting with "-" would be taken for an option.
    server.add_user(USER, "pw" + secrets.token_hex(8))
    try:
        yield server
    finally:
        server.stop()


NAMES = ["été", "naïve", "Ærø", "日本語", "📷 photos", "emoji 🎉", "spaces and, commas"]
# Decomposed forms: "é" as "e" + U+0301 and so on.
NFD_NAMES = [unicodedata.normalize("NFD", n) for n in ("résumé", "Øre façade", "Ångström")]


def _age(root: Path) -> None:
    # An hour old: the clients treat files changed during their run as not yet ready.
    for path in root.rglob("*"):
        st = path.stat()
        os.utime(path, (st.st_atime - 3600, st.st_mtime - 3600))


def make_tree(root: Path, files: int, big: int) -> None:
    """``files`` files in nested folders, the names above among them, one of ``big`` bytes."""
    rng = random.Random(12)
    folders = [root]
    for i in range(12):
        parent = folders[rng.randrange(len(folders))]
        name = (NAMES + NFD_NAMES)[i % (len(NAMES) + len(NFD_NAMES))] + f" {i}"
        folders.append(parent / name)
        folders[-1].mkdir(parents=True)
    for i in range(files - 1):
        where = folders[i % len(folders)]
        stem = (NAMES + NFD_NAMES + ["plain"])[i % (len(NAMES) + len(NFD_NAMES) + 1)]
        (where / f"{stem}-{i}.txt").write_bytes(rng.randbytes(rng.randrange(1, 6000)))
    with open(root / "big.bin", "wb") as f:
        for _ in range(big // (8 << 20)):
            f.write(rng.randbytes(8 << 20))
        f.write(rng.randbytes(big % (8 << 20)))
    _age(root)


def tree(root: Path) -> dict[str, str]:
    """NFC relative path -> SHA-256 of every file, the clients' own files left out."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.startswith((".sync_", "._sync_", ".owncloudsync", ".csync")):
                continue
            path = Path(dirpath) / name
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[unicodedata.normalize("NFC", str(path.relative_to(root)))] = h.hexdigest()
    return out


def _edit(path: Path, data: bytes) -> None:
    """Change a file as a user would, dated an hour back (the clients leave files changed
    during their run for the next one)."""
    path.write_bytes(data)
    then = time.time() - 3600
    os.utime(path, (then, then))


def _at(root: Path, rel: Path | str) -> Path:
    """``root / rel`` as this disk spells it: the two sides may hold a name in different
    normal forms (the server keeps NFC; a local name may be NFD)."""
    want = unicodedata.normalize("NFC", str(rel))
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            if unicodedata.normalize("NFC", str(path.relative_to(root))) == want:
                return path
    return root / want  # missing: the NFC spelling, for an exists() that is False


def _find(root: Path, stem: str) -> Path:
    """The file named ``stem`` + an extension (in whatever normal form the disk has it)."""
    want = unicodedata.normalize("NFC", stem + ".")
    for dirpath, _, files in os.walk(root):
        for name in files:
            if unicodedata.normalize("NFC", name).startswith(want):
                return Path(dirpath) / name
    raise AssertionError(f"no file {stem!r} under {root}")


@dataclass
class Side:
    """One synced folder and the client's state directory (its HOME) for it."""

    client: Client
    dav: DavServer
    local: Path
    home: Path
    password: str
    logs: list[str] = field(default_factory=list)

    def sync(self) -> None:
        self.logs.append(self.client.run(self.dav, self.local, self.home, self.password))


def test_sync_round_trip(
    client: Client, access: str, dav: DavServer, tmp_path: Path, requests_seen: Requests
) -> None:
    if access == "scoped":
        assert dav.client(USER).mkcol(SCOPE).status == 201
        assert dav.client(USER).put("/outside.txt", b"not for the device").status == 201
        files, big = 120, 3 << 20
    else:
        files, big = FILES, BIG
    scope = SCOPE if access == "scoped" else None
    _, token = dav.vault.create_token(USER, dav.users[USER], client.binary, scope=scope)
    up = Side(client, dav, tmp_path / "up", tmp_path / "home-up", token)
    down = Side(client, dav, tmp_path / "down", tmp_path / "home-down", token)
    up.local.mkdir()
    down.local.mkdir()
    make_tree(up.local, files, big)
    for folder, name in (("move me", "x.txt"), ("into here", "y.txt")):  # moved later
        (up.local / folder).mkdir()
        (up.local / folder / name).write_bytes(name.encode())
    _age(up.local)
    want = tree(up.local)
    assert len(want) == files + 2

    # 1-2: up into the empty account, down into an empty folder.
    up.sync()
    first = requests_seen.take()
    assert first["PUT"] >= files - 1, first  # every small file; the big one went in chunks
    if big > 100 << 20:
        assert first["MOVE"] >= 1, first  # the chunked upload's assembly
    down.sync()
    assert tree(down.local) == want
    requests_seen.take()
    if scope is not None:  # what the scoped device synced is that folder's, and only that
        owner = dav.client(USER)
        assert owner.get(SCOPE + "/big.bin").status == 200
        assert "outside.txt" not in want and not (down.local / "outside.txt").exists()

    # 3: changes on each side, and one file edited on both.
    both = _find(up.local, "plain-10")
    rel_both = both.relative_to(up.local)
    _edit(both, b"edited up\n")
    _edit(_at(down.local, rel_both), b"edited down\n")
    _edit(_find(up.local, "naïve-1"), b"changed on the up side\n")
    edited_rel = _find(up.local, "naïve-1").relative_to(up.local)
    renamed = _find(up.local, "日本語-3")
    renamed.rename(renamed.with_name("renamed up.txt"))
    moved_dir, target = up.local / "move me", up.local / "into here"
    moved_dir.rename(target / moved_dir.name)
    gone = _find(up.local, "Ærø-2")
    gone_rel = gone.relative_to(up.local)
    gone.unlink()
    downside = _find(down.local, "emoji 🎉-5")
    _edit(downside, b"changed on the down side\n")
    down_rel = downside.relative_to(down.local)
    down_renamed = _find(down.local, "spaces and, commas-6")
    down_renamed.rename(down_renamed.with_name("renamed down.txt"))
    _find(down.local, "été-0").unlink()

    up.sync()
    down.sync()
    up.sync()
    got_up, got_down = tree(up.local), tree(down.local)
    conflicts = [p for p in got_down if client.conflict_mark in p]
    assert len(conflicts) == 1, conflicts
    assert _at(down.local, conflicts[0]).read_bytes() == b"edited down\n"
    assert _at(down.local, rel_both).read_bytes() == b"edited up\n"
    del got_down[conflicts[0]]
    # The conflict copy is not uploaded by these clients (it stays a local file) or is: the
    # rest of both trees must agree either way.
    got_up.pop(conflicts[0], None)
    assert got_up == got_down
    assert _at(up.local, edited_rel).read_bytes() == b"changed on the up side\n"
    assert _at(down.local, edited_rel).read_bytes() == b"changed on the up side\n"
    assert _at(up.local, down_rel).read_bytes() == b"changed on the down side\n"
    assert not _at(down.local, gone_rel).exists()
    assert any(p.endswith("renamed up.txt") for p in got_down)
    assert any(p.endswith("renamed down.txt") for p in got_up)
    assert any(p.startswith(f"{target.name}/{moved_dir.name}/") for p in got_down)
    requests_seen.take()

    # 4: nothing changed: nothing moves, and the client stops at the ETags.
    up.sync()
    idle = requests_seen.take()
    print(f"{client.binary} ({access}): an unchanged tree cost {dict(idle)}")
    assert idle["PUT"] == idle["GET"] == idle["MOVE"] == idle["DELETE"] == 0, idle
    assert idle["PROPFIND"] <= 2, idle  # the root, whose ETag did not change
