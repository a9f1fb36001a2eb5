"""Scoped sessions (DESIGN §13): a session that holds one directory's key, not the master key.

Its root is that directory; nothing outside it can be named, and — read straight from the
index — nothing outside its subtree can be opened with the keys it has. Permissions ``rw``,
``ro`` and ``wo`` hold for scoped and full sessions alike. What a scoped session deletes is
sealed to the owner's identity key and folded into the trash by the owner's next full
session. The DAV half (403s over a real server) is ``test_scoped_dav``.
"""

# ruff: noqa: B023 - the lambdas run inside the iteration that made them

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.public
import pytest
from playhouse.migrate import SchemaMigrator, migrate

from davserver import crypto
from davserver.admin.fsck import Fsck
from davserver.blobs.local import LocalBlobStore
from davserver.crypto import envelopes, identity
from davserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    IntegrityError,
    NotFound,
    ScopeGone,
)
from davserver.index import SCHEMA_VERSION
from davserver.index.models import Node, SchemaInfo, TrashItem, Upload, User
from davserver.vault import Vault
from davserver.vault.tree import Session
from davserver.vault.uploads import Uploads
from tests.harness.vaults import PLAIN, make_vault

PW = "pw-alice"
BIG = os.urandom(70_000)  # stored as a blob, not inline


@pytest.fixture(params=["sqlite", "postgres"])
def any_vault(request: Any, tmp_path: Path) -> Iterator[Vault]:
    """A vault on SQLite or on a fresh PostgreSQL database (local blobs)."""
    url = "sqlite:///index.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db_url")
    v = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=url)
    yield v
    v.close()


def _tree(vault: Vault) -> Session:
    vault.create_user("alice", PW)
    s = vault.login("alice", PW)
    s.mkdir("/Photos")
    s.mkdir("/Photos/2026")
    s.write_file("/Photos/2026/a.jpg", [b"A" * 10], 10)
    s.write_file("/Photos/b.jpg", [BIG])
    s.mkdir("/Secret")
    s.write_file("/Secret/a.txt", [b"secret"], 6)
    s.write_file("/top.txt", [b"top"], 3)
    s.delete("/top.txt")  # the trash exists and holds something
    return s


def _user(vault: Vault, name: str = "alice") -> User:
    with vault.index.connection():
        return User.get(User.name == name)


def _scoped(vault: Vault, full: Session, path: str = "/Photos", perms: str = "rw") -> Session:
    sid, dk = full.scope_key(path)
    return vault.open_scoped(_user(vault), sid, dk, perms, token_id="tok-1")


def _as(full: Session, perms: str) -> Session:
    """A full session with other permissions (what a whole-account ro/wo token opens)."""
    return Session(full.vault, full.user_id, full.user_name, full._mk, full.root_id, perms=perms)


def test_scoped_session_sees_only_its_directory(any_vault: Vault) -> None:
    full = _tree(any_vault)
    s = _scoped(any_vault, full)
    assert s.scoped and s._mk is None and s.scope_id == s.root_id and s.token_id == "tok-1"
    assert [e.name for e in s.list_dir("/")] == ["2026", "b.jpg"]
    assert s.open_file("/b.jpg").read_all() == BIG
    assert s.open_file("/2026/a.jpg").read_all() == b"A" * 10
    for path in ("/Secret", "/Secret/a.txt", "/Photos", "/Photos/b.jpg", "/top.txt"):
        assert s.lookup(path) is None
    for path in ("/../Secret/a.txt", "/2026/../../Secret", "..", "/./b.jpg"):
        with pytest.raises(BadRequest):
            s.stat(path)
    # Writes land in S, seen by the owner under its full path.
    s.write_file("/new.jpg", [b"new"], 3)
    s.mkdir("/2027")
    s.move("/new.jpg", "/2027/moved.jpg")
    s.copy("/2027/moved.jpg", "/copied.jpg")
    assert full.open_file("/Photos/2027/moved.jpg").read_all() == b"new"
    assert full.open_file("/Photos/copied.jpg").read_all() == b"new"
    # The root of a scoped session is S: it cannot be moved or deleted from inside.
    with pytest.raises(Forbidden):
        s.delete("/")
    with pytest.raises(Forbidden):
        s.move("/", "/x")
    # Nothing that needs MK works, loudly.
    with pytest.raises(Forbidden):
        s.scope_key("/2026")
    for op in (s.trash_items, s.trash_empty, lambda: s.trash_list_dir("/")):
        with pytest.raises(Forbidden):
            op()
    with pytest.raises(Forbidden):
        s._master_key()
    # Versions of a file in S work (their keys hang below DK_S); file ids outside do not.
    s.write_file("/b.jpg", [b"v2"], 2)
    fileid = s.stat("/b.jpg").fileid
    assert [v.version_no for v in s.versions(fileid)[1]] == [2, 1]
    assert s.open_version(fileid, 1).read_all() == BIG
    assert s.path_of(fileid) == "/b.jpg"
    with pytest.raises(NotFound):
        s.node_by_fileid(full.stat("/Secret/a.txt").fileid)
    with pytest.raises(NotFound):
        s.node_by_fileid(full.stat("/Secret").fileid)


