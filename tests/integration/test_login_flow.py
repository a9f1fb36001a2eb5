"""Nextcloud's Login Flow v2 and the OCS app-password endpoints against a real server, driven
the way the Nextcloud desktop client (3.7) and a browser drive them (issue 12, point 4).

The client POSTs ``/index.php/login/v2``, opens the login URL in a browser and polls; the
"browser" here fetches the page, parses the form with an HTML parser, keeps the CSRF cookie
and submits the user's name and password; the app password the poll delivers is then used
for WebDAV. Every request goes on a fresh connection, as a browser and a client would send
them, so with ``server.workers`` = 2 the kernel spreads them over both processes.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import logging
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from davserver.index.models import LoginFailure, LoginFlow
from davserver.vault.loginflow import LIFETIME, MAX_PER_ADDRESS, LoginFlows
from tests.harness.davserver import DavServer, Response, basic, start_dav_server

DESKTOP = "Mozilla/5.0 (Linux) mirall/3.7.3 (Nextcloud, ubuntu-6.5.0 ClientArchitecture: x86_64)"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
START = "/index.php/login/v2"
POLL = "/index.php/login/v2/poll"


@dataclass
class Server:
    """What the tests need of a server: where it is and alice's password."""

    url: str
    password: str
    vault: Any = None

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request on a fresh connection to the absolute ``url``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        conn.close()


def start_flow(server: Server, user_agent: str = DESKTOP) -> dict[str, Any]:
    resp = request(server.base + START, "POST", b"", {"User-Agent": user_agent})
    assert resp.status == 200, resp.text
    assert (resp.header("Content-Type") or "").startswith("application/json")
    assert resp.header("Cache-Control") == "no-store"
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


def poll(doc: dict[str, Any], token: str | None = None) -> Response:
    form = urlencode({"token": doc["poll"]["token"] if token is None else token}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": DESKTOP,
    }
    return request(doc["poll"]["endpoint"], "POST", form, headers)


