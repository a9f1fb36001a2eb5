"""``davserver index migrate``: a restored backup moved into a real PostgreSQL and back to
SQLite, served after each move (every file reads back); a non-empty target is refused."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2

from davserver.config import load
from tests.harness.davserver import start_dav_server
from tests.integration.test_backup import Writer, _check_history, _populate, _serve_and_check
from tests.integration.test_gc_cli import run_cli


def _pg_rows(url: str, table: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT COUNT(*) FROM "{table}"')
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_restore_then_migrate_to_postgresql_and_back(tmp_path: Path, postgres_db_url: str) -> None:
    dav = start_dav_server(tmp_path / "data")
    password = dav.users["alice"]
    try:
        files = _populate(dav)
        props = dav.client("alice").request(
            "PROPPATCH",
            "/hello.txt",
            '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:z="urn:x">'
            "<d:set><d:prop><z:color>blue</z:color></d:prop></d:set></d:propertyupdate>",
            {"Content-Type": "application/xml"},
        )
        assert props.status == 207
    finally:
        dav.stop()
    bk = tmp_path / "bk"
    r = run_cli(["backup", str(bk), "--include-pepper", "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "restored"
    r = run_cli(["restore", str(bk), "--data-dir", str(restored)])
    assert r.returncode == 0, r.stderr

    r = run_cli(
        ["index", "migrate", "--to", postgres_db_url, "--json", "--data-dir", str(restored)]
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    manifest = json.loads((bk / "manifest.json").read_text())
    assert result["tables"] == manifest["tables"]
    assert result["fsck"]["clean"] is True  # the keyless fsck of the new index
    assert _pg_rows(postgres_db_url, "version") == manifest["tables"]["version"]
    assert _pg_rows(postgres_db_url, "trash_item") == manifest["tables"]["trash_item"] == 2
    secret = urlsplit(postgres_db_url).password
    assert not secret or secret not in r.stdout + r.stderr  # the URL is shown masked
    backups = list(restored.glob("davserver.yaml.bak-*"))
    assert len(backups) == 1
    assert load(backups[0], {}).index.url.startswith("sqlite:///")
    assert load(restored / "davserver.yaml", {}).index.url == postgres_db_url
    assert "# " in (restored / "davserver.yaml").read_text()  # comments survive the rewrite

    dav2 = _serve_and_check(restored, password, files)
    try:
        _check_history(dav2.vault, password)  # on PostgreSQL now
        alice = dav2.client("alice")
        listing = alice.propfind("/docs", depth="1")
        assert listing.status == 207
        assert "report-copy.bin" in listing.text
        got = alice.propfind(
            "/hello.txt",
            depth="0",
            body='<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:z="urn:x">'
            "<d:prop><z:color/></d:prop></d:propfind>",
        )
        assert "blue" in got.text
        assert alice.put("/docs/new-in-pg.bin", b"x" * 30_000).status == 201
        files["/docs/new-in-pg.bin"] = b"x" * 30_000
        # Failed logins get new rows (an autoincrement id): the sequence was moved past the
        # copied ids.
        assert dav2.client("alice", "wrong").get("/hello.txt").status == 401
        # gc on the PostgreSQL index: exactly a planted orphan (byte-order merge there too).
        orphan = secrets.token_hex(16)
        dav2.vault.blobs.put(orphan, [b"o" * 700])
        gc = run_cli(["gc", "--dry-run", "--json", "--grace", "0", "--data-dir", str(restored)])
        assert gc.returncode == 0, gc.stderr
        listed = [i["id"] for i in json.loads(gc.stdout)["would_remove"] if i["kind"] == "orphan"]
        assert listed == [orphan]
        dav2.vault.blobs.delete(orphan)
        # A backup of the PostgreSQL index while this server runs and a client writes: one
        # REPEATABLE READ export into the backup's SQLite file, restored and served below.
        writer = Writer(dav2)
        writer.start()
        while len(writer.acked) < 3:
            writer.join(0.05)
            assert not writer.errors, writer.errors
        before_backup = {p: d for p, d in writer.acked.items() if p not in writer.deleted}
        r = run_cli(["backup", str(tmp_path / "bk-pg"), "--data-dir", str(restored)])
        writer.stop.set()
        writer.join(60)
        assert r.returncode == 0, r.stderr
        assert not writer.errors, writer.errors
    finally:
        dav2.stop()
    files.update({p: d for p, d in before_backup.items() if p not in writer.deleted})
    pg_manifest = json.loads((tmp_path / "bk-pg" / "manifest.json").read_text())
    assert pg_manifest["index_source"] == "postgresql"
    assert pg_manifest["tables"]["version"] > manifest["tables"]["version"] + 1  # + the writer
    r = run_cli(
        [
            "restore",
            str(tmp_path / "bk-pg"),
            "--pepper",
            str(restored / "pepper"),
            "--data-dir",
            str(tmp_path / "from-pg"),
        ]
    )
    assert r.returncode == 0, r.stderr
    dav4 = _serve_and_check(tmp_path / "from-pg", password, files)
    try:
        _check_history(dav4.vault, password)
    finally:
        dav4.stop()

    # And back: PostgreSQL -> a new SQLite file.
    r = run_cli(
        ["index", "migrate", "--to", "sqlite:///index-back.db", "--data-dir", str(restored)]
    )
    assert r.returncode == 0, r.stderr
    assert (restored / "index-back.db").is_file()
    dav3 = _serve_and_check(restored, password, files)
    try:
        _check_history(dav3.vault, password)
    finally:
        dav3.stop()


def test_migrate_refuses_a_non_empty_target(tmp_path: Path, postgres_db_url: str) -> None:
    for name in ("one", "two"):
        dav = start_dav_server(tmp_path / name)
        try:
            assert dav.client("alice").put("/a.bin", os.urandom(30_000)).status == 201
        finally:
            dav.stop()
    r = run_cli(["index", "migrate", "--to", postgres_db_url, "--data-dir", str(tmp_path / "one")])
    assert r.returncode == 0, r.stderr
    nodes = _pg_rows(postgres_db_url, "node")
    config_before = (tmp_path / "two" / "davserver.yaml").read_text()

    r = run_cli(["index", "migrate", "--to", postgres_db_url, "--data-dir", str(tmp_path / "two")])
    assert r.returncode == 2
    assert "not empty" in r.stderr
    assert "Traceback" not in r.stderr
    assert _pg_rows(postgres_db_url, "node") == nodes
    assert (tmp_path / "two" / "davserver.yaml").read_text() == config_before
    assert not list((tmp_path / "two").glob("davserver.yaml.bak-*"))

    # An unreachable target: exit 3, nothing changed.
    r = run_cli(
        [
            "index",
            "migrate",
            "--to",
            "postgresql://nobody:secret@127.0.0.1:9/none",
            "--data-dir",
            str(tmp_path / "two"),
        ]
    )
    assert r.returncode == 3, r.stderr
    assert "secret" not in r.stderr
    assert (tmp_path / "two" / "davserver.yaml").read_text() == config_before


def test_rewrite_index_url_keeps_every_other_line() -> None:
    from davserver.admin.migrate import rewrite_index_url

    text = (
        "# top comment\ndata_dir: .\nindex:\n  # the database\n  url: sqlite:///index.db\n"
        "security:\n  pepper_file: pepper\n"
    )
    out = rewrite_index_url(text, "postgresql://u:p@h:5432/d")
    assert out == text.replace("sqlite:///index.db", '"postgresql://u:p@h:5432/d"')
    assert rewrite_index_url("data_dir: .\n", "sqlite:///x.db") == (
        'data_dir: .\nindex:\n  url: "sqlite:///x.db"\n'
    )
    no_url = "index:\nsecurity:\n  pepper_file: pepper\n"
    assert rewrite_index_url(no_url, "sqlite:///y.db").startswith('index:\n  url: "sqlite:///y.db"')