def test_scope_key_and_open_scoped_checks(local_vault: Vault) -> None:
    full = _tree(local_vault)
    with pytest.raises(Conflict):
        full.scope_key("/Secret/a.txt")
    with pytest.raises(NotFound):
        full.scope_key("/missing")
    root_id, root_dk = full.scope_key("/")  # allowed (a full token is the better choice)
    assert root_id == full.root_id
    whole = local_vault.open_scoped(_user(local_vault), root_id, root_dk, "ro")
    assert {e.name for e in whole.list_dir("/")} == {"Photos", "Secret"}
    with pytest.raises(Forbidden):
        _as(full, "ro").scope_key("/Photos")  # minting a scope is a change
    user = _user(local_vault)
    sid, dk = full.scope_key("/Photos")
    with pytest.raises(BadRequest):
        local_vault.open_scoped(user, sid, dk, "rwx")
    with pytest.raises(BadRequest):
        local_vault.open_scoped(user, sid, dk[:16], "rw")
    with pytest.raises(NotFound):
        local_vault.open_scoped(user, os.urandom(16).hex(), dk, "rw")
    with pytest.raises(NotFound):  # a file is no scope
        local_vault.open_scoped(user, full.stat("/Secret/a.txt").id, dk, "rw")
    local_vault.create_user("bob", "pw-bob")
    with pytest.raises(NotFound):  # someone else's directory
        local_vault.open_scoped(_user(local_vault, "bob"), sid, dk, "rw")
    # A wrong key opens nothing: no name is found under it, and every listed name fails.
    wrong = local_vault.open_scoped(user, sid, os.urandom(32), "rw")
    assert wrong.lookup("/b.jpg") is None
    with pytest.raises(IntegrityError):
        wrong.list_dir("/")


def test_deleting_the_scope_ends_the_session(any_vault: Vault) -> None:
    full = _tree(any_vault)
    s = _scoped(any_vault, full)
    assert s.stat("/b.jpg").size == len(BIG)
    full.delete("/Photos")  # into the trash: S still exists, but out of the tree
    for op in (
        lambda: s.list_dir("/"),
        lambda: s.stat("/b.jpg"),
        lambda: s.open_file("/b.jpg"),
        lambda: s.write_file("/c.jpg", [b"c"], 1),
        lambda: s.mkdir("/d"),
        lambda: s.delete("/b.jpg"),
    ):
        with pytest.raises(ScopeGone):
            op()
    with pytest.raises(ScopeGone):
        any_vault.open_scoped(_user(any_vault), s.root_id, s._scope_key or b"", "rw")
    assert not full.exists("/Photos/c.jpg")
    (item,) = [t for t in full.trash_items() if t.original_name == "Photos"]
    full.trash_purge(item.name)
    with pytest.raises(ScopeGone):
        s.list_dir("/")


