"""How the CLI reads and shows sizes, quotas and times (``user quota``, ``user list``,
``trash``, ``versions``)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from davserver.vault import UserInfo

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


_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?$", re.IGNORECASE)
_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """A point in time (Unix seconds) from ``2026-12-01T10:00``, ``2026-12-01``,
    ``2026-12-01T10:00:00Z``, ``…+01:00`` (ISO 8601; local time when no zone is given) or
    from a time ago: ``30m``, ``2h``, ``7d``, ``1w`` (a unit is required: a bare number
    would read as a year or as seconds). ValueError with examples otherwise."""
    raw = text.strip()
    m = _AGO.match(raw)
    if m is not None:
        base = time.time() if now is None else now
        return base - float(m.group(1)) * _AGO_UNITS[m.group(2).lower()]
    try:
        # The standard library's ISO 8601 reader (3.11 takes "Z", a space for "T", and
        # dates alone); naive values are local time, as ``timestamp()`` reads them.
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (examples: 2026-12-01T10:00, 2026-12-01, "
            "2026-12-01T10:00Z, 30m, 2h, 7d)"
        ) from None
    return when.timestamp()


def user_json(
    u: UserInfo, default: int, breakdown: tuple[int, int, int] | None = None
) -> dict[str, Any]:
    """A user's usage and quota for ``--json`` (the quota in effect, and whether it is the
    server default); with ``breakdown`` (``Vault.usage_breakdown``) also the bytes of live
    files, of kept versions and of the trash, which together make ``usage_bytes``."""
    out: dict[str, Any] = {
        "name": u.name,
        "id": u.id,
        "usage_bytes": u.usage_bytes,
        "quota_bytes": u.quota_bytes if u.quota_bytes is not None else default,
        "quota_is_default": u.quota_bytes is None,
    }
    if breakdown is not None:
        out["live_bytes"], out["versions_bytes"], out["trash_bytes"] = breakdown
    return out


def describe_usage(total: int, breakdown: tuple[int, int, int]) -> str:
    """``1.2 MiB (files 1.0 MiB, versions 100.0 KiB, trash 100.0 KiB)``."""
    live, kept, trash = breakdown
    return (
        f"{format_size(total)} (files {format_size(live)}, versions {format_size(kept)}, "
        f"trash {format_size(trash)})"
    )
