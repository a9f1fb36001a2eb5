"""The answers themselves: ``/status.php``, ``/index.php/204`` and the OCS endpoints.

``NextcloudApi`` holds one WSGI application per URL; ``davserver.web.routes`` lists them.
The data are Nextcloud's (server 28) as its desktop, Android and iOS clients and ownCloud's
clients read them, cut to what davserver has:

- ``status.php`` (no login): installed, not in maintenance, the version below;
- capabilities (login): the WebDAV root, chunking v2 (``dav.chunking`` "1.0"), big-file
  chunking, versions and trash, the checksums computed on upload (``storage.checksums``);
  sharing switched off (``files_sharing.api_enabled`` false, so clients offer no share
  dialog), no ``notifications`` capability (so the desktop client never polls for them),
  user status disabled;
- ``cloud/user`` (login): the user's name as id and display name, no e-mail, the quota from
  the index (usage counts current files, versions and the trash);
- ``config`` (no login), and empty answers where davserver has nothing: no shares, no
  notifications, an offline user status.

Nothing answered names another user or says whether one exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from davserver.web.ocs import envelope
from davserver.web.ocs.login import LoginRequired

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

# The Nextcloud version davserver answers as. 28 is a release both families of clients take
# as current: Nextcloud desktop 3.x warns below its minimum (far lower) and turns features
# on by version (the mount-root property from 23, for instance), and ownCloud's 2.x
# clients refuse only servers older than 10. A version above what the clients know could
# make them expect APIs davserver does not have.
VERSION = (28, 0, 0, 0)
VERSION_STRING = "28.0.0"
PRODUCT = "davserver"
# Nextcloud's default pollinterval (seconds): how often clients may ask for changes.
POLL_INTERVAL = 60
# What ``FileInfo::SPACE_UNLIMITED`` reports for free and total space without a quota.
UNLIMITED = -3


def _json(start_response: Any, environ: dict[str, Any], payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload, separators=(",", ":")).encode("ascii")
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            # status.php is public and Nextcloud lets any origin read it.
            ("Access-Control-Allow-Origin", "*"),
        ],
    )
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def quota(used: int, limit: int | None) -> dict[str, Any]:
    """Nextcloud's quota object for ``used`` bytes under ``limit`` (None: unlimited)."""
    if limit is None:
        return {
            "free": UNLIMITED,
            "used": used,
            "total": UNLIMITED,
            "relative": 0,
            "quota": UNLIMITED,
        }
    free = max(0, limit - used)
    total = free + used
    relative = round(used * 100 / total, 2) if total else 0
    return {"free": free, "used": used, "total": total, "relative": relative, "quota": limit}


class NextcloudApi:
    """One WSGI application per endpoint, for one vault and the DAV app's login."""

    def __init__(self, vault: Vault, dav: Any) -> None:
        self.vault = vault
        self.capabilities = LoginRequired(dav, self._capabilities)
        self.user = LoginRequired(dav, self._user)
        self.shares = LoginRequired(dav, self._empty_list)
        self.notifications = LoginRequired(dav, self._empty_list)
        self.user_status = LoginRequired(dav, self._user_status)

    # -- without a login -----------------------------------------------------------------------
    def status(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        payload = {
            "installed": True,
            "maintenance": False,
            "needsDbUpgrade": False,
            "version": ".".join(str(n) for n in VERSION),
            "versionstring": VERSION_STRING,
            "edition": "",
            "productname": PRODUCT,
            "extendedSupport": False,
        }
        return _json(start_response, environ, payload)

    @staticmethod
    def no_content(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """``/index.php/204``: the clients' connectivity check (a captive portal answers
        something else)."""
        start_response("204 No Content", [("Content-Length", "0"), ("Cache-Control", "no-store")])
        return [b""]

    @staticmethod
    def config(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        https = str(environ.get("wsgi.url_scheme", "http")) == "https"
        data = {
            "version": "1.7",
            "website": PRODUCT,
            "host": str(environ.get("HTTP_HOST", "")),
            "contact": "",
            "ssl": "true" if https else "false",
        }
        return envelope.respond(environ, start_response, _ok(environ), data)

    @staticmethod
    def not_found(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Any other OCS path: what Nextcloud answers for a route no app has."""
        message = "Invalid query, please check the syntax."
        return envelope.respond(environ, start_response, envelope.NO_ROUTE, [], message)

    # -- behind the login ------------------------------------------------------------------------
    def _capabilities(
        self, environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        major, minor, micro, _ = VERSION
        types = [name.upper() for name in self.vault.settings.checksums]
        checksums: dict[str, Any] = {"supportedTypes": types}
        if types:
            checksums["preferredUploadType"] = types[0]
        data = {
            "version": {
                "major": major,
                "minor": minor,
                "micro": micro,
                "string": VERSION_STRING,
                "edition": "",
                "extendedSupport": False,
            },
            "capabilities": {
                "core": {"pollinterval": POLL_INTERVAL, "webdav-root": "remote.php/webdav"},
                "dav": {"chunking": "1.0"},
                "files": {
                    "bigfilechunking": True,
                    "blacklisted_files": [],
                    "undelete": True,
                    "versioning": True,
                },
                "checksums": checksums,
                "files_sharing": {"api_enabled": False},
                "user_status": {"enabled": False},
            },
        }
        return envelope.respond(environ, start_response, _ok(environ), data)

    @staticmethod
    def _user(environ: dict[str, Any], start_response: Any, session: Session) -> Iterable[bytes]:
        used, limit = session.usage()
        data = {
            "enabled": True,
            "id": session.user_name,
            "display-name": session.user_name,
            "email": None,
            "quota": quota(used, limit),
            "groups": [],
            "language": "",
            "locale": "",
            "backendCapabilities": {"setDisplayName": False, "setPassword": False},
        }
        return envelope.respond(environ, start_response, _ok(environ), data)

    @staticmethod
    def _empty_list(
        environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        return envelope.respond(environ, start_response, _ok(environ), [])

    @staticmethod
    def _user_status(
        environ: dict[str, Any], start_response: Any, session: Session
    ) -> Iterable[bytes]:
        data = {
            "userId": session.user_name,
            "message": None,
            "messageId": None,
            "messageIsPredefined": False,
            "icon": None,
            "clearAt": None,
            "status": "offline",
            "statusIsUserDefined": False,
        }
        return envelope.respond(environ, start_response, _ok(environ), data)


def _ok(environ: dict[str, Any]) -> int:
    """The success code of the request's OCS version: 100 (v1) or 200 (v2)."""
    return 200 if envelope.version_of(str(environ.get("PATH_INFO", ""))) == envelope.V2 else 100