def _sqlite_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_nothing_outside_the_scope_opens_with_its_key(tmp_path: Path) -> None:
    """The cryptographic claim, with the database read directly and only DK_S in hand:
    every key derivable from DK_S opens S's subtree and nothing else — not the root, not
    the trash, not a sibling, not a parent, whatever row or envelope kind it is tried on."""
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    try:
        full = _tree(vault)
        full.write_file("/Photos/2026/deep.jpg", [b"deep"], 4)
        sid, dk = full.scope_key("/Photos")
        user_id = full.user_id
    finally:
        vault.close()
    index = tmp_path / "index.db"
    assert index.exists()
    nodes = _sqlite_rows(
        index,
        'SELECT id, parent_id, kind, key_env FROM "node" WHERE owner_id = ?',
        (user_id,),
    )
    by_id = {r[0]: r for r in nodes}

    def inside(node_id: str) -> bool:
        while node_id is not None:
            if node_id == sid:
                return True
            node_id = by_id[node_id][1]
        return False

    # Every key derivable from DK_S: open node envelopes until nothing new opens, trying
    # every known key on every row (not only the row's parent).
    keys: dict[str, bytes] = {sid: dk}
    grew = True
    while grew:
        grew = False
        for node_id, parent_id, kind, env in nodes:
            if node_id in keys:
                continue
            for k in list(keys.values()):
                opened = None
                attempts = [
                    lambda k=k: envelopes.unwrap_root_key(
                        bytes(env), k, bytes.fromhex(user_id), bytes.fromhex(node_id)
                    ),
                    lambda k=k: envelopes.unwrap_trash_key(
                        bytes(env), k, bytes.fromhex(user_id), bytes.fromhex(node_id)
                    ),
                ]
                if parent_id is not None:
                    attempts.append(
                        lambda k=k: envelopes.unwrap_node_key(
                            bytes(env), k, bytes.fromhex(node_id), bytes.fromhex(parent_id), kind
                        )
                    )
                for attempt in attempts:
                    try:
                        opened = attempt()
                        break
                    except crypto.AuthenticationFailed:
                        continue
                if opened is not None:
                    keys[node_id] = opened
                    grew = True
                    break
    inside_ids = {n[0] for n in nodes if inside(n[0])}
    outside_ids = {n[0] for n in nodes} - inside_ids
    assert set(keys) == inside_ids
    assert len(inside_ids) == 5  # Photos, 2026, a.jpg, deep.jpg, b.jpg
    assert len(outside_ids) >= 5  # root, trash, Secret, a.txt, top.txt
    # No content key of a file outside opens with any of those keys either.
    versions = _sqlite_rows(
        index,
        "SELECT v.node_id, v.version_no, v.blob_id, v.plain_size, v.header24, v.ck_env "
        'FROM "version" AS v JOIN "node" AS n ON n.id = v.node_id WHERE n.owner_id = ?',
        (user_id,),
    )
    opened_cks = 0
    for node_id, version_no, blob_id, size, header24, ck_env in versions:
        for k in keys.values():
            try:
                envelopes.unwrap_content_key(
                    bytes(ck_env),
                    k,
                    bytes.fromhex(node_id),
                    version_no,
                    bytes.fromhex(blob_id),
                    size,
                    bytes(header24),
                )
            except crypto.AuthenticationFailed:
                continue
            assert node_id in inside_ids
            opened_cks += 1
    assert opened_cks == 3  # a.jpg, deep.jpg, b.jpg: exactly the files inside


