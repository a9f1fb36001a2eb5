"""``davserver fsck`` and ``davserver scrub``: checking the store (``davserver.admin``)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import click

from davserver.admin import ProgressFactory, Ticker
from davserver.admin.deep import DeepCheck
from davserver.admin.fsck import Fsck, FsckReport, Problem
from davserver.cli import main
from davserver.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
    progress,
    read_stdin_password,
)
from davserver.errors import AuthError


def _progress_factory(enabled: bool) -> ProgressFactory:
    def factory(description: str, total: int | None) -> AbstractContextManager[Ticker]:
        return progress(description, total, enabled)

    return factory


def _ids(p: Problem) -> str:
    return " ".join(f"{k}={v}" for k, v in p.ids.items())


def _print_problems(problems: list[Problem], title: str) -> None:
    if not problems:
        return
    rows = [
        (p.kind, _ids(p), p.detail, "repaired" if p.repaired else ("yes" if p.repairable else "no"))
        for p in problems
    ]
    print_table(["kind", "ids", "detail", "repairable"], rows, title=title)


def closing_fsck(data_dir: Path, as_json: bool) -> FsckReport:
    """The keyless fsck that ``restore`` and ``index migrate`` end with (printed unless
    ``as_json``; the caller puts the report in its JSON and picks the exit code)."""
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        report = Fsck(vault, progress=_progress_factory(not as_json)).run()
    finally:
        vault.close()
    if not as_json:
        _print_problems(report.problems, "fsck")
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        click.echo(f"fsck: checked {checked}: {len(report.problems)} problems")
    return report


@main.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--deep", is_flag=True, help="Also authenticate everything of --user (needs a password)."
)
@click.option("--user", "user_name", metavar="NAME", help="The user whose tree --deep checks.")
@click.option(
    "--password-stdin", is_flag=True, help="Read --user's password from one line of stdin."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Fix what is derivable from the rows (usage totals, node sizes, tracking rows of "
    "blobs); never rewrites ciphertext.",
)
@json_option
@data_dir_option
@handle_errors
def fsck(
    deep: bool,
    user_name: str | None,
    password_stdin: bool,
    repair: bool,
    as_json: bool,
    data_dir: Path,
) -> None:
    """Check that the index and the blob store agree.

    Without --deep it needs no password and only reads (unless --repair), so it is safe on a
    live server: every version's object exists with its exact ciphertext length, every node's
    parent exists with the same owner, no cycles, no duplicate names, blob tracking rows and
    usage totals match the rows, every user has a password envelope, and orphans (objects
    referenced by nothing) are listed with their age. Problems are reported by ids only.

    With --deep --user NAME it also logs in as NAME (password from a prompt or, with
    --password-stdin, one line of stdin) and authenticates every key, name, property and
    segment of NAME's files; a wrong password is exit code 2.

    With --repair, exit code 1 means problems remain that it could not repair.
    """
    from davserver.runtime import open_vault

    if deep != bool(user_name):
        fail("--deep and --user NAME go together", EXIT_USAGE)
    password = None
    if deep and user_name:
        if password_stdin:
            password = read_stdin_password("password")
        else:
            password = click.prompt(f"Password of {user_name}", hide_input=True, err=True)
    vault = open_vault(load_config(data_dir))
    try:
        progress_factory = _progress_factory(not as_json)
        report = Fsck(vault, repair=repair, progress=progress_factory).run()
        if deep and user_name and password is not None:
            try:
                DeepCheck(vault, report, progress_factory).run(user_name, password)
            except AuthError:
                fail("wrong user name or password", EXIT_USAGE)
    finally:
        vault.close()
    remaining = report.remaining
    if as_json:
        emit_json(report.to_json())
    else:
        _print_problems(report.problems, "fsck")
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        fixed = sum(p.repaired for p in report.problems)
        click.echo(
            f"checked {checked}: {len(report.problems)} problems"
            + (f", {fixed} repaired" if repair else "")
        )
    raise SystemExit(EXIT_PROBLEMS if remaining else EXIT_OK)


@main.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--limit",
    metavar="BYTES|PERCENT",
    help="Re-read at most this much (e.g. 20G or 5%), least recently scrubbed objects first; "
    "successive runs cover the whole store in turn.",
)
@json_option
@data_dir_option
@handle_errors
def scrub(limit: str | None, as_json: bool, data_dir: Path) -> None:
    """Re-read stored objects and compare them with their keyless digests (bit rot).

    Needs no password. Objects stored before digests were recorded get theirs on their first
    scrub.
    """
    from davserver.admin.scrub import Scrub, parse_limit
    from davserver.runtime import open_vault

    limit_bytes = fraction = None
    if limit is not None:
        try:
            limit_bytes, fraction = parse_limit(limit)
        except ValueError as exc:
            fail(f"--limit: {exc}", EXIT_USAGE)
    vault = open_vault(load_config(data_dir))
    try:
        report = Scrub(vault, progress=_progress_factory(not as_json)).run(limit_bytes, fraction)
    finally:
        vault.close()
    if as_json:
        emit_json(report.to_json())
    else:
        _print_problems(report.problems, "scrub")
        click.echo(
            f"scrubbed {report.objects} of {report.total_objects} objects "
            f"({report.bytes} bytes), {report.recorded} digests recorded: "
            f"{len(report.problems)} problems"
        )
    raise SystemExit(EXIT_PROBLEMS if report.problems else EXIT_OK)
