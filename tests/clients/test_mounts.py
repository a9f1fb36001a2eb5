"""Mounts, for real: davfs2, ``rclone mount`` and gvfs (``gio mount``) on a live davserver.

Through each mount the same work is done (``work_through_mount``): read a file the server
holds, create directories, write, read back, append, rename a file and a directory, delete a
file and a tree. The mount is then undone and what the server serves is checked with raw HTTP
(``check_served``). A second mount reads back what the first one uploaded and deletes it.
Both backends (local blob dir and MinIO) run through ``dav_any``.

Client behaviour these tests account for (see also docs/clients.md):

- davfs2 uploads a file when it is closed (after ``delay_upload``) or when unmounted, so the
  server is checked after ``umount`` returns; kernels >= 6.16 need ``buf_size 64``.
- rclone with ``--vfs-cache-mode writes`` uploads asynchronously: the server is polled.
- gvfs-fuse uploads in FUSE ``release``, which the kernel sends after ``close()`` returns, so
  a file just written may read as missing for a moment; and the gvfs dav backend has no
  append (``O_APPEND`` fails with EOPNOTSUPP before any request is made), so "append" is the
  read-modify-write that GNOME applications do.

They need /dev/fuse, root for davfs2, and the client installed; elsewhere they skip and say
why. Every mount is undone and every daemon ended in ``finally`` blocks, with timeouts, so a
hung client cannot hang the suite.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.harness.davserver import DavClient, DavServer

pytestmark = pytest.mark.slow

SEED = b"written by the server\n"
BIG = secrets.token_bytes(300_000)  # several blob segments
MOUNT_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0


# -- what is done through every mount and checked on the server ---------------------------


def seed_server(client: DavClient) -> None:
    assert client.mkcol("/seed").status == 201
    assert client.put("/seed/hello.txt", SEED).status == 201


def append_in_place(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def wait_for(what: str, probe: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def reads(path: Path, expected: bytes) -> bool:
    return path.read_bytes() == expected


def work_through_mount(
    root: Path,
    append: Callable[[Path, bytes], None] = append_in_place,
    settle: Callable[[Path, bytes], None] | None = None,
) -> None:
    """Create, write, read back, append, rename and delete under ``root``/m."""

    def written(path: Path, expected: bytes) -> None:
        if settle is not None:
            settle(path, expected)
        assert path.read_bytes() == expected

    assert (root / "seed" / "hello.txt").read_bytes() == SEED
    m = root / "m"
    m.mkdir()
    (m / "sub").mkdir()
    (m / "a.txt").write_bytes(b"one\n")
    written(m / "a.txt", b"one\n")
    append(m / "a.txt", b"two\n")
    written(m / "a.txt", b"one\ntwo\n")
    (m / "big.bin").write_bytes(BIG)
    written(m / "big.bin", BIG)
    (m / "a.txt").rename(m / "sub" / "b.txt")
    (m / "sub").rename(m / "renamed")
    assert (m / "renamed" / "b.txt").read_bytes() == b"one\ntwo\n"
    (m / "gone.txt").write_bytes(b"short-lived")
    written(m / "gone.txt", b"short-lived")
    (m / "gone-dir" / "deeper").mkdir(parents=True)
    (m / "gone-dir" / "deeper" / "f.txt").write_bytes(b"y")
    written(m / "gone-dir" / "deeper" / "f.txt", b"y")
    (m / "gone.txt").unlink()
    shutil.rmtree(m / "gone-dir")
    assert sorted(p.name for p in m.iterdir()) == ["big.bin", "renamed"]
    assert sorted(p.name for p in (m / "renamed").iterdir()) == ["b.txt"]


def members(client: DavClient, path: str) -> set[str] | None:
    """Names listed by a Depth 1 PROPFIND (directories with a trailing slash); None on 404."""
    r = client.propfind(path, "1")
    if r.status == 404:
        return None
    assert r.status == 207, r.status
    own = path.rstrip("/")
    names = set()
    for href in ET.fromstring(r.body).iter("{DAV:}href"):
        text = unquote(urlsplit(href.text or "").path)
        if text.rstrip("/") != own and text.rstrip("/").rsplit("/", 1)[0] == own:
            names.add(text[len(own) + 1 :])
    return names


def check_served(client: DavClient) -> None:
    """What the server serves after ``work_through_mount``."""
    assert members(client, "/m") == {"big.bin", "renamed/"}
    assert members(client, "/m/renamed") == {"b.txt"}
    assert client.get("/m/renamed/b.txt").body == b"one\ntwo\n"
    big = client.get("/m/big.bin")
    assert big.status == 200 and big.body == BIG
    for gone in ("/m/a.txt", "/m/sub", "/m/gone.txt", "/m/gone-dir"):
        assert client.propfind(gone, "0").status == 404, gone
    assert client.get("/seed/hello.txt").body == SEED


def served_ok(client: DavClient) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            check_served(client)
        except AssertionError:
            return False
        return True

    return probe


def read_back_and_delete(root: Path, server_note: bytes) -> None:
    """Second mount: what the first mount uploaded (and the server added) reads back."""
    m = root / "m"
    assert (m / "renamed" / "b.txt").read_bytes() == b"one\ntwo\n"
    assert (m / "renamed" / "note.txt").read_bytes() == server_note
    assert (m / "big.bin").read_bytes() == BIG
    shutil.rmtree(m / "renamed")
    assert sorted(p.name for p in m.iterdir()) == ["big.bin"]


def second_round_ok(client: DavClient) -> bool:
    return members(client, "/m") == {"big.bin"} and client.get("/m/big.bin").body == BIG


Mount = Callable[[str, str], contextlib.AbstractContextManager[Path]]


def run_scenario(
    dav: DavServer,
    mount: Mount,
    append: Callable[[Path, bytes], None] = append_in_place,
    settle: Callable[[Path, bytes], None] | None = None,
    uploads_on_unmount: bool = False,
) -> None:
    """Two mounts. The server is polled while the mount is up (clients upload
    asynchronously), unless the client only uploads when unmounted (davfs2), and checked
    once more after the mount is undone."""
    user, password = "mounter", "pw" + secrets.token_hex(8)
    client = dav.add_user(user, password)
    seed_server(client)
    with mount(user, password) as root:
        work_through_mount(root, append, settle)
        if not uploads_on_unmount:
            wait_for("the server to serve what was written", served_ok(client))
    wait_for("the server to serve what was written", served_ok(client))
    check_served(client)
    note = b"added by the server between mounts\n"
    assert client.put("/m/renamed/note.txt", note).status == 201
    with mount(user, password) as root:
        read_back_and_delete(root, note)
        if not uploads_on_unmount:
            wait_for("the deletions to reach the server", lambda: second_round_ok(client))
    wait_for("the deletions to reach the server", lambda: second_round_ok(client))


# -- common checks and helpers --------------------------------------------------------------


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse does not exist: FUSE mounts cannot run on this machine")


def need_tool(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it)")


def is_mounted(mnt: Path) -> bool:
    """True while anything is mounted on ``mnt``, also a FUSE mount whose daemon died (there
    ``os.path.ismount`` fails with ENOTCONN and answers False)."""
    target = os.path.realpath(mnt)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if point == target:
                return True
    return False


def fuse_unmount(mnt: Path) -> None:
    """Lazily detach a mount left behind (cleanup after a failure)."""
    if not is_mounted(mnt):
        return
    helper = fuse_helper()
    if helper:
        subprocess.run([helper, "-u", "-z", str(mnt)], capture_output=True, timeout=30)
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fuse_helper() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def end_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a process we started."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def end_group(leader: subprocess.Popen[Any]) -> None:
    """Terminate the process group a process we started leads, and wait for all of it:
    gvfsd-fuse unmounts on SIGTERM, and killing it mid-way leaves a dead mount behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(15)


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- davfs2 ---------------------------------------------------------------------------------


