"""Basic authentication of the OCS endpoints: WebDAV's own, answered in the OCS envelope.

``LoginRequired`` wraps an endpoint. It runs WebDAV's authenticator class
(``davserver.dav.auth.DavAuthenticator``) with the DAV application's settings, so a login
here is a login there: the same strict Basic parser (400 for malformed credentials), the
same failed-login throttle, checked before any password work (429 with ``Retry-After``;
its counters live in the index, shared with WebDAV and with every worker process), the same
login cache (no Argon2id for credentials that logged in a moment ago), the same metrics,
audit records and log lines (user tags, never names). Whatever the domain controller
accepts — the password or a device token (``wdvt_…``) — is accepted here.

Only the answers differ: a missing or wrong password is 401 with ``WWW-Authenticate`` and
OCS status 997, as Nextcloud answers it, and the authenticator's other refusals and engine
failures keep their HTTP status with the reason in the envelope.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wsgidav.dav_error import DAVError

from davserver.dav.auth import DavAuthenticator
from davserver.dav.errors import to_dav_error
from davserver.dav.resources import SESSION_KEY
from davserver.errors import DavServerError
from davserver.web.ocs import envelope

if TYPE_CHECKING:
    from davserver.vault.tree import Session

#: An endpoint behind the login: (environ, start_response, the user's session) -> body.
Endpoint = Callable[[dict[str, Any], Any, "Session"], Iterable[bytes]]


class _Reply:
    """The server's ``start_response`` with the request it answers (the authenticator's
    refusals are written in the envelope, whose format depends on the request)."""

    def __init__(self, environ: dict[str, Any], start_response: Any) -> None:
        self.environ = environ
        self._start_response = start_response

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return self._start_response(status, headers, exc_info)


class _OcsAuthenticator(DavAuthenticator):
    """WebDAV's authenticator, its answers put in the OCS envelope."""

    def send_basic_auth_response(self, environ: dict[str, Any], start_response: Any) -> Any:
        realm = self.domain_controller.get_domain_realm(environ["PATH_INFO"], environ)
        return envelope.respond(
            environ,
            start_response,
            envelope.NOT_LOGGED_IN,
            [],
            "Current user is not logged in",
            [("WWW-Authenticate", f'Basic realm="{realm}"')],
        )

    def _respond(
        self,
        start_response: Any,
        status: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> list[bytes]:
        code = int(status.split(" ", 1)[0])
        message = body.decode("utf-8", "replace").strip()
        environ = start_response.environ
        return envelope.respond(
            environ, start_response, code, [], message, headers or [], status=code
        )


class LoginRequired:
    """A WSGI application: ``endpoint`` answers once the request's Basic credentials
    logged in (see the module docstring). ``dav`` is the WsgiDAV application whose
    authentication settings are used, from the first request on (building the route
    table touches neither the vault nor the DAV app)."""

    def __init__(self, dav: Any, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._dav = dav
        self._authenticator: _OcsAuthenticator | None = None
        self._lock = threading.Lock()

    @property
    def _auth(self) -> _OcsAuthenticator:
        if self._authenticator is None:
            with self._lock:
                if self._authenticator is None:
                    self._authenticator = _OcsAuthenticator(
                        self._dav, self._logged_in, self._dav.config
                    )
        return self._authenticator

    def _logged_in(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return self.endpoint(environ, start_response, environ[SESSION_KEY])

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reply = _Reply(environ, start_response)
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        try:
            if header.strip().partition(" ")[0].lower() != "basic":
                return self._auth.send_basic_auth_response(environ, reply)  # type: ignore[no-any-return]
            return self._auth.handle_basic_auth_request(environ, reply)  # type: ignore[no-any-return]
        except DavServerError as exc:
            return _failed(environ, reply, to_dav_error(exc))
        except DAVError as exc:
            return _failed(environ, reply, exc)


def _failed(environ: dict[str, Any], start_response: Any, exc: DAVError) -> list[bytes]:
    """An engine failure (the index down, say) in the envelope, with its HTTP status."""
    code = int(exc.value)
    headers = [(k, v) for k, v in (exc.add_headers or []) if k.lower() == "retry-after"]
    message = "service unavailable" if code == 503 else "request failed"
    return envelope.respond(environ, start_response, code, [], message, headers, status=code)
