"""Device tokens and recovery codes: ``token add|list|revoke`` and ``user recovery-code``
(``user passwd --recovery-code`` lives with ``user passwd`` in ``cli.basic``).

A new token or recovery code is printed alone on one line of stdout, exactly once; every
other message goes to stderr, so ``TOKEN=$(davserver token add …)`` captures the token and
nothing else. Listing and revoking need no password (an administrator does them); creating
needs the account password, since the token wraps the user's master key.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from davserver.cli import main
from davserver.cli.basic import user
from davserver.cli.common import (
    EXIT_USAGE,
    ask_password,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
    print_table,
)
from davserver.errors import AuthError, BadRequest, NotFound


@main.group()
def token() -> None:
    """Device tokens: credentials for one client each, instead of the password.

    A token logs in like a password (HTTP Basic, user name and token) but costs no Argon2id,
    can be revoked alone, and can be limited to read-only or write-only access, or given an
    expiry. Changing the password leaves tokens working.
    """


@token.command("add")
@click.argument("name")
@click.option("--label", required=True, help="What the token is for (e.g. 'phone'); shown by list.")
@click.option("--scope", default=None, metavar="PATH", help="Limit the token to one directory.")
@click.option(
    "--perms",
    type=click.Choice(["rw", "ro", "wo"]),
    default="rw",
    show_default=True,
    help="Read and write, read only, or write only.",
)
@click.option(
    "--expires",
    default=None,
    metavar="DURATION",
    help="Expire after 30d, 12h, 90m… (default: never).",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the user's password from one line of stdin."
)
@data_dir_option
@handle_errors
def token_add(
    name: str,
    label: str,
    scope: str | None,
    perms: str,
    expires: str | None,
    password_stdin: bool,
    data_dir: Path,
) -> None:
    """Create a token for user NAME and print it (only this once).

    Asks for NAME's password, which unlocks the keys the token will carry.
    """
    from davserver.admin.gc import parse_duration
    from davserver.runtime import open_vault

    expires_at = None
    if expires is not None:
        seconds = parse_duration(expires)
        if seconds <= 0:
            fail("--expires must be a positive duration", EXIT_USAGE)
        expires_at = time.time() + seconds
    vault = open_vault(load_config(data_dir))
    try:
        password = ask_password(password_stdin, f"password of {name}")
        try:
            token_id, text = vault.create_token(
                name, password, label, scope=scope, perms=perms, expires=expires_at
            )
        except NotFound as exc:
            fail(f"no user named '{name}'" if exc.reason == "no such user" else exc.reason)
        except AuthError:
            fail("the password is wrong")
        except BadRequest as exc:
            fail(exc.reason, EXIT_USAGE)
    finally:
        vault.close()
    click.echo(text)
    click.echo(f"Token {token_id} created. It is shown only now: store it in the client.", err=True)


@token.command("list")
@click.argument("name")
@json_option
@data_dir_option
@handle_errors
def token_list(name: str, as_json: bool, data_dir: Path) -> None:
    """List the tokens and recovery code of user NAME (never their secrets).

    SCOPE is the id of the directory a scoped token is limited to (its path is encrypted).
    Times are UTC; LAST USED is to the minute.
    """
    from davserver.cli.sizes import format_time
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        try:
            infos = vault.list_tokens(name)
        except NotFound:
            fail(f"no user named '{name}'")
    finally:
        vault.close()
    if as_json:
        emit_json(
            [
                {
                    "id": t.id,
                    "label": t.label,
                    "kind": t.kind,
                    "scope_node": t.scope_node,
                    "perms": t.perms,
                    "created": format_time(t.created),
                    "expires": format_time(t.expires),
                    "last_used": format_time(t.last_used),
                }
                for t in infos
            ]
        )
        return
    if not infos:
        click.echo(f"No tokens. Create one with: davserver token add {name} --label LABEL")
        return
    print_table(
        ["ID", "LABEL", "KIND", "SCOPE", "PERMS", "CREATED", "EXPIRES", "LAST USED"],
        [
            [
                t.id,
                t.label,
                t.kind,
                t.scope_node or "",
                t.perms if t.kind != "recovery" else "",
                format_time(t.created),
                format_time(t.expires) or "never",
                format_time(t.last_used) or "never",
            ]
            for t in infos
        ],
        whole=("ID",),
    )


@token.command("revoke")
@click.argument("name")
@click.argument("token_id", metavar="ID")
@data_dir_option
@handle_errors
def token_revoke(name: str, token_id: str, data_dir: Path) -> None:
    """Revoke token ID of user NAME: it stops working at once, in every server process."""
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        try:
            vault.revoke_token(name, token_id)
        except NotFound as exc:
            fail(
                f"no user named '{name}'"
                if exc.reason == "no such user"
                else f"user '{name}' has no token {token_id}"
            )
    finally:
        vault.close()
    click.echo(f"Token {token_id} revoked.")


@user.command("recovery-code")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@data_dir_option
@handle_errors
def user_recovery_code(name: str, password_stdin: bool, data_dir: Path) -> None:
    """Create a recovery code for user NAME and print it (only this once).

    The code can set a new password once, if the password is forgotten ('davserver user
    passwd NAME --recovery-code'); it cannot log in. A new code replaces the old one.
    Without a password or a recovery code, the user's data cannot be recovered.
    """
    from davserver.runtime import open_vault

    vault = open_vault(load_config(data_dir))
    try:
        password = ask_password(password_stdin, f"password of {name}")
        try:
            code = vault.create_recovery_code(name, password)
        except NotFound:
            fail(f"no user named '{name}'")
        except AuthError:
            fail("the password is wrong")
    finally:
        vault.close()
    click.echo(code)
    click.echo(
        "Recovery code created; any older one no longer works. It is shown only now: keep it "
        "offline (it can set a new password for this user, once).",
        err=True,
    )
