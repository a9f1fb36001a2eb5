"""HTTP Basic authentication against the vault, with a rate limit on failed logins.

- ``VaultDomainController``: WsgiDAV's domain controller contract. A successful login puts the
  user's vault ``Session`` into the request (``environ["davserver.session"]``), so each user
  sees only their own tree at ``/``. Digest is off: the password *is* the key (DESIGN §4), and
  a digest never carries it.
- ``DavAuthenticator``: WsgiDAV's authenticator with a strict Basic parser (malformed headers
  get 400, never a 500), a rate limit, and no user names in logs.
- Failed logins are counted per user name and per client address in a sliding window, in the
  index (``davserver.vault.throttle``: every server process and host sees the same counts);
  over the limit, a request gets 429 with ``Retry-After`` *without* running Argon2id. A
  request whose name and password logged in successfully a moment ago is served from the
  login cache before any counter is consulted (one keyed hash, no database), so correct
  logins are never slowed by someone else's guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import unicodedata
from typing import TYPE_CHECKING, Any

from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from davserver.dav.errors import to_dav_error
from davserver.dav.resources import SESSION_KEY
from davserver.errors import AuthError, DavServerError
from davserver.vault.throttle import LoginThrottle

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

USER_KEY = "davserver.user_id"
ADDR_KEY = "davserver.client_addr"


def user_key(name: str) -> str:
    """Rate-limit key of a user name (hashed: the table is never a list of names)."""
    digest = hashlib.blake2b(
        unicodedata.normalize("NFC", name).encode("utf-8", "surrogatepass"), digest_size=16
    )
    return "u:" + digest.hexdigest()


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
            opts["vault"], opts["login_fail_limit"], opts["login_fail_window"]
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
        addr_key = "a:" + addr
        if creds is None:
            self.throttle.failed([addr_key])
            return self._respond(start_response, "400 Bad Request", body=b"malformed credentials\n")
        user_name, password = creds
        dc: VaultDomainController = self.domain_controller
        session = dc.cached_login(user_name, password)
        if session is not None:  # logged in a moment ago: no counter, no Argon2id
            dc._accept(session, environ)
        else:
            ukey = user_key(user_name)
            wait = self.throttle.retry_after([ukey, addr_key])
            if wait is not None:
                log.warning("login refused: too many failed attempts (retry in %d s)", wait)
                return self._respond(
                    start_response,
                    "429 Too Many Requests",
                    [("Retry-After", str(wait))],
                    b"too many failed logins; retry later\n",
                )
            if not dc.basic_auth_user(realm, user_name, password, environ):
                self.throttle.failed([ukey, addr_key])
                log.info("login failed (user key %s)", ukey[2:10])
                return self.send_basic_auth_response(environ, start_response)
            self.throttle.reset(ukey)
        environ["wsgidav.auth.realm"] = realm
        environ["wsgidav.auth.user_name"] = user_name
        return self.next_app(environ, start_response)
