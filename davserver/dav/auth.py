"""HTTP Basic authentication against the vault, with a rate limit on failed logins.

- ``VaultDomainController``: WsgiDAV's domain controller contract. A successful login puts the
  user's vault ``Session`` into the request (``environ["davserver.session"]``), so each user
  sees only their own tree at ``/``. Digest is off: the password *is* the key (DESIGN §4), and
  a digest never carries it.
- ``DavAuthenticator``: WsgiDAV's authenticator with a strict Basic parser (malformed headers
  get 400, never a 500), a rate limit, and no user names in logs.
- Failed logins are throttled per client address, per user name and per (address, user)
  pair in the index (``davserver.vault.throttle``, whose docstring has the policy): guessing
  stays slow, but nobody can lock a user out by name, since an address with no failures of
  its own is always let through to the password check. Refusals are 429 with
  ``Retry-After``, decided *before* the login cache and Argon2id, so an address over its
  limit cannot test passwords at all. Malformed credentials get 400 and count against
  nobody. A request whose name and password logged in a moment ago is served from the
  login cache (one keyed hash, no Argon2id).
- Logs name users only by ``LoginThrottle.log_tag``, a keyed MAC under a server secret.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from davserver import audit, metrics
from davserver.dav.errors import to_dav_error
from davserver.dav.resources import SESSION_KEY
from davserver.errors import AuthError, DavServerError
from davserver.vault.throttle import LoginThrottle, Refusal

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

USER_KEY = "davserver.user_id"
ADDR_KEY = "davserver.client_addr"


def client_address(environ: dict[str, Any], trusted_proxies: frozenset[str]) -> str:
    """The client's address: REMOTE_ADDR, or the last untrusted X-Forwarded-For hop when the
    request came through one of ``trusted_proxies``."""
    addr = str(environ.get("REMOTE_ADDR", ""))
    if addr in trusted_proxies:
        hops = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        for hop in reversed([h for h in hops if h]):
            try:
                hop = str(ipaddress.ip_address(hop))
            except ValueError:
                break
            if hop not in trusted_proxies:
                return hop
    return addr


def note_throttled(
    throttle: LoginThrottle, refusal: Refusal, addr: str, user_name: str, where: str = ""
) -> None:
    """Log, count and audit a login refused by the failed-login limit (before any password
    work): Basic auth here, the login page of the Nextcloud login flow (``where``)."""
    log.warning(
        "%slogin refused from %s: too many failed attempts (%s limit, user tag %s, retry in %d s)",
        where,
        addr,
        refusal.reason,
        throttle.log_tag(user_name),
        refusal.retry_after,
    )
    metrics.get().logins.labels("password", "throttled").inc()
    audit.emit(
        "login_throttled",
        user_tag=audit.user_tag(user_name),
        addr_mac=audit.addr_mac(addr),
        limit=refusal.reason,
        retry_after=refusal.retry_after,
    )


def record_login(what: Callable[[str, str], None], addr: str, user_name: str) -> None:
    """Update the failed-login counters (``what`` is ``login_failed`` or ``login_succeeded``
    of the throttle); if the index cannot take the write (a full disk), the login is still
    answered as what it was (logged: the count is missing)."""
    try:
        what(addr, user_name)
    except DavServerError as exc:
        log.warning("could not update the failed-login counters: %s", exc.reason)


def audit_failed_login(vault: Any, addr: str, user_name: str) -> None:
    """The ``login_failed`` audit record (the user's id if the name exists, tags only)."""
    if not audit.enabled():
        return
    try:
        user_id = vault.user_id_of(user_name)
    except DavServerError:
        user_id = None
    audit.emit(
        "login_failed",
        user_id=user_id,
        user_tag=audit.user_tag(user_name),
        addr_mac=audit.addr_mac(addr),
    )


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from ``Basic <base64(user:password)>``; None if malformed.

    RFC 7617: the user name cannot contain a colon; credentials are UTF-8.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if ":" not in text:
        return None
    name, _, password = text.partition(":")
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name):
        return None
    return name, password