def test_read_only_refuses_every_change(local_vault: Vault) -> None:
    full = _tree(local_vault)
    fileid = full.stat("/Photos/b.jpg").fileid
    full.write_file("/Photos/b.jpg", [b"v2"], 2)
    for ro in (_scoped(local_vault, full, perms="ro"), _as(full, "ro")):
        base = "" if ro.scoped else "/Photos"
        assert ro.open_file(f"{base}/b.jpg").read_all() == b"v2"
        assert [e.name for e in ro.list_dir(f"{base}/")] == ["2026", "b.jpg"]
        assert ro.stat(f"{base}/2026/a.jpg").size == 10
        assert ro.get_props(f"{base}/b.jpg") == {}
        assert len(ro.versions(fileid)[1]) == 2
        changes = [
            lambda: ro.write_file(f"{base}/n.jpg", [b"n"], 1),
            lambda: ro.write_file(f"{base}/b.jpg", [b"n"], 1),
            lambda: ro.write_file(f"{base}/big.jpg", [BIG]),
            lambda: ro.mkdir(f"{base}/d"),
            lambda: ro.delete(f"{base}/b.jpg"),
            lambda: ro.delete(f"{base}/b.jpg", permanently=True),
            lambda: ro.move(f"{base}/b.jpg", f"{base}/c.jpg"),
            lambda: ro.copy(f"{base}/b.jpg", f"{base}/c.jpg"),
            lambda: ro.set_props(f"{base}/b.jpg", {"{x:}y": "z"}),
            lambda: ro.set_mtime(f"{base}/b.jpg", 1.0),
            lambda: ro.restore_version(fileid, 1),
            lambda: ro.delete_version(fileid, 1),
            lambda: ro.set_version_label(fileid, 1, "keep"),
            lambda: ro.require("change"),
            lambda: Uploads(ro).create("u1"),
        ]
        if not ro.scoped:
            (item,) = ro.trash_items()  # reading the trash is reading
            changes += [
                lambda: ro.trash_restore(item.name),
                lambda: ro.trash_purge(item.name),
                lambda: ro.trash_empty(),
            ]
        for change in changes:
            with pytest.raises(Forbidden):
                change()
    assert [e.name for e in full.list_dir("/Photos")] == ["2026", "b.jpg"]
    assert full.open_file("/Photos/b.jpg").read_all() == b"v2"


def test_write_only_creates_and_nothing_else(any_vault: Vault) -> None:
    full = _tree(any_vault)
    fileid = full.stat("/Photos/b.jpg").fileid
    for wo in (_scoped(any_vault, full, perms="wo"), _as(full, "wo")):
        base = "" if wo.scoped else "/Photos"
        tag = "s" if wo.scoped else "f"
        # Allowed: new files (small and large), new directories, a stat of directories.
        wo.write_file(f"{base}/{tag}-new.jpg", [b"n"], 1)
        wo.write_file(f"{base}/{tag}-big.jpg", [BIG])
        wo.mkdir(f"{base}/2026/{tag}-day")
        wo.write_file(f"{base}/2026/{tag}-day/p.jpg", [b"p"], 1)
        assert wo.stat(f"{base}/").is_dir and wo.stat(f"{base}/2026").is_dir
        assert wo.lookup_with_parent(f"{base}/2026/{tag}-x.jpg")[1] is None
        assert wo.get_props(f"{base}/2026") == {}
        with pytest.raises(AlreadyExists):
            wo.mkdir(f"{base}/2026")
        refused = [
            lambda: wo.write_file(f"{base}/b.jpg", [b"x"], 1),  # overwrite
            lambda: wo.write_file(f"{base}/b.jpg", [BIG]),
            lambda: wo.write_file(f"{base}/{tag}-new.jpg", [b"x"], 1),  # its own, too
            lambda: wo.open_file(f"{base}/b.jpg"),
            lambda: wo.stat(f"{base}/b.jpg"),
            lambda: wo.lookup(f"{base}/2026/a.jpg"),
            lambda: wo.lookup_with_parent(f"{base}/b.jpg"),
            lambda: wo.list_dir(f"{base}/"),
            lambda: wo.list_dir(f"{base}/2026"),
            lambda: wo.list_dir_props(f"{base}/"),
            lambda: wo.list_dir_hashes(f"{base}/"),
            lambda: wo.hashes(f"{base}/b.jpg"),
            lambda: wo.get_props(f"{base}/b.jpg"),
            lambda: wo.delete(f"{base}/b.jpg"),
            lambda: wo.delete(f"{base}/2026/{tag}-day", permanently=True),
            lambda: wo.move(f"{base}/{tag}-new.jpg", f"{base}/{tag}-moved.jpg"),
            lambda: wo.copy(f"{base}/b.jpg", f"{base}/{tag}-copy.jpg"),
            lambda: wo.set_props(f"{base}/2026", {"{x:}y": "z"}),
            lambda: wo.set_mtime(f"{base}/2026", 1.0),
            lambda: wo.versions(fileid),
            lambda: wo.open_version(fileid, 1),
            lambda: wo.node_by_fileid(fileid),
            lambda: wo.path_of(fileid),
            lambda: wo.trash_items(),
            lambda: wo.trash_empty(),
            lambda: list(wo.walk(f"{base}/")),
        ]
        for op in refused:
            with pytest.raises(Forbidden):
                op()
    assert full.open_file("/Photos/s-new.jpg").read_all() == b"n"
    assert full.open_file("/Photos/f-big.jpg").read_all() == BIG
    assert full.open_file("/Photos/2026/s-day/p.jpg").read_all() == b"p"
    assert full.open_file("/Photos/b.jpg").read_all() == BIG


