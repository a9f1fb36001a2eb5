"""``/remote.php/dav/versions/USER/``: a file's versions, as Nextcloud serves them.

::

    versions/USER/                          the user's versions home: versions/, restore/
    versions/USER/versions/                 (lists nothing: files are addressed by id)
    versions/USER/versions/FILEID/          every kept version of the file, newest first
    versions/USER/versions/FILEID/N         version N: GET/HEAD, PROPPATCH nc:version-label,
                                            DELETE, MOVE to versions/USER/restore/… (rollback)
    versions/USER/restore/                  where a version is moved to restore it

``FILEID`` is the file's ``oc:fileid`` (a random positive 63-bit number); ``N`` is the
version number. The current version is listed too (Nextcloud's web client matches it by its
modification time) and cannot be deleted (403). A rollback makes a new current version that
shares the old one's blob: nothing is copied. Files in the trash keep their versions and are
reachable here by the same id.

``USER`` must be the logged-in user (404 otherwise, as everywhere). What the vault refuses
keeps its status (``vault_call``); unknown ids and version numbers are 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FAILED_DEPENDENCY,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
)

from davserver.dav import history
from davserver.dav.destination import VERSIONS_PREFIX, check_user, parse_destination, under
from davserver.dav.history import NC, OC, D, Row
from davserver.dav.resources import forget_resources

if TYPE_CHECKING:
    from davserver.dav.resources import Provider
    from davserver.vault.history import VersionInfo
    from davserver.vault.tree import Entry, Session

VERSION_LABEL = NC + "version-label"
VERSION_AUTHOR = NC + "version-author"
OC_SIZE = OC + "size"
_COLLECTION_ALLOW = "OPTIONS, PROPFIND"
_VERSION_ALLOW = "OPTIONS, GET, HEAD, PROPFIND, PROPPATCH, DELETE, MOVE"
_MAX_ID = 2**63


def serve(
    provider: Provider, environ: dict[str, Any], start_response: Any, session: Session, rest: str
) -> Any:
    """Answer one request below ``VERSIONS_PREFIX`` (``rest`` is the path after it)."""
    return history.answer(
        environ,
        start_response,
        lambda: _route(provider, environ, start_response, session, history.segments(rest)),
    )


def _number(text: str) -> int:
    """A decimal id from the URL; 404 for anything else (as for an unknown id)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise DAVError(HTTP_NOT_FOUND)
    value = int(text)
    if not 0 <= value < _MAX_ID:
        raise DAVError(HTTP_NOT_FOUND)
    return value


def _route(
    provider: Provider,
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    parts: list[str],
) -> Any:
    base, method, below = history.own_space(environ, session, VERSIONS_PREFIX, parts)
    if len(below) <= 1 or (len(below) == 2 and below[0] == "versions"):
        if below and below[0] not in ("versions", "restore"):
            raise DAVError(HTTP_NOT_FOUND)
        return _collection(environ, start_response, session, base, below, method)
    if below[0] != "versions" or len(below) != 3:
        raise DAVError(HTTP_NOT_FOUND)
    fileid, number = _number(below[1]), _number(below[2])
    if method == "OPTIONS":
        return history.options(start_response, _VERSION_ALLOW)
    if method in history.DOWNLOADS:
        return _get(environ, start_response, session, fileid, number)
    if method == "PROPFIND":
        mode, names = history.parse_propfind(environ)
        history.depth(environ)
        entry, info = _version(session, fileid, number)
        row = _version_row(base, fileid, entry, info)
        return history.multistatus(environ, start_response, [row], mode, names)
    if method == "PROPPATCH":
        return _proppatch(environ, start_response, session, base, fileid, number)
    if method == "DELETE":
        session.delete_version(fileid, number)
        return history.no_content(start_response)
    if method == "MOVE":
        return _restore(provider, environ, start_response, session, fileid, number)
    if method in ("PUT", "MKCOL", "COPY", "LOCK"):
        raise DAVError(HTTP_FORBIDDEN, "versions are read-only")
    raise history.not_allowed(_VERSION_ALLOW)


