"""How long versions and trash are kept: Nextcloud's retention grammar and thinning schedule.

Users and operators know Nextcloud's rules, so these are the same rules, computed from row
times alone (no key is needed: the maintenance loop expires without any user logged in).

The grammar (``versions.retention``, ``trash.retention``; Nextcloud's
``versions_retention_obligation`` and ``trashbin_retention_obligation``):

- ``auto``: versions are thinned by the schedule below and may go at any time when space is
  needed; trash items are kept 30 days, and may go sooner when space is needed.
- ``D, auto``: kept at least D days (even when space is needed: Nextcloud's documentation
  promises it), then thinned by the schedule and removed when space is needed.
- ``auto, D``: removed after D days, and may go sooner when space is needed (versions are
  thinned by the schedule too).
- ``D1, D2``: kept at least D1 days, removed after D2 days (D2 < D1 counts as D1); space
  pressure removes nothing younger than D1 days; no thinning.
- ``disabled``: nothing is kept (an overwrite replaces, a DELETE is final).

The thinning schedule (Nextcloud's ``files_versions`` ``Storage::$max_versions_per_interval``),
walking from the newest kept version back in time: in the first 10 seconds one version per
2 seconds, then one per 10 seconds up to a minute, one per minute up to an hour, one per hour
up to a day, one per day up to 30 days, and one per week after that. The newest version
(not counting the current one) is always kept; labelled versions are never thinned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DAY = 86400.0
NO_OBLIGATION = -1
TRASH_DEFAULT_DAYS = 30

# (interval ends this many seconds before now, one version kept per step seconds); -1: never.
SCHEDULE: tuple[tuple[float, float], ...] = (
    (10, 2),
    (60, 10),
    (3600, 60),
    (86400, 3600),
    (2592000, 86400),
    (-1, 604800),
)


class Stamped(Protocol):
    """A version as retention sees it: when it was made and whether it carries a label."""

    @property
    def created(self) -> float: ...

    @property
    def labelled(self) -> bool: ...


@dataclass(frozen=True)
class Retention:
    """One parsed retention setting. ``min_days``/``max_days`` are ``NO_OBLIGATION`` when
    ``auto``; ``enabled`` is False for ``disabled``."""

    text: str
    enabled: bool
    min_days: int
    max_days: int
    purge_to_save_space: bool
    auto_thinning: bool

    @classmethod
    def parse(cls, text: str, kind: str = "versions") -> Retention:
        """Parse the grammar; ``ValueError`` names what is wrong (the configuration reports
        it). ``kind`` is ``versions`` or ``trash`` (their ``auto`` differ)."""
        raw = text.strip()
        if raw.lower() == "disabled":
            return cls(raw, False, NO_OBLIGATION, NO_OBLIGATION, False, False)
        parts = [p.strip().lower() for p in raw.split(",")]
        if len(parts) > 2 or not all(parts):
            raise ValueError("expected 'auto', 'D, auto', 'auto, D', 'D1, D2' or 'disabled'")
        if len(parts) == 1:
            parts.append("auto")
        for p in parts:
            if p != "auto" and not p.isdigit():
                raise ValueError(f"{p!r} is neither 'auto' nor a number of days")
        lo, hi = parts
        if lo == "auto" and hi == "auto":
            if kind == "trash":
                # Kept 30 days (then removed), sooner when space is needed.
                return cls(raw, True, NO_OBLIGATION, TRASH_DEFAULT_DAYS, True, False)
            return cls(raw, True, NO_OBLIGATION, NO_OBLIGATION, True, True)
        if hi == "auto":
            return cls(raw, True, int(lo), NO_OBLIGATION, True, kind == "versions")
        if lo == "auto":
            return cls(raw, True, NO_OBLIGATION, int(hi), True, kind == "versions")
        low, high = int(lo), int(hi)
        return cls(raw, True, low, max(low, high), False, False)

    def is_expired(self, stamp: float, now: float, quota_exceeded: bool = False) -> bool:
        """Whether something made at ``stamp`` may go now (Nextcloud's ``isExpired``):
        past the maximum age, or past the minimum age while space is needed; anything
        when space is needed and the setting allows purging for space. A time in the
        future (a clock set back) never expires."""
        if not self.enabled:
            return False
        if quota_exceeded and self.purge_to_save_space and self.min_days == NO_OBLIGATION:
            return True
        if now < stamp:
            return False
        if self.max_days != NO_OBLIGATION and stamp < now - self.max_days * DAY:
            return True
        return quota_exceeded and self.past_minimum(stamp, now)

    def past_minimum(self, stamp: float, now: float) -> bool:
        """Whether the minimum age (``D`` of ``D, …``) no longer protects ``stamp``."""
        return self.min_days == NO_OBLIGATION or stamp < now - self.min_days * DAY

    def expired_versions(self, now: float, versions: Sequence[Stamped]) -> list[int]:
        """Indexes into ``versions`` (the kept versions of one file other than its current
        one, newest first) of those to remove now: the thinning schedule where it applies,
        then whatever is past the maximum age. Labelled versions are never removed here."""
        if not self.enabled:
            return []
        out: set[int] = set()
        if self.auto_thinning:
            # "D, auto": the schedule applies only to versions older than D days.
            out.update(
                i for i in thin(now, versions) if self.past_minimum(versions[i].created, now)
            )
        for i, v in enumerate(versions):
            if self.is_expired(v.created, now):
                out.add(i)
        return sorted(i for i in out if not versions[i].labelled)


def thin(now: float, versions: Sequence[Stamped]) -> list[int]:
    """Nextcloud's ``getAutoExpireList``: indexes (newest first) of versions that fall too
    close to a newer kept one for the interval they are in. Labelled versions count as
    kept (they are never removed, so the next one is measured from them)."""
    out: list[int] = []
    if not versions:
        return out
    interval = 0
    ends, step = SCHEDULE[interval]
    next_interval = -1.0 if ends < 0 else now - ends
    prev = versions[0].created
    next_version = prev - step
    for i in range(1, len(versions)):
        stamp = versions[i].created
        while True:
            if next_interval == -1.0 or prev > next_interval:
                if stamp > next_version and not versions[i].labelled:
                    out.append(i)  # too close to the newer kept one
                else:
                    next_version = stamp - step
                    prev = stamp
                break
            interval += 1  # the newer kept one lies beyond this interval: the next one
            ends, step = SCHEDULE[interval]
            next_version = prev - step
            next_interval = -1.0 if ends < 0 else now - ends
    return out