def test_chunked_upload_through_scoped_sessions(local_vault: Vault) -> None:
    full = _tree(local_vault)
    parts = [os.urandom(70_000), os.urandom(5)]
    for perms in ("rw", "wo"):
        s = _scoped(local_vault, full, perms=perms)
        up = Uploads(s)
        up.create("web-file-upload-1")
        for i, data in enumerate(parts, 1):
            up.put_chunk("web-file-upload-1", str(i), [data], len(data))
        assert [c[0] for c in up.list("web-file-upload-1")] == ["1", "2"]
        entry, existed = up.assemble("web-file-upload-1", f"/{perms}.bin", sum(map(len, parts)))
        assert not existed and entry.size == sum(map(len, parts))
        assert full.open_file(f"/Photos/{perms}.bin").read_all() == b"".join(parts)
    # An upload-only session cannot assemble onto an existing file.
    wo = _scoped(local_vault, full, perms="wo")
    up = Uploads(wo)
    up.create("web-file-upload-2")
    up.put_chunk("web-file-upload-2", "1", [b"x"], 1)
    with pytest.raises(Forbidden):
        up.assemble("web-file-upload-2", "/b.jpg", 1)
    assert full.open_file("/Photos/b.jpg").read_all() == BIG
    # The owner's uploads and the scoped ones live side by side, same client ids or not.
    mine = Uploads(full)
    mine.create("web-file-upload-2")
    mine.put_chunk("web-file-upload-2", "1", [b"owner"], 5)
    assert [c[1] for c in up.list("web-file-upload-2")] == [1]
    assert [c[1] for c in mine.list("web-file-upload-2")] == [5]
    with pytest.raises(AlreadyExists):
        up.create("web-file-upload-2")
    with local_vault.index.connection():
        handles = [bytes(u.handle_mac) for u in Upload.select()]
    assert len(handles) == 2 and len(set(handles)) == 2
    mine.assemble("web-file-upload-2", "/owner.bin", 5)
    assert up.exists("web-file-upload-2")  # the scoped one is untouched


def _pending(vault: Vault) -> list[TrashItem]:
    with vault.index.connection():
        return list(TrashItem.select().where(TrashItem.pending == True))  # noqa: E712


