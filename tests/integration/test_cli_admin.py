"""Administering users and locks: ``user quota``, ``user list`` (usage, quota, last login),
``locks list`` and ``locks break``, on a real data directory and a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from playhouse.migrate import SchemaMigrator, migrate

from davserver.cli import main
from davserver.cli.sizes import parse_size
from davserver.index import SCHEMA_VERSION, open_index
from davserver.index.models import SchemaInfo, User
from davserver.runtime import open_vault
from davserver.vault import LAST_LOGIN_RESOLUTION
from tests.harness.davserver import FAST_ENV, DavServer, make_config, start_dav_server
from tests.harness.serve import process_env

LOCKINFO = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>ownerzq8text</D:owner></D:lockinfo>"
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=FAST_ENV)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[DavServer]:
    dav = start_dav_server(tmp_path / "data", users=("alice", "bob"))
    try:
        yield dav
    finally:
        dav.stop()


def run(runner: CliRunner, data_dir: Path, *args: str, columns: int = 80) -> tuple[int, str]:
    """The real CLI in a process of its own: an in-process CLI would rebind the index models
    of the in-process server under test (one index per process)."""
    result = subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args, "--data-dir", str(data_dir)],
        text=True,
        env=process_env({"COLUMNS": str(columns)}),  # the width rich gives a table
        capture_output=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def users_json(runner: CliRunner, data_dir: Path) -> dict[str, dict[str, object]]:
    code, out = run(runner, data_dir, "user", "list", "--json")
    assert code == 0, out
    return {u["name"]: u for u in json.loads(out)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("500M", 500 << 20),
        ("10G", 10 << 30),
        ("10GiB", 10 << 30),
        ("10GB", 10 * 10**9),
        ("1.5T", int(1.5 * (1 << 40))),
        ("2k", 2048),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "10X", "-5", "1.5", "10 GiBs"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_quota_set_default_unlimited_and_enforced(served: DavServer, runner: CliRunner) -> None:
    d = served.data_dir
    alice = served.client("alice")
    assert alice.put("/a.bin", b"a" * 40_000).status == 201
    code, out = run(runner, d, "user", "quota", "alice", "64K")
    assert code == 0 and "64.0 KiB" in out, out
    info = users_json(runner, d)["alice"]
    assert (info["quota_bytes"], info["quota_is_default"], info["usage_bytes"]) == (
        64 << 10,
        False,
        40_000,
    )
    # The running server enforces the new quota at once (it reads it from the index).
    assert alice.put("/b.bin", b"b" * 40_000).status == 507
    assert alice.put("/c.bin", b"c" * 20_000).status == 201
    code, _ = run(runner, d, "user", "quota", "alice", "unlimited")
    assert code == 0
    assert users_json(runner, d)["alice"]["quota_bytes"] == 0
    assert alice.put("/b.bin", b"b" * 40_000).status == 201
    code, out = run(runner, d, "user", "quota", "alice", "none")
    assert code == 0 and "(default)" in out
    info = users_json(runner, d)["alice"]
    assert (info["quota_bytes"], info["quota_is_default"]) == (0, True)  # the default: 0
    code, out = run(runner, d, "user", "quota", "nobody", "1G")
    assert code == 1 and "no user named" in out
    code, out = run(runner, d, "user", "quota", "alice", "lots")
    assert code == 2 and "not a size" in out
    code, out = run(runner, d, "user", "list")  # the table
    assert code == 0
    assert "alice" in out and "bob" in out and "LAST LOGIN" in out and "(default)" in out


def test_last_login_is_written_once_a_minute_and_never_from_the_cache(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    runner = CliRunner(env=FAST_ENV)
    r = runner.invoke(
        main,
        ["user", "add", "carol", "--password-stdin", "--data-dir", str(config.data_dir)],
        input="pw-carol\n",
    )
    assert r.exit_code == 0, r.output
    assert users_json(runner, config.data_dir)["carol"]["last_login"] is None

    def last_login() -> float | None:
        with vault.index.connection():
            value = User.get(User.name == "carol").last_login
            return None if value is None else float(value)

    def set_last_login(ts: float) -> None:
        with vault.index.connection():
            User.update(last_login=ts).where(User.name == "carol").execute()

    vault = open_vault(config)
    try:
        before = time.time()
        vault.login("carol", "pw-carol")  # Argon2id: written
        first = last_login()
        assert first is not None and first >= before - 1
        set_last_login(time.time() - 10 * LAST_LOGIN_RESOLUTION)
        stale = last_login()
        vault.login("carol", "pw-carol")  # served from the login cache: no write
        assert vault.login_cached("carol", "pw-carol") is not None
        assert last_login() == stale
    finally:
        vault.close()
    vault = open_vault(config)  # a new process's cache: Argon2id again
    try:
        vault.login("carol", "pw-carol")
        assert (last_login() or 0) > (stale or 0) + 5 * LAST_LOGIN_RESOLUTION
        recent = time.time() - LAST_LOGIN_RESOLUTION / 2
        set_last_login(recent)
    finally:
        vault.close()
    vault = open_vault(config)
    try:
        vault.login("carol", "pw-carol")  # Argon2id, but within the resolution: no write
        assert last_login() == recent
    finally:
        vault.close()
    shown = users_json(runner, config.data_dir)["carol"]["last_login"]
    assert shown == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(recent))


def test_locks_list_filter_and_break(served: DavServer, runner: CliRunner) -> None:
    d = served.data_dir
    alice, bob = served.client("alice"), served.client("bob")
    assert alice.mkcol("/dirzq8").status == 201
    tokens = {}
    for who, client, path, scope, depth in (
        ("alice", alice, "/dirzq8", "exclusive", "infinity"),
        ("bob", bob, "/filezq8.txt", "shared", "0"),
    ):
        r = client.request(
            "LOCK",
            path,
            LOCKINFO.format(scope=scope),
            {"Depth": depth, "Timeout": "Second-600"},
        )
        assert r.status in (200, 201), r.text
        tokens[who] = (r.header("Lock-Token") or "").strip("<>")
    ids = {name: u["id"] for name, u in users_json(runner, d).items()}

    code, out = run(runner, d, "locks", "list", "--json")
    assert code == 0, out
    listed = {lk["token"]: lk for lk in json.loads(out)}
    assert set(listed) == set(tokens.values())
    a = listed[tokens["alice"]]
    assert (a["user_id"], a["user"], a["scope"], a["depth"]) == (
        ids["alice"],
        "alice",
        "exclusive",
        "infinity",
    )
    b = listed[tokens["bob"]]
    assert (b["user_id"], b["scope"], b["depth"]) == (ids["bob"], "shared", "0")
    assert "zq8" not in out  # neither the locked paths nor the owner text

    code, out = run(runner, d, "locks", "list", "--user", "bob", "--json")
    assert code == 0 and [lk["token"] for lk in json.loads(out)] == [tokens["bob"]]
    code, out = run(runner, d, "locks", "list", columns=250)
    assert code == 0 and tokens["alice"] in out and ids["bob"] in out and "zq8" not in out
    code, out = run(runner, d, "locks", "list")  # narrow: long values fold, none is cut
    assert code == 0 and "…" not in out
    code, out = run(runner, d, "locks", "list", "--user", "nobody")
    assert code == 1 and "no user named" in out

    # Alice's lock blocks her own writes without the token; broken, it no longer does.
    assert alice.put("/dirzq8/x.txt", b"x").status == 423
    code, out = run(runner, d, "locks", "break", tokens["alice"])
    assert code == 0 and ids["alice"] in out, out
    assert alice.put("/dirzq8/x.txt", b"x").status == 201
    code, out = run(runner, d, "locks", "break", tokens["alice"])
    assert code == 1 and "no such lock" in out
    code, out = run(runner, d, "locks", "list", "--json")
    assert [lk["token"] for lk in json.loads(out)] == [tokens["bob"]]


def _downgrade_and_migrate(url: str, base: Path) -> None:
    """Drop ``user.last_login`` and mark the index schema 4, then open it again: migration 5
    must bring the column back, with the rows intact."""
    index = open_index(url, base)
    with index.db.connection_context():
        User.create(id="ab" * 16, name="old", created=1.0)
        migrate(SchemaMigrator.from_database(index.db).drop_column("user", "last_login"))
        SchemaInfo.update(value="4").where(SchemaInfo.key == "schema_version").execute()
        assert "last_login" not in {c.name for c in index.db.get_columns("user")}
    index.close()
    index = open_index(url, base)  # migrates
    try:
        with index.db.connection_context():
            assert index.schema_version() == SCHEMA_VERSION
            assert "last_login" in {c.name for c in index.db.get_columns("user")}
            assert User.get(User.name == "old").last_login is None
    finally:
        index.close()


def test_migration_adds_last_login_to_an_older_sqlite_index(tmp_path: Path) -> None:
    _downgrade_and_migrate("sqlite:///index.db", tmp_path)


@pytest.mark.postgres
def test_migration_adds_last_login_to_an_older_postgres_index(
    tmp_path: Path, postgres_db_url: str
) -> None:
    _downgrade_and_migrate(postgres_db_url, tmp_path)
