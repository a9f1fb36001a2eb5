"""``davserver fsck`` on a real data directory (SQLite index; local blobs and real MinIO):
each injected fault is found and named by id, exit codes, ``--repair``, ``--deep``."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from davserver.blobs import BlobStore
from davserver.cli import main
from davserver.config import Config
from davserver.index.models import User, Version
from davserver.runtime import make_blob_store, open_vault
from davserver.vault.locks import LockStore
from tests.harness.davserver import FAST_ENV, make_config, s3_env

PASSWORD = "correct horse"
FILES = {
    "/small.txt": b"tiny file kept in the index",
    "/big.bin": os.urandom(200_000),
    "/d/e.bin": os.urandom(100_000),
    "/d/sub/f.bin": os.urandom(50_000),
    "/g.bin": os.urandom(70_000),
}


@dataclass
class Store:
    data_dir: Path
    env: dict[str, str]
    config: Config
    nodes: dict[str, str]  # path -> node id
    blobs: dict[str, str]  # path -> blob id of the current version
    user_id: str

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "index.db", isolation_level=None)

    def blob_store(self) -> BlobStore:
        return make_blob_store(self.config)

    def read_object(self, blob_id: str) -> bytes:
        bs = self.blob_store()
        try:
            with bs.open(blob_id) as r:
                return r.read()
        finally:
            bs.close()

    def replace_object(self, blob_id: str, data: bytes) -> None:
        """Overwrite an object's bytes in place (a local file rewritten, a MinIO object put
        again): what bit rot or a careless operator does."""
        if self.config.storage.backend == "local":
            path = self.data_dir / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
            os.chmod(path, 0o600)
            path.write_bytes(data)
            return
        bs = self.blob_store()
        try:
            bs.put(blob_id, [data])
        finally:
            bs.close()

    def cli(self, *args: str, stdin: str | None = None) -> Any:
        runner = CliRunner(env={**FAST_ENV, **self.env})
        return runner.invoke(main, [*args, "--data-dir", str(self.data_dir)], input=stdin)


def build_store(data_dir: Path, env: dict[str, str]) -> Store:
    config = make_config(data_dir, env)
    vault = open_vault(config)
    try:
        user_id = vault.create_user("alice", PASSWORD)
        s = vault.login("alice", PASSWORD)
        s.mkdir("/d")
        s.mkdir("/d/sub")
        for path, data in FILES.items():
            s.write_file(path, [data], len(data))
        s.set_props("/g.bin", {"{urn:x}color": "blue"})
        nodes = {p: s.stat(p).id for p in [*FILES, "/d", "/d/sub"]}
        with vault.index.connection():
            blobs = {p: Version.get_by_id(s.stat(p).version_id).blob_id for p in FILES}
    finally:
        vault.close()
    return Store(data_dir, env, config, nodes, blobs, user_id)


@pytest.fixture(params=["local", "s3"])
def store(request: Any, tmp_path: Path) -> Iterator[Store]:
    env: dict[str, str] = {}
    if request.param == "s3":
        env = s3_env(request.getfixturevalue("minio_server"), request.getfixturevalue("s3_bucket"))
    yield build_store(tmp_path / "data", env)


def run_json(store: Store, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    result = store.cli(*args, "--json", stdin=stdin)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def kinds(report: dict[str, Any], only_remaining: bool = False) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for p in report["problems"]:
        if only_remaining and p["repaired"]:
            continue
        out.setdefault(p["kind"], []).append(p["ids"])
    return out


def assert_no_names(text: str) -> None:
    for path in [*FILES, "/d/sub"]:
        assert path.rsplit("/", 1)[1] not in text
    assert "alice" not in text


def test_clean_store_exits_0(store: Store) -> None:
    code, report = run_json(store, "fsck")
    assert code == 0, report
    assert report["problems"] == [] and report["clean"]
    assert report["checked"]["nodes"] == len(FILES) + 3  # root, /d, /d/sub
    assert report["checked"]["versions"] == len(FILES)
    assert report["checked"]["objects"] == len(FILES) - 1  # the small file is inline
    text = store.cli("fsck")
    assert text.exit_code == 0 and "0 problems" in text.output


def test_each_fault_is_found_named_and_the_derivable_ones_repaired(store: Store) -> None:
    bs = store.blob_store()
    try:
        bs.delete(store.blobs["/big.bin"])  # a deleted object
        orphan = os.urandom(16).hex()
        bs.put(orphan, [os.urandom(300)])  # an orphan
    finally:
        bs.close()
    truncated = store.blobs["/d/e.bin"]
    store.replace_object(truncated, store.read_object(truncated)[:-100])  # a truncated object
    with store.db() as db:
        # A wrong reference count: the blob of /g.bin queued as referenced by nothing.
        db.execute(
            "INSERT INTO blob_gc (blob_id, state, since) VALUES (?, 'dead', 0)",
            (store.blobs["/g.bin"],),
        )
        db.execute("UPDATE user SET usage_bytes = usage_bytes + 12345")  # a wrong usage total
        db.execute("PRAGMA foreign_keys = OFF")  # a node whose parent is gone
        db.execute("DELETE FROM node WHERE id = ?", (store.nodes["/d/sub"],))

    result = store.cli("fsck", "--json")
    assert result.exit_code == 1, result.output
    assert_no_names(result.stdout)
    found = kinds(json.loads(result.stdout))
    assert {k: len(v) for k, v in found.items()} == {
        "blob_missing": 1,
        "blob_truncated": 1,
        "orphan": 1,
        "refcount": 1,
        "usage": 1,
        "parent_missing": 1,
        # The deleted directory's dir_tree row stays behind, and the totals of /d and the
        # root still count the file below it that is now cut off.
        "dir_tree_stray": 1,
        "dir_bytes": 2,
    }
    assert found["dir_tree_stray"] == [{"node": store.nodes["/d/sub"]}]
    assert found["blob_missing"][0]["node"] == store.nodes["/big.bin"]
    assert found["blob_missing"][0]["blob"] == store.blobs["/big.bin"]
    assert found["blob_truncated"][0]["blob"] == truncated
    assert found["orphan"][0]["blob"] == orphan
    (orphan_problem,) = [p for p in json.loads(result.stdout)["problems"] if p["kind"] == "orphan"]
    assert "300 bytes" in orphan_problem["detail"] and " ago" in orphan_problem["detail"]
    assert found["refcount"][0]["blob"] == store.blobs["/g.bin"]
    assert found["usage"][0]["user"] == store.user_id
    assert found["parent_missing"][0] == {
        "node": store.nodes["/d/sub/f.bin"],
        "parent": store.nodes["/d/sub"],
    }
    text = store.cli("fsck")
    assert text.exit_code == 1 and "parent_missing" in text.output

    code, report = run_json(store, "fsck", "--repair")
    assert code == 1  # what is not derivable remains
    repaired = {p["kind"] for p in report["problems"] if p["repaired"]}
    assert repaired == {"orphan", "refcount", "usage", "dir_tree_stray", "dir_bytes"}
    code, report = run_json(store, "fsck")
    assert code == 1
    assert set(kinds(report)) == {"blob_missing", "blob_truncated", "parent_missing"}
    # The orphan is now tracked, so the collector removes it, and only it.
    config = make_config(store.data_dir, store.env)
    vault = open_vault(config)
    try:
        vault.collect_garbage(grace=0)
        left = set(vault.blobs.iter_ids())
    finally:
        vault.close()
    assert orphan not in left
    assert store.blobs["/g.bin"] in left and store.blobs["/d/e.bin"] in left


def test_repair_then_a_second_run_exits_0(store: Store) -> None:
    bs = store.blob_store()
    try:
        orphan = os.urandom(16).hex()
        bs.put(orphan, [os.urandom(100)])
    finally:
        bs.close()
    with store.db() as db:
        db.execute(
            "INSERT INTO blob_gc (blob_id, state, since) VALUES (?, 'dead', 0)",
            (store.blobs["/big.bin"],),
        )
        db.execute("UPDATE user SET usage_bytes = 7")
        db.execute("UPDATE node SET size = size + 1 WHERE id = ?", (store.nodes["/g.bin"],))
    code, report = run_json(store, "fsck")
    assert code == 1
    assert set(kinds(report)) == {"orphan", "refcount", "usage", "node_size"}
    code, report = run_json(store, "fsck", "--repair")
    assert code == 0, report  # everything was derivable
    assert all(p["repaired"] for p in report["problems"])
    code, report = run_json(store, "fsck")
    assert code == 0, report
    with store.db() as db:
        (usage,) = db.execute("SELECT usage_bytes FROM user").fetchone()
    assert usage == sum(len(d) for d in FILES.values())


def test_cycle_foreign_parent_and_missing_envelope(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    assert store.cli("user", "add", "bob", "--password-stdin", stdin="pw\n").exit_code == 0
    with store.db() as db:
        (bob,) = db.execute("SELECT id FROM user WHERE name = 'bob'").fetchone()
        db.execute("PRAGMA foreign_keys = OFF")
        # /d/sub becomes the parent of /d: a cycle cut off from the root.
        db.execute(
            "UPDATE node SET parent_id = ? WHERE id = ?", (store.nodes["/d/sub"], store.nodes["/d"])
        )
        # /g.bin handed to bob while it stays in alice's root.
        db.execute("UPDATE node SET owner_id = ? WHERE id = ?", (bob, store.nodes["/g.bin"]))
        db.execute("DELETE FROM envelope WHERE user_id = ?", (bob,))
    code, report = run_json(store, "fsck")
    assert code == 1
    found = kinds(report)
    cycles = {ids["node"] for ids in found["cycle"]}
    assert {store.nodes["/d"], store.nodes["/d/sub"]} <= cycles
    assert found["parent_owner"] == [
        {"node": store.nodes["/g.bin"], "parent": found["parent_owner"][0]["parent"]}
    ]
    assert found["no_password_envelope"] == [{"user": bob}]
    assert found["usage"]  # alice's total still counts /g.bin, bob's does not


def test_deep_finds_a_flipped_segment_byte_and_a_damaged_name(store: Store) -> None:
    big = store.blobs["/big.bin"]
    data = bytearray(store.read_object(big))
    data[56 + 65536 + 16 + 1000] ^= 0x01  # one byte inside the second segment
    store.replace_object(big, bytes(data))
    with store.db() as db:
        (name_ct,) = db.execute(
            "SELECT name_ct FROM node WHERE id = ?", (store.nodes["/d/e.bin"],)
        ).fetchone()
        damaged = bytearray(name_ct)
        damaged[-1] ^= 0x80
        db.execute(
            "UPDATE node SET name_ct = ? WHERE id = ?", (bytes(damaged), store.nodes["/d/e.bin"])
        )
    code, report = run_json(store, "fsck")
    assert code == 0, report  # same length, and names are ciphertext: only a key can tell
    code, report = run_json(
        store, "fsck", "--deep", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 1
    found = kinds(report)
    assert found.keys() == {"segment", "name"}, report
    assert found["segment"] == [
        {"node": store.nodes["/big.bin"], "version": found["segment"][0]["version"], "blob": big}
    ]
    assert found["name"] == [{"node": store.nodes["/d/e.bin"]}]
    assert report["checked"]["deep versions"] == len(FILES)
    assert_no_names(json.dumps(report))


def test_deep_on_a_clean_store_and_usage_errors(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    code, report = run_json(
        store, "fsck", "--deep", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, report
    assert report["checked"]["deep nodes"] == len(FILES) + 3
    wrong = store.cli("fsck", "--deep", "--user", "alice", "--password-stdin", stdin="nope\n")
    assert wrong.exit_code == 2 and "wrong user name or password" in wrong.output
    alone = store.cli("fsck", "--deep")
    assert alone.exit_code == 2 and "--user" in alone.output
    helptext = store.cli("fsck", "--help")
    assert "Exit codes: 0" in helptext.output


# -- versions and trash ----------------------------------------------------------------------
@dataclass
class History:
    trash_id: str
    trashed: dict[str, str]  # original path -> node id (the top-level items)
    versions: int  # version rows in all
    usage: int  # bytes of every version row


def add_history(store: Store) -> History:
    """Old versions (one restored: two rows share a blob, one labelled) and the trash: a
    folder with a nested folder and a file below it, and a lone file."""
    vault = open_vault(store.config)
    try:
        s = vault.login("alice", PASSWORD)
        for k in range(2):
            data = os.urandom(30_000 + k)
            s.write_file("/g.bin", [data], len(data))
        fileid = s.stat("/g.bin").fileid
        _, kept = s.versions(fileid)
        s.restore_version(fileid, kept[-1].version_no)
        s.set_version_label(fileid, kept[-1].version_no, "first")
        # A lock below the folder: the trash item seals it (trash_item.locks_ct).
        lock = {"scope": "exclusive", "type": "write", "depth": "0", "owner": "fsck test"}
        LockStore(vault).create(store.user_id, "/d/sub/f.bin", lock, 600)
        s.delete("/d/sub")
        s.delete("/big.bin")
        trashed = {"/d/sub": store.nodes["/d/sub"], "/big.bin": store.nodes["/big.bin"]}
        assert {i.entry.id for i in s.trash_items()} == set(trashed.values())
        with vault.index.connection():
            user = User.get_by_id(store.user_id)
            versions = Version.select().count()
            usage = sum(v.plain_size for v in Version.select(Version.plain_size))
        assert user.usage_bytes == usage
        return History(user.trash_id, trashed, versions, usage)
    finally:
        vault.close()


def test_versions_and_trash_are_clean_keyless_and_deep(store: Store) -> None:
    h = add_history(store)
    with store.db() as db:
        shared = db.execute(
            "SELECT COUNT(*) FROM (SELECT blob_id FROM version GROUP BY blob_id "
            "HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        (nodes,) = db.execute("SELECT COUNT(*) FROM node").fetchone()
    assert shared >= 1  # the restored version shares its blob with the old one
    code, report = run_json(store, "fsck")
    assert code == 0, report
    assert report["checked"]["nodes"] == nodes == len(FILES) + 4  # + the trash directory
    assert report["checked"]["versions"] == h.versions
    assert report["checked"]["trash items"] == len(h.trashed)
    code, report = run_json(
        store, "fsck", "--deep", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, report
    assert report["checked"]["deep nodes"] == nodes
    assert report["checked"]["deep versions"] == h.versions
    assert report["checked"]["deep origins"] == len(h.trashed)
    assert report["checked"]["deep trashed locks"] == 1
    assert report["checked"]["deep labels"] == 1


def test_trash_faults_and_fileids_are_found(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    h = add_history(store)
    with store.db() as db:
        db.execute("PRAGMA foreign_keys = OFF")
        # A trash item for a node of the live tree, and a trashed node without its row.
        db.execute(
            "INSERT INTO trash_item (node_id, owner_id, deleted_at, origin_ct) "
            "VALUES (?, ?, 0, x'00')",
            (store.nodes["/g.bin"], store.user_id),
        )
        db.execute("DELETE FROM trash_item WHERE node_id = ?", (h.trashed["/big.bin"],))
        # Two nodes with one fileid, one without any (the unique index dropped first).
        (index,) = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'node' "
            "AND sql LIKE '%fileid%'"
        ).fetchone()
        db.execute(f'DROP INDEX "{index}"')
        db.execute(
            "UPDATE node SET fileid = (SELECT fileid FROM node WHERE id = ?) WHERE id = ?",
            (store.nodes["/d/e.bin"], store.nodes["/small.txt"]),
        )
        db.execute("UPDATE node SET fileid = NULL WHERE id = ?", (store.nodes["/d"],))
    code, report = run_json(store, "fsck")
    assert code == 1
    found = kinds(report)
    assert set(found) == {
        "trash_item_misplaced",
        "trash_untracked",
        "fileid_duplicate",
        "fileid_missing",
    }, report
    assert found["trash_item_misplaced"][0]["node"] == store.nodes["/g.bin"]
    assert found["trash_untracked"] == [{"node": h.trashed["/big.bin"], "user": store.user_id}]
    assert {i["node"] for i in found["fileid_duplicate"]} == {
        store.nodes["/d/e.bin"],
        store.nodes["/small.txt"],
    }
    assert found["fileid_missing"] == [{"node": store.nodes["/d"]}]
    assert_no_names(json.dumps(report))


def test_a_lost_trash_directory_and_usage_repair_with_versions(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    h = add_history(store)
    live = sum(len(d) for p, d in FILES.items() if p not in ("/big.bin", "/d/sub/f.bin"))
    assert h.usage > live  # old versions and the trash count
    with store.db() as db:
        db.execute("UPDATE user SET usage_bytes = ?", (live,))  # the old definition's total
    code, report = run_json(store, "fsck", "--repair")
    assert code == 0, report
    assert set(kinds(report)) == {"usage"}
    with store.db() as db:
        assert db.execute("SELECT usage_bytes FROM user").fetchone()[0] == h.usage
        # The user forgets their trash: it becomes a parentless node that is no root.
        db.execute("UPDATE user SET trash_id = NULL")
    code, report = run_json(store, "fsck")
    assert code == 1
    found = kinds(report)
    assert found["parentless"] == [{"node": h.trash_id}], report
    assert {i["node"] for i in found["trash_item_misplaced"]} == set(h.trashed.values())
    assert "unreachable" not in found and "cycle" not in found  # below a parentless node


def test_deep_finds_damaged_origin_label_and_trash_key(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    h = add_history(store)

    def flip(sql_get: str, sql_set: str, *ids: str) -> None:
        with store.db() as db:
            (value,) = db.execute(sql_get, ids).fetchone()
            damaged = bytearray(value)
            damaged[-1] ^= 0x01
            db.execute(sql_set, (bytes(damaged), *ids))

    flip(
        "SELECT origin_ct FROM trash_item WHERE node_id = ?",
        "UPDATE trash_item SET origin_ct = ? WHERE node_id = ?",
        h.trashed["/big.bin"],
    )
    flip(
        "SELECT label_ct FROM version WHERE label_ct IS NOT NULL",
        "UPDATE version SET label_ct = ? WHERE label_ct IS NOT NULL",
    )
    flip(
        "SELECT locks_ct FROM trash_item WHERE node_id = ?",
        "UPDATE trash_item SET locks_ct = ? WHERE node_id = ?",
        h.trashed["/d/sub"],
    )
    code, report = run_json(store, "fsck")
    assert code == 0, report  # sealed records: only a key can tell
    deep = ("fsck", "--deep", "--user", "alice", "--password-stdin")
    code, report = run_json(store, *deep, stdin=PASSWORD + "\n")
    assert code == 1
    found = kinds(report)
    assert set(found) == {"origin", "label", "trashed_locks"}, report
    assert found["origin"] == [{"node": h.trashed["/big.bin"]}]
    assert found["trashed_locks"] == [{"node": h.trashed["/d/sub"]}]
    assert found["label"][0]["node"] == store.nodes["/g.bin"]
    flip(
        "SELECT key_env FROM node WHERE id = ?",
        "UPDATE node SET key_env = ? WHERE id = ?",
        h.trash_id,
    )
    code, report = run_json(store, *deep, stdin=PASSWORD + "\n")
    assert code == 1
    assert kinds(report)["trash_key"] == [{"user": store.user_id, "node": h.trash_id}]
    assert_no_names(json.dumps(report))


def test_unreachable_store_exits_3(tmp_path: Path, minio_server: Any, s3_bucket: str) -> None:
    env = s3_env(minio_server, s3_bucket)
    store = build_store(tmp_path / "data", env)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store.env["DAVSERVER_STORAGE_S3_ENDPOINT"] = f"127.0.0.1:{port}"
    result = store.cli("fsck")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    result = store.cli("scrub")
    assert result.exit_code == 3, result.output


def test_fsck_as_a_real_process(tmp_path: Path) -> None:
    store = build_store(tmp_path / "data", {})
    env = {**os.environ, **FAST_ENV, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "davserver.cli",
            "fsck",
            "--json",
            "--data-dir",
            str(store.data_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clean"] is True


@pytest.mark.postgres
def test_fsck_scrub_and_repair_on_postgresql(tmp_path: Path, postgres_db_url: str) -> None:
    import psycopg2

    store = build_store(tmp_path / "data", {"DAVSERVER_INDEX_URL": postgres_db_url})
    h = add_history(store)  # the trash and old versions, on PostgreSQL
    code, report = run_json(store, "fsck")
    assert code == 0, report
    assert report["checked"]["versions"] == h.versions
    assert report["checked"]["trash items"] == len(h.trashed)
    bs = store.blob_store()
    try:
        orphan = os.urandom(16).hex()
        bs.put(orphan, [os.urandom(64)])
    finally:
        bs.close()
    conn = psycopg2.connect(postgres_db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute('UPDATE "user" SET usage_bytes = usage_bytes - 1')
            cur.execute(
                "INSERT INTO blob_gc (blob_id, state, since) VALUES (%s, 'dead', 0)",
                (store.blobs["/d/e.bin"],),
            )
    finally:
        conn.close()
    code, report = run_json(store, "fsck")
    assert code == 1 and set(kinds(report)) == {"orphan", "refcount", "usage"}
    code, report = run_json(store, "fsck", "--repair")
    assert code == 0, report
    code, report = run_json(
        store, "fsck", "--deep", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, report
    code = store.cli("scrub").exit_code
    assert code == 0


def test_dir_tree_totals_and_rows_are_checked_and_recounted(store: Store) -> None:
    root = None
    with store.db() as db:
        (root,) = db.execute("SELECT root_id FROM user").fetchone()
        (changes_before,) = db.execute(
            "SELECT changes FROM dir_tree WHERE dir_id = ?", (store.nodes["/d"],)
        ).fetchone()
        db.execute("UPDATE dir_tree SET bytes = bytes + 5 WHERE dir_id = ?", (store.nodes["/d"],))
        db.execute("DELETE FROM dir_tree WHERE dir_id = ?", (store.nodes["/d/sub"],))
        db.execute(  # a row for a file
            "INSERT INTO dir_tree (dir_id, changes, bytes) VALUES (?, 0, 0)",
            (store.nodes["/g.bin"],),
        )
    code, report = run_json(store, "fsck")
    assert code == 1
    found = kinds(report)
    assert found == {
        "dir_bytes": [{"node": store.nodes["/d"]}],
        "dir_tree_missing": [{"node": store.nodes["/d/sub"]}],
        "dir_tree_stray": [{"node": store.nodes["/g.bin"]}],
    }, report
    assert_no_names(json.dumps(report))
    code, report = run_json(store, "fsck", "--repair")
    assert code == 0, report
    assert all(p["repaired"] for p in report["problems"])
    code, report = run_json(store, "fsck")
    assert code == 0, report
    with store.db() as db:
        rows = dict(db.execute("SELECT dir_id, bytes FROM dir_tree").fetchall())
        (changes_after,) = db.execute(
            "SELECT changes FROM dir_tree WHERE dir_id = ?", (store.nodes["/d"],)
        ).fetchone()
    assert rows[root] == sum(len(d) for d in FILES.values())
    assert rows[store.nodes["/d"]] == len(FILES["/d/e.bin"]) + len(FILES["/d/sub/f.bin"])
    assert rows[store.nodes["/d/sub"]] == len(FILES["/d/sub/f.bin"])
    assert store.nodes["/g.bin"] not in rows
    assert changes_after > changes_before  # a recounted directory's ETag changes