class VaultDomainController(BaseDomainController):  # type: ignore[misc]
    """Basic auth against the vault; one realm for the whole server."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        opts = config["davserver"]
        self.vault: Vault = opts["vault"]
        self.realm: str = opts["realm"]
        self.provider = opts["provider"]

    def __str__(self) -> str:
        return "VaultDomainController()"

    def get_domain_realm(self, path_info: str, environ: dict[str, Any] | None) -> str:
        return self.realm

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        # The dir browser's static assets (CSS, icons) are served anonymously; every other
        # request goes to the vault provider and needs a user.
        if environ is not None and environ.get("wsgidav.provider") is not self.provider:
            return environ.get("wsgidav.provider") is None
        return True

    def supports_http_digest_auth(self) -> bool:
        return False

    def cached_login(self, user_name: str, password: str) -> Session | None:
        """The session of a recent successful login with these credentials, or None.

        Costs one keyed hash: it never runs Argon2id.
        """
        return self.vault.login_cached(user_name, password)

    def basic_auth_user(
        self, realm: str, user_name: str, password: str, environ: dict[str, Any]
    ) -> bool:
        try:
            session = self.vault.login(user_name, password)
        except AuthError:
            return False
        except DavServerError as exc:
            raise to_dav_error(exc) from None
        self._accept(session, environ)
        return True

    @staticmethod
    def _accept(session: Session, environ: dict[str, Any]) -> None:
        environ[SESSION_KEY] = session
        environ[USER_KEY] = session.user_id


class DavAuthenticator(HTTPAuthenticator):  # type: ignore[misc]
    """Basic authentication with strict parsing, a failed-login limit and quiet logs."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        opts = config["davserver"]
        self.throttle = LoginThrottle(
            opts["vault"],
            opts["login_fail_limit"],
            opts["login_fail_window"],
            pair_limit=opts.get("login_fail_pair_limit"),
            user_limit=opts.get("login_fail_user_limit"),
        )
        self.trusted_proxies = frozenset(opts.get("trusted_proxies", ()))

    def _respond(
        self,
        start_response: Any,
        status: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> list[bytes]:
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                *(headers or []),
            ],
        )
        return [body]

    def handle_basic_auth_request(self, environ: dict[str, Any], start_response: Any) -> Any:
        realm = self.domain_controller.get_domain_realm(environ["PATH_INFO"], environ)
        creds = parse_basic(str(environ.get("HTTP_AUTHORIZATION", "")))
        addr = client_address(environ, self.trusted_proxies)
        environ[ADDR_KEY] = addr
        if creds is None:  # no password was tried: counted against nobody
            metrics.get().logins.labels("password", "malformed").inc()
            return self._respond(start_response, "400 Bad Request", body=b"malformed credentials\n")
        user_name, password = creds
        dc: VaultDomainController = self.domain_controller
        refusal = self.throttle.check(addr, user_name)  # before the cache: see the docstring
        if refusal is not None:
            note_throttled(self.throttle, refusal, addr, user_name)
            return self._respond(
                start_response,
                "429 Too Many Requests",
                [("Retry-After", str(refusal.retry_after))],
                b"too many failed logins; retry later\n",
            )
        session = dc.cached_login(user_name, password)
        if session is not None:  # logged in a moment ago: no Argon2id
            dc._accept(session, environ)
        elif dc.basic_auth_user(realm, user_name, password, environ):
            record_login(self.throttle.login_succeeded, addr, user_name)
        else:
            record_login(self.throttle.login_failed, addr, user_name)
            log.info("login failed from %s (user tag %s)", addr, self.throttle.log_tag(user_name))
            audit_failed_login(dc.vault, addr, user_name)
            return self.send_basic_auth_response(environ, start_response)
        environ["wsgidav.auth.realm"] = realm
        environ["wsgidav.auth.user_name"] = user_name
        return self.next_app(environ, start_response)
