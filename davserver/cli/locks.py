"""``davserver locks list [--user NAME]`` and ``davserver locks break TOKEN``.

Locks are stored without names (``davserver.vault.locks``): what can be listed is the token,
the owner's user id, the scope, the depth and the expiry. Breaking a lock removes it whatever
its owner (a client that crashed while holding one, a stale lock that blocks a user), and is
recorded in the audit log.
"""

from __future__ import annotations

from pathlib import Path

import click

from davserver.cli import main
from davserver.cli.common import (
    EXIT_CODES_HELP,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
)
from davserver.cli.sizes import format_time
from davserver.errors import NotFound


@main.group()
def locks() -> None:
    """List and break WebDAV locks."""


@locks.command("list", epilog=EXIT_CODES_HELP)
@click.option("--user", "user_name", default=None, help="Only the locks of this user.")
@json_option
@data_dir_option
@handle_errors
def locks_list(user_name: str | None, as_json: bool, data_dir: Path) -> None:
    """List live locks: token, owner's user id, scope, depth and expiry (UTC).

    Paths are not stored in clear, so they cannot be shown.
    """
    from davserver.runtime import open_vault
    from davserver.vault.locks import LockStore

    vault = open_vault(load_config(data_dir))
    try:
        user_id = None
        if user_name is not None:
            try:
                user_id = vault.user_info(user_name).id
            except NotFound:
                fail(f"no user named '{user_name}'")
        found = list(LockStore(vault).iter_live(user_id))
        names = {u.id: u.name for u in vault.list_users()} if found else {}
    finally:
        vault.close()
    if as_json:
        emit_json(
            [
                {
                    "token": lk.token,
                    "user_id": lk.user_id,
                    "user": names.get(lk.user_id),
                    "scope": lk.scope,
                    "depth": lk.depth,
                    "expires": format_time(lk.expire),
                }
                for lk in found
            ]
        )
        return
    if not found:
        click.echo("No live locks.")
        return
    rows = [[lk.token, names.get(lk.user_id, "?"), lk.user_id, lk.scope, lk.depth] for lk in found]
    for row, lk in zip(rows, found, strict=True):
        row.append(format_time(lk.expire) or "")
    print_table(["TOKEN", "USER", "USER ID", "SCOPE", "DEPTH", "EXPIRES"], rows)


@locks.command("break", epilog=EXIT_CODES_HELP)
@click.argument("token")
@data_dir_option
@handle_errors
def locks_break(token: str, data_dir: Path) -> None:
    """Remove the lock TOKEN (from 'davserver locks list'), whoever holds it. Audited."""
    from davserver.runtime import open_vault
    from davserver.vault.locks import LockStore

    vault = open_vault(load_config(data_dir))
    try:
        owner = LockStore(vault).break_lock(token.strip())
    finally:
        vault.close()
    if owner is None:
        fail("no such lock (it may have expired or been released)")
    click.echo(f"Lock {token} of user id {owner} broken.")
