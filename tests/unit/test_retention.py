"""Nextcloud's retention grammar and thinning schedule (davserver.retention)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from davserver.retention import DAY, NO_OBLIGATION, Retention, thin


class V(NamedTuple):
    created: float
    labelled: bool = False


def test_thinning_matches_a_hand_computed_case() -> None:
    # Worked through Nextcloud's getAutoExpireList by hand, now = 1000 (newest first):
    # 998.5 is within 2 s of 999; 945 within 10 s of 950 (second interval); 895 within
    # 60 s of 900 (third interval, entered because 900 is older than one minute).
    stamps = [999, 998.5, 997, 995, 991, 985, 950, 945, 900, 895, 400]
    assert thin(1000, [V(s) for s in stamps]) == [1, 7, 9]


def test_a_labelled_version_is_kept_and_measured_from() -> None:
    stamps = [V(999), V(998.5, labelled=True), V(998)]
    # 998.5 is kept for its label, so 998 is measured from it (within 2 s: removed).
    assert thin(1000, stamps) == [2]
    policy = Retention.parse("auto")
    assert policy.expired_versions(1000, stamps) == [2]


def test_weekly_after_thirty_days() -> None:
    now = 100 * DAY
    stamps = [V(now - 40 * DAY), V(now - 41 * DAY), V(now - 48 * DAY), V(now - 60 * DAY)]
    # All beyond 30 days: one per week, counted from the newest kept one.
    assert thin(now, stamps) == [1]


@pytest.mark.parametrize(
    ("text", "kind", "expect"),
    [
        ("auto", "versions", (True, NO_OBLIGATION, NO_OBLIGATION, True, True)),
        ("auto", "trash", (True, NO_OBLIGATION, 30, True, False)),
        ("5, auto", "versions", (True, 5, NO_OBLIGATION, True, True)),
        ("auto, 9", "versions", (True, NO_OBLIGATION, 9, True, True)),
        ("5,9", "trash", (True, 5, 9, False, False)),
        ("9, 5", "versions", (True, 9, 9, False, False)),  # D2 < D1 counts as D1
        ("disabled", "versions", (False, NO_OBLIGATION, NO_OBLIGATION, False, False)),
        (" Disabled ", "trash", (False, NO_OBLIGATION, NO_OBLIGATION, False, False)),
    ],
)
def test_grammar(text: str, kind: str, expect: tuple[object, ...]) -> None:
    r = Retention.parse(text, kind)
    assert (r.enabled, r.min_days, r.max_days, r.purge_to_save_space, r.auto_thinning) == expect


@pytest.mark.parametrize("text", ["", "sometimes", "1,2,3", "-1, auto", "auto,", "1.5"])
def test_bad_grammar_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Retention.parse(text)


def test_expiry_by_age_and_under_pressure() -> None:
    now = 1000 * DAY
    both = Retention.parse("10, 20")
    assert not both.is_expired(now - 15 * DAY, now)
    assert both.is_expired(now - 15 * DAY, now, quota_exceeded=True)  # past the minimum
    assert not both.is_expired(now - 5 * DAY, now, quota_exceeded=True)  # within it
    assert both.is_expired(now - 21 * DAY, now)
    at_most = Retention.parse("auto, 20")
    assert at_most.is_expired(now - 1, now, quota_exceeded=True)
    assert not at_most.is_expired(now - 19 * DAY, now)
    trash = Retention.parse("auto", "trash")
    assert trash.is_expired(now - 31 * DAY, now)
    assert not trash.is_expired(now - 29 * DAY, now)
    assert not trash.is_expired(now + 5 * DAY, now + 40 * DAY - 40 * DAY)  # future stamps
    at_least = Retention.parse("7, auto")
    young = [V(now - 1), V(now - 1.5)]
    assert at_least.expired_versions(now, young) == []  # no thinning within 7 days
    assert not Retention.parse("disabled").is_expired(0, now, quota_exceeded=True)
