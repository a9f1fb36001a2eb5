"""Request handlers that replace WsgiDAV's where an encrypted, streaming store needs it.

- **PUT** streams the body straight into ``Session.write_file`` (bounded memory, one
  ``block_size`` at a time) and passes the announced length (Content-Length or
  ``X-Expected-Entity-Length``) so a body that ends early is never committed. ``X-OC-Mtime``
  and ``OC-Checksum`` (ownCloud/rclone) are honoured.
- **GET/HEAD** serve one byte range with one ranged blob read (RFC 7233: first-last, first-,
  suffix; 416 when unsatisfiable; several ranges are answered with the whole body), strong
  quoted ETags, ``Last-Modified`` and WsgiDAV's evaluation of ``If-*`` headers.
- **PROPFIND** refuses ``Depth: infinity`` with 403 and the ``propfind-finite-depth``
  condition (RFC 4918 §9.1) and answers a *missing* Depth header as ``Depth: 1`` — what
  sabre/dav (Nextcloud) does when infinity is disabled; webdav4 and others send no Depth
  and expect a listing, not a refusal. Then WsgiDAV's handler runs.
- **PROPPATCH** validates every change first, then applies them in one vault transaction
  (RFC 4918 §9.2: all or nothing). ``{DAV:}lastmodified`` (rclone) and ``getlastmodified``
  set the modification time; the computed ``oc:*`` properties are protected (403), except
  that re-sending ``oc:checksums`` equal to the stored ones is accepted as a no-op.
- **COPY/MOVE** run WsgiDAV's checks in its order, with ``Destination`` parsed as a URI by
  ``davserver.dav.destination`` (WsgiDAV decodes it before splitting it, cutting names at
  ``%3F`` and ``%3B``), then our ``handle_copy``/``handle_move``: 201 when the destination
  was new, 204 when it was replaced. ``Depth: 1`` on COPY (webdavclient3) is taken as
  infinity, as sabre/dav does.
- **OPTIONS** advertises ``DAV: 1, 2``.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FAILED_DEPENDENCY,
    HTTP_FORBIDDEN,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
    PRECONDITION_CODE_ProtectedProperty,
)
from wsgidav.util import etree

from davserver.dav import destination, syncprops
from davserver.dav import propfind as fast_propfind
from davserver.dav.errors import to_dav_error, vault_call
from davserver.dav.resources import (
    COMPUTED_PROPS,
    CREATED_KEY,
    LOCK_PROPS,
    MTIME_ACCEPTED_KEY,
    OC_CHECKSUMS,
    FileResource,
    _VaultResource,
    forget_resources,
    parse_mtime,
    ref_url,
    session_of,
)
from davserver.errors import BlobNotFound, DavServerError, NotFound, VersionGone
from davserver.vault import perms
from davserver.vault.tree import Entry, Session

if TYPE_CHECKING:
    from davserver.dav.resources import Provider

DAV_COMPLIANCE = "1, 2"
WIN32_NS = "{urn:schemas-microsoft-com:}"
# rclone's fallback for modification times when X-OC-Mtime is not accepted; ownCloud and
# sabre/dav also take getlastmodified. Unix seconds or an HTTP date.
RCLONE_MTIME = "{DAV:}lastmodified"
MTIME_PROPS = (RCLONE_MTIME, "{DAV:}getlastmodified")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_UNSATISFIABLE = (-1, -1)


def dispatch(provider: Provider, environ: dict[str, Any], start_response: Any, default: Any) -> Any:
    method = environ["REQUEST_METHOD"]
    server = getattr(default, "__self__", None)  # WsgiDAV's RequestServer for this request
    if method in ("GET", "HEAD"):
        return get(provider, server, environ, start_response, head=method == "HEAD")
    if method == "PUT":
        return put(provider, server, environ, start_response)
    if method == "PROPFIND":
        return propfind(provider, server, environ, start_response)
    if method == "PROPPATCH":
        return proppatch(provider, server, environ, start_response)
    if method in ("COPY", "MOVE"):
        return copy_move(provider, server, environ, start_response)
    if method == "OPTIONS":
        return options(provider, environ, start_response)
    if method in ("LOCK", "UNLOCK"):
        # Locks change what others may write: a read-only or upload-only session takes none
        # (WsgiDAV's LOCK reaches the provider only to create an unmapped file).
        with vault_call():
            session_of(environ).require(perms.CHANGE)
    if method == "LOCK":
        return lock(provider, server, environ, start_response, default)
    if method == "MKCOL":
        return mkcol(provider, environ, start_response, default)
    return default(environ, start_response)


def written_headers(
    provider: Provider, environ: dict[str, Any], path: str
) -> list[tuple[str, str]]:
    """``ETag``, ``OC-ETag`` and ``OC-FileId`` of what a request just wrote at ``path``
    (``syncprops.entity_headers``), looked up afresh; none if it is already gone again."""
    forget_resources(environ)
    res = provider.get_resource_inst(path, environ)
    entry = getattr(res, "entry", None)
    if entry is None:
        return []
    return syncprops.write_headers(session_of(environ), entry)


def mkcol(provider: Provider, environ: dict[str, Any], start_response: Any, default: Any) -> Any:
    """WsgiDAV's MKCOL, with the new collection's ETag and file id in a 201's headers."""

    def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if status.startswith("201"):
            try:
                headers = [*headers, *written_headers(provider, environ, environ["PATH_INFO"])]
            except (DAVError, DavServerError):
                pass  # the collection was made; its headers are a courtesy
        return start_response(status, headers, exc_info)

    return default(environ, respond)


