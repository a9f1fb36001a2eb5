"""Pure pieces of the DAV layer: Range parsing, Basic credentials, lock URLs."""

from __future__ import annotations

import base64

import pytest

from davserver.dav.auth import client_address, parse_basic
from davserver.dav.handlers import parse_range
from davserver.dav.locks import lock_href, split_lock_url
from davserver.vault.locks import canonical_path
from davserver.vault.throttle import address_key, pair_key, user_key

UNSAT = (-1, -1)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=9-9", 10, (9, 9)),
        ("bytes=9-", 10, (9, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=2-100", 10, (2, 9)),
        ("BYTES = 1 - 2", 10, (1, 2)),
        ("bytes=10-", 10, UNSAT),
        ("bytes=-0", 10, UNSAT),
        ("bytes=0-0", 0, UNSAT),
        ("bytes=-1", 0, UNSAT),
        ("bytes=5-1", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("bytes=", 10, None),
        ("lines=1-2", 10, None),
    ],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


def b64(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_parse_basic() -> None:
    assert parse_basic(b64(b"alice:pa:ss")) == ("alice", "pa:ss")
    assert parse_basic(b64("jürgen:pässword".encode())) == ("jürgen", "pässword")
    assert parse_basic(b64(b"alice:")) == ("alice", "")
    for bad in (b64(b"nocolon"), b64(b"\xff:\xfe"), "Basic %%%", "Digest x", "", b64(b":pw")):
        assert parse_basic(bad) is None


def test_throttle_keys_normalise_names_and_addresses() -> None:
    assert user_key("café") == user_key("cafe\u0301")  # NFC, as the vault compares names
    assert pair_key("192.0.2.1", "café") == pair_key("192.0.2.1", "cafe\u0301")
    # One host commonly holds a whole IPv6 /64: it counts as one address.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1")


def test_client_address_behind_trusted_proxy() -> None:
    env = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2"}
    assert client_address(env, frozenset()) == "10.0.0.1"
    assert client_address(env, frozenset({"10.0.0.1"})) == "2.2.2.2"
    assert client_address(env, frozenset({"10.0.0.1", "2.2.2.2"})) == "1.1.1.1"
    env["HTTP_X_FORWARDED_FOR"] = "not-an-ip"
    assert client_address(env, frozenset({"10.0.0.1"})) == "10.0.0.1"


def test_lock_urls() -> None:
    uid = "0123456789abcdef0123456789abcdef"
    assert split_lock_url(f"/{uid}/a%20b/c") == (uid, "/a b/c")
    assert split_lock_url(f"/{uid}/") == (uid, "/")
    assert split_lock_url("/") == (None, "/")
    assert split_lock_url("/not-a-user/x") == (None, "/")
    assert lock_href(f"/{uid}/a%20b") == "/a%20b"
    assert canonical_path("a//b/") == "/a/b"
    assert canonical_path("/") == "/"
    assert canonical_path("/cafe\u0301") == "/café"
