"""The route table: every URL the server answers, top to bottom, and the module that owns it.

The first route whose path matches answers (``routing``). Exact paths come first, then
prefixes from the longest down to ``/``, which is WebDAV: each logged-in user's own tree.
Authentication belongs to the owner of a route — the health probes, ``/status.php`` and the
connectivity check need none, the DAV app asks for Basic credentials itself, and the OCS
endpoints ask for them the same way (``davserver.web.ocs.login``), the login flow's start
and poll need none and its page asks for the password in a form (``davserver.web.loginflow``)
— and every response
passes the request guard of ``davserver.dav.middleware`` (``davserver.server.build_app``).
Any other path under ``/ocs/v1.php/`` or ``/ocs/v2.php/`` gets Nextcloud's "no such route"
in the OCS envelope.

A user's top-level files named ``healthz``, ``readyz`` or ``status.php`` and the folders
``ocs/v1.php``, ``ocs/v2.php``, ``index.php/204``, ``index.php/login/flow`` and
``index.php/login/v2`` are shadowed at those paths; they stay reachable under
``/remote.php/dav/files/USER/``.
"""

from __future__ import annotations

from davserver.config import Config
from davserver.vault import Vault
from davserver.web import health, loginflow
from davserver.web.ocs import NextcloudApi
from davserver.web.ocs.apppassword import AppPasswords
from davserver.web.routing import Mount, Route, Router, WSGIApp


def routes(config: Config, vault: Vault, dav: WSGIApp) -> list[Route | Mount]:
    """The table. ``dav`` is the WebDAV application (WsgiDAV with davserver's middleware)."""
    probes = health.Health(vault, timeout=float(config.health.timeout))
    nc = NextcloudApi(vault, dav)
    flow = loginflow.LoginFlowApp(config, vault)
    app_passwords = AppPasswords(vault, dav)
    v1, v2 = "/ocs/v1.php", "/ocs/v2.php"
    return [
        # -- operations (web/health.py): no authentication, access log at debug only ------
        Route("/healthz", probes.live, quiet=True, summary="the process serves HTTP"),
        Route("/readyz", probes.ready, quiet=True, summary="index and blob store answer"),
        # -- Nextcloud / ownCloud client discovery (web/ocs/): as Nextcloud answers it -----
        Route("/status.php", nc.status, summary="server status and version (no login)"),
        Route("/index.php/204", nc.no_content, summary="connectivity check: 204 (no login)"),
        Route(f"{v1}/config", nc.config, summary="OCS config (no login)"),
        Route(f"{v2}/config", nc.config, summary="OCS config (no login)"),
        # -- Login Flow v2 (web/loginflow.py): how the Nextcloud apps add an account --------
        Route(loginflow.START_PATH, flow.start, ("POST",), summary="start a flow (no login)"),
        Route(loginflow.POLL_PATH, flow.poll, ("POST",), summary="poll for the app password"),
        Route(
            loginflow.LEGACY_PATH,
            flow.legacy,
            ("GET", "HEAD", "POST"),
            summary="Login Flow v1: the apps' web view, ends in nc://login/…",
        ),
        Route(f"{v1}/core/getapppassword", app_passwords.get, summary="password -> app password"),
        Route(f"{v2}/core/getapppassword", app_passwords.get, summary="password -> app password"),
        Route(f"{v1}/core/apppassword", app_passwords.delete, ("DELETE",), summary="revoke it"),
        Route(f"{v2}/core/apppassword", app_passwords.delete, ("DELETE",), summary="revoke it"),
        Route(f"{v1}/core/apppassword/rotate", app_passwords.rotate, ("POST",), summary="renew"),
        Route(f"{v2}/core/apppassword/rotate", app_passwords.rotate, ("POST",), summary="renew"),
        Route(f"{v1}/cloud/capabilities", nc.capabilities, summary="OCS capabilities"),
        Route(f"{v2}/cloud/capabilities", nc.capabilities, summary="OCS capabilities"),
        Route(f"{v1}/cloud/user", nc.user, summary="the logged-in user and their quota"),
        Route(f"{v2}/cloud/user", nc.user, summary="the logged-in user and their quota"),
        Route(f"{v2}/apps/files_sharing/api/v1/shares", nc.shares, summary="shares: none (empty)"),
        Route(f"{v1}/apps/files_sharing/api/v1/shares", nc.shares, summary="shares: none (empty)"),
        Route(
            f"{v2}/apps/notifications/api/v2/notifications",
            nc.notifications,
            summary="notifications: none (empty)",
        ),
        Route(
            f"{v2}/apps/user_status/api/v1/user_status",
            nc.user_status,
            summary="user status: offline",
        ),
        # -- Nextcloud / ownCloud clients (dav/nextcloud.py, inside the DAV app) -----------
        Mount("/remote.php/dav/files/", dav, summary="alias of the user's tree: …/files/USER/"),
        Mount("/remote.php/dav/uploads/", dav, summary="chunked uploads: …/uploads/USER/ID/"),
        Mount("/remote.php/webdav/", dav, summary="ownCloud's alias of the user's tree"),
        # -- versions and trash (dav/versions.py, dav/trashbin.py, inside the DAV app) -----
        Mount("/remote.php/dav/versions/", dav, summary="file versions: …/versions/USER/"),
        Mount("/remote.php/dav/trashbin/", dav, summary="the trash: …/trashbin/USER/trash/"),
        # -- the login flow's page for the browser (web/loginflow.py): a form, no Basic -----
        Mount(loginflow.FLOW_PREFIX, flow.page, summary="the browser's login page (GET, POST)"),
        # -- any other OCS route (web/ocs/): Nextcloud's "no such route", no login ----------
        Mount(f"{v1}/", nc.not_found, summary="any other OCS v1 route: 998 in the envelope"),
        Mount(f"{v2}/", nc.not_found, summary="any other OCS v2 route: 404 in the envelope"),
        # -- everything else: the logged-in user's tree (dav/, WebDAV class 1 and 2) -------
        Mount("/", dav, summary="the user's tree; a browser gets a directory listing"),
    ]


def router(config: Config, vault: Vault, dav: WSGIApp) -> Router:
    return Router(routes(config, vault, dav))
