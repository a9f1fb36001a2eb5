"""``davserver gc``, ``backup``, ``restore`` and ``index migrate`` (davserver.admin does the
work; this module parses arguments and prints)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from davserver.cli import main
from davserver.cli.common import (
    CONFIG_NAME,
    EXIT_CODES_HELP,
    EXIT_PROBLEMS,
    EXIT_UNREACHABLE,
    Progress,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
    progress,
)
from davserver.cli.fsck import closing_fsck

F = TypeVar("F", bound=Callable[..., Any])


def database_errors(f: F) -> F:
    """A database error the services let through: one line and exit 3 (cannot connect or
    operate) or 1, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import sqlite3

        import peewee as pw

        try:
            return f(*args, **kwargs)
        except (pw.OperationalError, sqlite3.OperationalError) as exc:
            fail(f"database: {str(exc).splitlines()[0] if str(exc) else 'error'}", EXIT_UNREACHABLE)
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
            fail(f"database: {str(exc).splitlines()[0] if str(exc) else 'error'}", EXIT_PROBLEMS)

    return wrapper  # type: ignore[return-value]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="Only unreferenced objects older than this: 30m, 24h, 7d or seconds.",
)
@json_option
@data_dir_option
@handle_errors
@database_errors
def gc(dry_run: bool, grace: str, as_json: bool, data_dir: Path) -> None:
    """Reclaim space now: expired chunked uploads, partial uploads left by crashes, dead
    blobs, and orphan objects that no index row knows, older than --grace.

    Safe on a running server. Keep --grace longer than your longest backup or restore
    takes (objects copied before their index rows look like orphans until then).
    """
    from davserver.admin.gc import parse_duration, run_gc
    from davserver.runtime import open_vault

    grace_s = parse_duration(grace)
    vault = open_vault(load_config(data_dir))
    try:
        with progress("listing the store", None, not as_json) as bar:
            report = run_gc(vault, grace_s, dry_run, bar.advance)
    finally:
        vault.close()
    if as_json:
        emit_json(report.as_dict())
    else:
        verb = "Would remove" if dry_run else "Removed"
        if report.items:
            print_table(
                ["KIND", "ID", "BYTES", "AGE (s)"],
                [(i.kind, i.id, i.bytes, int(i.age)) for i in report.items],
            )
        click.echo(f"{verb} {len(report.items)} items, {_human(report.bytes)} reclaimed.")
        for item in report.failed:
            click.echo(f"could not remove {item}; the next run retries", err=True)
    if report.failed:
        raise SystemExit(EXIT_PROBLEMS)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--include-pepper",
    is_flag=True,
    help="Also copy the pepper (keep such a backup apart: index + pepper allow offline "
    "password guessing).",
)
@json_option
@data_dir_option
@handle_errors
@database_errors
def backup(dest: Path, include_pepper: bool, as_json: bool, data_dir: Path) -> None:
    """Back up the index (a consistent snapshot, safe while serving), the config and, for
    the local backend, the blobs into the new or empty directory DEST.

    The pepper is left out unless --include-pepper: back it up once, somewhere else. For
    the S3 backend, mirror the bucket after this command (docs/operations.md).
    """
    from davserver.admin.backup import backup as run_backup

    config = load_config(data_dir)
    with progress("copying objects", None, not as_json) as bar:
        manifest = run_backup(config, data_dir / CONFIG_NAME, dest, include_pepper, bar.advance)
    if as_json:
        emit_json(manifest)
        return
    blobs = manifest["blobs"]
    click.echo(f"Backed up the index ({sum(manifest['tables'].values())} rows) to {dest}.")
    if blobs["copied"]:
        click.echo(f"Copied {blobs['objects']} objects, {_human(blobs['bytes'])}.")
    else:
        click.echo(
            "The blobs are in S3: now mirror the bucket (mc mirror / rclone copy), "
            "see docs/operations.md."
        )
    if not include_pepper:
        click.echo("The pepper is not in this backup: keep its own copy safe and separate.")


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--pepper",
    "pepper_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The pepper file, when the backup does not hold it.",
)
@click.option(
    "--index-url",
    default=None,
    help="Restore the index into this (empty) database instead of DATA_DIR/index.db.",
)
@json_option
@data_dir_option
@handle_errors
@database_errors
def restore(
    src: Path, pepper_file: Path | None, index_url: str | None, as_json: bool, data_dir: Path
) -> None:
    """Restore the backup SRC into the new or empty --data-dir, then verify it: row counts
    against the manifest, every referenced object present with its exact length, and a
    keyless fsck (when the pepper is there)."""
    from davserver.admin.backup import restore as run_restore

    with progress("verifying objects", None, not as_json) as bar:
        report = run_restore(src, data_dir, pepper_file, index_url, bar.advance)
    # A keyless fsck of the restored directory ends it (it opens the vault: needs the pepper).
    checked = None if report.pepper == "missing" else closing_fsck(data_dir, as_json)
    if as_json:
        emit_json({**report.as_dict(), "fsck": None if checked is None else checked.to_json()})
    else:
        click.echo(f"Restored {src} into {data_dir} ({report.objects_checked} objects checked).")
        if report.pepper == "missing":
            click.echo(
                f"The backup holds no pepper: copy it to {data_dir}/pepper (mode 0400) "
                "before serving, or pass --pepper.",
                err=True,
            )
        for p in report.problems:
            click.echo(f"problem: {p}", err=True)
    if report.problems or (checked is not None and checked.remaining):
        raise SystemExit(EXIT_PROBLEMS)


@main.group()
def index() -> None:
    """Manage the index database."""


@index.command("migrate", epilog=EXIT_CODES_HELP)
@click.option(
    "--to",
    "to_url",
    required=True,
    help="Target database: postgresql://user:pass@host:port/db or sqlite:///path.",
)
@json_option
@data_dir_option
@handle_errors
@database_errors
def index_migrate(to_url: str, as_json: bool, data_dir: Path) -> None:
    """Move the index into another, empty database and point the config at it; row counts
    are compared and a keyless fsck of the new index ends it.

    Stop the server first. The old config is kept as davserver.yaml.bak-<time>; the old
    index is left as it was (delete it once the new one serves).
    """
    from davserver.admin.migrate import migrate_index

    config = load_config(data_dir)
    bars: list[Progress] = []

    def on_table(name: str, total: int) -> object:
        for b in bars:
            b.close()
        bars[:] = [Progress(f"copying {name}", total, not as_json)]
        return bars[0].advance

    try:
        result = migrate_index(config, data_dir / CONFIG_NAME, to_url, on_table)  # type: ignore[arg-type]
    finally:
        for b in bars:
            b.close()
    if not as_json:
        print_table(["TABLE", "ROWS"], sorted(result.tables.items()))
        click.echo(f"Copied the index to {result.target}; row counts verified.")
        click.echo(f"The config now points there; the old one is {result.config_backup}.")
    checked = closing_fsck(data_dir, as_json)  # keyless, on the new index
    if as_json:
        emit_json({**result.as_dict(), "fsck": checked.to_json()})
    if checked.remaining:
        raise SystemExit(EXIT_PROBLEMS)
