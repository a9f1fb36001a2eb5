"""The login flow's pure parts: the sealing of what a flow row holds, the client's name from
its User-Agent, and the server's base URL from a request."""

from __future__ import annotations

import secrets

import pytest

from davserver.crypto import AuthenticationFailed
from davserver.crypto import loginflow as lfc
from davserver.web.loginflow import _same_origin, client_name
from davserver.web.origin import base_url, origin_of

KEY = bytes(range(32))


def test_only_the_poll_token_opens_the_result() -> None:
    poll, other = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    poll_mac = lfc.token_mac(KEY, b"poll", poll)
    assert len(poll_mac) == 32 and poll_mac != lfc.token_mac(KEY, b"login", poll)
    public, secret = lfc.flow_keys()
    server_public, server_secret = lfc.server_keys(bytes(32))
    sealed_secret = lfc.seal_flow_secret(secret, poll, poll_mac)
    result = lfc.seal_result(b'{"appPassword": "x"}', public, server_secret)
    opened = lfc.open_flow_secret(sealed_secret, poll, poll_mac)
    assert lfc.open_result(result, opened, server_public) == b'{"appPassword": "x"}'
    with pytest.raises(AuthenticationFailed):
        lfc.open_flow_secret(sealed_secret, other, poll_mac)  # another poll token
    with pytest.raises(AuthenticationFailed):
        lfc.open_flow_secret(sealed_secret, poll, lfc.token_mac(KEY, b"poll", other))  # moved
    with pytest.raises(AuthenticationFailed):
        lfc.open_flow_secret(sealed_secret, "é" * 20, poll_mac)  # not a token at all
    # a result sealed by anyone but the server does not open
    forged = lfc.seal_result(b"{}", public, lfc.server_keys(bytes([1]) * 32)[1])
    with pytest.raises(AuthenticationFailed):
        lfc.open_result(forged, opened, server_public)
    with pytest.raises(AuthenticationFailed):
        lfc.open_result(result[:-1], opened, server_public)


def test_the_client_name_is_sealed_under_the_login_token() -> None:
    login = secrets.token_urlsafe(32)
    mac = lfc.token_mac(KEY, b"login", login)
    sealed = lfc.seal_client("Nextcloud desktop 3.7.3", login, mac)
    assert b"Nextcloud" not in sealed
    assert lfc.open_client(sealed, login, mac) == "Nextcloud desktop 3.7.3"
    with pytest.raises(AuthenticationFailed):
        lfc.open_client(sealed, secrets.token_urlsafe(32), mac)


def test_the_row_tag_covers_every_public_value() -> None:
    args = (b"p" * 32, b"l" * 32, b"k" * 32, 1700000000)
    tag = lfc.row_tag(KEY, *args)
    for i in range(4):
        changed = list(args)
        changed[i] = 1 if i == 3 else b"x" * 32  # type: ignore[call-overload]
        assert lfc.row_tag(KEY, *changed) != tag  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("agent", "name"),
    [
        (
            "Mozilla/5.0 (Linux) mirall/3.7.3 (Nextcloud, ubuntu-6.5.0 ClientArchitecture: x86_64)",
            "Nextcloud desktop 3.7.3 (Linux)",
        ),
        ("Mozilla/5.0 (Windows) mirall/3.11.0daily", "Nextcloud desktop 3.11.0daily (Windows)"),
        ("Mozilla/5.0 (Android) Nextcloud-android/3.26.0", "Nextcloud Android 3.26.0 (Android)"),
        ("Mozilla/5.0 (iOS) Nextcloud-iOS/5.0.1", "Nextcloud iOS 5.0.1 (iOS)"),
        ("curl/8.5.0", "curl/8.5.0"),
        ("a\x00b\r\nc\td", "a b c d"),
        ("", "an unnamed client"),
        ("x" * 500, "x" * 100),
    ],
)
def test_client_names(agent: str, name: str) -> None:
    assert client_name(agent) == name


def _env(**kw: str) -> dict[str, str]:
    return {"wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1", "SCRIPT_NAME": "", **kw}


def test_base_url_takes_forwarded_headers_from_trusted_proxies_only() -> None:
    fwd = {
        "HTTP_HOST": "10.0.0.5:8080",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "Cloud.Example.org, other",
    }
    assert base_url(_env(**fwd), frozenset()) == "http://10.0.0.5:8080"
    assert base_url(_env(**fwd), frozenset({"127.0.0.1"})) == "https://cloud.example.org"
    assert base_url(_env(HTTP_HOST="h:1", SCRIPT_NAME="/dav/"), frozenset()) == "http://h:1/dav"
    assert base_url(_env(HTTP_HOST="[::1]:8080"), frozenset()) == "http://[::1]:8080"
    no_host = _env(SERVER_NAME="srv", SERVER_PORT="80")
    assert base_url(no_host, frozenset()) == "http://srv"
    for bad in ("a b", "evil/x", "h:port", "", "h@x"):
        with pytest.raises(ValueError):
            base_url(_env(HTTP_HOST=bad), frozenset())


def test_same_origin_compares_default_ports_away() -> None:
    assert origin_of("https://h.example/sub") == "https://h.example"
    assert _same_origin("https://h.example", "https://h.example:443")
    assert _same_origin("http://H.example:8080", "http://h.example:8080")
    assert not _same_origin("https://h.example", "http://h.example")
    assert not _same_origin("null", "http://h.example")
    assert not _same_origin("http://h.example:8081", "http://h.example:8080")
