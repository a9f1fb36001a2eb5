"""``davserver trash list|restore|purge`` and ``davserver versions list|restore`` on a real
data directory (local blobs + SQLite), and the acceptance test of issue 11: a real ``rclone
purge`` of a 500-file tree against a real server, undone by one ``trash restore --since``.

Deletions happen through the vault with its clock set (``vault.clock``), so that time
windows are exact; the CLI then runs in-process (``CliRunner``) once the vault is closed, or
as a process of its own while a server runs in this one (the index binds its models per
process).
"""

from __future__ import annotations

import filecmp
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from davserver.cli import main
from davserver.cli.history import Selection, clean_location, restore_order
from davserver.cli.sizes import parse_when
from davserver.errors import Conflict
from davserver.runtime import open_vault
from davserver.vault import Vault
from davserver.vault.tree import Session
from tests.harness.davserver import FAST_ENV, make_config, start_dav_server
from tests.harness.rclone import Rclone
from tests.harness.serve import process_env

PASSWORD = "pw-alice-zq9"
HOUR = 3600.0
# Deletions and versions are dated from ten hours ago on (whole minutes): inside every
# retention's reach, so nothing expires while a test runs.
T0 = (time.time() // 60) * 60 - 10 * HOUR


# --- parsing and selecting (no vault) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00Z", datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()),
        ("2026-12-01T10:00:30+01:00", datetime(2026, 12, 1, 9, 0, 30, tzinfo=UTC)),
        ("30m", 1_000_000 - 1800),
        ("2h", 1_000_000 - 7200),
        ("7d", 1_000_000 - 7 * 86400),
        ("1w ago", 1_000_000 - 7 * 86400),
        ("90s", 1_000_000 - 90),
    ],
)
def test_parse_when(text: str, expected: float | datetime) -> None:
    if isinstance(expected, datetime):
        expected = expected.timestamp()
    assert parse_when(text, now=1_000_000) == expected


def test_parse_when_reads_local_time_without_a_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        cet = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()  # 10:00 in Berlin
        assert parse_when("2026-12-01T10:00") == cet
        assert parse_when("2026-12-01") == cet - 10 * HOUR  # midnight in Berlin
        assert parse_when("2026-12-01T10:00Z") == cet + HOUR
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("text", ["", "yesterday", "10", "2026", "2026-13-01", "5x", "-2h"])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_when(text)


class _Item:
    def __init__(self, name: str, loc: str, at: float) -> None:
        self.name, self.original_location, self.deleted_at, self.entry = name, loc, at, None


def test_selection_and_restore_order() -> None:
    items = [
        _Item("b.jpg", "Photos/2024/b.jpg", 10),
        _Item("Photos", "Photos", 20),
        _Item("Photos2", "Photos2", 20),
        _Item("a.txt", "a.txt", 5),
        _Item("a.txt.d30", "a.txt", 30),
    ]
    pick = Selection(prefix=clean_location("/Photos/")).pick(items)
    assert [i.name for i in pick[0]] == ["b.jpg", "Photos"]
    assert Selection(since=10, until=20).pick(items)[0] == items[:3]
    # To the second: a time copied from the listing (seconds shown) includes its item.
    late = _Item("late", "late", 20.7)
    assert Selection(until=20).matches(late) and Selection(since=20.9).matches(late)
    assert not Selection(until=19.99).matches(late)
    assert Selection(names=("a.txt", "nope")).pick(items) == ([items[3]], ["nope"])
    order = [i.name for i in restore_order(items)]
    # Depth first (a folder before what was deleted from it), then the newest deletion.
    assert order == ["a.txt.d30", "Photos", "Photos2", "a.txt", "b.jpg"]


# --- a data directory with a user whose deletions happen at known times -------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    with opened(d) as vault:
        vault.create_user("alice", PASSWORD)
        vault.create_user("bob", "pw-bob")
    return d


@contextmanager
def opened(data_dir: Path) -> Iterator[Vault]:
    vault = open_vault(make_config(data_dir))
    try:
        yield vault
    finally:
        vault.close()


@contextmanager
def alice(data_dir: Path) -> Iterator[tuple[Vault, Session]]:
    with opened(data_dir) as vault:
        yield vault, vault.login("alice", PASSWORD)


def put(s: Session, path: str, data: bytes) -> None:
    s.write_file(path, [data], len(data))


def read(s: Session, path: str) -> bytes:
    with s.open_file(path) as r:
        data: bytes = r.read_all()
        return data