class FormParser(HTMLParser):
    """The inputs of the page's form (name -> value, the checked radio for radios)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.inputs: dict[str, str] = {}
        self.radios: dict[str, list[str]] = {}
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "input" and "name" in a:
            if a.get("type") == "radio":
                self.radios.setdefault(a["name"], []).append(a.get("value", ""))
                if "checked" in a:
                    self.inputs[a["name"]] = a.get("value", "")
            else:
                self.inputs[a["name"]] = a.get("value", "")


@dataclass
class Browser:
    """A browser with a cookie jar (by name; the cookies' paths are the flow's own)."""

    cookies: dict[str, str] = field(default_factory=dict)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"User-Agent": BROWSER}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**h, **(extra or {})}

    def _keep(self, resp: Response) -> None:
        for value in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]

    def get(self, url: str) -> tuple[Response, FormParser]:
        resp = request(url, "GET", None, self._headers())
        self._keep(resp)
        parser = FormParser()
        parser.feed(resp.text)
        return resp, parser

    def post(self, url: str, form: dict[str, str], extra: dict[str, str] | None = None) -> Response:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": origin,
            "Sec-Fetch-Site": "same-origin",
            **(extra or {}),
        }
        resp = request(url, "POST", urlencode(form).encode(), self._headers(headers))
        self._keep(resp)
        return resp


def log_in(
    server: Server,
    doc: dict[str, Any],
    password: str | None = None,
    access: str | None = None,
    browser: Browser | None = None,
) -> Response:
    """The user opens the login URL and submits the form."""
    browser = browser or Browser()
    page, form = browser.get(doc["login"])
    assert page.status == 200, page.text
    fields = dict(form.inputs)
    fields["user"] = "alice"
    fields["password"] = server.password if password is None else password
    if access is not None:
        fields["access"] = access
    return browser.post(doc["login"], fields)


def propfind(server: Server, user: str, password: str, path: str = "") -> int:
    headers = {"Authorization": basic(user, password), "Depth": "0"}
    url = f"{server.base}/remote.php/dav/files/{user}/{path}"
    return request(url, "PROPFIND", None, headers).status


def ocs(
    server: Server, method: str, path: str, password: str, version: int = 2
) -> tuple[Response, dict[str, Any]]:
    headers = {
        "Authorization": basic("alice", password),
        "OCS-APIREQUEST": "true",
        "User-Agent": DESKTOP,
        "Accept": "application/json",
    }
    resp = request(f"{server.base}/ocs/v{version}.php/core/{path}", method, None, headers)
    is_json = (resp.header("Content-Type") or "").startswith("application/json")
    doc = json.loads(resp.body)["ocs"] if is_json else {}
    return resp, doc


@pytest.fixture
def server(dav_server: DavServer) -> Server:
    return Server(dav_server.url, dav_server.users["alice"], dav_server.vault)


# -- the desktop client's flow, end to end -----------------------------------------------------
def run_desktop_flow(server: Server) -> str:
    """The whole flow as the desktop client and a browser run it; the app password."""
    doc = start_flow(server)
    assert set(doc) == {"poll", "login"} and set(doc["poll"]) == {"token", "endpoint"}
    assert doc["poll"]["endpoint"] == server.base + "/index.php/login/v2/poll"
    assert doc["login"].startswith(server.base + "/index.php/login/v2/flow/")
    assert poll(doc).status == 404  # not approved yet
    done = log_in(server, doc)
    assert done.status == 200, done.text
    assert "You can close this window" in done.text
    got = poll(doc)
    assert got.status == 200, got.text
    creds = json.loads(got.body)
    assert set(creds) == {"server", "loginName", "appPassword"}
    assert creds["server"] == server.base and creds["loginName"] == "alice"
    assert creds["appPassword"].startswith("wdvt_")
    assert poll(doc).status == 404  # exactly once
    return str(creds["appPassword"])


def test_the_desktop_clients_flow_gives_a_working_app_password(server: Server) -> None:
    token = run_desktop_flow(server)
    assert propfind(server, "alice", token) == 207
    assert propfind(server, "alice", "wdvt_" + "A" * 43) == 401
    with server.vault.index.connection():
        assert LoginFlow.select().count() == 0  # delivered: the row is gone


def test_the_page_of_a_used_flow_is_gone(server: Server) -> None:
    doc = start_flow(server)
    assert log_in(server, doc).status == 200
    again, form = Browser().get(doc["login"])
    assert again.status == 404 and "csrf" not in form.inputs
    assert log_in_status(doc) == 404  # nor can it be submitted again
    assert poll(doc).status == 200


def log_in_status(doc: dict[str, Any]) -> int:
    return request(doc["login"], "POST", b"user=alice&password=x", {}).status


def test_read_only_access_gives_a_read_only_token(server: Server) -> None:
    doc = start_flow(server)
    assert log_in(server, doc, access="read").status == 200
    token = json.loads(poll(doc).body)["appPassword"]
    assert propfind(server, "alice", token) == 207
    (info,) = server.vault.list_tokens("alice")
    assert info.perms == "ro" and info.label == "Nextcloud desktop 3.7.3 (Linux)"
    if importlib.util.find_spec("davserver.vault.perms") is None:
        return  # sessions enforce perms from the "scoped" branch on (davserver.vault.perms)
    put = request(
        server.base + "/remote.php/dav/files/alice/x.txt",
        "PUT",
        b"x",
        {"Authorization": basic("alice", token)},
    )
    assert put.status == 403, put.status


def test_polls_before_approval_unknown_and_malformed_tokens_are_404(server: Server) -> None:
    doc = start_flow(server)
    for _ in range(3):
        assert poll(doc).status == 404
    assert poll(doc, "A" * 64).status == 404
    assert poll(doc, "short").status == 404
    assert poll(doc, "").status == 404
    no_body = request(doc["poll"]["endpoint"], "POST", b"", {})
    assert no_body.status == 404
    # a GET of the poll endpoint is not the protocol; neither is a GET of the start
    assert request(doc["poll"]["endpoint"]).status == 405
    assert request(server.base + START).status == 405
    # an unknown login token: the same "not valid" page as a used one
    page, _ = Browser().get(server.base + "/index.php/login/v2/flow/" + "x" * 43)
    assert page.status == 404


def test_a_flow_expires_after_twenty_minutes(server: Server, dav_server: DavServer) -> None:
    vault = dav_server.vault
    pending, approved, untouched = start_flow(server), start_flow(server), start_flow(server)
    assert log_in(server, approved).status == 200
    real = vault.clock
    vault.clock = lambda: real() + LIFETIME + 1
    try:
        assert poll(approved).status == 404  # approved, but too late
        assert poll(pending).status == 404
        page, _ = Browser().get(pending["login"])
        assert page.status == 404
        assert log_in_status(untouched) == 404
        # the polls removed their expired rows; the collector removes the rest
        assert LoginFlows(vault).purge_expired() == 1
    finally:
        vault.clock = real
    with vault.index.connection():
        assert LoginFlow.select().count() == 0


# -- CSRF, the throttle, the page ------------------------------------------------------------
def test_a_form_without_the_right_csrf_value_is_refused(server: Server) -> None:
    doc = start_flow(server)
    browser = Browser()
    page, form = browser.get(doc["login"])
    assert page.status == 200
    good = {**form.inputs, "user": "alice", "password": server.password}
    # no cookie
    assert Browser().post(doc["login"], good).status == 403
    # the cookie, a wrong field
    assert browser.post(doc["login"], {**good, "csrf": "A" * 43}).status == 403
    assert browser.post(doc["login"], {**good, "csrf": ""}).status == 403
    # another flow's value and cookie (valid there): bound to its own flow
    other = start_flow(server)
    stranger = Browser()
    _, other_form = stranger.get(other["login"])
    assert stranger.post(doc["login"], {**good, "csrf": other_form.inputs["csrf"]}).status == 403
    # the right value from another site
    assert browser.post(doc["login"], good, {"Origin": "https://evil.example"}).status == 403
    assert browser.post(doc["login"], good, {"Origin": "null"}).status == 403
    assert browser.post(doc["login"], good, {"Sec-Fetch-Site": "cross-site"}).status == 403
    assert poll(doc).status == 404  # none of it approved anything
    # and the genuine form still works (the page is fetched again: a fresh value)
    assert log_in(server, doc).status == 200
    assert poll(doc).status == 200


def test_wrong_passwords_count_in_the_shared_throttle(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data")
    try:
        server = Server(dav.url, dav.users["alice"], dav.vault)
        doc = start_flow(server)
        browser = Browser()
        statuses = []
        for i in range(11):
            resp = log_in(server, doc, password=f"wrong{i}", browser=browser)
            statuses.append(resp.status)
            if resp.status == 200:
                assert "Wrong user name or password" in resp.text
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        refused = log_in(server, doc, browser=browser)  # even the right password now
        assert refused.status == 429 and refused.header("Retry-After")
        assert "Too many failed logins" in refused.text
        assert poll(doc).status == 404
        with dav.vault.index.connection():
            assert LoginFailure.select().count() > 0
        # the same counters refuse WebDAV from this address
        assert propfind(server, "alice", server.password) == 429
    finally:
        dav.stop()


def test_a_token_is_no_password_on_the_login_page(server: Server) -> None:
    token = run_desktop_flow(server)
    doc = start_flow(server)
    resp = log_in(server, doc, password=token)
    assert resp.status == 200 and "not an app password" in resp.text
    assert poll(doc).status == 404


HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)> <b>bold</b>"


def test_the_page_has_strict_headers_and_escapes_the_client(server: Server) -> None:
    doc = start_flow(server, HOSTILE)
    page, form = Browser().get(doc["login"])
    assert page.status == 200
    csp = page.header("Content-Security-Policy") or ""
    for directive in (
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ):
        assert directive in csp, csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert page.header("X-Frame-Options") == "DENY"
    assert page.header("Referrer-Policy") == "no-referrer"
    assert page.header("Cache-Control") == "no-store"
    assert page.header("X-Content-Type-Options") == "nosniff"
    cookie = page.header("Set-Cookie") or ""
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie
    assert "/index.php/login/v2/flow/" in cookie  # the cookie goes to this flow's page only
    text = page.text
    assert form.scripts == 0 and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "onerror=alert(2)" in text  # shown, as text
    assert len(form.forms) == 1 and form.forms[0]["method"] == "post"
    assert set(form.inputs) >= {"csrf", "user", "password", "access"}
    assert form.radios["access"] == ["full", "read"]
    assert "Full access to your files" in text
    # the desktop client is named by what it is
    doc = start_flow(server)
    page, _ = Browser().get(doc["login"])
    assert "Nextcloud desktop 3.7.3 (Linux)" in page.text
    # and only the version of a client's own pattern is taken from the header
    doc = start_flow(server, "Mozilla/5.0 (<i>x</i>) mirall/3.7<script>")
    page, form = Browser().get(doc["login"])
    assert "Nextcloud desktop 3.7 (&lt;i&gt;x&lt;/i&gt;)" in page.text and form.scripts == 0


def test_nothing_secret_reaches_the_log(
    server: Server, dav_server: DavServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        doc = start_flow(server)
        log_in(server, doc, password="Xyzzy-not-it-42")
        log_in(server, doc)
        token = json.loads(poll(doc).body)["appPassword"]
    text = caplog.text
    login_token = doc["login"].rsplit("/", 1)[1]
    for secret in (doc["poll"]["token"], login_token, token, server.password, "Xyzzy-not-it-42"):
        assert secret not in text
    assert "/index.php/login/v2/flow/…" in text  # the access log's path, at debug


# -- Login Flow v1: the mobile apps' web view ------------------------------------------------
ANDROID = "Mozilla/5.0 (Android) Nextcloud-android/3.26.0"


def test_login_flow_v1_redirects_to_the_app_with_an_app_password(server: Server) -> None:
    url = server.base + "/index.php/login/flow"
    browser = Browser()
    headers = {"OCS-APIREQUEST": "true", "User-Agent": ANDROID}
    page = request(url, "GET", None, headers)
    assert page.status == 200
    assert "Nextcloud Android 3.26.0 (Android)" in page.text
    csp = page.header("Content-Security-Policy") or ""
    assert "form-action 'self' nc:" in csp and "frame-ancestors 'none'" in csp
    browser._keep(page)
    form = FormParser()
    form.feed(page.text)
    fields = {**form.inputs, "user": "alice", "password": server.password}
    # without the cookie: refused, as for v2
    assert Browser().post(url, fields, {"User-Agent": ANDROID}).status == 403
    # a wrong password: the form again
    wrong = browser.post(url, {**fields, "password": "nope"}, {"User-Agent": ANDROID})
    assert wrong.status == 200 and "Wrong user name or password" in wrong.text
    form = FormParser()
    form.feed(wrong.text)
    fields["csrf"] = form.inputs["csrf"]
    done = browser.post(url, fields, {"User-Agent": ANDROID})
    assert done.status == 303, done.text
    location = done.header("Location") or ""
    prefix = f"nc://login/server:{server.base}&user:alice&password:"
    assert location.startswith(prefix), location
    token = location[len(prefix) :]
    assert token.startswith("wdvt_")
    assert propfind(server, "alice", token) == 207
    labels = [t.label for t in server.vault.list_tokens("alice")]
    assert labels == ["Nextcloud Android 3.26.0 (Android)"]


# -- OCS: getapppassword and apppassword -----------------------------------------------------
def test_getapppassword_with_the_password(server: Server) -> None:
    for version, code in ((2, 200), (1, 100)):
        resp, doc = ocs(server, "GET", "getapppassword", server.password, version)
        assert resp.status == 200, resp.text
        assert doc["meta"]["statuscode"] == code
        token = doc["data"]["apppassword"]
        assert token.startswith("wdvt_")
        assert propfind(server, "alice", token) == 207
    # with a token already: Nextcloud's 403 (HTTP 403 in v2, 200 with 403 inside in v1)
    resp, doc = ocs(server, "GET", "getapppassword", token, 2)
    assert resp.status == 403 and doc["meta"]["statuscode"] == 403
    resp, doc = ocs(server, "GET", "getapppassword", token, 1)
    assert resp.status == 200 and doc["meta"]["statuscode"] == 403
    # a wrong password: the OCS 401
    resp, doc = ocs(server, "GET", "getapppassword", "wrong", 2)
    assert resp.status == 401 and doc["meta"]["statuscode"] == 997


def test_deleting_the_app_password_revokes_it(server: Server) -> None:
    token = run_desktop_flow(server)
    other = run_desktop_flow(server)
    resp, doc = ocs(server, "DELETE", "apppassword", server.password)
    assert resp.status == 403 and doc["meta"]["statuscode"] == 403  # not with the password
    resp, doc = ocs(server, "DELETE", "apppassword", token)
    assert resp.status == 200 and doc["meta"]["statuscode"] == 200 and doc["data"] == []
    assert propfind(server, "alice", token) == 401
    assert propfind(server, "alice", other) == 207  # only that one
    resp, _ = ocs(server, "DELETE", "apppassword", other, 1)
    assert resp.status == 200
    assert propfind(server, "alice", other) == 401
    assert ocs(server, "GET", "apppassword", other)[0].status == 405


def test_rotating_the_app_password(server: Server) -> None:
    doc = start_flow(server)
    assert log_in(server, doc, access="read").status == 200
    token = json.loads(poll(doc).body)["appPassword"]
    resp, _ = ocs(server, "POST", "apppassword/rotate", server.password)
    assert resp.status == 403  # not with the password
    resp, doc = ocs(server, "POST", "apppassword/rotate", token)
    assert resp.status == 200, resp.text
    new = doc["data"]["apppassword"]
    assert new.startswith("wdvt_") and new != token
    assert propfind(server, "alice", token) == 401
    assert propfind(server, "alice", new) == 207
    (info,) = server.vault.list_tokens("alice")
    assert info.perms == "ro" and info.label == "Nextcloud desktop 3.7.3 (Linux)"


# -- several worker processes ----------------------------------------------------------------
def test_the_flow_across_forked_workers(tmp_path: Path) -> None:
    """server.workers = 2 on one index, and a second `davserver serve` on the same data
    directory: the start, the page, the form and the polls go to different processes —
    deterministically between the two servers, and spread by the kernel between the two
    workers (fresh connections) — and the app password works on both."""
    from tests.harness.serveproc import start_serve_process
    from tests.integration.test_dav_server import ServeProcess

    served = ServeProcess(tmp_path, {"DAVSERVER_SERVER_WORKERS": "2"})
    other = None
    try:
        other = start_serve_process(served.data_dir)
        a, b = Server(served.url, served.password), Server(other.url, served.password)
        for _ in range(3):  # through the workers of a
            token = run_desktop_flow(a)
            assert propfind(a, "alice", token) == 207
        # started on a, approved and polled on b, delivered once whoever is asked
        doc = start_flow(a)
        moved = {
            "poll": {"token": doc["poll"]["token"], "endpoint": b.base + POLL},
            "login": doc["login"].replace(a.base, b.base),
        }
        assert poll(moved).status == 404
        assert log_in(b, moved).status == 200
        got = poll(moved)
        assert got.status == 200, got.text
        creds = json.loads(got.body)
        assert creds["server"] == b.base and creds["loginName"] == "alice"
        assert poll(doc).status == 404  # a sees it delivered
        assert propfind(a, "alice", creds["appPassword"]) == 207
        assert propfind(b, "alice", creds["appPassword"]) == 207
        # approved on a, polled on b
        doc = start_flow(a)
        assert log_in(a, doc).status == 200
        moved = {"poll": {"token": doc["poll"]["token"], "endpoint": b.base + POLL}}
        assert poll(moved).status == 200
        assert poll(doc).status == 404
    finally:
        if other is not None:
            other.stop()
        code, _out, err = served.stop()
    assert code == 0, err


def racing_polls(doc: dict[str, Any], n: int = 8) -> list[int]:
    """``n`` polls of one approved flow at once; their statuses."""
    barrier = threading.Barrier(n)

    def one(_: int) -> int:
        barrier.wait()
        return poll(doc).status

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def test_racing_polls_deliver_once(server: Server) -> None:
    doc = start_flow(server)
    assert log_in(server, doc).status == 200
    assert racing_polls(doc) == [200] + [404] * 7


@pytest.mark.postgres
def test_the_flow_on_postgresql(tmp_path: Path, postgres_db_url: str) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_INDEX_URL": postgres_db_url})
    try:
        server = Server(dav.url, dav.users["alice"], dav.vault)
        token = run_desktop_flow(server)
        assert propfind(server, "alice", token) == 207
        doc = start_flow(server)
        assert log_in(server, doc).status == 200
        assert racing_polls(doc) == [200] + [404] * 7
    finally:
        dav.stop()


# -- the base URL from behind a trusted proxy ------------------------------------------------
def test_urls_name_the_proxy_only_when_it_is_trusted(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_SERVER_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        forwarded = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "cloud.example.org",
            "X-Forwarded-For": "192.0.2.7",
            "User-Agent": DESKTOP,
        }
        resp = request(dav.url.rstrip("/") + START, "POST", b"", forwarded)
        doc = json.loads(resp.body)
        assert doc["poll"]["endpoint"] == "https://cloud.example.org/index.php/login/v2/poll"
        assert doc["login"].startswith("https://cloud.example.org/index.php/login/v2/flow/")
        bad = request(dav.url.rstrip("/") + START, "POST", b"", {"Host": "a b/c"})
        assert bad.status == 400
    finally:
        dav.stop()
    dav = start_dav_server(tmp_path / "data2")
    try:  # not trusted: the headers are ignored
        resp = request(dav.url.rstrip("/") + START, "POST", b"", forwarded)
        doc = json.loads(resp.body)
        assert doc["poll"]["endpoint"] == dav.url.rstrip("/") + "/index.php/login/v2/poll"
    finally:
        dav.stop()


def test_pending_flows_are_bounded_per_address(tmp_path: Path) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_SERVER_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        url = dav.url.rstrip("/") + START

        def start_from(addr: str) -> Response:
            return request(url, "POST", b"", {"X-Forwarded-For": addr, "User-Agent": DESKTOP})

        assert all(start_from("192.0.2.1").status == 200 for _ in range(MAX_PER_ADDRESS))
        refused = start_from("192.0.2.1")
        assert refused.status == 429
        assert 0 < int(refused.header("Retry-After") or 0) <= LIFETIME
        assert start_from("2001:db8::1").status == 200  # another address is not concerned
        assert start_from("198.51.100.2").status == 200
    finally:
        dav.stop()


# -- nextcloudcmd ----------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nextcloudcmd") is None, reason="nextcloudcmd not installed")
def test_nextcloudcmd_syncs_with_the_flows_app_password(server: Server, tmp_path: Path) -> None:
    """nextcloudcmd has no login-flow mode (it takes --user and --password): it is given the
    app password the flow delivered, as the desktop client keeps it after the flow."""
    token = run_desktop_flow(server)
    local, home = tmp_path / "sync", tmp_path / "home"
    local.mkdir()
    home.mkdir()
    (local / "hello.txt").write_bytes(b"hello")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(home),
    }
    cmd = ["nextcloudcmd", "--non-interactive", "-u", "alice", "-p", token]
    cmd += ["--max-sync-retries", "1", str(local), server.url]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    got = request(
        server.base + "/remote.php/dav/files/alice/hello.txt",
        headers={"Authorization": basic("alice", token)},
    )
    assert got.status == 200 and got.body == b"hello"
