"""Nextcloud's Login Flow v2 over HTTP: how the desktop and mobile apps add an account
without ever storing the user's password (DESIGN §15, docs/clients.md).

1. ``POST /index.php/login/v2`` (no login): the client starts a flow and gets
   ``{"poll": {"token": T, "endpoint": BASE/index.php/login/v2/poll},
   "login": BASE/index.php/login/v2/flow/LOGIN_TOKEN}``. BASE is the URL the client reached
   (``davserver.web.origin``). The client's name is taken from its ``User-Agent``.
2. The client opens the login URL in a browser: a small server-rendered page
   (``davserver.web.loginpage``) names the client and the access it asks for, and takes the
   user's name and password. A right password goes through the same failed-login throttle
   as HTTP Basic (same counters, 429 with ``Retry-After`` over the limit; a wrong password
   counts), then a device token is created for the client and the page says the window
   may be closed. The form is protected against cross-site requests: a random value bound
   to the flow (a keyed MAC under a server key) in a hidden field and in a
   ``SameSite=Strict`` cookie, which must agree, and a cross-origin ``Origin`` or
   ``Sec-Fetch-Site`` is refused (403).
3. ``POST /index.php/login/v2/poll`` with the form body ``token=T``: 404 until the user
   approved, then, once, ``{"server": BASE, "loginName": USER, "appPassword": TOKEN}``;
   404 again after that, and for a flow past its 20 minutes.

Login Flow v1 (``GET``/``POST /index.php/login/flow``, the older apps' web view) is the
same form without a flow: a right password creates the token at once and answers a redirect
to ``nc://login/server:BASE&user:USER&password:TOKEN``, which the app catches.

The flows themselves live in the index (``davserver.vault.loginflow``), so the three steps
may land on different worker processes. Nothing here logs a token, a password or a user
name; the login page's path (which holds the login token, as the protocol requires) is
logged as its prefix only, even at debug. Only the ``/index.php/…`` paths are answered (the
ones Nextcloud's clients use): ``/login/v2`` without it stays a path of the user's tree.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from davserver import audit
from davserver.crypto.primitives import fields, keyed_hash
from davserver.dav.auth import (
    ADDR_KEY,
    audit_failed_login,
    client_address,
    note_throttled,
    record_login,
)
from davserver.dav.middleware import LOG_PATH_KEY
from davserver.errors import AuthError, DavServerError
from davserver.vault.loginflow import LoginFlows
from davserver.vault.throttle import LoginThrottle
from davserver.web import loginpage
from davserver.web.origin import base_url, origin_of

if TYPE_CHECKING:
    from davserver.config import Config
    from davserver.vault import Vault
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

START_PATH = "/index.php/login/v2"
POLL_PATH = "/index.php/login/v2/poll"
FLOW_PREFIX = "/index.php/login/v2/flow/"
LEGACY_PATH = "/index.php/login/flow"
CSRF_COOKIE = "davserver_lflow_csrf"
#: The largest form body read (the poll's and the login form's are a few hundred bytes).
MAX_FORM = 16 << 10
_CSRF_PERSON = b"wdv-lfcsrf-v1"

# What the Nextcloud apps put in their User-Agent, and the name a user recognises.
_CLIENTS = (
    (re.compile(r"\bmirall/([0-9][\w.+-]*)"), "Nextcloud desktop {}"),
    (re.compile(r"\bNextcloud-android/([0-9][\w.+-]*)", re.I), "Nextcloud Android {}"),
    (re.compile(r"\bNextcloud-iOS/([0-9][\w.+-]*)", re.I), "Nextcloud iOS {}"),
)
_PLATFORM = re.compile(r"^Mozilla/5\.0 \(([^)]{1,40})\)")
MAX_CLIENT_NAME = 100


def client_name(user_agent: str) -> str:
    """The name a client is shown (and its token labelled) by, from its ``User-Agent``:
    "Nextcloud desktop 3.7.3 (Linux)" for the Nextcloud apps, else the header itself
    without control characters, cut to ``MAX_CLIENT_NAME`` characters."""
    text = unicodedata.normalize("NFC", user_agent)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    for pattern, name in _CLIENTS:
        found = pattern.search(text)
        if found:
            label = name.format(found.group(1))
            platform = _PLATFORM.match(text)
            if platform:
                label += f" ({platform.group(1)})"
            return label[:MAX_CLIENT_NAME]
    return text[:MAX_CLIENT_NAME] or "an unnamed client"


def _json(start_response: Any, status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def _read_form(environ: dict[str, Any]) -> dict[str, str] | None:
    """The urlencoded form in the body (last value of each field); None if it is too long
    or not a form at all."""
    raw_length = str(environ.get("CONTENT_LENGTH", "") or "0").strip()
    if not raw_length.isdigit() or int(raw_length) > MAX_FORM:
        return None
    data = environ["wsgi.input"].read(int(raw_length)) if int(raw_length) else b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=16)
    except ValueError:  # more fields than any of our forms has
        return None
    return {k: v[-1] for k, v in parsed.items()}


def _same_origin(origin: str, base: str) -> bool:
    """Whether a browser's ``Origin`` names the server (default ports compared away)."""

    def norm(value: str) -> str:
        value = value.strip().lower().rstrip("/")
        for scheme, port in (("http", ":80"), ("https", ":443")):
            if value.startswith(scheme + "://") and value.endswith(port):
                return value[: -len(port)]
        return value

    return norm(origin) == norm(origin_of(base))


