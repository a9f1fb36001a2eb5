"""App passwords the way Nextcloud's clients ask for them over OCS (core's
``AppPasswordController``): they are davserver's device tokens (``wdvt_…``).

- ``GET /ocs/v{1,2}.php/core/getapppassword``, logged in with the account's password:
  a new token for the asking client, labelled with its name (from ``User-Agent``, as the
  login flow does), in ``{"apppassword": TOKEN}``. The desktop client calls it to swap a
  password it was given for a token of its own. Logged in with a token already: 403, as
  Nextcloud answers ("You cannot request an new apppassword with an apppassword").
- ``DELETE /ocs/v{1,2}.php/core/apppassword``, logged in with a token: revokes that very
  token (a client logging out); 200 with empty data. With the password: 403.
- ``POST /ocs/v{1,2}.php/core/apppassword/rotate``, logged in with a token: a new token
  with the same label, permissions and expiry replaces it (the old one stops working);
  ``{"apppassword": NEW}``. With the password: 403.

Both sit behind ``LoginRequired``: Basic authentication, throttle and logs as WebDAV's. A
403 is HTTP 200 with OCS status 403 in v1 and HTTP 403 in v2 (``envelope``). The token is
in the answer only; nothing here logs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from davserver import audit
from davserver.web.loginflow import client_name
from davserver.web.ocs import envelope
from davserver.web.ocs.login import LoginRequired

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

FORBIDDEN = 403


def _ok(environ: dict[str, Any]) -> int:
    return 200 if envelope.version_of(str(environ.get("PATH_INFO", ""))) == envelope.V2 else 100


class AppPasswords:
    """The two endpoints (WSGI applications ``get`` and ``delete``) for one vault."""

    def __init__(self, vault: Vault, dav: Any) -> None:
        self.vault = vault
        self.get = LoginRequired(dav, self._get)
        self.delete = LoginRequired(dav, self._delete)
        self.rotate = LoginRequired(dav, self._rotate)

    def _get(
        self, environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        if session.token_id is not None:
            message = "You cannot request an new apppassword with an apppassword"
            return envelope.respond(environ, start_response, FORBIDDEN, [], message)
        label = client_name(str(environ.get("HTTP_USER_AGENT", "")))
        token_id, token = self.vault.create_token_for(session, label)
        audit.emit("app_password_issued", user_id=session.user_id, token_id=token_id)
        data = {"apppassword": token}
        return envelope.respond(environ, start_response, _ok(environ), data)

    def _delete(
        self, environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        if session.token_id is None:
            message = "only an app password can delete itself"
            return envelope.respond(environ, start_response, FORBIDDEN, [], message)
        self.vault.revoke_token(session.user_name, session.token_id)
        return envelope.respond(environ, start_response, _ok(environ), [])

    def _rotate(
        self, environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        old = session.token_id
        if old is None:
            message = "only an app password can be rotated"
            return envelope.respond(environ, start_response, FORBIDDEN, [], message)
        info = next((t for t in self.vault.list_tokens(session.user_name) if t.id == old), None)
        if info is None:  # revoked meanwhile
            return envelope.respond(environ, start_response, FORBIDDEN, [], "no such token")
        token_id, token = self.vault.create_token_for(
            session, info.label, perms=info.perms, expires=info.expires
        )
        self.vault.revoke_token(session.user_name, old)
        audit.emit("app_password_rotated", user_id=session.user_id, token_id=token_id)
        return envelope.respond(environ, start_response, _ok(environ), {"apppassword": token})
