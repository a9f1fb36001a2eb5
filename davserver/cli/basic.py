"""The first commands: ``init``, ``user add|passwd|list|del`` and ``serve``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from davserver.cli import main
from davserver.cli.common import (
    CONFIG_NAME,
    EXIT_CODES_HELP,
    EXIT_USAGE,
    ask_new_password,
    ask_password,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
)
from davserver.config import load, render_for_init
from davserver.errors import AlreadyExists, AuthError, BadRequest, ConfigError, NotFound

PEPPER_WARNING = """\
IMPORTANT: {pepper} holds the server's pepper. Every user's keys depend on it.
If this file is lost, ALL stored data is lost for good: no password, no backup of the
index or of the blobs can bring it back. Back it up somewhere safe and separate from the
database backups (whoever holds both can attack the passwords offline)."""


@main.command()
@data_dir_option
@handle_errors
def init(data_dir: Path) -> None:
    """Create a data directory: config, pepper, index and blob store.

    The defaults are embedded: a local blob directory and a SQLite index. Refuses to touch an
    existing data directory.
    """
    from davserver.index import open_index
    from davserver.runtime import write_pepper

    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(f"{data_dir} already exists and is not empty; refusing to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    cfg_path = data_dir / CONFIG_NAME
    cfg_path.write_text(render_for_init(data_dir), encoding="utf-8")
    os.chmod(cfg_path, 0o600)
    config = load(cfg_path, {})
    pepper = config.resolve_path(config.security.pepper_file)
    write_pepper(pepper)
    config.resolve_path(config.storage.local.path).mkdir(parents=True, exist_ok=True, mode=0o700)
    open_index(config.index.url, config.data_dir).close()
    click.echo(f"Created {data_dir}/ with {CONFIG_NAME}, the index and the blob directory.")
    click.echo("")
    click.echo(PEPPER_WARNING.format(pepper=pepper))
    click.echo("")
    click.echo(f"Next: davserver user add NAME --data-dir {data_dir}")


@main.group()
def user() -> None:
    """Manage users (each has an isolated, separately keyed tree)."""


@user.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@data_dir_option
@handle_errors
def user_add(name: str, password_stdin: bool, data_dir: Path) -> None:
    """Create user NAME with an empty tree."""
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        password = ask_new_password(password_stdin)
        try:
            vault.create_user(name, password)
        except AlreadyExists:
            fail(f"user '{name}' already exists")
    finally:
        vault.close()
    click.echo(f"User '{name}' created.")
    click.echo(
        "Keep the password safe: it encrypts this user's keys and cannot be reset without it."
    )


@user.command("passwd")
@click.argument("name")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the current password (or the recovery code), then the new password, one "
    "line each from stdin.",
)
@click.option(
    "--recovery-code",
    "use_recovery",
    is_flag=True,
    help="Give the user's recovery code instead of the current password (it is used up).",
)
@data_dir_option
@handle_errors
def user_passwd(name: str, password_stdin: bool, use_recovery: bool, data_dir: Path) -> None:
    """Change the password of user NAME.

    The current password is required: it unlocks the user's master key, which is then
    wrapped under the new one. A forgotten password can be reset only with the user's
    recovery code (--recovery-code; see 'davserver user recovery-code'): without either,
    nothing can decrypt the user's data. Device tokens keep working.
    """
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        old = ask_password(password_stdin, "recovery code" if use_recovery else "current password")
        new = ask_new_password(password_stdin, "new password")
        try:
            if use_recovery:
                vault.reset_password_with_recovery(name, old, new)
            else:
                vault.change_password(name, old, new)
        except NotFound:
            fail(f"no user named '{name}'")
        except AuthError:
            fail(
                "the recovery code is wrong or was used already"
                if use_recovery
                else "the current password is wrong"
            )
        except BadRequest as exc:
            fail(exc.reason, EXIT_USAGE)
    finally:
        vault.close()
    click.echo(f"Password of '{name}' changed.")
    if use_recovery:
        click.echo(
            "The recovery code is used up; create a new one with: davserver user "
            f"recovery-code {name}"
        )


@user.command("list", epilog=EXIT_CODES_HELP)
@json_option
@data_dir_option
@handle_errors
def user_list(as_json: bool, data_dir: Path) -> None:
    """List users with their usage, quota and last login.

    USED is everything that counts toward the quota: FILES (the live tree), VERSIONS (kept
    earlier versions) and TRASH (deleted items not purged yet). QUOTA is the user's own
    quota, or the server default (quota.default_bytes) marked "default"; LAST LOGIN is the
    last login that checked the password (to the minute; requests served from the login
    cache are not counted), in UTC.
    """
    from davserver.cli.sizes import describe_quota, format_size, format_time, user_json
    from davserver.runtime import open_vault

    config = load_config(data_dir)
    vault = open_vault(config)
    try:
        users = vault.list_users()
        parts = {u.name: vault.usage_breakdown(u.name) for u in users}
    finally:
        vault.close()
    default = config.quota.default_bytes
    if as_json:
        emit_json(
            [
                {
                    **user_json(u, default, parts[u.name]),
                    "created": format_time(u.created),
                    "last_login": format_time(u.last_login),
                }
                for u in users
            ]
        )
        return
    if not users:
        click.echo("No users. Add one with: davserver user add NAME")
        return
    print_table(
        ["NAME", "ID", "USED", "FILES", "VERSIONS", "TRASH", "QUOTA", "LAST LOGIN"],
        [
            [
                u.name,
                u.id,
                format_size(u.usage_bytes),
                *(format_size(n) for n in parts[u.name]),
                describe_quota(u.quota_bytes, default),
                format_time(u.last_login) or "never",
            ]
            for u in users
        ],
    )


@user.command("del")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
@handle_errors
def user_del(name: str, yes: bool, data_dir: Path) -> None:
    """Delete user NAME and all their files (cannot be undone)."""
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        try:
            vault.user_info(name)
        except NotFound:
            fail(f"no user named '{name}'")
        if not yes and sys.stdin.isatty():
            click.confirm(f"Delete user '{name}' and all their files?", abort=True, err=True)
        vault.delete_user(name)
    finally:
        vault.close()
    click.echo(f"User '{name}' deleted.")


@main.command()
@data_dir_option
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="TCP port (default: server.port)."
)
@handle_errors
def serve(data_dir: Path, host: str | None, port: int | None) -> None:
    """Serve the data directory over WebDAV until SIGTERM or Ctrl-C.

    Settings come from DATA_DIR/davserver.yaml and DAVSERVER_* environment variables;
    --host and --port override server.host and server.port.
    """
    from davserver.server import configure_logging
    from davserver.server import serve as run_server

    config = load_config(data_dir)
    configure_logging(config)

    def ready(url: str) -> None:
        click.echo(f"davserver is serving {data_dir} at {url}")
        click.echo(
            "Log in with a user name and password (create one with: davserver user add NAME "
            f"--data-dir {data_dir}). Mount {url} in a WebDAV client, or open it in a browser."
        )
        click.echo("Press Ctrl-C to stop.")
        sys.stdout.flush()

    run_server(config, host=host, port=port, ready=ready)
    click.echo("davserver stopped.")
