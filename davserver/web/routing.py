"""Routes and the router: which WSGI application answers a request, by its path.

A ``Route`` owns one exact path and the methods it answers (another method gets 405 with
``Allow``); a ``Mount`` owns a path prefix, all methods. The ``Router`` tries them in order
and the first that matches answers; nothing matching is a 404. Applications get the request
as it came (``PATH_INFO`` and ``SCRIPT_NAME`` unchanged): WebDAV resolves its own prefixes.

A route marked ``quiet`` (health probes, polled every few seconds) is logged by the access
log at debug instead of info (``davserver.dav.middleware.QUIET_KEY``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from davserver.dav.middleware import QUIET_KEY

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class Route:
    """One exact path, answered by ``app`` for ``methods``."""

    path: str
    app: WSGIApp
    methods: tuple[str, ...] = ("GET", "HEAD")
    quiet: bool = False
    summary: str = ""

    def matches(self, path: str) -> bool:
        return path == self.path


@dataclass(frozen=True)
class Mount:
    """Every path under ``prefix`` (which ends in ``/``), and the prefix without its slash."""

    prefix: str
    app: WSGIApp
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError("a mount prefix ends with '/'")

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix) or path == self.prefix.rstrip("/")


def _plain(
    status: str, text: str, start_response: Any, extra: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *extra,
    ]
    start_response(status, headers)
    return [body]


class Router:
    """A WSGI application that hands each request to the first route matching its path."""

    def __init__(self, routes: Sequence[Route | Mount]) -> None:
        self.routes = tuple(routes)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        for route in self.routes:
            if not route.matches(path):
                continue
            if isinstance(route, Route):
                if route.quiet:
                    environ[QUIET_KEY] = True
                method = str(environ.get("REQUEST_METHOD", ""))
                if method not in route.methods:
                    allow = ", ".join(route.methods)
                    return _plain(
                        "405 Method Not Allowed",
                        f"{route.path} answers {allow} only",
                        start_response,
                        [("Allow", allow)],
                    )
            return route.app(environ, start_response)
        return _plain("404 Not Found", "not found", start_response)
