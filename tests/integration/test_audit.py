"""The audit log of a real server and the real CLI: every security event is one JSON line
with user ids and keyed tags, and no user name, path, address or password appears in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness.davserver import DavClient
from tests.harness.serve import ServeProcess, process_env

USER = "qzaudituser4k"
OTHER = "qzauditother4k"
UNKNOWN = "qznosuchuser4k"
PASSWORD = "audit horse battery"
NEW_PASSWORD = "audit staple battery"
LOCKED = "/lockedzq4file.txt"
TAG = re.compile(r"^[0-9a-f]{32}$")

LOCKINFO = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>qzownerzq4</D:owner></D:lockinfo>"
)


def cli(data_dir: Path, env: dict[str, str], *args: str, stdin: str = "") -> Any:
    return subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args, "--data-dir", str(data_dir)],
        input=stdin,
        text=True,
        env=process_env(env),
        capture_output=True,
        timeout=120,
    )


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]  # every line is one JSON document


def test_security_events_are_json_lines_with_ids_and_no_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "DAVSERVER_AUDIT_FILE": "audit.log",  # relative to the data directory
        "DAVSERVER_SECURITY_LOGIN_FAIL_PAIR_LIMIT": "2",
    }
    ok(cli(data, env, "init"))
    ok(cli(data, env, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n"))
    ok(cli(data, env, "user", "add", OTHER, "--password-stdin", stdin=PASSWORD + "\n"))
    ids = {u["name"]: u["id"] for u in json.loads(ok(cli(data, env, "user", "list", "--json")))}

    served = ServeProcess(data, env)
    try:
        good = DavClient(served.url, USER, PASSWORD)
        bad = DavClient(served.url, USER, "not the password")
        assert good.put(LOCKED, b"locked").status == 201
        r = good.request("LOCK", LOCKED, LOCKINFO, {"Depth": "0", "Timeout": "Second-600"})
        assert r.status == 200
        token = (r.header("Lock-Token") or "").strip("<>")
        assert bad.get("/").status == 401
        assert bad.get("/").status == 401
        throttled = bad.get("/")
        assert throttled.status == 429 and throttled.header("Retry-After")
        assert DavClient(served.url, UNKNOWN, "whatever").get("/").status == 401
    finally:
        served.stop()

    listed = json.loads(ok(cli(data, env, "locks", "list", "--json")))
    assert [(lk["token"], lk["user_id"]) for lk in listed] == [(token, ids[USER])]
    ok(cli(data, env, "locks", "break", token))
    ok(cli(data, env, "user", "quota", USER, "2G"))
    ok(
        cli(
            data,
            env,
            "user",
            "passwd",
            USER,
            "--password-stdin",
            stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n",
        )
    )
    ok(cli(data, env, "user", "del", OTHER, "--yes"))

    log_path = data / "audit.log"
    assert log_path.stat().st_mode & 0o077 == 0  # owner-only
    got = events(log_path)
    kinds = [e["event"] for e in got]
    assert kinds == [
        "user_created",
        "user_created",
        "login_failed",
        "login_failed",
        "login_throttled",
        "login_failed",
        "lock_broken",
        "quota_changed",
        "password_changed",
        "user_deleted",
    ], kinds
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in got:
        by_kind.setdefault(e["event"], []).append(e)
        assert isinstance(e["ts"], float) and e["time"].endswith("Z") and e["pid"] > 0
    assert [e["user_id"] for e in by_kind["user_created"]] == [ids[USER], ids[OTHER]]
    failed = by_kind["login_failed"]
    assert [e["user_id"] for e in failed] == [ids[USER], ids[USER], None]
    addr_tags = {e["addr_mac"] for e in failed + by_kind["login_throttled"]}
    assert len(addr_tags) == 1 and TAG.match(next(iter(addr_tags)))  # one client address
    # The operator finds an address's or a tried name's lines by computing their tags.
    tags = json.loads(
        ok(cli(data, env, "audit", "tag", "--addr", "127.0.0.1", "--user", UNKNOWN, "--json"))
    )
    assert {tags["addr_mac"]["127.0.0.1"]} == addr_tags
    assert tags["user_tag"][UNKNOWN] == failed[2]["user_tag"]
    assert failed[0]["user_tag"] == failed[1]["user_tag"] != failed[2]["user_tag"]
    (throttle,) = by_kind["login_throttled"]
    assert throttle["limit"] == "pair" and throttle["retry_after"] >= 1
    assert throttle["user_tag"] == failed[0]["user_tag"]
    assert by_kind["lock_broken"] == [
        {**by_kind["lock_broken"][0], "user_id": ids[USER], "token": token}
    ]
    assert by_kind["quota_changed"][0]["quota_bytes"] == 2 << 30
    assert by_kind["quota_changed"][0]["user_id"] == ids[USER]
    assert by_kind["password_changed"][0]["user_id"] == ids[USER]
    assert by_kind["user_deleted"][0]["user_id"] == ids[OTHER]

    raw = log_path.read_text(encoding="utf-8").lower()
    for secret in (
        USER,
        OTHER,
        UNKNOWN,
        "zq4",  # the locked file's name and the lock owner text
        "127.0.0.1",
        PASSWORD,
        NEW_PASSWORD,
        "not the password",
    ):
        assert secret.lower() not in raw, f"{secret!r} is in the audit log"


def test_audit_to_stderr_and_off_by_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(cli(data, {}, "init"))
    quiet = cli(data, {}, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    assert quiet.returncode == 0 and quiet.stderr == ""  # off by default: nothing anywhere
    assert not list(data.glob("*.log"))
    loud = cli(data, {"DAVSERVER_AUDIT_FILE": "-"}, "user", "quota", USER, "unlimited")
    assert loud.returncode == 0, loud.stderr
    (line,) = [ln for ln in loud.stderr.splitlines() if ln.startswith("{")]
    event = json.loads(line)
    assert event["event"] == "quota_changed" and event["quota_bytes"] == 0
    assert USER not in loud.stderr


def test_unwritable_audit_file_is_a_clear_config_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(cli(data, {}, "init"))
    bad = cli(data, {"DAVSERVER_AUDIT_FILE": "no/such/dir/audit.log"}, "user", "list")
    assert bad.returncode == 2
    assert "audit.file" in bad.stderr and "Traceback" not in bad.stderr
