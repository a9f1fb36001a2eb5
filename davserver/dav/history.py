"""What the versions and trash namespaces share: errors, PROPFIND answers and downloads.

Nextcloud serves a file's old versions under ``/remote.php/dav/versions/USER/`` and the trash
under ``/remote.php/dav/trashbin/USER/`` (``davserver.dav.versions`` and
``davserver.dav.trashbin``; ``davserver.dav.nextcloud`` hands them their requests after
authentication). Neither namespace is a tree of WsgiDAV resources: each request is answered
here as raw WSGI, from one or two vault calls.

- Every response of these namespaces is built by :func:`answer`: a ``DAVError`` (or an engine
  error, mapped by ``vault_call``) becomes a Sabre-style XML error body as Nextcloud's server
  sends it (``<d:error>`` with ``s:exception`` and ``s:message``); GET and HEAD, which are
  downloads, get the status and an empty body.
- A PROPFIND answer is a list of :class:`Row` — an href and every property the member has —
  filtered by what the request asked for (``prop``, ``allprop`` or ``propname``, parsed by
  ``davserver.dav.propfind.parse_request``), found properties first in each response.
- :func:`download` streams one version's plaintext with an optional single byte range and a
  ``Content-Disposition`` naming the file (RFC 6266: ``filename*`` in UTF-8 and an ASCII
  ``filename`` fallback).

Names are decrypted by the vault when a request asks for them and are never logged.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.util import etree

from davserver.dav import handlers
from davserver.dav import propfind as fast_propfind
from davserver.dav.destination import check_user
from davserver.dav.errors import vault_call
from davserver.dav.resources import OC_NS, ref_url

if TYPE_CHECKING:
    from davserver.dav.resources import Provider
    from davserver.vault.reader import FileReader
    from davserver.vault.tree import Session

NC_NS = "http://nextcloud.org/ns"
NC = "{" + NC_NS + "}"
SABRE_NS = "http://sabredav.org/ns"
D = "{DAV:}"
OC = "{" + OC_NS + "}"
HREF_SAFE = "/!*'(),$-_|.~"
DOWNLOADS = ("GET", "HEAD")

# Sabre's exception classes by status, for the body of an error (clients show the message).
_SABRE_EXCEPTIONS = {
    400: "BadRequest",
    401: "NotAuthenticated",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    415: "UnsupportedMediaType",
    416: "RequestedRangeNotSatisfiable",
    423: "Locked",
    501: "NotImplemented",
    503: "ServiceUnavailable",
    507: "InsufficientStorage",
}


def href(path: str) -> str:
    """An href as it goes into XML: percent-encoded, ``/`` kept."""
    return quote(path, safe=HREF_SAFE)


def segments(rest: str) -> list[str]:
    """The NFC path segments of ``rest`` (empty segments dropped)."""
    return [unicodedata.normalize("NFC", p) for p in rest.split("/") if p]


# -- errors --------------------------------------------------------------------------------


def error_body(exc: DAVError) -> bytes:
    """Sabre's error document for ``exc`` (with its RFC 4918 condition, if any)."""
    name = _SABRE_EXCEPTIONS.get(exc.value)
    if util.use_lxml:
        root = etree.Element(D + "error", nsmap={"d": "DAV:", "s": SABRE_NS})
    else:  # pragma: no cover - WsgiDAV runs on lxml here
        root = etree.Element(D + "error")
    if exc.err_condition is not None:
        root.append(exc.err_condition.as_xml()[0])
    exc_el = etree.SubElement(root, "{%s}exception" % SABRE_NS)  # noqa: UP031
    exc_el.text = "Sabre\\DAV\\Exception" + ("\\" + name if name else "")
    message = exc.context_info or ""
    etree.SubElement(root, "{%s}message" % SABRE_NS).text = str(message)  # noqa: UP031
    return bytes(xml_tools.xml_to_bytes(root, pretty=False))


