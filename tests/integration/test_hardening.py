"""Hardening: what pages reveal, browser security headers, index file modes, core dumps of
``davserver serve``, and the caps on locks and dead properties per resource."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wsgidav

from tests.harness.davserver import (
    FAST_ENV,
    DavClient,
    DavServer,
    env_without_davserver,
    init_data_dir,
    start_dav_server,
)

# A server clock in a page: ISO (WsgiDAV's error pages) or RFC 1123 (its listing trailer).
CLOCK = re.compile(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\d\d:\d\d:\d\d GMT")


def reveals(page: bytes) -> list[str]:
    found = [
        w
        for w in ("WsgiDAV", "wsgidav", wsgidav.__version__, "Cheroot", "Python/")
        if w.encode() in page
    ]
    return found


def test_error_pages_name_no_product_version_or_time(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    pages = {
        "401": dav_server.client().get("/"),
        "404": alice.get("/no/such/file"),
        "400": alice.request("PROPFIND", "/", headers={"Depth": "2"}),
        "405": alice.request("MKCOL", "/"),
        "409": alice.put("/missing/parent", b"x"),
    }
    bad_xml = alice.request("PROPPATCH", "/", "<not xml", {"Content-Type": "application/xml"})
    assert bad_xml.status == 400 and b"Invalid XML" in bad_xml.body
    assert b"Source exception" not in bad_xml.body  # WsgiDAV appends the parser's error
    for what, r in pages.items():
        assert str(r.status) == what, (what, r.status)
        assert r.body, what  # a page that says what went wrong
        assert reveals(r.body) == [], (what, r.text)
        assert not CLOCK.search(r.body), (what, r.text)
    assert b"404 Not Found" in pages["404"].body


def test_listing_names_no_product_version_or_time(alice: DavClient) -> None:
    assert alice.mkcol("/folder").status == 201
    # Files listed carry their own modification times; an empty folder shows only the page.
    r = alice.get("/folder/")
    assert r.status == 200 and r.header("Content-Type") == "text/html; charset=utf-8"
    assert b"Index of /folder/" in r.body
    assert reveals(r.body) == [], r.text
    assert not CLOCK.search(r.body), r.text
    # Nothing a strict policy forbids: no script, no inline handler or style.
    for forbidden in (b"<script", b"onload", b"onclick", b"style=", b"<style"):
        assert forbidden not in r.body.lower(), forbidden


def _policy(r: object) -> dict[str, str]:
    value = r.header("Content-Security-Policy") or ""  # type: ignore[attr-defined]
    out = {}
    for part in value.split(";"):
        name, _, rest = part.strip().partition(" ")
        if name:
            out[name] = rest.strip()
    return out


def test_html_gets_security_headers(alice: DavClient) -> None:
    assert alice.mkcol("/d").status == 201
    assert alice.put("/d/page.html", b"<script>alert(1)</script>").status == 201
    assert alice.put("/d/pic.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>").status == 201
    assert alice.put("/d/notes.txt", b"<script>alert(1)</script>").status == 201
    listing, page, svg, text, missing = (
        alice.get("/d/"),
        alice.get("/d/page.html"),
        alice.get("/d/pic.svg"),
        alice.get("/d/notes.txt"),
        alice.get("/d/nothing.html"),
    )
    assert (page.header("Content-Type") or "").startswith("text/html")
    for r in (listing, page, svg, text, missing):
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("Referrer-Policy") == "no-referrer"
        assert _policy(r)["frame-ancestors"] == "'none'"
    # The listing may load its own stylesheet and icon, nothing else, and runs no script.
    lp = _policy(listing)
    assert lp["default-src"] == "'none'" and lp["style-src"] == "'self'"
    assert "script-src" not in lp
    # A user's HTML or SVG (and an error page) runs no script and gets an origin of its own.
    for r in (page, svg, missing):
        p = _policy(r)
        assert p["default-src"] == "'none'" and "sandbox" in p and "script-src" not in p
    # The listing's stylesheet is served under the same rules.
    css = alice.get("/:dir_browser/style.css")
    assert css.status == 200 and css.header("X-Content-Type-Options") == "nosniff"


def test_other_responses_get_them_too(dav_server: DavServer) -> None:
    anon = dav_server.client()
    for r in (anon.propfind("/", "0"), dav_server.client("alice").propfind("/", "0")):
        assert r.status in (207, 401)
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert "frame-ancestors 'none'" in (r.header("Content-Security-Policy") or "")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_index_files_are_owner_only(dav_server: DavServer) -> None:
    """``davserver init`` made the index (the fixture runs the real CLI); a write makes SQLite
    create its WAL and shared-memory files: all 0600."""
    alice = dav_server.client("alice")
    assert alice.put("/f", b"x" * 100).status == 201
    files = [dav_server.data_dir / n for n in ("index.db", "index.db-wal", "index.db-shm")]
    for f in files:
        assert f.exists(), f
        assert _mode(f) == 0o600, (f, oct(_mode(f)))


def test_existing_index_files_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data_dir(data)
    db = data / "index.db"
    con = sqlite3.connect(db)  # leaves -wal and -shm behind while open
    con.execute("pragma journal_mode=wal")
    con.execute("create table if not exists t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        os.chmod(data / name, 0o644)
    dav = start_dav_server(data)
    try:
        for name in ("index.db", "index.db-wal", "index.db-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        dav.stop()
        con.close()


# -- core dumps of `davserver serve` ---------------------------------------------------------

_REPO = Path(__file__).resolve().parents[2]


def _serve(tmp: Path, cwd: Path) -> subprocess.Popen[str]:
    data = tmp / "data"
    init_data_dir(data)
    # The checkout under test first: the child runs in another directory, and an installed
    # davserver (another worktree's, say) must not stand in for this one.
    path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env_without_davserver(), **FAST_ENV, "PYTHONPATH": path}

    proc = subprocess.Popen(
        [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        cwd=cwd,
        preexec_fn=_allow_cores,  # so that a zero limit is the server's own doing
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the banner: it listens
    assert " at http" in line, line + (proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _serve(tmp_path, cwd)
    try:
        yield proc, cwd
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def _core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit in /proc/PID/limits")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")
def test_serve_turns_core_dumps_off(served: tuple[subprocess.Popen[str], Path]) -> None:
    proc, _cwd = served
    assert _core_limit(proc.pid) == ("0", "0")  # started with "unlimited unlimited"


def _allow_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")
def test_killed_server_leaves_no_core(
    served: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    """A server killed by SIGABRT writes no core file. A control process started with the
    same (unlimited) core limit does write one, so the test can tell."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write cores into the cwd")
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        cwd=control_dir,
        preexec_fn=_allow_cores,
    )
    proc, cwd = served
    try:
        time.sleep(0.5)
        for p in (control, proc):
            os.kill(p.pid, signal.SIGABRT)
        assert control.wait(30) == -signal.SIGABRT
        assert proc.wait(30) == -signal.SIGABRT
    finally:
        for p in (control, proc):
            if p.poll() is None:
                p.kill()
    control_cores = list(control_dir.glob("core*"))
    if not control_cores:
        pytest.skip("this machine writes no core files even for a dumpable process")
    for f in control_cores:
        f.unlink()
    left = list(cwd.glob("core*"))
    for f in left:  # a failed run must not leave a core of the server's memory behind
        f.unlink()
    assert left == []


