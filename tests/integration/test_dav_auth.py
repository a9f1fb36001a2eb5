"""Authentication: Basic against the vault, malformed headers, isolation between users, and the
failed-login rate limit."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from tests.harness.davserver import DavServer, Response, start_dav_server

LOCK_BODY = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
)


def test_missing_credentials_get_401_with_realm(dav_server: DavServer) -> None:
    anon = dav_server.client()
    for method in ("GET", "PROPFIND", "PUT", "OPTIONS"):
        r = anon.request(method, "/")
        assert r.status == 401
        assert r.header("WWW-Authenticate") == 'Basic realm="davserver"'


def test_wrong_password_and_unknown_user_get_401(dav_server: DavServer) -> None:
    r = dav_server.client("alice", "wrong").propfind("/", "0")
    assert (
        r.status == 401
        and r.header(
            "WWW-Authenticate",
        )
        is not None
    )
    assert dav_server.client("mallory", "x").propfind("/", "0").status == 401


def test_digest_is_not_offered(dav_server: DavServer) -> None:
    r = dav_server.client().request(
        "GET", "/", headers={"Authorization": 'Digest username="alice", realm="davserver"'}
    )
    assert r.status == 401
    assert (r.header("WWW-Authenticate") or "").startswith("Basic ")


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice:pw").decode()[:-2],  # bad padding
        "Basic",
        "Basic    ",
        "Basic " + base64.b64encode(b":password").decode(),  # empty user
        "Basic " + base64.b64encode(b"al\x00ice:pw").decode(),
        "Bearer abc",
        "garbage",
    ],
)
def test_malformed_authorization_is_400_or_401(dav_server: DavServer, header: str) -> None:
    r = dav_server.client().request(
        "PROPFIND", "/", headers={"Authorization": header, "Depth": "0"}
    )
    assert r.status in (400, 401), r.status


def test_each_user_sees_only_their_own_tree(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    bob = dav_server.add_user("bob")
    alice.mkcol("/private")
    alice.put("/private/diary.txt", b"alice's secret")
    alice.put("/top.txt", b"alice top")
    # bob's "/" is empty; alice's names do not exist for him.
    r = bob.propfind("/", "1")
    assert r.status == 207 and b"diary" not in r.body and b"top.txt" not in r.body
    for path in ("/private/diary.txt", "/top.txt", "/private/"):
        assert bob.get(path).status == 404
        assert bob.propfind(path, "0").status == 404
    # Nor can bob lock it: for him /private does not exist.
    assert bob.request("LOCK", "/private/diary.txt", LOCK_BODY, {"Depth": "0"}).status == 409
    # Writing the "same" path creates bob's own file and leaves alice's alone.
    assert bob.put("/top.txt", b"bob top").status == 201
    assert alice.get("/top.txt").body == b"alice top"
    assert bob.get("/top.txt").body == b"bob top"
    assert bob.delete("/private/diary.txt").status == 404
    assert bob.move("/top.txt", "/private/x").status == 409
    assert alice.get("/private/diary.txt").body == b"alice's secret"
    # Bob's lock on his /top.txt does not lock alice's /top.txt.
    r = bob.request("LOCK", "/top.txt", LOCK_BODY, {"Depth": "0", "Timeout": "Second-600"})
    assert r.status == 200
    assert alice.put("/top.txt", b"alice again").status == 204
    assert alice.request("LOCK", "/top.txt", LOCK_BODY, {"Depth": "0"}).status == 200


def test_existence_cannot_be_probed(dav_server: DavServer) -> None:
    """Another user's paths answer exactly like paths nobody has."""
    alice = dav_server.client("alice")
    bob = dav_server.add_user("bob")
    alice.mkcol("/exists")

    def shape(r: Response, name: bytes) -> tuple[int, bytes]:
        body = re.sub(rb"\d{4}-\d\d-\d\d [\d:.]+", b"T", r.body.replace(name, b"X"))
        return r.status, body

    assert shape(bob.propfind("/exists", "0"), b"exists") == shape(
        bob.propfind("/never", "0"), b"never"
    )
    assert shape(bob.get("/exists/f"), b"exists") == shape(bob.get("/never/f"), b"never")


@pytest.fixture
def limited(tmp_path: Path) -> DavServer:
    dav = start_dav_server(
        tmp_path / "data",
        {"DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "3", "DAVSERVER_SECURITY_LOGIN_FAIL_WINDOW": "60"},
    )
    yield dav  # type: ignore[misc]
    dav.stop()


def test_failed_logins_are_rate_limited(limited: DavServer) -> None:
    good = limited.client("alice")
    assert good.propfind("/", "0").status == 207  # logs in (and is cached)
    bad = limited.client("alice", "wrong")
    assert [bad.propfind("/", "0").status for _ in range(3)] == [401, 401, 401]
    r = bad.propfind("/", "0")
    assert r.status == 429
    assert int(r.header("Retry-After") or 0) >= 1
    # The right password still works at once (no Argon2id is run while limited, but a
    # recent correct login is recognised).
    started = time.monotonic()
    assert good.propfind("/", "0").status == 207
    assert time.monotonic() - started < 1.0


def test_rate_limit_per_client_address(limited: DavServer) -> None:
    # Guessing many user names from one address trips the per-address limit.
    statuses = [limited.client(f"user{i}", "x").propfind("/", "0").status for i in range(5)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]


def test_access_log_has_no_names_or_credentials(
    dav_server: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = dav_server.client("alice")
    password = dav_server.users["alice"]
    with caplog.at_level("INFO"):
        alice.mkcol("/SecretFolderName")
        alice.put("/SecretFolderName/TopSecretFile.txt", b"x")
        dav_server.client("alice", "WrongPassw0rd").propfind("/", "0")
    text = caplog.text
    assert "davserver.access" in text and "PUT 201" in text
    for secret in (
        "SecretFolderName",
        "TopSecretFile",
        password,
        "WrongPassw0rd",
        "alice",
        "Authorization",
        "Basic ",
    ):
        assert secret not in text, secret
