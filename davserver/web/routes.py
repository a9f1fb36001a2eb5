"""The route table: every URL the server answers, top to bottom, and the module that owns it.

The first route whose path matches answers (``routing``). Exact paths come first, then
prefixes from the longest down to ``/``, which is WebDAV: each logged-in user's own tree.
Authentication belongs to the owner of a route — the health probes need none, the DAV app
asks for Basic credentials itself — and every response passes the request guard of
``davserver.dav.middleware`` (``davserver.server.build_app``).

A user's top-level files named ``healthz`` or ``readyz`` are shadowed at ``/healthz`` and
``/readyz``; they stay reachable under ``/remote.php/dav/files/USER/``.
"""

from __future__ import annotations

from davserver.config import Config
from davserver.vault import Vault
from davserver.web import health
from davserver.web.routing import Mount, Route, Router, WSGIApp


def routes(config: Config, vault: Vault, dav: WSGIApp) -> list[Route | Mount]:
    """The table. ``dav`` is the WebDAV application (WsgiDAV with davserver's middleware)."""
    probes = health.Health(vault, timeout=float(config.health.timeout))
    return [
        # -- operations (web/health.py): no authentication, access log at debug only ------
        Route("/healthz", probes.live, quiet=True, summary="the process serves HTTP"),
        Route("/readyz", probes.ready, quiet=True, summary="index and blob store answer"),
        # -- Nextcloud / ownCloud clients (dav/nextcloud.py, inside the DAV app) -----------
        Mount("/remote.php/dav/files/", dav, summary="alias of the user's tree: …/files/USER/"),
        Mount("/remote.php/dav/uploads/", dav, summary="chunked uploads: …/uploads/USER/ID/"),
        Mount("/remote.php/webdav/", dav, summary="ownCloud's alias of the user's tree"),
        # -- versions and trash (dav/versions.py, dav/trashbin.py, inside the DAV app) -----
        Mount("/remote.php/dav/versions/", dav, summary="file versions: …/versions/USER/"),
        Mount("/remote.php/dav/trashbin/", dav, summary="the trash: …/trashbin/USER/trash/"),
        # -- everything else: the logged-in user's tree (dav/, WebDAV class 1 and 2) -------
        Mount("/", dav, summary="the user's tree; a browser gets a directory listing"),
    ]


def router(config: Config, vault: Vault, dav: WSGIApp) -> Router:
    return Router(routes(config, vault, dav))