# Run without CAP_SYS_PTRACE: starts a command, waits for its first line of output, then
# says whether it may open the child's /proc/PID/mem (the kernel lets a process of the same
# user do so only if the target is dumpable), and stops it.
_PROBE = """
import os, signal, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
p.stdout.readline()
try:
    os.close(os.open(f"/proc/{p.pid}/mem", os.O_RDONLY))
    print("open")
except PermissionError:
    print("denied")
p.send_signal(signal.SIGTERM)
p.wait(30)
"""


def _memory_readable(command: list[str], env: dict[str, str]) -> bool:
    r = subprocess.run(
        ["setpriv", "--bounding-set=-sys_ptrace", sys.executable, "-c", _PROBE, *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.stdout.strip() in ("open", "denied"), (r.stdout, r.stderr)
    return r.stdout.strip() == "open"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DUMPABLE is Linux's")
def test_server_memory_cannot_be_read_by_the_same_user(tmp_path: Path) -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of the server's user (without
    CAP_SYS_PTRACE) can neither attach to it nor read its memory, where the keys are. The
    same probe on a plain Python process can, so the test can tell."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop CAP_SYS_PTRACE")
    # The checkout under test first: the child runs in another directory, and an installed
    # davserver (another worktree's, say) must not stand in for this one.
    path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env_without_davserver(), **FAST_ENV, "PYTHONPATH": path}
    control = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    if not _memory_readable(control, env):
        pytest.skip("even a dumpable process's memory is closed to its parent here")
    data = tmp_path / "data"
    init_data_dir(data)
    serve = [sys.executable, "-m", "davserver.cli", "serve", "--data-dir", str(data)]
    assert not _memory_readable(serve, env)