def _parent_path(path: str) -> str:
    return util.get_uri_parent(path) or "/"


# -- OPTIONS --------------------------------------------------------------------------------


def options(provider: Provider, environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    res = provider.get_resource_inst(path, environ)
    headers = [("Content-Length", "0"), ("DAV", DAV_COMPLIANCE), ("MS-Author-Via", "DAV")]
    common = ["OPTIONS", "PROPFIND", "PROPPATCH", "DELETE", "COPY", "MOVE", "LOCK", "UNLOCK"]
    if res is not None and res.is_collection:
        allow = ["HEAD", "GET", *common]
    elif res is not None:
        allow = ["HEAD", "GET", "PUT", *common]
        headers.append(("Accept-Ranges", "bytes"))
    else:
        parent = provider.get_resource_inst(_parent_path(path), environ)
        if parent is None or not parent.is_collection:
            raise DAVError(HTTP_NOT_FOUND)
        allow = ["OPTIONS", "PUT", "MKCOL", "LOCK"]
    headers.append(("Allow", ", ".join(allow)))
    start_response("200 OK", headers)
    return [b""]


# -- GET / HEAD -----------------------------------------------------------------------------


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a single-range ``Range`` header asks for.

    Returns None when the header is to be ignored (not one syntactically valid byte range:
    RFC 7233 §3.1 lets a server ignore it) and ``(-1, -1)`` when it is unsatisfiable.
    """
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid, hence ignored (RFC 7233 §2.1)
    if start >= size:
        return _UNSATISFIABLE
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end


def _if_range_matches(environ: dict[str, Any], etag: str, mtime: float) -> bool:
    value = environ.get("HTTP_IF_RANGE")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return bool(value == f'"{etag}"')  # strong comparison only (RFC 7233 §3.2)
    when = util.parse_time_string(value)
    return bool(when) and int(mtime) == when


_HTTP_CONDITIONS = (
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)


def _etag_listed(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or f'"{etag}"' in tags


def _not_modified(server: Any, res: FileResource, environ: dict[str, Any]) -> bool:
    """RFC 7232 §6 for GET/HEAD: 412 for a failed If-Match/If-Unmodified-Since, True when
    the answer is 304. (WsgiDAV's evaluation answers 200 to If-Modified-Since equal to
    Last-Modified.) The WebDAV ``If`` header is left to WsgiDAV."""
    etag, mtime = res.entry.etag, int(res.entry.mtime)
    if "HTTP_IF_MATCH" in environ:
        if not _etag_listed(environ["HTTP_IF_MATCH"], etag):
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match failed")
    elif "HTTP_IF_UNMODIFIED_SINCE" in environ:
        when = util.parse_time_string(environ["HTTP_IF_UNMODIFIED_SINCE"])
        if when and mtime > when:
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Unmodified-Since failed")
    if "HTTP_IF" in environ:
        rest = {k: v for k, v in environ.items() if k not in _HTTP_CONDITIONS}
        server._evaluate_if_headers(res, rest)
        for key in ("wsgidav.conditions.if", "wsgidav.ifLockTokenList"):
            environ[key] = rest[key]
    if "HTTP_IF_NONE_MATCH" in environ:
        return _etag_listed(environ["HTTP_IF_NONE_MATCH"], etag)
    if "HTTP_IF_MODIFIED_SINCE" in environ:
        when = util.parse_time_string(environ["HTTP_IF_MODIFIED_SINCE"])
        return bool(when) and mtime <= when
    return False


# A GET whose version is replaced and removed between its lookup and its first read starts
# again from the lookup (it then serves the new version, with the new size and ETag); after
# this many attempts it answers 503 with Retry-After.
GET_ATTEMPTS = 5


def get(
    provider: Provider,
    server: Any,
    environ: dict[str, Any],
    start_response: Any,
    *,
    head: bool,
) -> Any:
    """GET/HEAD of a file: status, headers and body all belong to one version (the one the
    lookup found), never to a newer one that a concurrent PUT committed meanwhile."""
    for _attempt in range(GET_ATTEMPTS):
        answer = _get_once(provider, server, environ, start_response, head=head)
        if answer is not None:
            return answer
        forget_resources(environ)
    with vault_call():
        raise VersionGone()


def _get_once(
    provider: Provider,
    server: Any,
    environ: dict[str, Any],
    start_response: Any,
    *,
    head: bool,
) -> Any:
    """One attempt at a GET/HEAD; None when the version looked up was removed before its
    bytes could be read (the caller looks up again)."""
    path = environ["PATH_INFO"]
    res = provider.get_resource_inst(path, environ)
    if res is None:
        raise DAVError(HTTP_NOT_FOUND)
    if res.is_collection:
        # The dir browser answers GET/HEAD on collections before we are reached.
        raise DAVError(HTTP_METHOD_NOT_ALLOWED)
    assert isinstance(res, FileResource)
    entry = res.entry
    size = entry.size
    validators = [
        ("Last-Modified", util.get_rfc1123_time(entry.mtime)),
        ("ETag", f'"{entry.etag}"'),
    ]
    if _not_modified(server, res, environ):
        start_response("304 Not Modified", [*validators, ("Content-Length", "0")])
        return [b""]
    headers = [("Content-Type", res.get_content_type()), *validators, ("Accept-Ranges", "bytes")]
    start, end = 0, size - 1
    status = "200 OK"
    if "HTTP_RANGE" in environ and _if_range_matches(environ, entry.etag, entry.mtime):
        wanted = parse_range(environ["HTTP_RANGE"], size)
        if wanted == _UNSATISFIABLE:
            raise DAVError(416, add_headers=[("Content-Range", f"bytes */{size}")])
        if wanted is not None:
            start, end = wanted
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    headers.append(("Content-Length", str(end - start + 1)))
    if head or (end < start and size > 0):  # an empty file is still read: it is checked
        start_response(status, headers)
        return [b""]
    opened = _open_version(session_of(environ), path, entry, start, end)
    if opened is None:
        return None
    first, body = opened
    start_response(status, headers)
    return primed(first, body)


def _open_version(
    session: Session, path: str, entry: Entry, start: int, end: int
) -> tuple[bytes, Generator[bytes, None, None]] | None:
    """(first block, the rest) of bytes ``start..end`` of exactly ``entry``'s version; None
    when that version is gone (replaced, its blob collected by another process).

    The first block is made before the status line: the blob header, the object's size and
    the first segment are checked by then, so a damaged object is a clean 500 (the vault
    logs it) and not a 200 that breaks off."""
    try:
        reader = session.open_file(path, version_id=entry.version_id)
    except (VersionGone, NotFound):
        return None
    except DavServerError as exc:
        raise to_dav_error(exc) from None
    body = stream_range(reader, start, end)
    try:
        first = next(body, b"")
    except DAVError as exc:
        body.close()
        if isinstance(exc.__cause__, BlobNotFound) and not _version_exists(session, path, entry):
            return None  # removed between the version lookup and the blob read
        raise
    return first, body


def _version_exists(session: Session, path: str, entry: Entry) -> bool:
    try:
        session.open_file(path, version_id=entry.version_id).close()
    except (VersionGone, NotFound):
        return False
    except DavServerError:
        return True
    return True


def stream_range(reader: Any, start: int, end: int) -> Generator[bytes, None, None]:
    """Plaintext bytes ``start``..``end`` of an open reader (closed at the end); vault
    errors become DAV errors. Also serves the versions and trash downloads."""
    try:
        try:
            yield from reader.iter_range(start, end)
        except DavServerError as exc:
            raise to_dav_error(exc) from exc
    finally:
        reader.close()


def primed(first: bytes, rest: Generator[bytes, None, None]) -> Iterator[bytes]:
    """A body whose first chunk was read before the response started (so an error in it
    could still be answered with a status)."""
    try:
        if first:
            yield first
        yield from rest
    finally:
        rest.close()


# -- PUT ------------------------------------------------------------------------------------


def _int_header(environ: dict[str, Any], key: str) -> int | None:
    raw = str(environ.get(key, "")).strip()
    if raw == "":
        return None
    if not raw.isdigit():
        raise DAVError(HTTP_BAD_REQUEST, f"invalid {key.removeprefix('HTTP_')} header")
    return int(raw)


def is_chunked(environ: dict[str, Any]) -> bool:
    return "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()


def _checksums(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """SHA-1 / MD5 announced in ``OC-Checksum: SHA1:<hex>`` (ownCloud, rclone)."""
    found = parse_checksums(str(environ.get("HTTP_OC_CHECKSUM", "")))
    if found is None:
        raise DAVError(HTTP_BAD_REQUEST, "invalid OC-Checksum header")
    return found.get("sha1"), found.get("md5")


_HEX_LEN = {"sha1": 40, "md5": 32}


def parse_checksums(text: str) -> dict[str, str] | None:
    """{"sha1": hex, "md5": hex} from ``SHA1:<hex> MD5:<hex>`` (other algorithms, such as
    ADLER32, are skipped); None if a SHA-1 or MD5 is not well-formed hex."""
    out: dict[str, str] = {}
    for item in text.split():
        algo, _, value = item.partition(":")
        algo = algo.lower()
        if algo in _HEX_LEN:
            if not re.fullmatch(r"[0-9a-fA-F]{%d}" % _HEX_LEN[algo], value):  # noqa: UP031
                return None
            out[algo] = value.lower()
    return out


def _body(
    environ: dict[str, Any], length: int | None, block_size: int, limit: int
) -> Iterator[bytes]:
    """The request body, ``block_size`` bytes at a time; stops at ``length`` (if known)."""
    stream = environ["wsgi.input"]
    remaining = length
    total = 0
    while remaining is None or remaining > 0:
        want = block_size if remaining is None else min(block_size, remaining)
        try:
            chunk = stream.read(want)
        except (OSError, ValueError) as exc:  # connection lost, bad chunk framing
            raise DAVError(HTTP_BAD_REQUEST, "request body could not be read") from exc
        if not chunk:
            break
        total += len(chunk)
        if limit and total > limit:
            raise DAVError(413, "request body too large")
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def announced_length(environ: dict[str, Any], limit: int) -> tuple[int | None, int | None]:
    """(Content-Length or None when chunked, the length the body must have or None).

    A chunked body (Finder) announces its length in X-Expected-Entity-Length, if at all;
    either is checked against the body as it streams. 413 when over ``limit`` (0 = none)."""
    chunked = is_chunked(environ)
    length = None if chunked else (_int_header(environ, "CONTENT_LENGTH") or 0)
    expected = _int_header(environ, "HTTP_X_EXPECTED_ENTITY_LENGTH") if chunked else length
    if limit and expected is not None and expected > limit:
        raise DAVError(413, "request body too large")
    return length, expected


def put(provider: Provider, server: Any, environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if "HTTP_CONTENT_ENCODING" in environ:
        raise DAVError(501, "Content-Encoding is not supported")
    if "HTTP_CONTENT_RANGE" in environ:
        raise DAVError(HTTP_BAD_REQUEST, "Content-Range is not allowed on PUT (RFC 7231 §4.3.4)")
    res = provider.get_resource_inst(path, environ)
    if res is not None and res.is_collection:
        raise DAVError(HTTP_METHOD_NOT_ALLOWED, "cannot PUT to a collection")
    parent = provider.get_resource_inst(_parent_path(path), environ)
    if parent is None or not parent.is_collection:
        raise DAVError(HTTP_CONFLICT, "the parent collection does not exist")
    if res is None and "HTTP_IF_MATCH" in environ:
        raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match on a missing resource")
    server._evaluate_if_headers(res, environ)

    length, expected = announced_length(environ, provider.max_body_bytes)
    limit = provider.max_body_bytes
    mtime = None
    if "HTTP_X_OC_MTIME" in environ:
        mtime = parse_mtime(environ["HTTP_X_OC_MTIME"])
        if mtime is None:
            raise DAVError(HTTP_BAD_REQUEST, "invalid X-OC-Mtime header")
    sha1, md5 = _checksums(environ)

    target = res if res is not None else parent
    lock_manager = provider.lock_manager
    if "wsgidav.conditions.if" not in environ:
        util.parse_if_header_dict(environ)
    # Held while the body streams in: no other request of this process can LOCK the URL
    # between the check and the commit (WsgiDAV's TOCTOU guard).
    tokens, principal = environ["wsgidav.ifLockTokenList"], environ["wsgidav.user_name"]
    session = session_of(environ)
    # The locks are checked again in the commit's transaction (``DavLockManager.checked``):
    # a lock granted by another server process while the body streamed in is seen there.
    urls = [ref_url(session.lock_namespace, path)]
    if res is None:
        urls.append(target.get_ref_url())

    def commit_guard() -> contextlib.AbstractContextManager[None]:
        guard: contextlib.AbstractContextManager[None] = lock_manager.checked(
            session.lock_namespace, urls, tokens, principal
        )
        return guard

    with lock_manager.write_transaction(
        url=target.get_ref_url(), token_list=tokens, principal=principal
    ):
        body = _body(environ, length, provider.block_size, limit)
        with vault_call():
            entry = session.write_file(
                path,
                body,
                expected_length=expected,
                mtime=mtime,
                sha1=sha1,
                md5=md5,
                commit_guard=commit_guard,
            )
    forget_resources(environ)
    headers = [*syncprops.write_headers(session, entry), ("Content-Length", "0")]
    if mtime is not None:
        headers.append(("X-OC-Mtime", "accepted"))
    if res is None:
        start_response("201 Created", [*headers, ("Content-Type", "text/plain")])
    else:
        start_response("204 No Content", headers)
    return [b""]


# -- PROPFIND / PROPPATCH ---------------------------------------------------------------------


def propfind(provider: Provider, server: Any, environ: dict[str, Any], start_response: Any) -> Any:
    # RFC 4918 §9.1: no Depth header means infinity. Infinity is refused (it would build the
    # whole tree's response in memory); a missing header is answered as Depth 1, as
    # sabre/dav does with infinity disabled, since clients that omit it (webdav4) want a
    # listing or a stat, never a refusal.
    depth = str(environ.get("HTTP_DEPTH", "1")).strip().lower() or "1"
    if depth == "infinity":
        raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
    if depth not in ("0", "1"):
        raise DAVError(HTTP_BAD_REQUEST, "invalid Depth header")
    environ["HTTP_DEPTH"] = depth
    return fast_propfind.propfind(provider, server, environ, start_response)


def _proppatch_changes(root: Any) -> list[tuple[str, Any]]:
    """[(property name, element to set or None to remove)] in document order."""
    if root.tag != "{DAV:}propertyupdate":
        raise DAVError(HTTP_BAD_REQUEST, "expected a propertyupdate element")
    changes: list[tuple[str, Any]] = []
    for op in root:
        if op.tag not in ("{DAV:}set", "{DAV:}remove"):
            raise DAVError(HTTP_BAD_REQUEST, "expected set or remove")
        for prop in op:
            if prop.tag != "{DAV:}prop":
                raise DAVError(HTTP_BAD_REQUEST, "expected prop")
            for el in prop:
                if not isinstance(el.tag, str):
                    continue  # comments, processing instructions
                changes.append((el.tag, el if op.tag == "{DAV:}set" else None))
    return changes


def proppatch(provider: Provider, server: Any, environ: dict[str, Any], start_response: Any) -> Any:
    res = fast_propfind.existing_resource(provider, server, environ)
    # The Depth header means nothing for PROPPATCH; some clients send Depth: 1.
    server._check_write_permission(res, "0", environ)
    root = util.parse_xml_body(environ)
    changes = _proppatch_changes(root)

    props: dict[str, str | None] = {}
    mtime: float | None = None
    results: list[tuple[str, DAVError | None]] = []
    for name, el in changes:
        error = None
        if name in MTIME_PROPS or name == WIN32_NS + "Win32LastModifiedTime":
            when = parse_mtime(el.text if el is not None else None)
            if el is not None and when is None:
                error = DAVError(HTTP_BAD_REQUEST, "invalid time")
            elif when is not None:
                mtime = when
            if name in MTIME_PROPS:
                results.append((name, error))
                continue
        if name == OC_CHECKSUMS and el is not None and _same_checksums(res, el):
            # rclone (owncloud vendor) re-sends the checksum with every modification time,
            # since ownCloud forgets it on a touch. Ours belong to the version: a value
            # that matches them is a no-op; any other is refused below.
            results.append((name, None))
            continue
        if name in LOCK_PROPS or name in COMPUTED_PROPS or name.startswith("{DAV:}"):
            error = DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_ProtectedProperty)
        elif el is None:
            props[name] = None
        else:
            props[name] = etree.tostring(el).decode("utf-8")
        results.append((name, error))

    failed = any(e is not None for _, e in results)
    if failed:
        # Nothing is applied; the others fail with 424 (RFC 4918 §9.2).
        reply: list[tuple[str, Any]] = [
            (n, e if e is not None else DAVError(HTTP_FAILED_DEPENDENCY)) for n, e in results
        ]
    else:
        with vault_call():
            session = session_of(environ)
            if props:
                session.set_props(res.path, props)
            if mtime is not None:
                session.set_mtime(res.path, mtime)
        forget_resources(environ)
        reply = [(n, None) for n, _ in results]
    ms = xml_tools.make_multistatus_el()
    util.add_property_response(ms, res.get_href(), reply)
    return util.send_multi_status_response(environ, start_response, ms)


def _same_checksums(res: _VaultResource, el: Any) -> bool:
    """Whether an ``oc:checksums`` value names only checksums equal to the stored ones."""
    given = parse_checksums(" ".join(t.strip() for t in el.itertext()))
    if not given or res.is_collection:
        return False
    stored = res._hashes()
    return all(stored.get(algo) == value for algo, value in given.items())


# -- COPY / MOVE / LOCK ---------------------------------------------------------------------


def copy_move(provider: Provider, server: Any, environ: dict[str, Any], start_response: Any) -> Any:
    """COPY and MOVE (RFC 4918 §9.8, §9.9) with WsgiDAV's checks, in WsgiDAV's order, and the
    Destination parsed as a URI (``davserver.dav.destination``). The tree operation is one
    vault call (``handle_copy``/``handle_move``); 201 when the destination was new."""
    is_move = environ["REQUEST_METHOD"] == "MOVE"
    src_path = environ["PATH_INFO"]
    src_res = provider.get_resource_inst(src_path, environ)
    if src_res is None:
        raise DAVError(HTTP_NOT_FOUND)
    overwrite = str(environ.setdefault("HTTP_OVERWRITE", "T")).strip().upper()
    if overwrite not in ("T", "F"):
        raise DAVError(HTTP_BAD_REQUEST, "invalid Overwrite header")
    environ["HTTP_OVERWRITE"] = overwrite
    depth = str(environ.get("HTTP_DEPTH", "")).strip().lower()
    if not is_move and depth == "1":
        # webdavclient3 copies a collection with "Depth: 1", which RFC 4918 §9.8.3 does not
        # allow; sabre/dav (Nextcloud) ignores Depth on COPY and copies the tree, and so do
        # we for that value. "0" keeps its meaning.
        depth = "infinity"
    if depth not in ("", "0", "infinity"):
        raise DAVError(HTTP_BAD_REQUEST, "invalid Depth header")
    if src_res.is_collection:
        depth = depth or "infinity"  # RFC 4918 §9.8.3
        if is_move and depth != "infinity":
            raise DAVError(HTTP_BAD_REQUEST, "Depth for MOVE of a collection must be infinity")
    else:
        depth = "0"  # litmus copy_simple sends infinity for a file
    environ["HTTP_DEPTH"] = depth

    with vault_call():
        dest_path = destination.destination_tree_path(environ, session_of(environ))
    dest_path = _tree_form(dest_path)
    dest_res = provider.get_resource_inst(dest_path, environ)
    dest_parent = provider.get_resource_inst(_parent_path(dest_path), environ)
    if dest_path == "/" or dest_parent is None or not dest_parent.is_collection:
        raise DAVError(HTTP_CONFLICT, "the destination's parent must be a collection")

    server._evaluate_if_headers(src_res, environ)
    server._evaluate_if_headers(dest_res, environ)
    if is_move:
        server._check_write_permission(src_res, "infinity", environ)
        src_parent = provider.get_resource_inst(util.get_uri_parent(src_path), environ)
        if src_parent is not None:
            server._check_write_permission(src_parent, "0", environ)
    if dest_res is None:
        server._check_write_permission(dest_parent, "0", environ)
    server._check_write_permission(dest_res, "infinity", environ)

    # Compared as the vault names them: NFC (a Finder sends NFD, and NFC and NFD of one name
    # are one node).
    src_tree = unicodedata.normalize("NFC", _tree_form(src_path))
    dest_nfc = unicodedata.normalize("NFC", dest_path)
    if src_tree == dest_nfc:
        raise DAVError(HTTP_FORBIDDEN, "cannot copy or move a resource onto itself")
    if util.is_equal_or_child_uri(src_tree, dest_nfc):
        raise DAVError(HTTP_FORBIDDEN, "cannot copy or move a resource below itself")
    if dest_res is not None and overwrite == "F":
        raise DAVError(HTTP_PRECONDITION_FAILED, "the destination exists and Overwrite is F")

    if is_move:
        src_res.handle_move(dest_path)
    else:
        src_res.handle_copy(dest_path, depth_infinity=depth == "infinity")
    headers = [*written_headers(provider, environ, dest_path), ("Content-Length", "0")]
    if environ.get(MTIME_ACCEPTED_KEY):
        headers.append(("X-OC-Mtime", "accepted"))
    created = bool(environ.get(CREATED_KEY))
    start_response("201 Created" if created else "204 No Content", headers)
    return [b""]


def _tree_form(path: str) -> str:
    """A tree path without its trailing slash (``/`` stays ``/``), as the vault and the
    resource cache name it."""
    return "/" + path.strip("/") if path.strip("/") else "/"


def lock(
    provider: Provider,
    server: Any,
    environ: dict[str, Any],
    start_response: Any,
    default: Any,
) -> Any:
    # LOCK on an unmapped URL creates an empty file (RFC 4918 §7.3): creating a member needs
    # the parent's lock token, checked here before WsgiDAV creates it.
    path = environ["PATH_INFO"]
    unmapped = provider.get_resource_inst(path, environ) is None
    if unmapped:
        parent = provider.get_resource_inst(_parent_path(path), environ)
        if parent is not None and isinstance(parent, _VaultResource):
            server._check_write_permission(parent, "0", environ)
    captured: list[Any] = []

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers, exc_info]
        return lambda data: None

    if unmapped and provider.lock_manager is not None:
        # WsgiDAV creates the empty file, then asks for the lock: both in one transaction,
        # so a refused lock (423) rolls the creation back (no empty file appears), and the
        # parent's locks are checked again inside it.
        forget_resources(environ)
        with provider.lock_manager.atomic(session_of(environ).lock_namespace):
            parent = provider.get_resource_inst(_parent_path(path), environ)
            if parent is not None and isinstance(parent, _VaultResource):
                server._check_write_permission(parent, "0", environ)
            body = b"".join(default(environ, capture))
        forget_resources(environ)
        session_of(environ).vault.collect_garbage(grace=0)
    else:
        body = b"".join(default(environ, capture))
    status, headers, exc_info = captured
    token = next((v for k, v in headers if k.lower() == "lock-token"), None)
    if token and status[:3] in ("200", "201") and body:
        body = _only_new_lock(body, token.strip().strip("<>"))
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
    start_response(status, headers, exc_info)
    return [body]


def _only_new_lock(body: bytes, token: str) -> bytes:
    """Keep only the lock just granted in a LOCK response's lockdiscovery.

    WsgiDAV answers with every lock on the resource. With shared locks, clients that take
    the first token of the body instead of the Lock-Token header (dav-tck does) would then
    hold someone else's token; Apache mod_dav and sabre/dav return only the new lock.
    """
    try:
        root = etree.fromstring(body)
    except SyntaxError:  # pragma: no cover - WsgiDAV's own XML; both etrees raise a subclass
        return body
    for disco in root.iter("{DAV:}lockdiscovery"):
        for active in list(disco):
            hrefs = [h.text or "" for h in active.iter("{DAV:}href")]
            if token not in (h.strip() for h in hrefs):
                disco.remove(active)
    out: bytes = xml_tools.xml_to_bytes(root, pretty=False)
    return out
