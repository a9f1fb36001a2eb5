"""The permission rules of ``davserver.vault.perms``, one table."""

from __future__ import annotations

import pytest

from davserver.errors import BadRequest, Forbidden
from davserver.vault import perms
from davserver.vault.perms import CHANGE, CREATE, READ, STAT

# (op, kind, exists) -> allowed for rw, ro, wo
CASES = [
    ((READ, None, False), (True, True, False)),
    ((STAT, "dir", False), (True, True, True)),
    ((STAT, "file", False), (True, True, False)),
    ((CREATE, None, False), (True, False, True)),
    ((CREATE, None, True), (True, False, False)),
    ((CHANGE, None, False), (True, False, False)),
]


@pytest.mark.parametrize(("call", "expected"), CASES)
def test_rules(call: tuple[str, str | None, bool], expected: tuple[bool, bool, bool]) -> None:
    op, kind, exists = call
    for value, allowed in zip(perms.PERMS, expected, strict=True):
        assert perms.allowed(value, op, kind=kind, exists=exists) is allowed, (value, call)
        if allowed:
            perms.check(value, op, kind=kind, exists=exists)
        else:
            with pytest.raises(Forbidden):
                perms.check(value, op, kind=kind, exists=exists)


def test_unknown_permissions_are_refused() -> None:
    for value in ("", "RW", "rwx", "w", "admin"):
        with pytest.raises(BadRequest):
            perms.checked(value)
    assert [perms.checked(v) for v in ("rw", "ro", "wo")] == ["rw", "ro", "wo"]