def cli(data_dir: Path, *args: str, password: str | None = PASSWORD) -> Result:
    """The CLI in-process; the password (if any) on stdin."""
    extra = ["--password-stdin"] if password is not None else []
    result = CliRunner(env=FAST_ENV).invoke(
        main,
        [*args, *extra, "--data-dir", str(data_dir)],
        input=None if password is None else password + "\n",
    )
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def cli_json(data_dir: Path, *args: str, code: int = 0, **kw: Any) -> Any:
    r = cli(data_dir, *args, "--json", **kw)
    assert r.exit_code == code, r.output
    return json.loads(r.stdout)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mass_delete(data_dir: Path) -> None:
    """Three deletions an hour apart: Photos/old.jpg (T0), then the folder Photos with
    Photos/new.jpg and Photos/2024/c.jpg (T0+1h), then Docs/report.txt (T0+2h)."""
    with alice(data_dir) as (vault, s):
        for d in ("/Photos", "/Photos/2024", "/Docs"):
            s.mkdir(d)
        put(s, "/Photos/old.jpg", b"old" * 1000)
        put(s, "/Photos/new.jpg", b"new" * 2000)
        put(s, "/Photos/2024/c.jpg", b"c" * 50_000)
        put(s, "/Docs/report.txt", b"report")
        put(s, "/keep.txt", b"keep")
        for offset, path in ((0, "/Photos/old.jpg"), (1, "/Photos"), (2, "/Docs/report.txt")):
            vault.clock = lambda t=T0 + offset * HOUR: t
            s.delete(path)


def test_trash_list_with_filters(data_dir: Path) -> None:
    mass_delete(data_dir)
    items = cli_json(data_dir, "trash", "list", "alice")
    assert [(i["original_location"], i["kind"]) for i in items] == [
        ("Docs/report.txt", "file"),
        ("Photos", "dir"),
        ("Photos/old.jpg", "file"),
    ]  # newest deletion first
    assert items[0]["deleted_at"] == iso(T0 + 2 * HOUR)
    assert items[0]["size"] == len(b"report")
    assert items[2]["size"] == 3000
    window = ("--since", iso(T0 + HOUR / 2), "--until", iso(T0 + 3 * HOUR))
    assert len(cli_json(data_dir, "trash", "list", "alice", *window)) == 2
    in_photos = cli_json(data_dir, "trash", "list", "alice", "--path", "/Photos")
    assert {i["original_location"] for i in in_photos} == {"Photos", "Photos/old.jpg"}
    assert cli_json(data_dir, "trash", "list", "alice", "--path", "Phot") == []
    assert cli_json(data_dir, "trash", "list", "bob", password="pw-bob") == []

    table = cli(data_dir, "trash", "list", "alice")
    assert table.exit_code == 0
    for word in ("TRASH NAME", "ORIGINAL LOCATION", "Docs/report.txt", "dir", "6 B"):
        assert word in table.stdout, table.stdout
    for item in items:  # trash names are never folded: they are copied into commands
        assert item["name"] in table.stdout
    r = cli(data_dir, "trash", "list", "bob", password="pw-bob")
    assert r.exit_code == 0 and "empty" in r.stdout


def test_restore_a_time_window_folder_first(data_dir: Path) -> None:
    """Photos/old.jpg was deleted before its folder: restoring both puts the folder back
    first and the file back inside it, not at the top under another name."""
    mass_delete(data_dir)
    window = ("--since", iso(T0), "--until", iso(T0 + HOUR))

    dry = cli_json(data_dir, "trash", "restore", "alice", *window, "--dry-run")
    assert dry["dry_run"] and dry["failed"] == 0
    assert [i["original_location"] for i in dry["items"]] == ["Photos", "Photos/old.jpg"]
    assert len(cli_json(data_dir, "trash", "list", "alice")) == 3  # nothing changed

    done = cli_json(data_dir, "trash", "restore", "alice", *window)
    assert (done["done"], done["failed"]) == (2, 0)
    assert [i["restored_to"] for i in done["items"]] == ["/Photos", "/Photos/old.jpg"]
    with alice(data_dir) as (_, s):
        assert read(s, "/Photos/old.jpg") == b"old" * 1000
        assert read(s, "/Photos/new.jpg") == b"new" * 2000
        assert read(s, "/Photos/2024/c.jpg") == b"c" * 50_000
        assert sorted(e.name for e in s.list_dir("/")) == ["Docs", "Photos", "keep.txt"]
        assert s.list_dir("/Docs") == []
    left = cli_json(data_dir, "trash", "list", "alice")
    assert [i["original_location"] for i in left] == ["Docs/report.txt"]

    table = cli(data_dir, "trash", "restore", "alice", "--path", "Docs")
    assert table.exit_code == 0, table.output
    assert "RESTORED TO" in table.stdout and "/Docs/report.txt" in table.stdout
    assert cli_json(data_dir, "trash", "list", "alice") == []
    r = cli(data_dir, "trash", "restore", "alice", "--since", "1h")
    assert r.exit_code == 0 and "Nothing in the trash matches" in r.stdout


