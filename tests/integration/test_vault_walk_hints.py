"""Path walks from remembered ids (``_walk_hinted``) never return a stale node."""

from __future__ import annotations

import pytest

from davserver.errors import Conflict, NotFound
from davserver.vault import Vault


def test_hinted_walks_follow_moves_and_replacements(local_vault: Vault) -> None:
    local_vault.create_user("w", "pw")
    s = local_vault.login("w", "pw")
    s.mkdir("/a")
    s.mkdir("/a/b")
    s.write_file("/a/b/f", [b"one"], expected_length=3)
    assert s.stat("/a/b/f").size == 3  # the walk leaves its hints
    s.move("/a", "/x")  # the remembered ids now live elsewhere
    with pytest.raises(NotFound):
        s.stat("/a/b/f")
    s.mkdir("/a")
    s.mkdir("/a/b")
    s.write_file("/a/b/f", [b"second"], expected_length=6)
    with s.open_file("/a/b/f") as r:
        assert r.read_all() == b"second"
    with s.open_file("/x/b/f") as r:
        assert r.read_all() == b"one"
    s.delete("/a/b")
    with pytest.raises(NotFound):
        s.stat("/a/b/f")
    with pytest.raises(Conflict):
        s.write_file("/a/b/f", [b"z"], expected_length=1)
    s.write_file("/a/b", [b"file now"], expected_length=8)
    with pytest.raises(Conflict):  # its parent is a file
        s.write_file("/a/b/f", [b"z"], expected_length=1)
    assert [e.name for e in s.list_dir("/x/b")] == ["f"]
