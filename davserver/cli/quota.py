"""``davserver user quota NAME SIZE|default|unlimited``, and how sizes and quotas are shown.

A user's quota is their own, or the server default (``quota.default_bytes``, 0 = unlimited):
``default`` (or ``none``) clears the user's own quota so the default applies, ``unlimited``
(or ``0``) exempts the user from any default, and SIZE sets it: ``1073741824``, ``500M``,
``10G``, ``1.5T`` (K, M, G, T and KiB, MiB… are powers of 1024; KB, MB, GB, TB powers of
1000). A quota below the current usage is allowed: the user can then only delete.
"""

from __future__ import annotations

import re
import time
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
from davserver.errors import NotFound

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(I?B?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
CLEAR = ("none", "default")
UNLIMITED = ("unlimited", "0")


def parse_size(text: str) -> int:
    """Bytes from ``10G``, ``500M``, ``1.5TiB``, ``10GB`` (decimal), ``4096``; ValueError."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 10G, 1073741824)")
    number, unit, suffix = m.group(1), m.group(2).upper(), m.group(3).upper()
    if not unit and suffix not in ("", "B"):
        raise ValueError(f"not a size: {text!r}")
    base = 1000 if suffix == "B" and unit else 1024
    value = float(number) * base ** _POWERS[unit]
    if value != int(value) and not unit:
        raise ValueError(f"a size in bytes is a whole number: {text!r}")
    return int(value)


def format_size(n: int) -> str:
    """``1.5 GiB``; bytes below 1 KiB as a plain number."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def describe_quota(own: int | None, default: int) -> str:
    if own is None:
        return "unlimited (default)" if default == 0 else f"{format_size(default)} (default)"
    return "unlimited" if own == 0 else format_size(own)


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


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
    finally:
        vault.close()
    default = config.quota.default_bytes
    if as_json:
        emit_json(
            {
                "name": info.name,
                "id": info.id,
                "usage_bytes": info.usage_bytes,
                "quota_bytes": info.quota_bytes if info.quota_bytes is not None else default,
                "quota_is_default": info.quota_bytes is None,
            }
        )
        return
    shown = describe_quota(info.quota_bytes, default)
    click.echo(f"Quota of '{name}': {shown} (using {format_size(info.usage_bytes)}).")