def test_scoped_delete_is_folded_into_the_trash(any_vault: Vault) -> None:
    full = _tree(any_vault)
    s = _scoped(any_vault, full)
    usage = full.usage()[0]
    s.delete("/2026")  # a directory with a file in it
    s.delete("/b.jpg")
    assert [e.name for e in s.list_dir("/")] == []
    assert not full.exists("/Photos/b.jpg") and not full.exists("/Photos/2026")
    assert full.usage()[0] == usage  # still counted, as trash
    pending = _pending(any_vault)
    assert len(pending) == 2
    with any_vault.index.connection():
        trash_id = User.get_by_id(full.user_id).trash_id
        rows = [Node.get_by_id(p.node_id) for p in pending]
    assert all(r.parent_id == trash_id and bytes(r.name_ct) == b"" for r in rows)
    # Sealed boxes, not key envelopes: nothing under the trash key opens them yet.
    assert all(len(bytes(r.key_env)) != 72 for r in rows)
    # fsck (keyless) sees ordinary trash items, and counts the pending ones.
    report = Fsck(any_vault).run()
    assert not report.problems, report.problems
    assert report.checked["pending trash items"] == 2
    # The owner's next trash listing folds them first.
    items = {t.original_location: t for t in full.trash_items()}
    assert not _pending(any_vault)
    assert set(items) == {"top.txt", "Photos/2026", "Photos/b.jpg"}
    assert items["Photos/b.jpg"].original_name == "b.jpg"
    assert full.trash_restore(items["Photos/b.jpg"].name) == "/Photos/b.jpg"
    assert full.trash_restore(items["Photos/2026"].name) == "/Photos/2026"
    assert full.open_file("/Photos/b.jpg").read_all() == BIG
    assert full.open_file("/Photos/2026/a.jpg").read_all() == b"A" * 10
    assert s.open_file("/2026/a.jpg").read_all() == b"A" * 10
    assert full.usage()[0] == usage


def test_a_password_login_folds_pending_items(any_vault: Vault) -> None:
    full = _tree(any_vault)
    s = _scoped(any_vault, full)
    s.mkdir("/old")
    s.write_file("/old/x.jpg", [b"x"], 1)
    s.mkdir("/new")
    s.move("/new", "/old", overwrite=True)  # the replaced directory is kept, pending
    s.delete("/2026")
    assert len(_pending(any_vault)) == 2
    any_vault._cache.clear()  # a login that runs Argon2id (a cached one folds nothing)
    fresh = any_vault.login("alice", PW)
    assert not _pending(any_vault)
    with any_vault.index.connection():
        assert TrashItem.select().count() == 3
    names = {t.original_location for t in fresh.trash_items()}
    assert names == {"top.txt", "Photos/2026", "Photos/old"}
    (old,) = [t for t in fresh.trash_items() if t.original_name == "old"]
    assert fresh.trash_list_dir(old.name)[0].name == "x.jpg"


def test_a_swapped_identity_key_stops_scoped_deletes(any_vault: Vault) -> None:
    full = _tree(any_vault)
    s = _scoped(any_vault, full)
    attacker = nacl.public.PrivateKey.generate()
    with any_vault.index.connection():
        User.update(id_pk=bytes(attacker.public_key)).where(User.id == full.user_id).execute()
    with pytest.raises(IntegrityError, match="identity public key"):
        s.delete("/b.jpg")
    kinds = [p.kind for p in Fsck(any_vault).run().problems]
    assert kinds == ["identity_key_unbound"]
    assert s.stat("/b.jpg").size == len(BIG)  # nothing moved, nothing sealed
    assert not _pending(any_vault)
    # A forged binding MAC does not help either (the pepper is not in the database).
    with any_vault.index.connection():
        User.update(id_pk_mac=os.urandom(32)).where(User.id == full.user_id).execute()
    with pytest.raises(IntegrityError):
        s.delete("/b.jpg")
    assert not _pending(any_vault)


def test_a_swapped_identity_key_leaves_the_trash_usable(local_vault: Vault) -> None:
    """An item sealed before the key was swapped stays pending (logged); the owner's trash
    still lists and restores the rest, and folds it once the key is put back."""
    full = _tree(local_vault)
    s = _scoped(local_vault, full)
    s.delete("/b.jpg")
    with local_vault.index.connection():
        good = User.get_by_id(full.user_id).id_pk
        attacker = bytes(nacl.public.PrivateKey.generate().public_key)
        User.update(id_pk=attacker).where(User.id == full.user_id).execute()
    assert [t.original_name for t in full.trash_items()] == ["top.txt"]
    assert len(_pending(local_vault)) == 1
    with local_vault.index.connection():
        User.update(id_pk=good).where(User.id == full.user_id).execute()
    assert {t.original_name for t in full.trash_items()} == {"top.txt", "b.jpg"}