def error_response(environ: dict[str, Any], start_response: Any, exc: DAVError) -> list[bytes]:
    """Status line, the error's extra headers and a Sabre body (empty for downloads)."""
    headers = list(exc.add_headers or [])
    if environ.get("REQUEST_METHOD") in DOWNLOADS or exc.value == 401:
        body = b""
    else:
        body = error_body(exc)
        headers.append(("Content-Type", "application/xml; charset=utf-8"))
    headers.append(("Content-Length", str(len(body))))
    start_response(util.get_http_status_string(exc), headers)
    return [body]


def answer(
    environ: dict[str, Any], start_response: Any, handler: Callable[[], Iterable[bytes]]
) -> Iterable[bytes]:
    """Run ``handler`` (which calls ``start_response`` itself) and turn its errors into
    Sabre-style responses. Errors after a download started are ErrorMapper's."""
    try:
        with vault_call():
            return handler()
    except DAVError as exc:
        return error_response(environ, start_response, exc)


def not_allowed(allow: str) -> DAVError:
    return DAVError(HTTP_METHOD_NOT_ALLOWED, add_headers=[("Allow", allow)])


def options(start_response: Any, allow: str) -> list[bytes]:
    headers = [("DAV", handlers.DAV_COMPLIANCE), ("Allow", allow), ("Content-Length", "0")]
    start_response("200 OK", headers)
    return [b""]


def no_content(start_response: Any, status: str = "204 No Content") -> list[bytes]:
    start_response(status, [("Content-Length", "0")])
    return [b""]


# -- PROPFIND ------------------------------------------------------------------------------


@dataclass
class Row:
    """One ``<response>``: its (unquoted) path and every property the member has."""

    path: str
    props: dict[str, Any] = field(default_factory=dict)


def collection(path: str, name: str = "", mtime: float | None = None) -> Row:
    """A row for a plain collection (a namespace root, ``restore/``, a versions folder)."""
    row = Row(path, {D + "resourcetype": _collection_el()})
    if name:
        row.props[D + "displayname"] = name
    if mtime:
        row.props[D + "getlastmodified"] = util.get_rfc1123_time(mtime)
    return row


def _collection_el() -> Any:
    el = etree.Element(D + "resourcetype")
    etree.SubElement(el, D + "collection")
    return el


def resourcetype(is_dir: bool) -> Any:
    return _collection_el() if is_dir else etree.Element(D + "resourcetype")


def depth(environ: dict[str, Any]) -> str:
    """Depth "0" or "1"; a missing one is 1 (as for the tree); infinity is 403 (RFC 4918 §9.1)."""
    value = str(environ.get("HTTP_DEPTH", "1")).strip().lower() or "1"
    if value not in ("0", "1"):
        raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
    return value


def multistatus(
    environ: dict[str, Any], start_response: Any, rows: Iterable[Row], mode: str, names: list[str]
) -> list[bytes]:
    """The 207 answer: for each row the properties asked for (``mode``/``names`` from
    ``propfind.parse_request``), the found ones first, the others as 404."""
    ms = xml_tools.make_multistatus_el()
    for row in rows:
        props: list[tuple[str, Any]]
        if mode == "name":
            props = [(n, None) for n in row.props]
        elif mode == "allprop":
            props = list(row.props.items())
        else:
            found = [(n, row.props[n]) for n in names if n in row.props]
            missing = [(n, DAVError(HTTP_NOT_FOUND)) for n in names if n not in row.props]
            props = found + missing
        util.add_property_response(ms, href(row.path), props)
    return list(util.send_multi_status_response(environ, start_response, ms))


def parse_propfind(environ: dict[str, Any]) -> tuple[str, list[str]]:
    return fast_propfind.parse_request(environ)


# -- downloads -----------------------------------------------------------------------------


