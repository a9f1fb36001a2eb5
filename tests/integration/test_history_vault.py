"""Versions and trash in the engine, on both blob backends (local and the real MinIO)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from davserver.admin.fsck import Fsck
from davserver.blobs.local import LocalBlobStore
from davserver.errors import Forbidden, InsufficientStorage, NotFound
from davserver.retention import Retention
from davserver.vault import Vault
from tests.harness.vaults import FAST, make_vault, stored_blob_ids

T0 = 1_800_000_000.0


def fsck_clean(vault: Vault) -> bool:
    report = Fsck(vault).run()
    assert report.remaining == [], [p.to_json() for p in report.remaining]
    return True


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["local", "s3", "postgres"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Vault, Clock]]:
    """A vault on SQLite with local blobs, on SQLite with the real MinIO, and on the real
    PostgreSQL with local blobs; its clock injected."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db_url")
        vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=url)
    elif request.param == "s3":
        from tests.harness.minio import make_s3_store

        server = request.getfixturevalue("minio_server")
        bucket = request.getfixturevalue("s3_bucket")
        vault = make_vault(
            tmp_path, make_s3_store(server, bucket, prefix=os.urandom(4).hex() + "/")
        )
    else:
        vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    clock = Clock()
    vault.clock = clock
    vault.create_user("alice", "pw")
    yield vault, clock
    vault.close()


def body(i: int, size: int = 20000) -> bytes:
    return (f"version {i} ".encode() * size)[:size]


