"""The server's own absolute URL as the client reached it, for answers that must name it
(the login flow's poll endpoint and login page, the ``server`` a client then uses).

The scheme and host are the request's (``wsgi.url_scheme``, ``Host``); a request that came
through one of ``server.trusted_proxies`` may replace them with ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` — the same rule as ``davserver.dav.auth.client_address`` applies to
addresses, so nobody else can make the server name another host. ``SCRIPT_NAME`` (a WSGI
mount point) is kept. A ``Host`` that is not a plain host name or address with an optional
port is refused (``ValueError``): it would otherwise end up in a URL the client follows.
"""

from __future__ import annotations

import re
from typing import Any

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


def _first(value: object) -> str:
    return str(value or "").split(",")[0].strip()


def base_url(environ: dict[str, Any], trusted_proxies: frozenset[str]) -> str:
    """``scheme://host[:port][script name]``, without a trailing slash."""
    scheme = str(environ.get("wsgi.url_scheme", "http")).lower()
    host = str(environ.get("HTTP_HOST", "")).strip()
    if not host:
        host = str(environ.get("SERVER_NAME", ""))
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != {"http": "80", "https": "443"}.get(scheme):
            host = f"{host}:{port}"
    if str(environ.get("REMOTE_ADDR", "")) in trusted_proxies:
        proto = _first(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = _first(environ.get("HTTP_X_FORWARDED_HOST"))
        if forwarded_host:
            host = forwarded_host
    if scheme not in ("http", "https") or not _HOST.fullmatch(host):
        raise ValueError("the request names no valid host")
    prefix = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
    return f"{scheme}://{host.lower()}{prefix}"


def origin_of(base: str) -> str:
    """The origin (``scheme://host[:port]``) of a ``base_url``."""
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