def content_disposition(name: str) -> str:
    """``attachment`` with the name as RFC 5987 UTF-8 and an ASCII fallback (RFC 6266)."""
    fallback = "".join(
        c if 32 <= ord(c) < 127 and c not in '"\\' else "_"
        for c in unicodedata.normalize("NFKD", name)
        if not unicodedata.combining(c)
    )
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}; filename=\"{fallback}\""


def download(
    environ: dict[str, Any],
    start_response: Any,
    *,
    name: str,
    size: int,
    mtime: float,
    etag: str,
    opener: Callable[[], FileReader],
) -> Iterable[bytes]:
    """GET/HEAD of one stored version: one single byte range at most (RFC 7233, as the tree's
    GET), 416 when it cannot be satisfied. The first block is read before the status line, so
    a damaged object is a clean 500."""
    headers = [
        ("Content-Type", str(util.guess_mime_type(name))),
        ("Last-Modified", util.get_rfc1123_time(mtime)),
        ("ETag", f'"{etag}"'),
        ("Accept-Ranges", "bytes"),
        ("Content-Disposition", content_disposition(name)),
    ]
    start, end, status = 0, size - 1, "200 OK"
    if "HTTP_RANGE" in environ:
        wanted = handlers.parse_range(str(environ["HTTP_RANGE"]), size)
        if wanted == (-1, -1):
            raise DAVError(416, add_headers=[("Content-Range", f"bytes */{size}")])
        if wanted is not None:
            start, end = wanted
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    headers.append(("Content-Length", str(max(0, end - start + 1))))
    if environ.get("REQUEST_METHOD") == "HEAD":
        start_response(status, headers)
        return [b""]
    reader = opener()
    body = handlers.stream_range(reader, start, end)
    try:
        first = next(body, b"")
    except BaseException:
        body.close()
        raise
    start_response(status, headers)
    return handlers.primed(first, body)


def own_space(
    environ: dict[str, Any], session: Session, prefix: str, parts: list[str]
) -> tuple[str, str, list[str]]:
    """For a request below ``prefix``/USER/…: (the user's base URL path, the method, the
    segments after USER); 404 unless USER is the logged-in user."""
    if not parts:
        raise DAVError(HTTP_NOT_FOUND)
    check_user(session, parts[0])
    return f"{prefix}/{session.user_name}", str(environ.get("REQUEST_METHOD", "")), parts[1:]


def bad_request(message: str) -> DAVError:
    return DAVError(HTTP_BAD_REQUEST, message)


# -- locks ---------------------------------------------------------------------------------


def locks_checked(
    provider: Provider, environ: dict[str, Any], session: Session, paths: list[str]
) -> contextlib.AbstractContextManager[None]:
    """One transaction serialised with lock grants, after a depth-0 write check (423) of each
    tree path in ``paths``: a rollback or a restore changes the tree like a PUT does."""
    lm = provider.lock_manager
    if lm is None:
        return contextlib.nullcontext()
    if "wsgidav.conditions.if" not in environ:
        util.parse_if_header_dict(environ)
    urls = [ref_url(session.lock_namespace, p) for p in paths]
    principal = str(environ.get("wsgidav.auth.user_name", ""))
    checked: contextlib.AbstractContextManager[None] = lm.checked(
        session.lock_namespace, urls, environ["wsgidav.ifLockTokenList"], principal
    )
    return checked


def check_unlocked(
    provider: Provider, environ: dict[str, Any], session: Session, path: str
) -> None:
    """423 unless the request may write at ``path`` (depth 0). Inside ``locks_checked``, after
    a change whose place was known only once it was made: the 423 rolls the change back."""
    lm = provider.lock_manager
    if lm is None:
        return
    if "wsgidav.conditions.if" not in environ:
        util.parse_if_header_dict(environ)
    lm.check_write_permission(
        url=ref_url(session.lock_namespace, path),
        depth="0",
        token_list=environ["wsgidav.ifLockTokenList"],
        principal=str(environ.get("wsgidav.auth.user_name", "")),
    )