def test_fifty_overwrites_follow_the_schedule(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    policy = Retention.parse("auto")
    # Gaps from a second to weeks: every interval of the schedule gets versions.
    gaps = [1, 1, 1, 3, 2, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584]
    gaps += [4181, 6765, 10946, 17711, 28657, 46368, 75025, 121393, 196418, 317811]
    gaps += [86400 * k for k in (1, 2, 3, 5, 8, 13, 1, 1, 2, 3, 5, 8, 13, 21, 1, 1, 1, 2, 3, 4)]
    assert len(gaps) == 49
    model: list[tuple[int, float, bool]] = []  # (version_no, created, labelled), newest first
    fileid = 0
    for i in range(50):
        if i:
            clock.t += gaps[i - 1]
        entry = s.write_file("/doc.txt", [body(i)], None)
        fileid = entry.fileid
        # The model: the previous current version joins the old ones, which are thinned.
        if i:
            olds = [m for m in model]
            stamps = [Stamp(c, lab) for _, c, lab in olds]
            going = set(policy.expired_versions(clock.t, stamps))
            model = [m for j, m in enumerate(olds) if j not in going]
        model.insert(0, (i + 1, clock.t, False))
        if i == 2:
            s.set_version_label(fileid, 3, "first draft")
            model[0] = (3, model[0][1], True)
        _, versions = s.versions(fileid)
        assert [(v.version_no, v.created) for v in versions] == [(n, c) for n, c, _ in model]
    kept = [v.version_no for v in s.versions(fileid)[1]]
    assert 3 in kept, "the labelled version is never thinned"
    assert len(kept) < 50
    # The maintenance loop at the same instant finds nothing more to thin.
    assert vault.expire_history(clock.t) == (0, 0)
    # Restoring version 3 gives its bytes back and stores no new object.
    before = stored_blob_ids(vault)
    restored = s.restore_version(fileid, 3)
    assert s.open_file("/doc.txt").read_all() == body(2)
    assert stored_blob_ids(vault) == before
    _, after = s.versions(fileid)
    assert after[0].current and after[0].version_no == max(kept) + 1
    assert after[1].version_no == max(kept), "the version that was current stays listed"
    assert restored.version_id == after[0].id
    assert fsck_clean(vault)


@dataclasses.dataclass
class Stamp:
    created: float
    labelled: bool


def test_version_download_label_and_delete(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    for i in range(3):
        clock.t += 3600 * 25  # a day apart: all kept
        s.write_file("/a.bin", [body(i, 70000)], None)
    fileid = s.stat("/a.bin").fileid
    assert s.open_version(fileid, 1).read_all() == body(0, 70000)
    s.set_version_label(fileid, 1, "ünïcode label")
    assert s.versions(fileid)[1][-1].label == "ünïcode label"
    s.set_version_label(fileid, 1, "")
    assert s.versions(fileid)[1][-1].label is None
    with pytest.raises(Forbidden):
        s.delete_version(fileid, 3)  # the current one
    usage = vault.user_info("alice").usage_bytes
    s.delete_version(fileid, 2)
    assert vault.user_info("alice").usage_bytes == usage - 70000
    with pytest.raises(NotFound):
        s.open_version(fileid, 2)
    assert fsck_clean(vault)


def test_delete_and_restore_a_tree_keeps_everything(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.mkdir("/proj")
    s.mkdir("/proj/src")
    files = {f"/proj/src/f{i}.txt": body(i, 100 + i) for i in range(120)}
    for p, data in files.items():
        s.write_file(p, [data], len(data))
    s.write_file("/proj/src/f0.txt", [b"second"], 6)  # a version to keep
    files["/proj/src/f0.txt"] = b"second"
    s.set_props("/proj/src/f1.txt", {"{urn:x}color": "<x:color xmlns:x='urn:x'>red</x:color>"})
    fileid = s.stat("/proj").fileid
    usage = vault.user_info("alice").usage_bytes
    clock.t += 10
    s.delete("/proj")
    assert not s.exists("/proj")
    assert vault.user_info("alice").usage_bytes == usage  # a trash move frees nothing
    (item,) = s.trash_items()
    assert (item.original_name, item.original_location) == ("proj", "proj")
    assert item.deleted_at == clock.t and item.entry.fileid == fileid
    assert {e.name for e in s.trash_list_dir(item.name + "/src")} == {
        p.rsplit("/", 1)[1] for p in files
    }
    assert s.trash_open(item.name + "/src/f5.txt").read_all() == files["/proj/src/f5.txt"]
    live, old, trash = vault.usage_breakdown("alice")
    assert (live, trash) == (0, usage) and old == 0
    assert fsck_clean(vault)
    assert s.trash_restore(item.name) == "/proj"
    for p, data in files.items():
        assert s.open_file(p).read_all() == data
    assert s.stat("/proj").fileid == fileid
    assert s.get_props("/proj/src/f1.txt")["{urn:x}color"].endswith("red</x:color>")
    assert len(s.versions(s.stat("/proj/src/f0.txt").fileid)[1]) == 2
    assert s.hashes("/proj/src/f3.txt")
    assert s.trash_items() == []
    # Purge reclaims every blob after gc.
    blobs_before = stored_blob_ids(vault)
    s.delete("/proj")
    s.trash_purge(s.trash_items()[0].name)
    vault.collect_garbage()
    assert stored_blob_ids(vault) == set()
    assert blobs_before
    assert vault.user_info("alice").usage_bytes == 0
    assert fsck_clean(vault)


def test_restore_into_a_place_gone_or_taken_goes_to_the_root(
    clocked: tuple[Vault, Clock],
) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.mkdir("/a")
    s.write_file("/a/x.txt", [b"one"], 3)
    s.delete("/a/x.txt")
    s.write_file("/a/x.txt", [b"two"], 3)  # the place is taken
    clock.t += 1
    s.delete("/a/x.txt")
    items = sorted(s.trash_items(), key=lambda i: i.deleted_at)
    assert [i.original_location for i in items] == ["a/x.txt", "a/x.txt"]
    assert s.trash_restore(items[1].name) == "/a/x.txt"
    assert s.trash_restore(items[0].name) == "/x.txt"  # taken: at the root
    s.write_file("/y.txt", [b"y"], 1)
    s.delete("/y.txt")
    s.write_file("/y.txt", [b"new"], 3)
    s.write_file("/y (restored).txt", [b"taken too"], 9)
    (y,) = s.trash_items()
    assert s.trash_restore(y.name) == "/y (restored 2).txt"
    # A folder that is gone: the file comes back at the root.
    s.mkdir("/gone")
    s.write_file("/gone/z.txt", [b"z"], 1)
    s.delete("/gone/z.txt")
    s.delete("/gone", permanently=True)
    (z,) = s.trash_items()
    assert z.original_location == "z.txt" or z.original_location.endswith("z.txt")
    assert s.trash_restore(z.name) == "/z.txt"
    assert s.open_file("/z.txt").read_all() == b"z"
    assert fsck_clean(vault)


def test_nested_deletes_show_their_original_paths(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.mkdir("/p")
    s.mkdir("/p/q")
    s.write_file("/p/q/deep.txt", [b"d"], 1)
    s.delete("/p/q/deep.txt")
    clock.t += 1
    s.delete("/p")
    locations = {i.original_name: i.original_location for i in s.trash_items()}
    assert locations == {"deep.txt": "p/q/deep.txt", "p": "p"}
    # Restoring the folder first puts the file back inside it.
    order = sorted(s.trash_items(), key=lambda i: i.original_location.count("/"))
    assert [s.trash_restore(i.name) for i in order] == ["/p", "/p/q/deep.txt"]


def test_retention_expires_trash_and_versions_in_the_maintenance_loop(
    clocked: tuple[Vault, Clock],
) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.write_file("/old.txt", [b"old"], 3)
    s.delete("/old.txt")
    clock.t += 29 * 86400
    assert vault.expire_history() == (0, 0)
    clock.t += 2 * 86400
    assert vault.expire_history() == (0, 1)
    assert s.trash_items() == []
    vault.collect_garbage()
    assert stored_blob_ids(vault) == set()
    assert vault.user_info("alice").usage_bytes == 0


def test_admin_purge_needs_no_password(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.write_file("/a.txt", [b"a"], 1)
    s.delete("/a.txt")
    clock.t += 3 * 86400
    s.write_file("/b.txt", [b"b"], 1)
    s.delete("/b.txt")
    assert vault.purge_trash("alice", older_than=86400) == 1
    assert [i.original_name for i in s.trash_items()] == ["b.txt"]


def test_delete_permanently_and_disabled(tmp_path: Path, blob_backend: object) -> None:
    settings = dataclasses.replace(FAST, trash_retention="disabled", versions_retention="disabled")
    vault = make_vault(tmp_path, blob_backend, settings=settings)  # type: ignore[arg-type]
    try:
        vault.create_user("bob", "pw")
        s = vault.login("bob", "pw")
        s.write_file("/a.txt", [body(1)], None)
        s.write_file("/a.txt", [body(2)], None)
        assert len(s.versions(s.stat("/a.txt").fileid)[1]) == 1
        s.delete("/a.txt")
        assert s.trash_items() == []
        vault.collect_garbage()
        assert stored_blob_ids(vault) == set()
    finally:
        vault.close()


def test_quota_evicts_trash_then_old_versions(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    vault.set_quota("alice", 115_000)
    s = vault.login("alice", "pw")
    s.write_file("/trashed.bin", [body(0, 30000)], None)
    s.delete("/trashed.bin")
    for i in range(4):  # a day and a half apart: versions 1..3 are all kept
        clock.t += 86400 * 1.5
        s.write_file("/doc.bin", [body(i)], None)
    doc = s.stat("/doc.bin").fileid
    assert vault.user_info("alice").usage_bytes == 30000 + 4 * 20000
    clock.t += 10
    # 10 000 more bytes would exceed it: the trash goes first, no version needed.
    s.write_file("/new.bin", [body(9, 10000)], None)
    assert s.trash_items() == []
    assert [v.version_no for v in s.versions(doc)[1]] == [4, 3, 2, 1]
    assert vault.user_info("alice").usage_bytes == 90000
    # 30 000 more: the oldest version goes (never the two newest of a file).
    s.write_file("/new2.bin", [body(8, 30000)], None)
    assert [v.version_no for v in s.versions(doc)[1]] == [4, 3, 2]
    assert vault.user_info("alice").usage_bytes == 100000
    # 40 000 more: version 2 alone is not enough; 507, and nothing changed.
    before = (vault.user_info("alice").usage_bytes, stored_blob_ids(vault))
    with pytest.raises(InsufficientStorage):
        s.write_file("/too-big.bin", [body(7, 40000)], 40000)
    with pytest.raises(InsufficientStorage):
        s.write_file("/too-big.bin", [body(7, 40000)], None)
    vault.collect_garbage()
    assert (vault.user_info("alice").usage_bytes, stored_blob_ids(vault)) == before
    assert not s.exists("/too-big.bin")
    assert [v.version_no for v in s.versions(doc)[1]] == [4, 3, 2]
    assert fsck_clean(vault)


def test_move_and_copy_onto_a_file_keep_its_history(clocked: tuple[Vault, Clock]) -> None:
    vault, clock = clocked
    s = vault.login("alice", "pw")
    s.write_file("/doc.txt", [body(1)], None)
    clock.t += 86400
    s.write_file("/doc.txt", [body(2)], None)
    fileid = s.stat("/doc.txt").fileid
    clock.t += 86400
    # An editor's safe save: write a temporary file, rename it over the document.
    s.write_file("/.doc.tmp", [body(3)], None)
    s.set_props("/.doc.tmp", {"{urn:x}k": "<x:k xmlns:x='urn:x'>v</x:k>"})
    blobs = stored_blob_ids(vault)
    assert s.move("/.doc.tmp", "/doc.txt", overwrite=True)
    assert not s.exists("/.doc.tmp")
    assert s.stat("/doc.txt").fileid == fileid
    assert s.open_file("/doc.txt").read_all() == body(3)
    _, versions = s.versions(fileid)
    assert [v.version_no for v in versions] == [3, 2, 1]
    assert s.open_version(fileid, 2).read_all() == body(2)
    assert "{urn:x}k" in s.get_props("/doc.txt")
    vault.collect_garbage()
    assert stored_blob_ids(vault) == blobs  # nothing copied, nothing lost
    assert vault.user_info("alice").usage_bytes == 3 * 20000
    clock.t += 86400
    s.write_file("/other.txt", [body(4)], None)
    assert s.copy("/other.txt", "/doc.txt", overwrite=True)
    assert [v.version_no for v in s.versions(fileid)[1]] == [4, 3, 2, 1]
    assert s.open_file("/doc.txt").read_all() == body(4)
    assert s.open_file("/other.txt").read_all() == body(4)
    assert vault.user_info("alice").usage_bytes == 5 * 20000
    # A folder overwritten by a MOVE goes to the trash.
    s.mkdir("/f")
    s.write_file("/f/in.txt", [b"in"], 2)
    s.mkdir("/g")
    assert s.move("/g", "/f", overwrite=True)
    (item,) = s.trash_items()
    assert item.original_location == "f"
    assert fsck_clean(vault)


def test_locks_survive_a_trash_round_trip(clocked: tuple[Vault, Clock]) -> None:
    from davserver.vault.locks import LockStore

    vault, _ = clocked
    s = vault.login("alice", "pw")
    s.mkdir("/docs")
    s.write_file("/docs/a.txt", [b"a"], 1)
    store = LockStore(vault)
    rec = {"root": "/x", "type": "write", "scope": "exclusive", "depth": "0", "owner": "me"}
    rec["principal"] = "alice"
    lock = store.create(s.user_id, "/docs/a.txt", rec, 3600)
    s.delete("/docs")
    assert store.find(s.user_id, "/docs/a.txt") == []
    assert store.get(lock["token"]) is None
    (item,) = s.trash_items()
    assert s.trash_restore(item.name) == "/docs"
    (back,) = store.find(s.user_id, "/docs/a.txt")
    assert back["token"] == lock["token"] and back["owner"] == "me"
    assert abs(back["expire"] - lock["expire"]) < 1e-3
    assert back["root"] is None  # the DAV layer derives it from the path