def test_forged_pending_items_are_not_folded(local_vault: Vault) -> None:
    """Anyone can seal to a public key; only a holder of DK_S can tag an item. A pending
    item whose tag does not verify stays pending (logged) and never shows."""
    full = _tree(local_vault)
    s = _scoped(local_vault, full)
    sid = s.root_id
    s.delete("/b.jpg")
    (item,) = _pending(local_vault)
    # Re-seal the item as a database writer would: the owner's public key is in the
    # database, DK_S is not (a random key stands in for it).
    with local_vault.index.connection():
        pk = bytes(User.get_by_id(full.user_id).id_pk)
        row = Node.get_by_id(item.node_id)
        key_box, origin_box = identity.seal_pending(
            pk,
            os.urandom(32),
            bytes.fromhex(full.user_id),
            identity.PendingKey(bytes.fromhex(row.id), "file", os.urandom(32)),
            identity.PendingOrigin(
                bytes.fromhex(row.id), bytes.fromhex(sid), bytes.fromhex(sid), "evil", 1, b"", b""
            ),
        )
        Node.update(key_env=key_box).where(Node.id == row.id).execute()
        TrashItem.update(origin_ct=origin_box).where(TrashItem.node == row.id).execute()
    names = {t.original_name for t in full.trash_items()}
    assert names == {"top.txt"}
    assert len(_pending(local_vault)) == 1


def test_old_index_gets_identity_keys_at_the_next_login(tmp_path: Path) -> None:
    pepper = os.urandom(32)
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=pepper)
    vault.create_user("old", "pw")
    s = vault.login("old", "pw")
    s.mkdir("/Photos")
    s.write_file("/Photos/p.jpg", [b"p"], 1)
    db = vault.index.db
    with vault.index.connection():
        m = SchemaMigrator.from_database(db)
        migrate(
            m.drop_column("user", "id_pk"),
            m.drop_column("user", "id_pk_mac"),
            m.drop_column("user", "id_sk_env"),
            m.drop_column("trash_item", "pending"),
        )
        SchemaInfo.update(value="7").where(SchemaInfo.key == "schema_version").execute()
    vault.close()

    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=pepper)
    try:
        assert vault.index.schema_version() == SCHEMA_VERSION
        user = _user(vault, "old")
        assert user.id_pk is None and user.id_sk_env is None
        # Before the owner logs in again a scoped session cannot delete (nothing to seal
        # to) but can do everything else.
        full = vault.login("old", "pw")  # this login makes the pair
        user = _user(vault, "old")
        assert user.id_pk is not None and len(bytes(user.id_pk)) == 32
        first_pk = bytes(user.id_pk)
        sid, dk = full.scope_key("/Photos")
        scoped = vault.open_scoped(user, sid, dk, "rw")
        scoped.delete("/p.jpg")
        vault._cache.clear()
        vault.login("old", "pw")
        assert bytes(_user(vault, "old").id_pk) == first_pk  # made once, kept
        assert not _pending(vault)
        (item,) = vault.login("old", "pw").trash_items()
        assert item.original_location == "Photos/p.jpg"
    finally:
        vault.close()


def test_scoped_session_without_identity_key_cannot_delete(local_vault: Vault) -> None:
    full = _tree(local_vault)
    s = _scoped(local_vault, full)
    with local_vault.index.connection():
        User.update(id_pk=None, id_pk_mac=None, id_sk_env=None).where(
            User.id == full.user_id
        ).execute()
    with pytest.raises(Forbidden, match="identity key"):
        s.delete("/b.jpg")
    assert s.stat("/b.jpg").size == len(BIG)


