"""Device tokens and recovery codes against real servers (DESIGN §13): Basic auth with a
token, without Argon2id; tokens outlive password changes; revocation, expiry and edited
rows refuse at once, also in another worker process; a recovery code resets the password
once and never logs in."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from davserver import metrics
from davserver.crypto import tokens as tokenfmt
from davserver.errors import AuthError
from davserver.index.models import Envelope
from tests.harness.davserver import DavClient, DavServer, start_dav_server
from tests.integration.test_dav_auth import attempt
from tests.integration.test_dav_server import ServeProcess


def argon2_runs() -> float:
    (family,) = metrics.get().argon2_duration.collect()
    return next(s.value for s in family.samples if s.name.endswith("_count"))


def logins(kind: str, result: str) -> float:
    (family,) = metrics.get().logins.collect()
    return sum(
        s.value
        for s in family.samples
        if s.name.endswith("_total") and s.labels == {"kind": kind, "result": result}
    )


def token_client(dav: DavServer, token: str, user: str = "alice") -> DavClient:
    return DavClient(dav.url, user, token)


def new_token(dav: DavServer, **kw: object) -> tuple[str, str]:
    return dav.vault.create_token("alice", dav.users["alice"], "phone", **kw)  # type: ignore[arg-type]


def test_basic_auth_with_a_token_without_argon2id(dav_server: DavServer) -> None:
    _token_id, token = new_token(dav_server)
    before, ok = argon2_runs(), logins("token", "success")
    c = token_client(dav_server, token)
    assert c.put("/t.txt", b"by token").status == 201
    assert c.get("/t.txt").body == b"by token"
    listing = c.propfind("/", "1")
    assert listing.status == 207 and "t.txt" in listing.text
    # Fresh connections each time, a second client: the cache and the envelope, no Argon2id.
    for _ in range(3):
        assert token_client(dav_server, token).get("/t.txt").status == 200
    assert argon2_runs() == before
    assert logins("token", "success") == ok + 1  # one envelope opened, then the cache
    assert dav_server.client("alice").get("/t.txt").body == b"by token"  # same tree


def test_a_token_of_another_user_or_a_wrong_secret_is_refused(dav_server: DavServer) -> None:
    dav_server.add_user("bob")
    _token_id, token = new_token(dav_server)
    assert token_client(dav_server, token, "bob").propfind("/", "0").status == 401
    parsed = tokenfmt.decode(token)
    assert parsed is not None
    wrong = tokenfmt.encode(parsed.envelope_id, secrets.token_bytes(32))
    before = argon2_runs()
    assert token_client(dav_server, wrong).propfind("/", "0").status == 401
    unknown = tokenfmt.encode(secrets.token_bytes(16), secrets.token_bytes(32))
    assert token_client(dav_server, unknown).propfind("/", "0").status == 401
    assert argon2_runs() == before  # token-shaped text is never tried as a password
    assert token_client(dav_server, token).propfind("/", "0").status == 207


def test_a_password_change_keeps_tokens(dav_server: DavServer) -> None:
    _token_id, token = new_token(dav_server)
    assert token_client(dav_server, token).put("/a", b"1").status == 201
    dav_server.vault.change_password("alice", dav_server.users["alice"], "brand new")
    assert token_client(dav_server, token).get("/a").body == b"1"
    assert dav_server.client("alice", "brand new").get("/a").status == 200


def test_revocation_refuses_at_once(dav_server: DavServer) -> None:
    token_id, token = new_token(dav_server)
    other_id, other = new_token(dav_server)
    assert token_client(dav_server, token).propfind("/", "0").status == 207  # now cached
    dav_server.vault.revoke_token("alice", token_id)
    assert token_client(dav_server, token).propfind("/", "0").status == 401
    assert token_client(dav_server, other).propfind("/", "0").status == 207
    assert [t.id for t in dav_server.vault.list_tokens("alice")] == [other_id]


def test_expired_tokens_are_refused(dav_server: DavServer) -> None:
    _token_id, token = new_token(dav_server, expires=time.time() + 1)
    assert token_client(dav_server, token).propfind("/", "0").status == 207  # cached
    (info,) = dav_server.vault.list_tokens("alice")
    assert info.expires is not None  # whole seconds, rounded up
    time.sleep(max(0.0, info.expires - time.time()) + 0.2)
    assert token_client(dav_server, token).propfind("/", "0").status == 401
    with pytest.raises(AuthError):
        dav_server.vault.login("alice", token)


@pytest.mark.parametrize(
    "edit",
    [
        {"perms": "rw"},  # a read-only token made read-write
        {"expires": None},  # an expiring token made eternal
        {"expires": time.time() + 10 * 86400},  # or later
        {"kind": "recovery"},
    ],
    ids=["perms", "no-expiry", "later-expiry", "kind"],
)
def test_a_row_edited_in_the_database_no_longer_opens(
    dav_server: DavServer, edit: dict[str, object]
) -> None:
    token_id, token = new_token(dav_server, perms="ro", expires=time.time() + 86400)
    assert token_client(dav_server, token).propfind("/", "0").status == 207  # cached
    with dav_server.vault.index.connection():
        assert Envelope.update(**edit).where(Envelope.id == token_id).execute() == 1
    assert token_client(dav_server, token).propfind("/", "0").status == 401
    with pytest.raises(AuthError):
        dav_server.vault.login("alice", token)


def test_token_failures_count_for_the_throttle(tmp_path: Path) -> None:
    dav = start_dav_server(
        tmp_path / "data",
        {
            "DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "3",
            "DAVSERVER_SECURITY_LOGIN_FAIL_PAIR_LIMIT": "3",
            "DAVSERVER_SECURITY_LOGIN_FAIL_WINDOW": "60",
        },
    )
    try:
        guesses = [
            tokenfmt.encode(secrets.token_bytes(16), secrets.token_bytes(32)) for _ in range(4)
        ]
        statuses = [attempt(dav, "alice", g, source="127.0.0.3").status for g in guesses]
        assert statuses == [401, 401, 401, 429]
    finally:
        dav.stop()


def test_basic_auth_refuses_a_recovery_code_and_the_code_resets_once(
    dav_server: DavServer,
) -> None:
    old = dav_server.users["alice"]
    alice = dav_server.client("alice")
    files = {f"/r/f{i}.bin": secrets.token_bytes(1000 * i + 1) for i in range(5)}
    assert alice.mkcol("/r").status == 201
    for path, data in files.items():
        assert alice.put(path, data).status == 201
    _tid, token = new_token(dav_server)
    code = dav_server.vault.create_recovery_code("alice", old)
    assert DavClient(dav_server.url, "alice", code).propfind("/", "0").status == 401

    dav_server.vault.reset_password_with_recovery("alice", code, "after reset")
    fresh = dav_server.client("alice", "after reset")
    for path, data in files.items():
        assert fresh.get(path).body == data
    assert dav_server.client("alice", old).propfind("/", "0").status == 401
    assert token_client(dav_server, token).get("/r/f1.bin").body == files["/r/f1.bin"]
    with pytest.raises(AuthError):
        dav_server.vault.reset_password_with_recovery("alice", code, "again")
    assert [t.kind for t in dav_server.vault.list_tokens("alice")] == ["token"]


def test_a_scoped_token_sees_only_its_directory(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    assert alice.mkcol("/shared").status == 201
    assert alice.put("/shared/in.txt", b"in").status == 201
    assert alice.put("/out.txt", b"out").status == 201
    _tid, token = new_token(dav_server, scope="/shared", perms="ro")
    c = token_client(dav_server, token)
    assert c.get("/in.txt").body == b"in"
    assert c.get("/out.txt").status == 404
    assert c.put("/new.txt", b"x").status in (401, 403)


# -- another worker process --------------------------------------------------------------


def _cli(served: ServeProcess, *args: str, stdin: str = "") -> str:
    r = subprocess.run(
        [sys.executable, "-m", "davserver.cli", *args, "--data-dir", str(served.data_dir)],
        input=stdin,
        text=True,
        env=served.env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _revoked_in_every_worker(tmp_path: Path, env: dict[str, str]) -> None:
    lenient = {  # every refusal a 401 here, not a 429 after five
        "DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "100",
        "DAVSERVER_SECURITY_LOGIN_FAIL_PAIR_LIMIT": "100",
        "DAVSERVER_SECURITY_LOGIN_FAIL_USER_LIMIT": "100",
    }
    served = ServeProcess(tmp_path, {"DAVSERVER_SERVER_WORKERS": "2", **lenient, **env})
    try:
        token = _cli(
            served,
            "token",
            "add",
            "alice",
            "--label",
            "sync",
            "--password-stdin",
            stdin=served.password + "\n",
        ).strip()
        (row,) = json.loads(_cli(served, "token", "list", "alice", "--json"))
        token_id = row["id"]
        # Fresh connections: the kernel spreads them over both workers, which each open
        # the envelope once and cache the session.
        for _ in range(12):
            assert DavClient(served.url, "alice", token).propfind("/", "0").status == 207
        _cli(served, "token", "revoke", "alice", token_id)
        statuses = [
            DavClient(served.url, "alice", token).propfind("/", "0").status for _ in range(12)
        ]
        assert statuses == [401] * 12
        assert served.client().propfind("/", "0").status == 207
    finally:
        code, _out, err = served.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_revocation_reaches_every_worker_process(tmp_path: Path) -> None:
    _revoked_in_every_worker(tmp_path, {})


@pytest.mark.postgres
def test_revocation_reaches_every_worker_process_on_postgres(
    tmp_path: Path, postgres_db_url: str
) -> None:
    _revoked_in_every_worker(tmp_path, {"DAVSERVER_INDEX_URL": postgres_db_url})


def test_an_upload_only_token_adds_files_and_nothing_else(dav_server: DavServer) -> None:
    """The camera-upload case, with a real token over HTTP: new files and date folders go
    in; reading, listing, overwriting and deleting are 403."""
    alice = dav_server.client("alice")
    assert alice.mkcol("/Photos").status == 201
    assert alice.put("/Photos/old.jpg", b"old").status == 201
    _tid, token = new_token(dav_server, scope="/Photos", perms="wo")
    cam = token_client(dav_server, token)
    assert cam.propfind("/", "0").status == 207  # the folder is there
    assert cam.mkcol("/2026-12").status == 201
    assert cam.put("/2026-12/new.jpg", b"new photo").status == 201
    assert cam.get("/2026-12/new.jpg").status == 403
    assert cam.get("/old.jpg").status == 403
    assert cam.propfind("/", "1").status == 403
    assert cam.propfind("/2026-12", "1").status == 403
    assert cam.put("/old.jpg", b"overwritten").status == 403
    assert cam.put("/2026-12/new.jpg", b"again").status == 403
    assert cam.delete("/old.jpg").status == 403
    assert cam.move("/old.jpg", "/moved.jpg").status == 403
    assert alice.get("/Photos/2026-12/new.jpg").body == b"new photo"
    assert alice.get("/Photos/old.jpg").body == b"old"


def test_a_read_only_scoped_token_reads_its_folder_and_nothing_outside(
    dav_server: DavServer,
) -> None:
    alice = dav_server.client("alice")
    assert alice.mkcol("/Docs").status == 201
    assert alice.put("/Docs/in.txt", b"inside").status == 201
    assert alice.mkcol("/Secret").status == 201
    assert alice.put("/Secret/s.txt", b"outside").status == 201
    _tid, token = new_token(dav_server, scope="/Docs", perms="ro")
    c = token_client(dav_server, token)
    assert c.get("/in.txt").body == b"inside"
    listing = c.propfind("/", "1")
    assert listing.status == 207 and "in.txt" in listing.text and "Secret" not in listing.text
    for path in ("/Secret/s.txt", "/Docs/in.txt", "/../Secret/s.txt"):
        assert c.get(path).status in (400, 404), path
    assert c.get("/remote.php/dav/files/alice/in.txt").body == b"inside"
    assert c.put("/new.txt", b"x").status == 403
    assert c.delete("/in.txt").status == 403
    assert alice.get("/Docs/in.txt").body == b"inside"