class LoginFlowApp:
    """The WSGI applications of the flows (see the module docstring): ``start``, ``page``
    and ``poll`` of v2, ``legacy`` for v1."""

    def __init__(self, config: Config, vault: Vault, flows: LoginFlows | None = None) -> None:
        # Nothing here touches the vault before the first request (the route table is
        # built without one): the flows, the throttle and the CSRF key come then.
        self.config = config
        self.vault = vault
        self.trusted_proxies = frozenset(config.server.trusted_proxies)
        self._flows = flows
        self._throttle: LoginThrottle | None = None
        self._csrf_key = b""
        self._lock = threading.Lock()

    def _setup(self) -> None:
        with self._lock:
            if self._throttle is not None:
                return
            sec = self.config.security
            if self._flows is None:
                self._flows = LoginFlows(self.vault)
            self._csrf_key = self.vault.server_key(_CSRF_PERSON)
            self._throttle = LoginThrottle(
                self.vault,
                sec.login_fail_limit,
                sec.login_fail_window,
                pair_limit=sec.login_fail_pair_limit,
                user_limit=sec.login_fail_user_limit,
            )

    @property
    def flows(self) -> LoginFlows:
        if self._flows is None or self._throttle is None:
            self._setup()
        assert self._flows is not None
        return self._flows

    @property
    def throttle(self) -> LoginThrottle:
        if self._throttle is None:
            self._setup()
        assert self._throttle is not None
        return self._throttle

    # -- 1: start --------------------------------------------------------------------------
    def start(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            base = base_url(environ, self.trusted_proxies)
        except ValueError:
            return _json(start_response, "400 Bad Request", {"message": "invalid Host"})
        client = client_name(str(environ.get("HTTP_USER_AGENT", "")))
        addr = client_address(environ, self.trusted_proxies)
        environ[ADDR_KEY] = addr
        try:
            flow = self.flows.start(client, addr)
        except DavServerError as exc:
            return self._failed(start_response, exc)
        return _json(
            start_response,
            "200 OK",
            {
                "poll": {"token": flow.poll_token, "endpoint": base + POLL_PATH},
                "login": base + FLOW_PREFIX + flow.login_token,
            },
        )

    # -- 3: poll ---------------------------------------------------------------------------
    def poll(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            base = base_url(environ, self.trusted_proxies)
        except ValueError:
            return _json(start_response, "400 Bad Request", {"message": "invalid Host"})
        form = _read_form(environ)
        token = (form or {}).get("token", "")
        try:
            creds = self.flows.poll(token)
        except DavServerError as exc:
            return self._failed(start_response, exc)
        if creds is None:
            return _json(start_response, "404 Not Found", [])
        payload = {"server": base, "loginName": creds.login_name, "appPassword": creds.app_password}
        return _json(start_response, "200 OK", payload)

    @staticmethod
    def _failed(start_response: Any, exc: DavServerError) -> list[bytes]:
        status = exc.status if exc.status >= 500 or exc.status == 429 else 500
        retry = getattr(exc, "retry_after", None)
        message = {429: "too many requests", 503: "service unavailable"}.get(status, "failed")
        body = json.dumps({"message": message})
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if retry is not None:
            headers.append(("Retry-After", str(retry)))
        start_response(loginpage.status_line(status), headers)
        return [body.encode("ascii")]

    # -- 2: the page -----------------------------------------------------------------------
    def page(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ[LOG_PATH_KEY] = FLOW_PREFIX + "…"  # the rest is the login token
        path = str(environ.get("PATH_INFO", ""))
        token = path[len(FLOW_PREFIX) :] if path.startswith(FLOW_PREFIX) else ""
        method = str(environ.get("REQUEST_METHOD", ""))
        if method not in ("GET", "HEAD", "POST"):
            return loginpage.respond(
                environ,
                start_response,
                405,
                loginpage.message_page("Method not allowed."),
                [("Allow", "GET, HEAD, POST")],
            )
        try:
            base = base_url(environ, self.trusted_proxies)
            client = self.flows.client_of(token)
        except ValueError:
            return loginpage.respond(
                environ, start_response, 400, loginpage.message_page("Invalid request.")
            )
        except DavServerError as exc:
            return self._page_failed(environ, start_response, exc)
        if client is None:
            return loginpage.respond(environ, start_response, 404, loginpage.gone_page())
        page_path = FLOW_PREFIX + token

        def approve(session: Session, perms: str) -> list[bytes]:
            if not self.flows.approve(token, session, perms=perms):
                return loginpage.respond(environ, start_response, 404, loginpage.gone_page())
            log.info("login flow approved (user id %s)", session.user_id[:12])
            return loginpage.respond(environ, start_response, 200, loginpage.done_page(client))

        if method == "POST":
            return self._submit(environ, start_response, page_path, client, base, approve)
        return self._form(environ, start_response, page_path, client, base, "", 200)

    # -- Login Flow v1: the mobile apps' web view --------------------------------------------
    def legacy(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """``/index.php/login/flow``: the same form in the app's web view, no flow state;
        a right password ends in a redirect to ``nc://login/server:…&user:…&password:…``
        (the app password), which the app catches (Nextcloud's Login Flow v1)."""
        try:
            base = base_url(environ, self.trusted_proxies)
        except ValueError:
            return loginpage.respond(
                environ, start_response, 400, loginpage.message_page("Invalid request.")
            )
        client = client_name(str(environ.get("HTTP_USER_AGENT", "")))

        def redirect(session: Session, perms: str) -> list[bytes]:
            token_id, token = self.vault.create_token_for(session, client, perms=perms)
            audit.emit("login_flow_approved", user_id=session.user_id, token_id=token_id)
            log.info("login flow v1: app password issued (user id %s)", session.user_id[:12])
            target = (
                f"nc://login/server:{base}&user:{quote(session.user_name, safe='')}"
                f"&password:{quote(token, safe='')}"
            )
            page = loginpage.done_page(client)
            return loginpage.respond(
                environ,
                start_response,
                303,
                page,
                [("Location", target)],
                policy=loginpage.LEGACY_POLICY,
            )

        if str(environ.get("REQUEST_METHOD", "")) == "POST":
            return self._submit(environ, start_response, LEGACY_PATH, client, base, redirect)
        return self._form(environ, start_response, LEGACY_PATH, client, base, "", 200)

    def _form(
        self,
        environ: dict[str, Any],
        start_response: Any,
        page_path: str,
        client: str,
        base: str,
        message: str,
        status: int,
        user: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        csrf = self._new_csrf(page_path)
        secure = base.startswith("https://")
        cookie = (
            f"{CSRF_COOKIE}={csrf}; Path={page_path}; Max-Age={int(self.flows.lifetime)}; "
            f"HttpOnly; SameSite=Strict{'; Secure' if secure else ''}"
        )
        page = loginpage.form_page(client, origin_of(base), csrf, message, user)
        extra = [("Set-Cookie", cookie), *(headers or [])]
        policy = loginpage.LEGACY_POLICY if page_path == LEGACY_PATH else loginpage.POLICY
        return loginpage.respond(environ, start_response, status, page, extra, policy=policy)

    def _page_failed(
        self, environ: dict[str, Any], start_response: Any, exc: DavServerError
    ) -> list[bytes]:
        status = exc.status if exc.status >= 500 else 500
        retry = getattr(exc, "retry_after", None)
        headers = [("Retry-After", str(retry))] if retry is not None else []
        text = "The server cannot answer right now; try again in a moment."
        return loginpage.respond(
            environ, start_response, status, loginpage.message_page(text), headers
        )

    # -- CSRF ------------------------------------------------------------------------------
    def _csrf_mac(self, page_path: str, nonce: bytes) -> bytes:
        """The CSRF value's MAC, bound to the page (whose path holds the login token)."""
        if not self._csrf_key:
            self._setup()
        return keyed_hash(
            self._csrf_key, fields(b"wdv/lflow/csrf/v1", page_path, nonce), _CSRF_PERSON, b"", 16
        )

    def _new_csrf(self, page_path: str) -> str:
        nonce = secrets.token_bytes(16)
        raw = nonce + self._csrf_mac(page_path, nonce)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _csrf_ok(self, environ: dict[str, Any], page_path: str, sent: str, base: str) -> bool:
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not _same_origin(str(origin), base):
            return False
        site = str(environ.get("HTTP_SEC_FETCH_SITE", "")).strip().lower()
        if site and site not in ("same-origin", "none"):
            return False
        cookie = _cookie(environ, CSRF_COOKIE)
        if not sent or cookie is None or not secrets.compare_digest(sent, cookie):
            return False
        try:
            raw = base64.urlsafe_b64decode(sent + "=" * (-len(sent) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 32:
            return False
        return secrets.compare_digest(raw[16:], self._csrf_mac(page_path, raw[:16]))

    # -- the login -------------------------------------------------------------------------
    def _submit(
        self,
        environ: dict[str, Any],
        start_response: Any,
        page_path: str,
        client: str,
        base: str,
        finish: Callable[[Session, str], list[bytes]],
    ) -> list[bytes]:
        """Check the form's CSRF value, the throttle and the password; then ``finish`` with
        the user's session and the permissions chosen."""
        form = _read_form(environ)
        csrf = (form or {}).get("csrf", "")
        if form is None or not self._csrf_ok(environ, page_path, csrf, base):
            log.info("login flow form refused: no valid CSRF value or a cross-site request")
            text = "This form has expired or did not come from this page. Reload it and try again."
            return loginpage.respond(environ, start_response, 403, loginpage.message_page(text))
        user = form.get("user", "").strip()
        password = form.get("password", "")
        perms = "ro" if form.get("access") == "read" else "rw"

        def again(message: str, status: int = 200, headers: Any = None) -> list[bytes]:
            return self._form(
                environ, start_response, page_path, client, base, message, status, user, headers
            )

        if not user or not password or any(ord(c) < 32 for c in user):
            return again("Enter your user name and password.")
        addr = client_address(environ, self.trusted_proxies)
        environ[ADDR_KEY] = addr
        try:
            refusal = self.throttle.check(addr, user)
            if refusal is not None:
                note_throttled(self.throttle, refusal, addr, user, "login flow: ")
                wait = refusal.retry_after
                return again(
                    f"Too many failed logins. Try again in {wait} seconds.",
                    429,
                    [("Retry-After", str(wait))],
                )
            try:
                session = self.vault.login(user, password)
            except AuthError:
                self._failed_login(addr, user)
                return again("Wrong user name or password.")
            if session.token_id is not None:
                # A device token cannot make another: the account's password is needed.
                return again("Log in with your account's password, not an app password.")
            record_login(self.throttle.login_succeeded, addr, user)
            environ["davserver.user_id"] = session.user_id
            return finish(session, perms)
        except DavServerError as exc:
            return self._page_failed(environ, start_response, exc)

    def _failed_login(self, addr: str, user: str) -> None:
        record_login(self.throttle.login_failed, addr, user)
        log.info(
            "login flow: login failed from %s (user tag %s)", addr, self.throttle.log_tag(user)
        )
        audit_failed_login(self.vault, addr, user)


def _cookie(environ: dict[str, Any], name: str) -> str | None:
    """The value of cookie ``name`` in the request (the last one sent), or None."""
    found = None
    for part in str(environ.get("HTTP_COOKIE", "")).split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            found = value.strip()
    return found
