"""``davserver token add|list|revoke``, ``user recovery-code`` and ``user passwd
--recovery-code``, through click's CliRunner on a real data directory (and the vault it
opens, to check what the commands did)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from davserver.cli import main
from davserver.errors import AuthError
from davserver.runtime import open_vault
from davserver.vault import Vault
from tests.harness.davserver import FAST_ENV, make_config

PASSWORD = "correct horse"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=FAST_ENV)


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    d = tmp_path / "data"
    assert runner.invoke(main, ["init", "--data-dir", str(d)]).exit_code == 0
    r = runner.invoke(
        main, ["user", "add", "alice", "--password-stdin", "--data-dir", str(d)], PASSWORD + "\n"
    )
    assert r.exit_code == 0, r.output
    return d


@contextmanager
def opened(data_dir: Path) -> Iterator[Vault]:
    """The data directory's vault, opened only between commands: the models are bound to
    one database per process (``database_proxy``), so a vault kept open across an
    in-process command would find its binding replaced."""
    v = open_vault(make_config(data_dir))
    try:
        yield v
    finally:
        v.close()


def cli(runner: CliRunner, data_dir: Path, *args: str, stdin: str = "") -> Result:
    return runner.invoke(main, [*args, "--data-dir", str(data_dir)], stdin)


def test_add_prints_the_token_alone_on_stdout(runner: CliRunner, data_dir: Path) -> None:
    r = cli(
        runner,
        data_dir,
        "token",
        "add",
        "alice",
        "--label",
        "Alice's phone",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wdvt_") and len(lines[0]) == 69
    token = lines[0]
    assert token not in r.stderr and "shown only now" in r.stderr
    with opened(data_dir) as vault:
        session = vault.login("alice", token)
        assert session.perms == "rw" and session.token_id is not None
        assert session.token_id in r.stderr  # the id, to revoke it later


def test_add_with_perms_and_expiry_then_list(runner: CliRunner, data_dir: Path) -> None:
    before = time.time()
    r = cli(
        runner,
        data_dir,
        "token",
        "add",
        "alice",
        "--label",
        "backup-job",
        "--perms",
        "ro",
        "--expires",
        "30d",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    with opened(data_dir) as vault:
        assert vault.login("alice", token).perms == "ro"
        (info,) = vault.list_tokens("alice")
    assert info.perms == "ro" and info.expires is not None
    assert before + 30 * 86400 <= info.expires <= time.time() + 30 * 86400 + 1

    table = cli(runner, data_dir, "token", "list", "alice")
    assert table.exit_code == 0, table.output
    assert "backup-job" in table.stdout and info.id in table.stdout and "ro" in table.stdout
    assert token not in table.stdout and token[5:20] not in table.stdout
    as_json = cli(runner, data_dir, "token", "list", "alice", "--json")
    (row,) = json.loads(as_json.stdout)
    assert row["id"] == info.id and row["label"] == "backup-job" and row["kind"] == "token"
    assert row["expires"].endswith("Z") and row["last_used"] is not None  # used above


def test_list_needs_no_password_and_says_when_empty(runner: CliRunner, data_dir: Path) -> None:
    r = cli(runner, data_dir, "token", "list", "alice")
    assert r.exit_code == 0 and "No tokens" in r.stdout
    assert cli(runner, data_dir, "token", "list", "bob").exit_code == 1


def test_revoke(runner: CliRunner, data_dir: Path) -> None:
    with opened(data_dir) as vault:
        token_id, token = vault.create_token("alice", PASSWORD, "laptop")
        vault.login("alice", token)
    r = cli(runner, data_dir, "token", "revoke", "alice", token_id)
    assert r.exit_code == 0, r.output
    with opened(data_dir) as vault, pytest.raises(AuthError):
        vault.login("alice", token)
    again = cli(runner, data_dir, "token", "revoke", "alice", token_id)
    assert again.exit_code == 1 and "has no token" in again.stderr
    nobody = cli(runner, data_dir, "token", "revoke", "bob", token_id)
    assert nobody.exit_code == 1 and "no user named 'bob'" in nobody.stderr


def test_add_errors_are_messages(runner: CliRunner, data_dir: Path) -> None:
    wrong = cli(
        runner,
        data_dir,
        "token",
        "add",
        "alice",
        "--label",
        "x",
        "--password-stdin",
        stdin="nope\n",
    )
    assert wrong.exit_code == 1 and "password is wrong" in wrong.stderr and not wrong.stdout
    bad_perms = cli(runner, data_dir, "token", "add", "alice", "--label", "x", "--perms", "all")
    assert bad_perms.exit_code == 2
    bad_exp = cli(
        runner,
        data_dir,
        "token",
        "add",
        "alice",
        "--label",
        "x",
        "--expires",
        "soon",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert bad_exp.exit_code == 2 and "bad duration" in bad_exp.stderr
    no_label = cli(runner, data_dir, "token", "add", "alice", "--password-stdin")
    assert no_label.exit_code == 2
    empty = cli(
        runner,
        data_dir,
        "token",
        "add",
        "alice",
        "--label",
        " ",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert empty.exit_code == 2 and "label" in empty.stderr
    nobody = cli(
        runner,
        data_dir,
        "token",
        "add",
        "bob",
        "--label",
        "x",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert nobody.exit_code == 1 and "no user named 'bob'" in nobody.stderr


def test_recovery_code_resets_the_password_once(runner: CliRunner, data_dir: Path) -> None:
    with opened(data_dir) as vault:
        vault.login("alice", PASSWORD).write_file("/keep.txt", [b"precious"], 8)
    r = cli(
        runner,
        data_dir,
        "user",
        "recovery-code",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert r.exit_code == 0, r.output
    (code,) = r.stdout.splitlines()
    assert code.startswith("wdvr_") and code not in r.stderr
    with opened(data_dir) as vault, pytest.raises(AuthError):
        vault.login("alice", code)  # a recovery code never logs in

    reset = cli(
        runner,
        data_dir,
        "user",
        "passwd",
        "alice",
        "--recovery-code",
        "--password-stdin",
        stdin=f"{code}\nnew secret\n",
    )
    assert reset.exit_code == 0, reset.output
    assert "used up" in reset.stdout
    with opened(data_dir) as vault:
        assert vault.login("alice", "new secret").open_file("/keep.txt").read_all() == b"precious"
        with pytest.raises(AuthError):
            vault.login("alice", PASSWORD)
    again = cli(
        runner,
        data_dir,
        "user",
        "passwd",
        "alice",
        "--recovery-code",
        "--password-stdin",
        stdin=f"{code}\nthird\n",
    )
    assert again.exit_code == 1 and "wrong or was used" in again.stderr
    garbage = cli(
        runner,
        data_dir,
        "user",
        "passwd",
        "alice",
        "--recovery-code",
        "--password-stdin",
        stdin="not a code\nthird\n",
    )
    assert garbage.exit_code == 1


def test_a_new_recovery_code_replaces_the_old(runner: CliRunner, data_dir: Path) -> None:
    with opened(data_dir) as vault:
        first = vault.create_recovery_code("alice", PASSWORD)
    r = cli(
        runner,
        data_dir,
        "user",
        "recovery-code",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    second = r.stdout.strip()
    assert second != first
    with opened(data_dir) as vault:
        kinds = [t.kind for t in vault.list_tokens("alice")]
        assert kinds == ["recovery"]
        with pytest.raises(AuthError):
            vault.reset_password_with_recovery("alice", first, "x1")
        vault.reset_password_with_recovery("alice", second, "x2")
        assert vault.login("alice", "x2").user_name == "alice"


def test_recovery_code_with_a_wrong_password(runner: CliRunner, data_dir: Path) -> None:
    r = cli(runner, data_dir, "user", "recovery-code", "alice", "--password-stdin", stdin="wrong\n")
    assert r.exit_code == 1 and "password is wrong" in r.stderr and not r.stdout