# -- caps on locks and dead properties ------------------------------------------------------


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[DavServer]:
    dav = start_dav_server(
        tmp_path / "data",
        {
            "DAVSERVER_QUOTA_MAX_SHARED_LOCKS": "3",
            "DAVSERVER_QUOTA_MAX_DEAD_PROPS": "4",
            "DAVSERVER_QUOTA_MAX_DEAD_PROPS_BYTES": "2048",
        },
    )
    try:
        yield dav
    finally:
        dav.stop()


def _lock(client: DavClient, path: str, owner: str) -> tuple[int, str | None]:
    body = (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope>'
        f"<D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>"
    )
    r = client.request("LOCK", path, body, {"Depth": "0", "Timeout": "Second-600"})
    token = r.header("Lock-Token")
    return r.status, token.strip("<>") if token else None


def test_shared_locks_per_resource_are_capped(capped: DavServer) -> None:
    alice = capped.client("alice")
    assert alice.put("/f", b"x").status == 201
    results = [_lock(alice, "/f", f"o{i}") for i in range(3)]
    assert [s for s, _ in results] == [200, 200, 200]
    r = alice.request(
        "LOCK",
        "/f",
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/>'
        "</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>",
        {"Depth": "0"},
    )
    assert r.status == 423, r.text
    assert b"too many locks" in r.body
    assert _lock(alice, "/g", "other")[0] in (200, 201)  # another resource, its own cap
    token = results[0][1]
    assert token is not None
    assert alice.request("UNLOCK", "/f", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert _lock(alice, "/f", "again")[0] == 200  # room again


def _set(**props: str) -> str:
    inner = "".join(f"<Z:{k}>{v}</Z:{k}>" for k, v in props.items())
    return (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:">'
        f"<D:set><D:prop>{inner}</D:prop></D:set></D:propertyupdate>"
    )


def _remove(*names: str) -> str:
    inner = "".join(f"<Z:{k}/>" for k in names)
    return (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:">'
        f"<D:remove><D:prop>{inner}</D:prop></D:remove></D:propertyupdate>"
    )


def _names(client: DavClient, path: str) -> set[str]:
    r = client.request("PROPFIND", path, None, {"Depth": "0"})
    assert r.status == 207
    return set(re.findall(r"<(?:\w+:)?(p\d+|big\d*)\b", r.text))


def test_dead_properties_per_resource_are_capped(capped: DavServer) -> None:
    alice = capped.client("alice")
    assert alice.put("/f", b"x").status == 201
    assert alice.request("PROPPATCH", "/f", _set(p1="a", p2="b", p3="c", p4="d")).status == 207
    r = alice.request("PROPPATCH", "/f", _set(p5="e"))
    assert r.status == 507 and b"too many dead properties" in r.body, r.text
    assert alice.request("PROPPATCH", "/f", _set(p4="changed")).status == 207  # no new one
    assert alice.request("PROPPATCH", "/f", _remove("p4")).status == 207
    assert alice.request("PROPPATCH", "/f", _set(p5="e")).status == 207
    # Total size: 2 KiB here.
    assert alice.put("/g", b"x").status == 201
    r = alice.request("PROPPATCH", "/g", _set(big="y" * 3000))
    assert r.status == 507 and b"too large" in r.body, r.text
    assert alice.request("PROPPATCH", "/g", _set(big="y" * 1000)).status == 207
    r = alice.request("PROPPATCH", "/g", _set(big2="y" * 1200))
    assert r.status == 507
    # A refused change changes nothing.
    assert _names(alice, "/g") >= {"big"} and "big2" not in _names(alice, "/g")