def davfs2_pids(mnt: Path) -> list[int]:
    """mount.davfs processes serving ``mnt`` (the daemon our ``mount`` call started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"mount.davfs") and str(mnt).encode() in argv:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def davfs2_mount(dav: DavServer, tmp: Path, user: str, password: str) -> Iterator[Path]:
    mnt = tmp / "davfs-mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    # A fresh cache per mount, so the second mount really reads from the server. mount.davfs
    # runs as user davfs2, which cannot enter pytest's private tmp dirs: /tmp it is.
    cache = Path(tempfile.mkdtemp(prefix="davserver-davfs-cache-"))
    shutil.chown(cache, "root", "davfs2")
    cache.chmod(0o775)
    secrets_file = tmp / "davfs-secrets"
    secrets_file.write_text(f"{dav.url} {user} {password}\n")
    secrets_file.chmod(0o600)
    conf = tmp / "davfs2.conf"
    options = [
        # Kernels >= 6.16 refuse davfs2's default 16 KiB FUSE buffer ("Invalid argument" on
        # ls); 64 KiB works on older kernels too.
        "buf_size 64",
        f"cache_dir {cache}",
        f"secrets {secrets_file}",
        "ask_auth 0",
    ]
    conf.write_text("\n".join(options) + "\n")
    body_failed = True
    try:
        proc = subprocess.run(
            ["mount", "-t", "davfs", dav.url, str(mnt), "-o", f"conf={conf},uid=0,gid=0"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=MOUNT_TIMEOUT,
        )
        assert proc.returncode == 0 and os.path.ismount(mnt), proc.stdout + proc.stderr
        yield mnt
        body_failed = False
    finally:
        # umount waits for mount.davfs to upload what is still dirty, then to exit.
        done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or is_mounted(mnt):
            # Busy (a test failed with a file open): detach it lazily. umount.davfs ignores -l,
            # hence -i (no helper).
            subprocess.run(["umount", "-i", "-l", str(mnt)], capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while davfs2_pids(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in davfs2_pids(mnt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        fuse_unmount(mnt)
        shutil.rmtree(cache, ignore_errors=True)
        if not body_failed:  # else the test's own error is the one to report
            assert done.returncode == 0, done.stderr


def test_davfs2(dav_any: DavServer, tmp_path: Path) -> None:
    need_fuse()
    need_tool("mount.davfs")
    if os.geteuid() != 0:
        pytest.skip("mount -t davfs needs root here (no fstab entry for a user mount)")

    def mount(user: str, password: str) -> contextlib.AbstractContextManager[Path]:
        return davfs2_mount(dav_any, tmp_path, user, password)

    # davfs2 uploads a closed file only after delay_upload (10 s) or at unmount.
    run_scenario(dav_any, mount, uploads_on_unmount=True)


# -- rclone mount ---------------------------------------------------------------------------


@contextlib.contextmanager
def rclone_mount(dav: DavServer, tmp: Path, user: str, password: str) -> Iterator[Path]:
    mnt = tmp / "rclone-mnt"
    mnt.mkdir(parents=True)
    log = tmp / "rclone-mount.log"
    obscured = subprocess.run(
        ["rclone", "obscure", "--", password], capture_output=True, text=True, check=True
    ).stdout.strip()
    proc = subprocess.Popen(
        [
            "rclone",
            "mount",
            ":webdav:",
            str(mnt),
            "--webdav-url",
            dav.url,
            "--webdav-vendor",
            "owncloud",
            "--webdav-user",
            user,
            "--webdav-pass",
            obscured,
            "--config",
            "/dev/null",
            "--cache-dir",
            str(tmp / "rclone-cache"),
            "--vfs-cache-mode",
            "writes",
            "--vfs-write-back",
            "0s",  # upload right after close (default: 5 s later)
            "--dir-cache-time",
            "1s",
            "--log-file",
            str(log),
            "--log-level",
            "INFO",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("rclone mount did not come up:\n" + tail(log))
            time.sleep(0.1)
        yield mnt
    finally:
        helper = fuse_helper()
        if helper and is_mounted(mnt):
            subprocess.run([helper, "-u", str(mnt)], capture_output=True, timeout=30)
        try:
            proc.wait(30)  # rclone exits once unmounted
        except subprocess.TimeoutExpired:
            end_process(proc)
        fuse_unmount(mnt)


def test_rclone_mount(dav_any: DavServer, tmp_path: Path) -> None:
    need_fuse()
    need_tool("rclone")
    if fuse_helper() is None:
        pytest.skip("neither fusermount3 nor fusermount is installed (package fuse3)")
    n = iter(range(100))

    def mount(user: str, password: str) -> contextlib.AbstractContextManager[Path]:
        return rclone_mount(dav_any, tmp_path / f"round{next(n)}", user, password)

    run_scenario(dav_any, mount)


# -- gvfs (gio mount) -----------------------------------------------------------------------


@contextlib.contextmanager
def gvfs_mount(dav: DavServer, tmp: Path, user: str, password: str) -> Iterator[Path]:
    """gvfs on a private session bus: ``gio mount`` with the password on stdin, then the
    FUSE view that gvfsd-fuse keeps under ``$XDG_RUNTIME_DIR/gvfs``."""
    tmp.mkdir(parents=True, exist_ok=True)
    run_dir = tmp / "xdg"
    run_dir.mkdir(mode=0o700)
    run_dir.chmod(0o700)
    home = tmp / "home"
    home.mkdir()
    bus = run_dir / "bus"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(run_dir),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={bus}",
        "GIO_USE_VOLUME_MONITOR": "unix",
    }
    # Its own process group: the gvfs daemons it activates share it and end with it.
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={bus}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    uri = f"dav://{user}@{dav.host}:{dav.port}/"
    fuse_root = run_dir / "gvfs"
    try:
        wait_for("the session bus", bus.exists, MOUNT_TIMEOUT)
        proc = subprocess.run(
            ["gio", "mount", uri],
            input=password + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=MOUNT_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        root = fuse_root / f"dav:host={dav.host},port={dav.port},ssl=false,user={user}"
        wait_for("the gvfs FUSE view", root.is_dir, MOUNT_TIMEOUT)
        yield root
        done = subprocess.run(
            ["gio", "mount", "-u", uri], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
    finally:
        end_group(daemon)
        fuse_unmount(fuse_root)


def gvfs_rewrite_append(path: Path, data: bytes) -> None:
    # The gvfs dav backend cannot append: rewrite the whole file, as editors do.
    path.write_bytes(path.read_bytes() + data)


def gvfs_settle(path: Path, expected: bytes) -> None:
    # gvfs-fuse uploads in FUSE release, which runs after close() has returned.
    wait_for("gvfs-fuse to finish the upload", lambda: reads(path, expected))


def test_gvfs(dav_any: DavServer, tmp_path: Path) -> None:
    need_fuse()
    need_tool("gio", "dbus-daemon")
    if not Path("/usr/libexec/gvfsd-dav").exists() and shutil.which("gvfsd-dav") is None:
        pytest.skip("gvfsd-dav is not installed (package gvfs-backends)")
    n = iter(range(100))

    def mount(user: str, password: str) -> contextlib.AbstractContextManager[Path]:
        return gvfs_mount(dav_any, tmp_path / f"round{next(n)}", user, password)

    run_scenario(dav_any, mount, append=gvfs_rewrite_append, settle=gvfs_settle)
