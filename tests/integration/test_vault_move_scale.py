"""Moving a directory of 10,000 files re-wraps exactly one node row (DESIGN §4, §8)."""

from __future__ import annotations

import time
from pathlib import Path

from davserver import crypto
from davserver.blobs.local import LocalBlobStore
from davserver.crypto import envelopes, names
from davserver.index.models import Node, Version
from tests.harness.vaults import make_vault

N_FILES = 10_000


def _snapshot() -> dict[str, tuple[object, ...]]:
    rows = Node.select().tuples()
    return {r[0]: tuple(bytes(x) if isinstance(x, memoryview) else x for x in r) for r in rows}


def test_move_of_10000_files_changes_one_row(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", "pw")
    s = vault.login("alice", "pw")
    s.mkdir("/big")
    s.mkdir("/dst")
    s.write_file("/big/real.txt", [b"real content"])
    big = s.stat("/big")
    with vault.index.connection():
        big_key = s._node_key(Node.get_by_id(big.id), s._root().key)
        # Bulk-create the members with real envelopes and encrypted names; going through
        # write_file 10,000 times would only make the test slow, not more faithful.
        rows = []
        now = time.time()
        for i in range(N_FILES):
            nid = crypto.random_id()
            name = f"file-{i:05d}.txt"
            rows.append(
                {
                    "id": nid.hex(),
                    "owner": s.user_id,
                    "parent": big.id,
                    "kind": "file",
                    "name_mac": names.name_mac(big_key, name),
                    "name_ct": names.encrypt_name(big_key, name, nid, bytes.fromhex(big.id)),
                    "key_env": envelopes.wrap_node_key(
                        crypto.random_key(), big_key, nid, bytes.fromhex(big.id), "file"
                    ),
                    "size": 0,
                    "created": now,
                }
            )
        with vault.index.atomic():
            for i in range(0, len(rows), 500):
                Node.insert_many(rows[i : i + 500]).execute()
        before = _snapshot()
        versions_before = list(Version.select().tuples())
    s.move("/big", "/dst/renamed")
    with vault.index.connection():
        after = _snapshot()
        versions_after = list(Version.select().tuples())
    changed = [k for k in before if before[k] != after.get(k)]
    assert changed == [big.id]
    assert set(before) == set(after)
    assert versions_before == versions_after
    listing = s.list_dir("/dst/renamed")
    assert len(listing) == N_FILES + 1
    with s.open_file("/dst/renamed/real.txt") as r:
        assert r.read_all() == b"real content"
    vault.close()
