"""``davserver audit tag``: the audit log's tags of given addresses and user names.

The audit log never holds an address or a tried user name in clear, only keyed tags
(``davserver.audit``); the key derives from the pepper, so only this data directory can
compute them. With this command an operator finds the lines of one address (an attacker's,
a user's office) with ``grep``.
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
)


@main.group("audit")
def audit_group() -> None:
    """Work with the audit log (audit.file)."""


@audit_group.command("tag", epilog=EXIT_CODES_HELP)
@click.option("--addr", "addrs", multiple=True, help="A client address (repeatable).")
@click.option("--user", "users", multiple=True, help="A user name as tried (repeatable).")
@json_option
@data_dir_option
@handle_errors
def audit_tag(
    addrs: tuple[str, ...], users: tuple[str, ...], as_json: bool, data_dir: Path
) -> None:
    """Print the addr_mac of each --addr and the user_tag of each --user, as the audit log
    has them (grep the log for them)."""
    from davserver import audit
    from davserver.runtime import open_vault

    if not addrs and not users:
        fail("give at least one --addr or --user", 2)
    vault = open_vault(load_config(data_dir))  # sets the tag key (from the pepper)
    try:
        tags = {
            "addr_mac": {a: audit.addr_mac(a) for a in addrs},
            "user_tag": {u: audit.user_tag(u) for u in users},
        }
    finally:
        vault.close()
    if as_json:
        emit_json(tags)
        return
    for a, tag in tags["addr_mac"].items():
        click.echo(f"addr_mac {tag}  {a}")
    for u, tag in tags["user_tag"].items():
        click.echo(f"user_tag {tag}  {u}")
