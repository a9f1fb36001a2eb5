"""The ``davserver`` command line, through click's CliRunner and once as a real process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from davserver.cli import main

FAST_ENV = {
    "DAVSERVER_SECURITY_ARGON2_OPSLIMIT": "1",
    "DAVSERVER_SECURITY_ARGON2_MEMLIMIT": "8388608",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=FAST_ENV)


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    d = tmp_path / "data"
    result = runner.invoke(main, ["init", "--data-dir", str(d)])
    assert result.exit_code == 0, result.output
    return d


def test_init_creates_everything_and_warns(data_dir: Path, runner: CliRunner) -> None:
    assert (data_dir / "davserver.yaml").is_file()
    pepper = data_dir / "pepper"
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o400
    assert len(pepper.read_bytes()) == 32
    assert (data_dir / "index.db").is_file()
    assert (data_dir / "blobs").is_dir()
    original = pepper.read_bytes()
    again = runner.invoke(main, ["init", "--data-dir", str(data_dir)])
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output
    assert pepper.read_bytes() == original


def test_init_warning_text(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["init", "--data-dir", str(tmp_path / "d")])
    assert "ALL stored data is lost" in result.output


def test_init_uses_environment_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "from-env"
    result = CliRunner(env={**FAST_ENV, "DAVSERVER_DATA_DIR": str(d)}).invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert (d / "davserver.yaml").exists()


def test_user_lifecycle(data_dir: Path, runner: CliRunner) -> None:
    dd = ["--data-dir", str(data_dir)]
    r = runner.invoke(main, ["user", "add", "alice", "--password-stdin", *dd], input="s3cret\n")
    assert r.exit_code == 0, r.output
    assert "s3cret" not in r.output
    r = runner.invoke(main, ["user", "add", "alice", "--password-stdin", *dd], input="x\n")
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(main, ["user", "add", "bob", *dd], input="pw1\npw1\n")  # prompt, twice
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["user", "list", *dd])
    assert r.exit_code == 0
    assert "alice" in r.output and "bob" in r.output
    r = runner.invoke(
        main, ["user", "passwd", "alice", "--password-stdin", *dd], input="wrong\nnew\n"
    )
    assert r.exit_code == 1 and "wrong" in r.output
    r = runner.invoke(
        main, ["user", "passwd", "alice", "--password-stdin", *dd], input="s3cret\nnew\n"
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["user", "del", "bob", *dd])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["user", "list", *dd])
    assert "bob" not in r.output
    r = runner.invoke(main, ["user", "del", "nobody", *dd])
    assert r.exit_code == 1 and "no user" in r.output

    from davserver.cli.common import load_config
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        assert vault.login("alice", "new").user_name == "alice"
    finally:
        vault.close()


def test_errors_are_messages_not_tracebacks(tmp_path: Path, runner: CliRunner) -> None:
    missing = ["--data-dir", str(tmp_path / "nope")]
    r = runner.invoke(main, ["user", "list", *missing])
    assert r.exit_code == 2
    assert "davserver init" in r.output
    assert "Traceback" not in r.output
    d = tmp_path / "d"
    assert runner.invoke(main, ["init", "--data-dir", str(d)]).exit_code == 0
    (d / "davserver.yaml").write_text("server:\n  prot: 1\n")
    r = runner.invoke(main, ["user", "list", "--data-dir", str(d)])
    assert r.exit_code == 2
    assert "server.prot" in r.output
    r = runner.invoke(main, ["user", "add", "x:y", "--password-stdin", "--data-dir", str(d)])
    assert r.exit_code != 0
    assert "Traceback" not in r.output


def test_pepper_problems_are_reported(data_dir: Path, runner: CliRunner) -> None:
    pepper = data_dir / "pepper"
    os.chmod(pepper, 0o644)
    r = runner.invoke(main, ["user", "list", "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "chmod 400" in r.output
    pepper.unlink()
    r = runner.invoke(main, ["user", "list", "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "pepper" in r.output


def test_empty_password_refused(data_dir: Path, runner: CliRunner) -> None:
    r = runner.invoke(
        main, ["user", "add", "carol", "--password-stdin", "--data-dir", str(data_dir)], input="\n"
    )
    assert r.exit_code != 0
    assert "empty" in r.output


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed entry point works as a real process and documents its commands."""
    out = subprocess.run(
        [sys.executable, "-m", "davserver.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for word in ("init", "user"):
        assert word in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "davserver.cli", "user", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for word in ("add", "passwd", "list", "del"):
        assert word in out.stdout
