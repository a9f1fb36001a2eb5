"""HTTP Basic authentication against the vault, with a rate limit on failed logins.

- ``VaultDomainController``: WsgiDAV's domain controller contract. A successful login puts the
  user's vault ``Session`` into the request (``environ["davserver.session"]``), so each user
  sees only their own tree at ``/``. Digest is off: the password *is* the key (DESIGN §4), and
  a digest never carries it.
- ``DavAuthenticator``: WsgiDAV's authenticator with a strict Basic parser (malformed headers
  get 400, never a 500), a rate limit, and no user names in logs.
- ``RateLimiter``: failed logins counted per user name and per client address in a sliding
  window; over the limit, a request gets 429 with ``Retry-After`` *without* running Argon2id —
  unless the same name and password logged in successfully a moment ago (a cache hit costs
  nothing), so correct logins are never slowed by someone else's guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from davserver.dav.errors import to_dav_error
from davserver.dav.resources import SESSION_KEY
from davserver.errors import AuthError, DavServerError

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

USER_KEY = "davserver.user_id"
ADDR_KEY = "davserver.client_addr"


class RateLimiter:
    """Sliding-window counter of failures per key; thread-safe and bounded in memory."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float] | None:
        q = self._fails.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def retry_after(self, keys: Iterable[str]) -> int | None:
        """Seconds until every key is under the limit again; None if none is over it."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._live(key, now)
                if q is not None and len(q) >= self.limit:
                    # The oldest failure that keeps the key at the limit must age out.
                    wait = max(wait, q[len(q) - self.limit] + self.window - now)
        return max(1, int(wait + 0.999)) if wait > 0 else None

    def failed(self, keys: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                q = self._live(key, now)
                if q is None:
                    q = self._fails[key] = deque(maxlen=self.limit)
                q.append(now)
                self._fails.move_to_end(key)
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


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
        self.limiter = RateLimiter(opts["login_fail_limit"], opts["login_fail_window"])
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
            self.limiter.failed([addr_key])
            return self._respond(start_response, "400 Bad Request", body=b"malformed credentials\n")
        user_name, password = creds
        ukey = user_key(user_name)
        dc: VaultDomainController = self.domain_controller
        wait = self.limiter.retry_after([ukey, addr_key])
        if wait is not None:
            session = dc.cached_login(user_name, password)
            if session is None:
                log.warning("login refused: too many failed attempts (retry in %d s)", wait)
                return self._respond(
                    start_response,
                    "429 Too Many Requests",
                    [("Retry-After", str(wait))],
                    b"too many failed logins; retry later\n",
                )
            dc._accept(session, environ)
        elif not dc.basic_auth_user(realm, user_name, password, environ):
            self.limiter.failed([ukey, addr_key])
            log.info("login failed (user key %s)", ukey[2:10])
            return self.send_basic_auth_response(environ, start_response)
        self.limiter.reset(ukey)
        environ["wsgidav.auth.realm"] = realm
        environ["wsgidav.auth.user_name"] = user_name
        return self.next_app(environ, start_response)
