"""``davserver user quota NAME SIZE|default|unlimited``, and how sizes and quotas are shown.

A user's quota is their own, or the server default (``quota.default_bytes``, 0 = unlimited):
``default`` (or ``none``) clears the user's own quota so the default applies, ``unlimited``
(or ``0``) exempts the user from any default, and SIZE sets it: ``1073741824``, ``500M``,
``10G``, ``1.5T`` (K, M, G, T and KiB, MiB… are powers of 1024; KB, MB, GB, TB powers of
1000). A quota below the current usage is allowed: the user can then only delete.
"""

from __future__ import annotations

from pathlib import Path

import click

from davserver.cli.basic import user
from davserver.cli.common import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    data_dir_option,
    emit_json,
    fail,
    handle_errors,
    json_option,
    load_config,
)
from davserver.cli.sizes import (
    CLEAR,
    UNLIMITED,
    describe_quota,
    describe_usage,
    parse_size,
    user_json,
)
from davserver.errors import NotFound


@user.command("quota", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("size")
@json_option
@data_dir_option
@handle_errors
def user_quota(name: str, size: str, as_json: bool, data_dir: Path) -> None:
    """Set the quota of user NAME: SIZE (500M, 10G, bytes), 'unlimited', or 'default'
    (also 'none': the server default quota.default_bytes applies).

    Sizes with K, M, G, T (or KiB, MiB…) are powers of 1024; KB, MB, GB, TB powers of 1000.
    A quota below the user's usage is allowed: they can then only delete. Audited.
    """
    from davserver.runtime import open_vault

    word = size.strip().lower()
    quota: int | None
    if word in CLEAR:
        quota = None
    elif word in UNLIMITED:
        quota = 0
    else:
        try:
            quota = parse_size(size)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
    config = load_config(data_dir)
    vault = open_vault(config)
    try:
        try:
            vault.set_quota(name, quota)
        except NotFound:
            fail(f"no user named '{name}'")
        info = vault.user_info(name)
        parts = vault.usage_breakdown(name)
    finally:
        vault.close()
    default = config.quota.default_bytes
    if as_json:
        emit_json(user_json(info, default, parts))
        return
    shown = describe_quota(info.quota_bytes, default)
    click.echo(f"Quota of '{name}': {shown} (using {describe_usage(info.usage_bytes, parts)}).")
