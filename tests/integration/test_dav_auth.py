"""Authentication: Basic against the vault, malformed headers, isolation between users, and the
failed-login rate limit."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from davserver.index.models import LoginFailure
from tests.harness.davserver import DavServer, Response, basic, start_dav_server

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
        {
            "DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "3",
            "DAVSERVER_SECURITY_LOGIN_FAIL_PAIR_LIMIT": "3",
            "DAVSERVER_SECURITY_LOGIN_FAIL_WINDOW": "60",
        },
    )
    yield dav  # type: ignore[misc]
    dav.stop()


class Listening(Protocol):
    host: str
    port: int


def attempt(
    dav: Listening,
    user: str,
    password: str,
    *,
    source: str = "127.0.0.1",
    forwarded_for: str | None = None,
    authorization: str | None = None,
) -> Response:
    """One PROPFIND from a real source address (any 127/8 address is ours on Linux), or
    through the trusted proxy 127.0.0.1 on behalf of ``forwarded_for``."""
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=60, source_address=(source, 0))
    headers = {"Depth": "0", "Authorization": authorization or basic(user, password)}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        conn.request("PROPFIND", "/", headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        conn.close()


def test_failed_logins_are_rate_limited(limited: DavServer) -> None:
    password = limited.users["alice"]
    assert attempt(limited, "alice", password).status == 207  # logs in (and is cached)
    statuses = [attempt(limited, "alice", f"wrong{i}").status for i in range(3)]
    assert statuses == [401, 401, 401]
    r = attempt(limited, "alice", "wrong")
    assert r.status == 429
    assert 1 <= int(r.header("Retry-After") or 0) <= 60
    # The address is guessing: even the right password, cached or not, gets 429 there, or
    # the login cache would answer its guesses (a hit logs in) at one hash each.
    assert attempt(limited, "alice", password).status == 429


def test_rate_limit_per_client_address(limited: DavServer) -> None:
    # Guessing many user names from one address trips the per-address limit.
    statuses = [limited.client(f"user{i}", "x").propfind("/", "0").status for i in range(5)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[DavServer]:
    """Defaults for every limit (10 per address, 5 per pair, 10 per user, 300 s); requests
    from 127.0.0.1 come through a trusted proxy and name their client address."""
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_SERVER_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        yield dav
    finally:
        dav.stop()


def test_wrong_passwords_from_one_address_do_not_lock_the_user_out(dav_server: DavServer) -> None:
    """Eleven wrong passwords from 127.0.0.2 (a real, different source address), then the
    user's correct password from 127.0.0.1: it gets in, at once, and 127.0.0.2 stays
    refused."""
    password = dav_server.users["alice"]
    statuses = [
        attempt(dav_server, "alice", f"guess{i}", source="127.0.0.2").status for i in range(11)
    ]
    assert statuses == [401] * 5 + [429] * 6  # the pair limit (5 by default)
    started = time.monotonic()
    assert attempt(dav_server, "alice", password, source="127.0.0.1").status == 207
    assert time.monotonic() - started < 10  # verified at once, not after a lockout
    r = attempt(dav_server, "alice", password, source="127.0.0.2")
    assert r.status == 429 and int(r.header("Retry-After") or 0) >= 1


def test_many_guessing_addresses_cannot_lock_the_user_out(proxied: DavServer) -> None:
    """30 addresses guess alice (60 failures: far past the per-user limit). The guessers are
    held to two tries each on the guarded user; a clean address, and one that mistyped
    once, still get in with the right password."""
    dav = proxied
    password = dav.users["alice"]
    statuses = [
        attempt(dav, "alice", f"guess{i}-{j}", forwarded_for=f"203.0.113.{i}").status
        for i in range(30)
        for j in range(3)
    ]
    # The first three addresses try three times each (under the pair limit) until the 10th
    # failure guards alice; from then on, two tries per address and no more.
    assert statuses[:9] == [401] * 9
    for i in range(4, 30):
        assert statuses[3 * i : 3 * i + 3] == [401, 401, 429], i
    assert statuses.count(401) == 9 + 2 + 26 * 2
    assert attempt(dav, "alice", "typo", forwarded_for="198.51.100.7").status == 401
    assert attempt(dav, "alice", password, forwarded_for="198.51.100.7").status == 207
    assert attempt(dav, "alice", password, forwarded_for="198.51.100.8").status == 207
    assert attempt(dav, "alice", password, forwarded_for="203.0.113.29").status == 429


def test_malformed_headers_count_against_nobody(proxied: DavServer) -> None:
    dav = proxied
    password = dav.users["alice"]
    malformed = [
        "Basic %%%",
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b":pw").decode(),  # no name
        "Basic",
    ]
    for _ in range(10):
        for header in malformed:
            r = attempt(dav, "alice", "", forwarded_for="192.0.2.1", authorization=header)
            assert r.status == 400
    # Fifty malformed headers later, neither the address nor alice is counted as guessing.
    assert attempt(dav, "alice", "wrong", forwarded_for="192.0.2.1").status == 401
    assert attempt(dav, "alice", password, forwarded_for="192.0.2.1").status == 207
    with dav.vault.index.connection():
        # Only the one wrong password counted (address, user, pair); the success then
        # cleared the pair's row. The 50 malformed headers left none.
        assert LoginFailure.select().count() == 2


def test_login_log_names_no_user(proxied: DavServer, caplog: pytest.LogCaptureFixture) -> None:
    """Failed and refused logins are logged with a keyed tag, never the name or an unkeyed
    hash of it that a log reader could recompute for guessed names."""
    name = "mallory-the-user"
    with caplog.at_level("INFO"):
        for _ in range(7):
            attempt(proxied, name, "nope", forwarded_for="192.0.2.9")
    text = caplog.text
    assert "login failed" in text and "login refused" in text
    raw = name.encode()
    for leak in (
        name,
        hashlib.blake2b(raw, digest_size=16).hexdigest()[:8],
        hashlib.blake2b(raw, digest_size=16).hexdigest()[8:16],
        hashlib.blake2b(raw).hexdigest()[:8],
        hashlib.sha256(raw).hexdigest()[:8],
        hashlib.sha1(raw).hexdigest()[:8],
        hashlib.md5(raw).hexdigest()[:8],
    ):
        assert leak not in text, leak
    from davserver.vault.throttle import LoginThrottle

    tag = LoginThrottle(proxied.vault, 10, 300).log_tag(name)
    assert f"user tag {tag}" in text  # the keyed tag is there: lines can be correlated


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


def test_counter_write_failure_still_answers_the_login(
    dav_server: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    """If the index refuses the counter write (a full disk; here a trigger that aborts every
    insert into login_failure), a wrong password is still a 401 and a right one a 207."""
    db = dav_server.vault.index.db
    with dav_server.vault.index.connection():
        db.execute_sql(
            "CREATE TRIGGER refuse_failures BEFORE INSERT ON login_failure "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    with caplog.at_level("WARNING"):
        assert attempt(dav_server, "alice", "wrong").status == 401
    assert "could not update the failed-login counters" in caplog.text
    assert attempt(dav_server, "alice", dav_server.users["alice"]).status == 207


def test_no_lockout_across_forked_workers(tmp_path: Path) -> None:
    """Two `davserver serve` worker processes on one index: eleven wrong passwords from
    127.0.0.2, spread over both by the kernel, refuse that address whichever worker answers,
    and the right password from 127.0.0.1 still gets in."""
    from tests.integration.test_dav_server import ServeProcess

    served = ServeProcess(tmp_path, {"DAVSERVER_SERVER_WORKERS": "2"})
    try:
        statuses = [attempt(served, "alice", f"g{i}", source="127.0.0.2").status for i in range(11)]
        assert statuses == [401] * 5 + [429] * 6
        assert attempt(served, "alice", served.password, source="127.0.0.1").status == 207
        assert attempt(served, "alice", served.password, source="127.0.0.2").status == 429
    finally:
        code, _out, err = served.stop()
    assert code == 0, err


def test_an_ipv6_slash64_counts_as_one_address(proxied: DavServer) -> None:
    """One host commonly holds a whole /64: hopping through it does not reset the count."""
    statuses = [
        attempt(proxied, "alice", "wrong", forwarded_for=f"2001:db8:1:2::{i:x}").status
        for i in range(1, 7)
    ]
    assert statuses == [401] * 5 + [429]  # the pair limit, across six addresses of one /64
    assert attempt(proxied, "alice", "wrong", forwarded_for="2001:db8:1:3::1").status == 401