def _collection(
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    base: str,
    below: list[str],
    method: str,
) -> Any:
    """The home, ``versions/``, ``restore/`` and ``versions/FILEID/``."""
    if method == "OPTIONS":
        return history.options(start_response, _COLLECTION_ALLOW)
    if method in ("PUT", "MKCOL", "DELETE", "MOVE", "COPY", "PROPPATCH", "LOCK"):
        raise DAVError(HTTP_FORBIDDEN, "this collection cannot be changed")
    if method != "PROPFIND":
        raise history.not_allowed(_COLLECTION_ALLOW)
    mode, names = history.parse_propfind(environ)
    depth = history.depth(environ)
    rows: list[Row] = []
    if not below:
        rows.append(history.collection(base + "/", session.user_name))
        if depth == "1":
            rows.append(history.collection(base + "/versions/", "versions"))
            rows.append(history.collection(base + "/restore/", "restore"))
    elif len(below) == 1:
        rows.append(history.collection(f"{base}/{below[0]}/", below[0]))
    else:
        fileid = _number(below[1])
        entry, infos = session.versions(fileid)
        rows.append(history.collection(f"{base}/versions/{fileid}/", str(fileid)))
        if depth == "1":
            rows += [_version_row(base, fileid, entry, info) for info in infos]
    return history.multistatus(environ, start_response, rows, mode, names)


def _version(session: Session, fileid: int, number: int) -> tuple[Entry, VersionInfo]:
    entry, infos = session.versions(fileid)
    for info in infos:
        if info.version_no == number:
            return entry, info
    raise DAVError(HTTP_NOT_FOUND)


def _version_row(base: str, fileid: int, entry: Entry, info: VersionInfo) -> Row:
    row = Row(f"{base}/versions/{fileid}/{info.version_no}")
    props = row.props
    props[D + "resourcetype"] = history.resourcetype(False)
    props[D + "getlastmodified"] = util.get_rfc1123_time(info.mtime)
    props[D + "creationdate"] = util.get_rfc3339_time(info.created)
    props[D + "getcontentlength"] = str(info.size)
    props[D + "getcontenttype"] = str(util.guess_mime_type(entry.name))
    props[D + "getetag"] = f'"{info.etag}"'
    props[VERSION_LABEL] = info.label or ""
    props[VERSION_AUTHOR] = ""
    props[OC_SIZE] = str(info.size)
    return row


def _get(
    environ: dict[str, Any], start_response: Any, session: Session, fileid: int, number: int
) -> Any:
    entry, info = _version(session, fileid, number)
    return history.download(
        environ,
        start_response,
        name=entry.name,
        size=info.size,
        mtime=info.mtime,
        etag=info.etag,
        opener=lambda: session.open_version(fileid, number),
    )


def _proppatch(
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    base: str,
    fileid: int,
    number: int,
) -> Any:
    """Only ``nc:version-label`` can be set or removed; all or nothing (RFC 4918 §9.2)."""
    root = util.parse_xml_body(environ)
    if root.tag != D + "propertyupdate":
        raise DAVError(HTTP_BAD_REQUEST, "expected a propertyupdate element")
    changes: list[tuple[str, str | None]] = []
    for op in root:
        if op.tag not in (D + "set", D + "remove"):
            continue
        for prop_el in op.iter(D + "prop"):
            for el in prop_el:
                if not isinstance(el.tag, str):
                    continue
                value = (el.text or "").strip() if op.tag == D + "set" else None
                changes.append((el.tag, value))
    if not changes:
        raise DAVError(HTTP_BAD_REQUEST, "no property to change")
    _version(session, fileid, number)  # 404 before anything else
    refused = {name for name, _ in changes if name != VERSION_LABEL}
    results: list[tuple[str, Any]] = []
    if refused:
        for name, _ in changes:
            error = HTTP_FORBIDDEN if name in refused else HTTP_FAILED_DEPENDENCY
            results.append((name, DAVError(error)))
    else:
        for name, value in changes:
            session.set_version_label(fileid, number, value or None)
            results.append((name, None))
    ms = xml_tools.make_multistatus_el()
    util.add_property_response(
        ms, history.href(f"{base}/versions/{fileid}/{number}"), _unique(results)
    )
    return util.send_multi_status_response(environ, start_response, ms)


def _unique(results: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Each property once (the last change of it wins, as it was applied last)."""
    by_name = dict(results)
    return list(by_name.items())


def _restore(
    provider: Provider,
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    fileid: int,
    number: int,
) -> Any:
    """MOVE ``versions/FILEID/N`` to ``restore/<anything>``: N becomes the current version."""
    dest = parse_destination(environ)
    rest = under(dest, VERSIONS_PREFIX)
    if rest is None:
        raise DAVError(HTTP_FORBIDDEN, "a version is restored by moving it into restore/")
    parts = history.segments(rest)
    if parts:
        check_user(session, parts[0])
    if len(parts) < 2 or parts[1] != "restore":
        raise DAVError(HTTP_FORBIDDEN, "a version is restored by moving it into restore/")
    _version(session, fileid, number)
    path = session.path_of(fileid)
    with history.locks_checked(provider, environ, session, [path] if path else []):
        session.restore_version(fileid, number)
    forget_resources(environ)
    return history.no_content(start_response, "201 Created")