def test_scoped_delete_needs_the_trash_or_deletes_for_real(tmp_path: Path) -> None:
    """``scope_key`` makes the trash directory, so a scoped DELETE finds one; without it
    (the database says so) the DELETE is refused, not half done. With the trash disabled
    a scoped DELETE is final, as a full one is."""
    vault = make_vault(tmp_path / "a", LocalBlobStore(tmp_path / "a" / "blobs"))
    try:
        vault.create_user("alice", PW)
        full = vault.login("alice", PW)
        full.mkdir("/Photos")
        full.write_file("/Photos/p.jpg", [b"p"], 1)
        assert _user(vault).trash_id is None
        s = _scoped(vault, full)
        assert _user(vault).trash_id is not None  # made by scope_key
        with vault.index.connection():
            User.update(trash_id=None).where(User.id == full.user_id).execute()
        with pytest.raises(Forbidden, match="trash"):
            s.delete("/p.jpg")
        assert s.stat("/p.jpg").size == 1
    finally:
        vault.close()
    plain = make_vault(tmp_path / "b", LocalBlobStore(tmp_path / "b" / "blobs"), settings=PLAIN)
    try:
        full = _tree(plain)
        s = _scoped(plain, full)
        s.delete("/b.jpg")
        assert not full.exists("/Photos/b.jpg") and not _pending(plain)
    finally:
        plain.close()


def test_the_scope_key_survives_a_full_key_cache(local_vault: Vault) -> None:
    full = _tree(local_vault)
    s = _scoped(local_vault, full)
    s.KEY_CACHE_SIZE = 2  # every walk evicts
    for i in range(5):
        s.write_file(f"/2026/n{i}.jpg", [b"n"], 1)
    s._keys.clear()
    s._hints.clear()
    assert s.root_id not in s._keys  # never there: a fixed attribute
    assert len(s.list_dir("/2026")) == 6
    assert s.open_file("/b.jpg").read_all() == BIG


def test_a_scoped_token_opens_only_its_directory_key(tmp_path: Path) -> None:
    """With the index read directly, the scoped token and even the pepper in hand, what
    the token's envelope opens is DK_S — not the master key: it opens neither the root nor
    the trash (and ``test_nothing_outside_the_scope_opens_with_its_key`` shows that DK_S
    opens nothing outside S)."""
    from davserver.crypto import tokens as tokenfmt

    pepper = os.urandom(32)
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=pepper)
    try:
        full = _tree(vault)
        sid, dk = full.scope_key("/Photos")
        user_id, root_id, trash_id = full.user_id, full.root_id, full._trash_id()
        token_id, token = vault.create_token("alice", PW, "frame", scope="/Photos")
    finally:
        vault.close()
    parsed = tokenfmt.decode(token)
    assert parsed is not None and parsed.envelope_id.hex() == token_id
    (row,) = _sqlite_rows(
        tmp_path / "index.db",
        'SELECT kind, kdf_params, verifier, wrapped, scope_node, perms, expires FROM "envelope" '
        "WHERE id = ?",
        (token_id,),
    )
    kind, params, verifier, wrapped, scope_node, perms, expires = row
    assert (kind, scope_node, perms) == ("scoped", sid, "rw")
    key = tokenfmt.open_token(
        tokenfmt.SealedToken(bytes(params), bytes(verifier), bytes(wrapped)),
        pepper,
        parsed.secret,
        bytes.fromhex(user_id),
        parsed.envelope_id,
        kind,
        bytes.fromhex(scope_node),
        perms,
        int(expires or 0),
    )
    assert key == dk
    envs = dict(_sqlite_rows(tmp_path / "index.db", 'SELECT id, key_env FROM "node"'))
    with pytest.raises(crypto.AuthenticationFailed):
        envelopes.unwrap_root_key(
            bytes(envs[root_id]), key, bytes.fromhex(user_id), bytes.fromhex(root_id)
        )
    assert trash_id is not None
    with pytest.raises(crypto.AuthenticationFailed):
        envelopes.unwrap_trash_key(
            bytes(envs[trash_id]), key, bytes.fromhex(user_id), bytes.fromhex(trash_id)
        )
