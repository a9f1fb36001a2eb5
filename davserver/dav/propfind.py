"""PROPFIND (Depth 0 and 1) answered by writing the multistatus XML directly.

WsgiDAV builds one element tree for the whole response and serialises it at the end: for a
directory of 10,000 files that tree cost the server ~400 MiB of memory and most of a second
(measured with bench/run.py). Here every member's ``<response>`` is written as text straight
from its properties, one member resource alive at a time, so memory is about the size of the
answer (a few MiB for 10,000 members) and time is dominated by the one listing query. Semantics are
WsgiDAV's: the resource's properties decide what each property is; this module only parses
the request and writes the XML (RFC 4918 §9.1, §14.16-14.22), 200 propstat first (rclone
reads only the first one).

A member that fails an integrity check is answered for alone and the rest lists: one whose
name or metadata is damaged gets a response whose only propstat is a 500 (clients skip it),
one whose dead properties are damaged lists its live properties and adds an empty 500
propstat; a damaged checksum is a 500 propstat for ``oc:checksums``. The vault logs each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_NOT_FOUND, DAVError, as_DAVError
from wsgidav.util import etree

if TYPE_CHECKING:
    from davserver.dav.resources import Provider

_XML_HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
_XML_TAIL = b"</D:multistatus>"
_OK = "HTTP/1.1 200 OK"
_FAILED = "HTTP/1.1 500 Internal Server Error"
_DAMAGED = "stored data of this member failed an integrity check"
_PROPS_FAILED = "dead properties failed an integrity check"
# What a damaged member answers for when all properties (or their names) were asked for.
_DAMAGED_PROPS = ["{DAV:}resourcetype", "{DAV:}displayname"]
_PIECE = 256 * 1024


def _escape(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def parse_request(environ: dict[str, Any]) -> tuple[str, list[str]]:
    """(mode, property names) of a PROPFIND body: allprop, name (propname) or named."""
    root = util.parse_xml_body(environ, allow_empty=True)
    if root is None:
        return "allprop", []  # RFC 4918 §9.1: an empty body means allprop
    if root.tag != "{DAV:}propfind":
        raise DAVError(HTTP_BAD_REQUEST, "expected a propfind element")
    mode: str | None = None
    names: list[str] = []
    for node in root:
        if not isinstance(node.tag, str):
            continue  # comments, processing instructions
        if node.tag == "{DAV:}allprop":
            if mode:
                raise DAVError(HTTP_BAD_REQUEST, "allprop, propname and prop are exclusive")
            mode = "allprop"
        elif node.tag == "{DAV:}propname":
            if mode:
                raise DAVError(HTTP_BAD_REQUEST, "allprop, propname and prop are exclusive")
            mode = "name"
        elif node.tag == "{DAV:}prop":
            if mode not in (None, "named"):
                raise DAVError(HTTP_BAD_REQUEST, "allprop, propname and prop are exclusive")
            mode = "named"
            names += [p.tag for p in node if isinstance(p.tag, str)]
        elif node.tag == "{DAV:}include":
            continue  # RFC 4918 §14.8: extra properties for allprop; ours are all included
    if mode is None:
        raise DAVError(HTTP_BAD_REQUEST, "empty propfind element")
    return mode, names


class _Writer:
    """Serialises property names and values; namespaces other than DAV: are declared on the
    element that uses them (prefix ``X``), which every namespace-aware client accepts."""

    def __init__(self) -> None:
        self._tags: dict[str, tuple[str, str]] = {}

    def tags(self, name: str) -> tuple[str, str]:
        """(start tag, end tag) of a property element ``{ns}local``."""
        known = self._tags.get(name)
        if known is not None:
            return known
        ns, local = util.split_namespace(name)
        if ns == "DAV:":
            pair = (f"<D:{local}", f"</D:{local}>")
        elif ns:
            pair = (f'<X:{local} xmlns:X="{_escape(ns)}"', f"</X:{local}>")
        else:
            pair = (f'<{local} xmlns=""', f"</{local}>")
        self._tags[name] = pair
        return pair

    def prop(self, name: str, value: Any) -> str:
        start, end = self.tags(name)
        if isinstance(value, _Raw):
            return value
        if value is None or value == "":
            return start + "/>"
        if isinstance(value, str):
            return f"{start}>{_escape(value)}{end}"
        if util.is_etree_element(value):
            if value.tag == name and len(value) == 0 and not value.text and not value.attrib:
                return start + "/>"
            raw = etree.tostring(value, encoding="unicode")
            return str(raw)
        return f"{start}>{_escape(str(value))}{end}"

    def response(self, href: str, props: list[tuple[str, Any]], failed: str | None = None) -> str:
        by_status: dict[str, list[str]] = {}
        for name, value in props:
            if isinstance(value, DAVError):
                status = "HTTP/1.1 " + util.get_http_status_string(value)
                by_status.setdefault(status, []).append(self.tags(name)[0] + "/>")
            else:
                by_status.setdefault(_OK, []).append(self.prop(name, value))
        out = [f"<D:response><D:href>{_escape(href)}</D:href>"]
        statuses = sorted(by_status, key=lambda s: s != _OK)  # 200 first
        for status in statuses:
            out.append("<D:propstat><D:prop>")
            out += by_status[status]
            out.append(f"</D:prop><D:status>{status}</D:status></D:propstat>")
        if failed is not None:
            # One part of this member failed an integrity check (the dead properties): say
            # so in a propstat of its own, after the 200 one that clients read.
            out.append(
                f"<D:propstat><D:prop/><D:status>{_FAILED}</D:status>"
                f"<D:responsedescription>{_escape(failed)}</D:responsedescription></D:propstat>"
            )
        out.append("</D:response>")
        return "".join(out)

    def damaged(self, href: str, names: list[str]) -> str:
        """The response of a member that failed an integrity check as a whole (its name or
        metadata): every property asked for, and the member itself, are a 500."""
        tags = "".join(self.tags(n)[0] + "/>" for n in names)
        return (
            f"<D:response><D:href>{_escape(href)}</D:href>"
            f"<D:propstat><D:prop>{tags}</D:prop><D:status>{_FAILED}</D:status></D:propstat>"
            f"<D:responsedescription>{_DAMAGED}</D:responsedescription></D:response>"
        )


class _Raw(str):
    """An element already serialised (written verbatim)."""


_SUPPORTED_LOCK = _Raw(
    "<D:supportedlock>"
    "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
    "<D:locktype><D:write/></D:locktype></D:lockentry>"
    "<D:lockentry><D:lockscope><D:shared/></D:lockscope>"
    "<D:locktype><D:write/></D:locktype></D:lockentry>"
    "</D:supportedlock>"
)
_COLLECTION = _Raw("<D:resourcetype><D:collection/></D:resourcetype>")
_NOT_COLLECTION = _Raw("<D:resourcetype/>")
_NO_LOCKS = _Raw("<D:lockdiscovery/>")
_MISSING = object()
_mime_by_ext: dict[str, str] = {}


def _mime(name: str) -> str:
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    mime = _mime_by_ext.get(ext)
    if mime is None:
        mime = _mime_by_ext[ext] = str(util.guess_mime_type(name))
    return mime


def _fast_value(res: Any, name: str) -> Any:
    """The value of a common live property straight from the resource's entry, or _MISSING
    (then the resource's own ``get_property_value`` answers). Each must equal what that
    method returns; test_dav_props compares the two."""
    entry = getattr(res, "entry", None)
    if entry is None or not name.startswith("{DAV:}"):
        return _MISSING
    local = name[6:]
    is_dir = entry.is_dir
    if local == "resourcetype":
        return _COLLECTION if is_dir else _NOT_COLLECTION
    if local == "getlastmodified":
        return util.get_rfc1123_time(entry.mtime)
    if local == "creationdate":
        return util.get_rfc3339_time(entry.ctime)
    if local == "displayname":
        return entry.name
    if local == "supportedlock" and res.provider.lock_manager is not None:
        return _SUPPORTED_LOCK
    if local == "lockdiscovery":
        roots = getattr(res, "known_lock_roots", None)
        if roots is not None and res.get_ref_url().rstrip("/") not in roots:
            return _NO_LOCKS
        return _MISSING
    if local == "getetag":
        return f'"{entry.etag}"'
    if local == "getcontentlength":
        return str(entry.tree_bytes if is_dir else entry.size)
    if is_dir:
        return _MISSING
    if local == "getcontenttype":
        return _mime(entry.name)
    return _MISSING


def collect(res: Any, mode: str, names: list[str]) -> list[tuple[str, Any]]:
    """(name, value or DAVError) of each property asked for: WsgiDAV's ``get_properties``
    with the common live properties computed directly."""
    if mode == "name":
        return [(n, None) for n in res.get_property_names(is_allprop=False)]
    if mode == "allprop":
        names = res.get_property_names(is_allprop=True)
    out: list[tuple[str, Any]] = []
    for name in names:
        value = _fast_value(res, name)
        if value is _MISSING:
            try:
                value = res.get_property_value(name)
            except DAVError as exc:
                value = exc
            except Exception as exc:
                value = as_DAVError(exc)
        out.append((name, value))
    return out


def existing_resource(provider: Provider, server: Any, environ: dict[str, Any]) -> Any:
    """The resource the request names, its If headers evaluated; 404 if there is none."""
    res = provider.get_resource_inst(environ["PATH_INFO"], environ)
    if res is None:
        raise DAVError(HTTP_NOT_FOUND)
    server._evaluate_if_headers(res, environ)
    return res


def propfind(provider: Provider, server: Any, environ: dict[str, Any], start_response: Any) -> Any:
    """Answer a PROPFIND whose Depth is already "0" or "1" (see ``handlers.propfind``)."""
    res = existing_resource(provider, server, environ)
    mode, names = parse_request(environ)
    members: Iterator[Any] = iter(())
    if environ["HTTP_DEPTH"] == "1" and res.is_collection:
        # Listed (one query) before the answer starts, so errors are still a status code.
        members = (
            res.iter_members() if hasattr(res, "iter_members") else iter(res.get_member_list())
        )
        first = next(members, None)
        members = itertools.chain([first] if first is not None else [], members)
    # The answer is assembled as text, member by member (a few MiB for 10,000 members),
    # and sent with a Content-Length: chunked answers cost clients such as Python's
    # http.client more time to read than the whole listing costs us to make.
    pieces = list(_pieces(res, members, mode, names))  # not joined: no second copy
    start_response(
        "207 Multi-Status",
        [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Date", util.get_rfc1123_time()),
            ("Content-Length", str(sum(map(len, pieces)))),
        ],
    )
    return pieces


def _pieces(res: Any, members: Iterator[Any], mode: str, names: list[str]) -> Iterator[bytes]:
    """The multistatus in pieces of about ``_PIECE`` bytes; only one member resource and
    its properties are alive at a time."""
    writer = _Writer()
    parts = [_XML_HEAD.decode()]
    size = 0
    for r in itertools.chain([res], members):
        entry = getattr(r, "entry", None)
        if entry is not None and entry.damaged:
            text = writer.damaged(r.get_href(), names if mode == "named" else _DAMAGED_PROPS)
        else:
            props = collect(r, mode, names)
            # Named properties that failed carry their own 500; allprop and propname cannot
            # name what they could not read, so an empty 500 propstat says it.
            damaged_props = mode != "named" and getattr(r, "props_failed", False)
            failed = _PROPS_FAILED if damaged_props else None
            text = writer.response(r.get_href(), props, failed)
        parts.append(text)
        size += len(text)
        if size >= _PIECE:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    parts.append(_XML_TAIL.decode())
    yield "".join(parts).encode("utf-8")
