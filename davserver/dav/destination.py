"""The URL spaces of a user's tree, and the ``Destination`` of COPY and MOVE parsed as a URI.

A user's tree is reachable under three prefixes: ``/`` itself, Nextcloud's
``/remote.php/dav/files/USER/`` and ownCloud's older ``/remote.php/webdav/``;
``/remote.php/dav/uploads/USER/`` is the chunked-upload space (``davserver.dav.nextcloud``),
``/remote.php/dav/versions/USER/`` and ``/remote.php/dav/trashbin/USER/`` hold versions and
the trash (``davserver.dav.versions``, ``davserver.dav.trashbin``): none of them is a tree.
``tree_path`` maps a decoded URL path under any of the tree's prefixes to the tree path.

``destination_tree_path`` reads ``Destination`` (RFC 4918 §10.3: an absolute URI or an
absolute path) the way RFC 3986 §3 splits a URI: scheme, authority and path are separated
*first*, on the raw header, and only then is the path percent-decoded, exactly once, as
UTF-8. WsgiDAV decodes the whole header and then splits it, so an encoded ``?`` (``%3F``) or
``;`` (``%3B``) in a name became a query or a parameter and the rest of the name was dropped:
MOVE to ``a%3Fb.txt`` overwrote ``a``. Here:

- a literal ``?`` or ``#`` starts a query or fragment, which a Destination has no use for:
  400 (names containing them arrive as ``%3F``/``%23``, as every client sends them);
- a ``;`` is an ordinary path character (RFC 3986 §3.3), as Windows allows it in names;
- another scheme, host or port than the request's (or its ``X-Forwarded-Proto``/``-Host``)
  is 502 Bad Gateway (RFC 4918 §9.8.4, §9.9.4): the destination is on another server;
- a path that is not UTF-8 once decoded, or a relative reference, is 400;
- a path under the uploads, versions or trash space is 403, and one under another user's
  files alias is 404
  (as for requests: whether that user exists is nobody's business).

It knows nothing of the vault beyond the session's user name.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_GATEWAY,
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
)

if TYPE_CHECKING:
    from davserver.vault.tree import Session

DAV_ROOT = "/remote.php/dav"
FILES_PREFIX = DAV_ROOT + "/files"
UPLOADS_PREFIX = DAV_ROOT + "/uploads"
VERSIONS_PREFIX = DAV_ROOT + "/versions"
TRASHBIN_PREFIX = DAV_ROOT + "/trashbin"
WEBDAV_PREFIX = "/remote.php/webdav"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def under(path: str, prefix: str) -> str | None:
    """The rest of ``path`` below ``prefix`` ("" for the prefix itself), or None."""
    if path == prefix or path == prefix + "/":
        return ""
    if path.startswith(prefix + "/"):
        return path[len(prefix) + 1 :]
    return None


def check_user(session: Session, name: str) -> None:
    """404 unless ``name`` (from a URL) is the logged-in user."""
    # 404, not 403: whether another user of that name exists is nobody's business.
    if not name or unicodedata.normalize("NFC", name) != session.user_name:
        raise DAVError(HTTP_NOT_FOUND)


def tree_path(path: str, session: Session) -> str:
    """The tree path a decoded, normalised URL path names (a trailing ``/`` is kept)."""
    rest = under(path, FILES_PREFIX)
    if rest is not None:
        user, _, tree = rest.partition("/")
        check_user(session, user)
        return "/" + tree
    rest = under(path, WEBDAV_PREFIX)
    if rest is not None:
        return "/" + rest
    for prefix in (UPLOADS_PREFIX, VERSIONS_PREFIX, TRASHBIN_PREFIX):
        if under(path, prefix) is not None:
            raise DAVError(HTTP_FORBIDDEN, "destination is not in the files tree")
    return path


def _raw_header(environ: dict[str, Any]) -> str:
    raw = environ.get("HTTP_DESTINATION")
    if raw is None or not str(raw).strip():
        raise DAVError(HTTP_BAD_REQUEST, "missing Destination header")
    return str(raw).strip()


def _authority(host: str, scheme: str) -> tuple[str, int | None]:
    """(lower-case host, port with the scheme's default filled in) of ``host[:port]``."""
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError:
        return host.lower(), None
    return (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _check_same_server(environ: dict[str, Any], uri: SplitResult) -> None:
    """502 unless the Destination's scheme and authority are the request's (RFC 4918 §9.8.4)."""
    own_scheme = str(environ.get("wsgi.url_scheme", "http")).lower()
    schemes = {own_scheme}
    forwarded_proto = str(environ.get("HTTP_X_FORWARDED_PROTO", "")).strip().lower()
    if forwarded_proto:
        schemes.add(forwarded_proto.split(",")[0].strip())
    scheme = uri.scheme.lower()
    if scheme and scheme not in schemes:
        raise DAVError(HTTP_BAD_GATEWAY, "the destination is on another server (scheme)")
    if not uri.netloc:
        return
    hosts = [str(environ.get("HTTP_HOST", ""))]
    hosts += str(environ.get("HTTP_X_FORWARDED_HOST", "")).split(",")
    # The default port is that of the scheme the client used to write the Destination.
    for candidate_scheme in (scheme,) if scheme else tuple(schemes):
        wanted = _authority(uri.netloc.rpartition("@")[2], candidate_scheme)
        for host in hosts:
            if host.strip() and _authority(host.strip(), candidate_scheme) == wanted:
                return
    raise DAVError(HTTP_BAD_GATEWAY, "the destination is on another server (host or port)")


def parse_destination(environ: dict[str, Any]) -> str:
    """The absolute URL path ``Destination`` names, decoded once and normalised (``.``, ``..``
    and empty segments resolved; a trailing ``/`` kept). Raises ``DAVError`` (400, 502)."""
    raw = _raw_header(environ)
    if "?" in raw or "#" in raw:
        raise DAVError(
            HTTP_BAD_REQUEST, "Destination must not have a query or fragment (encode ? and #)"
        )
    try:
        uri = urlsplit(raw, allow_fragments=False)
    except ValueError as exc:  # e.g. an invalid IPv6 authority
        raise DAVError(HTTP_BAD_REQUEST, "Destination is not a valid URI") from exc
    if uri.scheme and uri.scheme.lower() not in _DEFAULT_PORTS:
        raise DAVError(HTTP_BAD_GATEWAY, "the destination is on another server (scheme)")
    if uri.scheme and not uri.netloc:
        raise DAVError(HTTP_BAD_REQUEST, "Destination is not a valid URI")
    _check_same_server(environ, uri)
    if not uri.path.startswith("/"):
        raise DAVError(HTTP_BAD_REQUEST, "Destination must be an absolute URI or path")
    # A WSGI header is the raw bytes decoded as Latin-1: those bytes, percent-decoded once,
    # are the path's UTF-8 (some clients send non-ASCII unencoded: the same bytes).
    try:
        raw_path = uri.path.encode("latin-1")
    except UnicodeEncodeError:
        raw_path = uri.path.encode("utf-8")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DAVError(HTTP_BAD_REQUEST, "Destination path is not UTF-8") from exc
    if "\x00" in path:
        raise DAVError(HTTP_BAD_REQUEST, "invalid Destination path")
    return str(util.normalize_path(path))


def destination_tree_path(environ: dict[str, Any], session: Session) -> str:
    """The tree path ``Destination`` names, under any of the tree's URL prefixes."""
    return tree_path(parse_destination(environ), session)
