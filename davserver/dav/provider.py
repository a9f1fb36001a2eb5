"""The WsgiDAV provider: maps request paths onto the logged-in user's vault tree.

Resources are cached per request (``environ``), so WsgiDAV's habit of resolving the same path
several times per request (dir browser, If-header evaluation, the handler) costs one index
lookup. Any change to the tree empties that cache.

``custom_request_handler`` hands every request to the dispatch function the assembly gave
the provider (``davserver.server.build_app`` gives it ``davserver.dav.handlers.dispatch``, which
takes the verbs whose WsgiDAV defaults do not fit an encrypted, streaming store: GET/HEAD, PUT,
PROPFIND depth, PROPPATCH, OPTIONS, the 201/204 of COPY/MOVE; the others, MKCOL, DELETE, LOCK,
UNLOCK, run WsgiDAV's handlers on these resources). The provider does not import the handlers:
they, and the resources, know it only as ``interface.TreeProvider``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from wsgidav import util
from wsgidav.dav_provider import DAVProvider

from davserver.dav.errors import vault_call
from davserver.dav.interface import Dispatch
from davserver.dav.resources import (
    CACHE_KEY,
    DirResource,
    FileResource,
    _VaultResource,
    session_of,
)
from davserver.vault.nodes import Entry

USAGE_KEY = "davserver.usage"


def _cache_key(path: str) -> str:
    return path.rstrip("/") or "/"


class VaultProvider(DAVProvider):  # type: ignore[misc]
    """Every user's tree, each at ``/`` for that user."""

    def __init__(
        self, dispatch: Dispatch, block_size: int = 1 << 20, max_body_bytes: int = 0
    ) -> None:
        super().__init__()
        self.dispatch = dispatch
        self.verbose = 1  # WsgiDAV prints property errors to stdout from 2 on
        self.block_size = block_size
        self.max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        return "VaultProvider()"

    def is_readonly(self) -> bool:
        return False

    def resource_from_entry(
        self, path: str, entry: Entry, environ: dict[str, Any]
    ) -> _VaultResource:
        res: _VaultResource
        if entry.is_dir:
            res = DirResource(path, environ, entry)
        else:
            res = FileResource(path, environ, entry)
        environ.setdefault(CACHE_KEY, {})[_cache_key(path)] = res
        return res

    def get_resource_inst(self, path: str | None, environ: dict[str, Any]) -> _VaultResource | None:
        if path is None:  # WsgiDAV asks for the parent of "/"
            return None
        cache: dict[str, _VaultResource | None] = environ.setdefault(CACHE_KEY, {})
        key = _cache_key(path)
        if key in cache:
            return cache[key]
        with vault_call():
            parent, entry = session_of(environ).lookup_with_parent(path)
        if key != "/":
            # The walk passed the parent: keep it too (a PUT, MKCOL or COPY asks next), under
            # the path form the handlers ask for it by.
            parent_path = util.get_uri_parent(path) or "/"
            if _cache_key(parent_path) not in cache:
                if parent is None:
                    cache[_cache_key(parent_path)] = None
                else:
                    self.resource_from_entry(parent_path, parent, environ)
        if entry is None:
            cache[key] = None
            return None
        return self.resource_from_entry(path, entry, environ)

    def ref_url_to_path(self, ref_url: str) -> str:
        """Inverse of ``resources.ref_url``: drop the user-id segment."""
        parts = ref_url.strip("/").split("/", 1)
        rest = unquote(parts[1]) if len(parts) > 1 else ""
        return "/" + rest.lstrip("/")

    def usage(self, environ: dict[str, Any]) -> tuple[int, int | None]:
        """(bytes used, quota or None), once per request."""
        if USAGE_KEY not in environ:
            with vault_call():
                environ[USAGE_KEY] = session_of(environ).usage()
        used, quota = environ[USAGE_KEY]
        return int(used), (None if quota is None else int(quota))

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: Any, default_handler: Any
    ) -> Any:
        return self.dispatch(self, environ, start_response, default_handler)