def test_restore_by_name_reports_failures_and_goes_on(data_dir: Path) -> None:
    mass_delete(data_dir)
    names = {
        i["original_location"]: i["name"] for i in cli_json(data_dir, "trash", "list", "alice")
    }
    r = cli(data_dir, "trash", "restore", "alice", "no-such-item", names["Docs/report.txt"])
    assert r.exit_code == 1, r.output
    assert "'no-such-item' is not in the trash" in r.output
    out = cli_json(data_dir, "trash", "restore", "alice", "gone-too", code=1)
    assert (out["done"], out["failed"], out["missing"]) == (0, 1, ["gone-too"])
    with alice(data_dir) as (_, s):
        assert read(s, "/Docs/report.txt") == b"report"  # restored despite the bad name


def test_one_failed_restore_does_not_stop_the_others(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item the vault refuses (here: made to fail) is reported, the rest come back."""
    mass_delete(data_dir)
    real = Session.trash_restore

    def flaky(self: Session, name: str) -> str:
        if name.startswith("old.jpg"):
            raise Conflict("the disk said no")
        return real(self, name)

    monkeypatch.setattr(Session, "trash_restore", flaky)
    out = cli_json(data_dir, "trash", "restore", "alice", code=1)
    assert (out["done"], out["failed"]) == (2, 1)
    (bad,) = [i for i in out["items"] if i["error"]]
    assert (bad["original_location"], bad["error"], bad["restored_to"]) == (
        "Photos/old.jpg",
        "the disk said no",
        None,
    )
    r = cli(data_dir, "trash", "restore", "alice")
    assert r.exit_code == 1 and "FAILED:" in r.stdout
    assert "1 of 1 item(s) failed" in r.stderr
    with alice(data_dir) as (_, s):
        assert read(s, "/Photos/new.jpg") == b"new" * 2000
        assert read(s, "/Docs/report.txt") == b"report"
        assert not s.exists("/Photos/old.jpg")


def test_purge_selected_all_and_by_age(data_dir: Path) -> None:
    mass_delete(data_dir)
    dry = cli_json(data_dir, "trash", "purge", "alice", "--path", "Photos", "--dry-run")
    assert [i["original_location"] for i in dry["items"]] == ["Photos/old.jpg", "Photos"]
    assert len(cli_json(data_dir, "trash", "list", "alice")) == 3
    done = cli_json(data_dir, "trash", "purge", "alice", "--until", iso(T0 + HOUR / 2))
    assert [i["original_location"] for i in done["items"]] == ["Photos/old.jpg"]
    assert done["items"][0]["status"] == "purged"
    assert len(cli_json(data_dir, "trash", "list", "alice")) == 2

    r = cli(data_dir, "trash", "purge", "alice")  # nothing selected: refused
    assert r.exit_code == 2 and "--all" in r.output
    # Admin, without the password: by age alone (the two left were deleted 9 and 8 h ago).
    with alice(data_dir) as (_, s):
        put(s, "/fresh.txt", b"fresh")
        s.delete("/fresh.txt")  # now: younger than a day
    r = cli(data_dir, "trash", "purge", "alice", "--older-than", "1d", password=None)
    assert r.exit_code == 0 and "Purged 0 trash item" in r.stdout
    out = cli_json(data_dir, "trash", "purge", "alice", "--older-than", "5h", password=None)
    assert out["purged"] == 2
    assert [i["original_location"] for i in cli_json(data_dir, "trash", "list", "alice")] == [
        "fresh.txt"
    ]
    r = cli(data_dir, "trash", "purge", "alice", "--all")
    assert r.exit_code == 0 and "fresh.txt" in r.stdout
    assert cli_json(data_dir, "trash", "list", "alice") == []
    with alice(data_dir) as (_, s):
        assert read(s, "/keep.txt") == b"keep"


def test_bad_input_is_a_message_and_an_exit_code(data_dir: Path) -> None:
    mass_delete(data_dir)
    cases: list[tuple[tuple[str, ...], str | None, int, str]] = [
        (("trash", "list", "nobody"), PASSWORD, 1, "no user named 'nobody'"),
        (("trash", "list", "alice"), "wrong", 1, "wrong password for 'alice'"),
        (("trash", "restore", "alice"), "wrong", 1, "wrong password"),
        (("versions", "list", "alice", "/keep.txt"), "wrong", 1, "wrong password"),
        (("trash", "list", "alice", "--since", "yesterday"), PASSWORD, 2, "not a time"),
        (("trash", "restore", "alice", "--until", "2026-02-30"), PASSWORD, 2, "--until"),
        (("trash", "list", "alice", "--since", "1h", "--until", "2h"), PASSWORD, 2, "later"),
        (("trash", "purge", "alice", "--older-than", "soon"), None, 2, "bad duration"),
        (("trash", "purge", "nobody", "--older-than", "1d"), None, 1, "no user named"),
        (("trash", "purge", "alice", "--older-than", "1d", "--path", "x"), None, 2, "alone"),
        (("trash", "purge", "alice", "--all", "--path", "x"), PASSWORD, 2, "--all"),
        (("versions", "list", "alice", "/nope.txt"), PASSWORD, 1, "no file /nope.txt"),
        (("versions", "list", "alice", "/Docs"), PASSWORD, 1, "is a folder"),
        (("versions", "restore", "alice", "/keep.txt", "99"), PASSWORD, 1, "no version 99"),
        (("versions", "restore", "alice", "/keep.txt", "one"), PASSWORD, 2, "VERSION_NO"),
    ]
    for args, password, code, message in cases:
        r = cli(data_dir, *args, password=password)
        assert (r.exit_code, message in r.output) == (code, True), (args, r.output)
    # Without --password-stdin the password is asked for once, and not echoed.
    r = CliRunner(env=FAST_ENV).invoke(
        main, ["trash", "list", "alice", "--data-dir", str(data_dir)], input=PASSWORD + "\n"
    )
    assert r.exit_code == 0, r.output
    assert "Password of 'alice'" in r.output and PASSWORD not in r.output


def test_versions_list_and_restore(data_dir: Path) -> None:
    contents = [b"first", b"second, longer", b"third" * 10_000]
    with alice(data_dir) as (vault, s):
        for n, data in enumerate(contents):
            vault.clock = lambda t=T0 + n * 2 * HOUR: t
            put(s, "/notes.txt", data)
    listed = cli_json(data_dir, "versions", "list", "alice", "notes.txt")
    assert listed["path"] == "/notes.txt"
    kept = listed["versions"]
    assert [v["size"] for v in kept] == [len(c) for c in reversed(contents)]  # newest first
    assert [v["current"] for v in kept] == [True, False, False]
    oldest = kept[-1]["version_no"]
    table = cli(data_dir, "versions", "list", "alice", "/notes.txt")
    assert table.exit_code == 0 and "current" in table.stdout and "VERSION" in table.stdout

    out = cli_json(data_dir, "versions", "restore", "alice", "/notes.txt", str(oldest))
    assert out["restored_version_no"] == oldest and out["size"] == len(contents[0])
    with alice(data_dir) as (_, s):
        assert read(s, "/notes.txt") == b"first"
    after = cli_json(data_dir, "versions", "list", "alice", "/notes.txt")["versions"]
    assert after[0]["current"] and after[0]["version_no"] == out["current_version_no"]
    assert after[0]["size"] == len(contents[0])
    assert len(after) == 4  # the restore is a new version; the one it replaced is kept
    r = cli(data_dir, "versions", "restore", "alice", "/notes.txt", str(kept[0]["version_no"]))
    assert r.exit_code == 0, r.output
    assert "Restored version" in r.stdout
    with alice(data_dir) as (_, s):
        assert read(s, "/notes.txt") == contents[2]
        s.delete("/notes.txt")
    # A file in the trash keeps its versions; --in-trash names it by its trash name.
    (item,) = cli_json(data_dir, "trash", "list", "alice")
    trashed = cli_json(data_dir, "versions", "list", "alice", item["name"], "--in-trash")
    assert trashed["fileid"] == listed["fileid"] and len(trashed["versions"]) == 5
    r = cli(data_dir, "versions", "list", "alice", "/notes.txt")
    assert r.exit_code == 1 and "no file /notes.txt in the tree" in r.output


def test_user_list_and_quota_show_live_versions_and_trash(data_dir: Path) -> None:
    with alice(data_dir) as (vault, s):
        vault.clock = lambda: T0
        put(s, "/a.bin", b"a" * 30_000)
        vault.clock = lambda: T0 + 2 * HOUR
        put(s, "/a.bin", b"b" * 20_000)  # the first is kept as a version
        put(s, "/gone.bin", b"g" * 7_000)
        s.delete("/gone.bin")
        live, kept, trash = vault.usage_breakdown("alice")
    assert (live, kept, trash) == (20_000, 30_000, 7_000)
    users = {u["name"]: u for u in cli_json(data_dir, "user", "list", password=None)}
    a = users["alice"]
    assert (a["live_bytes"], a["versions_bytes"], a["trash_bytes"]) == (20_000, 30_000, 7_000)
    assert a["usage_bytes"] == 57_000
    assert (users["bob"]["live_bytes"], users["bob"]["trash_bytes"]) == (0, 0)
    r = cli(data_dir, "user", "list", password=None)
    assert r.exit_code == 0
    for word in ("FILES", "VERSIONS", "TRASH", "29.3 KiB", "6.8 KiB"):
        assert word in r.stdout, r.stdout
    r = cli(data_dir, "user", "quota", "alice", "1G", password=None)
    assert r.exit_code == 0 and "versions 29.3 KiB" in r.stdout and "trash 6.8 KiB" in r.stdout
    q = cli_json(data_dir, "user", "quota", "alice", "1G", password=None)
    assert q["trash_bytes"] == 7_000


# --- the acceptance test: rclone purge, undone by one command ------------------------------


def run_cli(data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """The CLI in a process of its own (a server runs in this one)."""
    proc = subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args, "--data-dir", str(data_dir)],
        input=stdin,
        text=True,
        env=process_env({"COLUMNS": "200"}),
        capture_output=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


def make_tree(root: Path, files: int = 500) -> None:
    """``files`` files in nested folders (up to four levels deep), 0 to 200 KB each."""
    rng = random.Random(11)
    sizes = [0, 1, 17, 4096, 16_384, 16_385, 65_536, 200_000]
    for i in range(files):
        depth = i % 5
        parts = [f"d{(i // 7) % 4}", f"sub{(i // 3) % 3}", f"deep {i % 2}", "leaf"][:depth]
        d = root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d} é.bin").write_bytes(rng.randbytes(sizes[i % len(sizes)]))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")
def test_rclone_purge_of_500_files_is_undone_by_one_restore(tmp_path: Path) -> None:
    """Issue 11's acceptance test: real rclone, real server, one CLI command, every byte."""
    src, back = tmp_path / "src", tmp_path / "back"
    make_tree(src)
    assert sum(1 for p in src.rglob("*") if p.is_file()) == 500
    dav = start_dav_server(tmp_path / "data", users=())
    try:
        dav.add_user("alice", PASSWORD)
        rc = Rclone(dav.url, "owncloud", "alice", PASSWORD, tmp_path / "rc")
        rc.run("copy", str(src), ":webdav:tree", "--transfers", "8", timeout=600)
        rc.run("check", str(src), ":webdav:tree", timeout=600)
        before = time.time()
        # First the files of one folder one by one (rclone delete leaves the folders), then
        # the whole tree: the files' original folders are themselves in the trash by then.
        rc.run("delete", ":webdav:tree/d1", "--checkers", "8", timeout=600)
        singles = sum(1 for p in (src / "d1").rglob("*") if p.is_file())
        assert singles > 50
        rc.run("purge", ":webdav:tree", timeout=600)
        assert rc.run("lsf", ":webdav:", check=False).stdout.strip() == ""
        code, out, err = run_cli(
            dav.data_dir,
            "trash",
            "restore",
            "alice",
            "--since",
            iso(before - 1),
            "--password-stdin",
            "--json",
            stdin=PASSWORD + "\n",
        )
        assert code == 0, out + err
        report = json.loads(out)
        assert (report["done"], report["failed"]) == (singles + 1, 0), report
        went = [i["restored_to"] for i in report["items"]]
        assert went[0] == "/tree"  # the folder first, then every file back inside it
        assert all(w.startswith("/tree/d1/") for w in went[1:]), went
        assert PASSWORD not in out + err
        rc.run("copy", ":webdav:tree", str(back), timeout=600)
        rc.run("check", str(src), ":webdav:tree", timeout=600)
    finally:
        dav.stop()
    count = 0
    for path in src.rglob("*"):
        if path.is_file():
            twin = back / path.relative_to(src)
            assert twin.is_file(), twin
            assert filecmp.cmp(path, twin, shallow=False), twin
            count += 1
    assert count == 500
    assert sum(1 for p in back.rglob("*") if p.is_file()) == 500
